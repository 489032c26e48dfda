"""``faceverify train``: distil a teacher (SFace by default, or dlib) into a SqueezeFaceNet student.

Target space. Teacher descriptors are not zero-centred (dlib's strangers sit at mean cosine ≈ 0.85), so a
cosine loss to the raw vectors rewards the student for the shared mean direction and collapses it. Targets are
therefore ``normalize(d - mean_train)``: centred on the training mean, then unit length; strangers then sit
near cosine 0 and the loss spends its capacity on what tells faces apart. Where the teacher's cache has the
mirror images' descriptors (SFace), a mirrored training face gets its mirror image's target instead of the
original's.

Loss = (1 - cos(student, target))                                 embedding (pointwise) distillation
     + sp_weight  * mean((S_s - S_t)²)                            similarity-preserving (Tung & Mori 2019)
     + nce_weight * CE(S_st / τ, diagonal)                        contrastive: a face nearest its own target
     + identity_weight * CE((S_pair - m·partner) / τ, partner)    identity margin (optional, below)
where S_s, S_t are the batch's cosine-similarity matrices among students / targets and S_st between them.

Identity margin (``identity_pairs`` > 0): that many same-identity pairs of labelled training faces (CelebA,
RMFD) join every batch, and each of them must be nearer its partner than every other face of the batch by a
cosine margin m — CosFace's additive margin (Wang et al. 2018, https://arxiv.org/abs/1801.09414) over in-batch
negatives instead of a class-weight matrix, since the ~2,800 training identities with two faces or more have a
median of two. Random batches of 64 out of ~100k faces almost never hold a genuine pair, so without it no loss
term ever looks at two photos of one person.

Resumable: ``last.pt`` (weights, optimiser, schedule, step) is written every ``checkpoint_every`` steps and on
SIGINT/SIGTERM; ``best.pt`` holds the weights with the best validation TAR at FMR 1e-3 (identity-held-out
CelebA/RMFD faces — never LFW). ``metrics.jsonl`` and ``curves.png`` record the learning curves.
"""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from faces.quality import FRONTAL_YAW, SIDE_YAW
from faces.tensor import crops_to_tensor
from pruning.augment import augment, flip_mask
from pruning.calibrate import calibrate
from pruning.checkpoint import Checkpoint, CheckpointMeta, load_checkpoint, save_checkpoint, torch_embed_fn
from pruning.data.faceset import FaceSet, load_faceset, validation_mask
from pruning.models import INPUT_CARD, SqueezeFaceNet, count_params, create_model, with_pooling


@dataclass
class TrainConfig:
    run_dir: Path
    crops_root: Path
    sources: list[str] | None = None
    teacher: str = "sface"  # whose descriptors are the targets (pruning.data.faceset.TEACHERS)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    warmup_steps: int = 300
    sp_weight: float = 2.0
    nce_weight: float = 0.2
    nce_temperature: float = 0.1
    seed: int = 0
    threads: int = 2
    checkpoint_every: int = 200
    val_every: int = 1000
    val_fraction: float = 0.1
    init: Path | None = None
    max_steps: int | None = None
    # torch.compile (inductor, C++ on CPU) for the training forward/backward: 111 → 160 img/s on 2 threads
    # (measured, batch 64), for ~50 s of compilation at the start of each process.
    compile: bool = True
    # bf16 autocast of the training forward on the CPU's AVX512-BF16 units. On the AMD EPYC of stop 17:
    # SqueezeFaceNet 2.0x and ResNet-50 1.8x faster than fp32, MobileNetV2 not faster; an earlier Intel
    # machine ran SqueezeFaceNet slower with it (reports/train_throughput.md). Loss and weights stay fp32.
    bf16: bool = False
    arch: dict[str, object] = field(default_factory=dict)
    # Pooling of the trained network; with --init a GAP network is converted output-preserving (see models).
    pooling: str | None = None
    # With --init from another teacher's student: fit the embedding layer to the new targets by ridge
    # regression on this many training faces' pooled features before the first step (0: keep it).
    refit_head: int = 0
    identity_pairs: int = 0  # same-identity pairs per batch (of batch_size faces in all); 0: no identity term
    # The term is ~1.9 for squeezefacenet@9 at m 0.1 against distillation's ~0.3; at weights 0.05 and 0.2 it
    # still lowered validation TAR (reports/training.md, "Identity pairs"); pairs alone did not.
    identity_weight: float = 0.2
    identity_margin: float = 0.1
    # Relational term against every training face's teacher target (the "bank"), 0: off. At weight 1, T 0.05
    # it ended level with the control from @9 (reports/training.md, "A relational term over the whole bank").
    bank_weight: float = 0.0
    bank_temperature: float = 0.05
    # Side views count (1 + pose_weight)x in the distillation terms, frontal faces 1x, a ramp between
    # (pose_weights); 0: every face alike. Side views are the student's weakest case (reports/pose_pairs.md).
    pose_weight: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def distillation_loss(
    student: torch.Tensor,
    target: torch.Tensor,
    *,
    sp_weight: float = 2.0,
    nce_weight: float = 0.2,
    nce_temperature: float = 0.1,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Cosine to the target + similarity-preserving + InfoNCE; ``weights`` (per face, mean 1) scale each
    face's cosine and InfoNCE terms (the pairwise term has no single owner)."""
    s = F.normalize(student, dim=1)
    cos = (s * target).sum(dim=1)
    weights = torch.ones_like(cos) if weights is None else weights
    loss_cos = ((1 - cos) * weights).mean()
    off_diagonal = ~torch.eye(len(s), dtype=torch.bool, device=s.device)
    loss_sp = ((s @ s.T - target @ target.T)[off_diagonal] ** 2).mean()
    logits = s @ target.T / nce_temperature
    loss_nce = (
        F.cross_entropy(logits, torch.arange(len(s), device=s.device), reduction="none") * weights
    ).mean()
    loss = loss_cos + sp_weight * loss_sp + nce_weight * loss_nce
    parts = {"cos": cos.mean().item(), "sp": loss_sp.item(), "nce": loss_nce.item()}
    return loss, parts


def identity_margin_loss(
    student: torch.Tensor, identity: torch.Tensor, pairs: int, *, margin: float, temperature: float
) -> torch.Tensor:
    """CosFace-style margin over in-batch negatives for the last ``2 * pairs`` rows, consecutive pairs.

    Each of those faces is scored against every other face of the batch; its partner's cosine is lowered
    by ``margin`` and must still win. Other faces of the same identity (a random row may share it) are
    neither positives nor negatives. ``identity`` holds integer codes, -1 for unlabelled faces.
    """
    s = F.normalize(student, dim=1)
    first = len(s) - 2 * pairs
    rows = torch.arange(2 * pairs, device=s.device)
    partner = first + (rows ^ 1)  # rows 2k and 2k + 1 are one pair
    logits = s[first:] @ s.T - margin * F.one_hot(partner, len(s))
    same = identity[first:, None] == identity[None, :]
    logits = logits.masked_fill(same & ~F.one_hot(partner, len(s)).bool(), float("-inf"))
    return F.cross_entropy(logits / temperature, partner)


def bank_relation_loss(
    student: torch.Tensor, target: torch.Tensor, bank: torch.Tensor, *, temperature: float
) -> torch.Tensor:
    """KL from the teacher's to the student's similarity distribution over a bank of teacher targets.

    SEED (Fang et al. 2021, https://arxiv.org/abs/2101.04731) distils with a queue of teacher embeddings;
    here the bank is every training face's cached target (~100k), so each face learns which faces the teacher
    puts next to it: the impostor tail that TAR at FMR 1e-3 counts, where the batch's 63 negatives rarely
    hold a near one. One temperature for both sides makes matching the teacher exactly the optimum.
    """
    s = F.normalize(student, dim=1)
    teacher = F.log_softmax(target @ bank.T / temperature, dim=1)
    return F.kl_div(
        F.log_softmax(s @ bank.T / temperature, dim=1), teacher, log_target=True, reduction="batchmean"
    )


def pose_weights(yaw: np.ndarray, pose_weight: float) -> torch.Tensor:
    """Per-face loss weights, normalised to mean 1: 1 for frontal faces, 1 + ``pose_weight`` for side views.

    The ramp between the two bands (faces.quality) is linear in |yaw|; normalising keeps the step size of
    the batch as it was, so only the balance between faces changes.
    """
    turn = np.clip((np.abs(yaw) - FRONTAL_YAW) / (SIDE_YAW - FRONTAL_YAW), 0.0, 1.0)
    weights = torch.from_numpy(1.0 + pose_weight * turn.astype(np.float32))
    return weights / weights.mean()


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Share of the peak learning rate at ``step``: linear warm-up, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def lr_at(step: int, total: int, config: TrainConfig) -> float:
    return config.lr * warmup_cosine(step, total, config.warmup_steps)


def batch_tensor(crops: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(crops_to_tensor(crops, INPUT_CARD.mean, INPUT_CARD.std))


def _augment_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step + (stream << 40))


class TrainingBatch(NamedTuple):
    x: torch.Tensor  # (B, 3, 112, 112) augmented inputs, channels_last
    targets: torch.Tensor  # (B, D) unit teacher targets (of the mirror image where the input was flipped)
    identity: torch.Tensor  # (B,) identity codes, -1: unlabelled
    yaw: np.ndarray  # (B,) yaw proxy of each face's landmarks


@dataclass
class DistillationData:
    """Training faces with their centred, unit-length teacher targets, and the held-out validation faces."""

    train: FaceSet
    val: FaceSet
    targets: torch.Tensor  # (N_train, D)
    target_mean: np.ndarray  # (D,) mean raw teacher descriptor of the training faces
    mirror_targets: torch.Tensor | None = None  # (N_train, D) of the mirror images, where cached
    teacher: str = "sface"
    identity_code: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (N_train,), -1: none

    @classmethod
    def load(
        cls,
        crops_root: Path,
        sources: list[str] | None = None,
        val_fraction: float = 0.1,
        target_mean: np.ndarray | None = None,
        teacher: str = "sface",
    ) -> DistillationData:
        faces = load_faceset(crops_root, sources, teacher=teacher)
        held_out = validation_mask(faces.identity, val_fraction)
        train_set, val_set = faces.subset(~held_out), faces.subset(held_out)
        if len(set(val_set.identity)) < 2:
            raise ValueError("the validation split needs faces of at least two held-out identities")
        mirror = train_set.teacher_mirror
        if target_mean is not None:
            mean = np.asarray(target_mean, np.float32)
        elif mirror is not None:
            mean = (train_set.teacher.mean(axis=0) + mirror.mean(axis=0)) / 2
        else:
            mean = train_set.teacher.mean(axis=0)
        targets = F.normalize(torch.from_numpy(train_set.teacher - mean), dim=1)
        mirror_targets = None if mirror is None else F.normalize(torch.from_numpy(mirror - mean), dim=1)
        labelled = train_set.identity != ""
        identity_code = np.full(len(train_set), -1, np.int64)
        identity_code[labelled] = np.unique(train_set.identity[labelled].astype(str), return_inverse=True)[1]
        return cls(train_set, val_set, targets, mean, mirror_targets, teacher, identity_code)

    def steps_per_epoch(self, batch_size: int) -> int:
        return len(self.train) // batch_size

    def batch_index(self, step: int, batch_size: int, seed: int) -> np.ndarray:
        """Training faces of global step ``step``: a fresh permutation every epoch."""
        epoch, within = divmod(step, self.steps_per_epoch(batch_size))
        order = np.random.default_rng(seed + epoch).permutation(len(self.train))
        return np.sort(order[within * batch_size : (within + 1) * batch_size])

    def batch(self, step: int, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented inputs and targets of global step ``step``."""
        return self._augmented(self.batch_index(step, batch_size, seed), _augment_generator(seed, step))

    @cached_property
    def identity_groups(self) -> list[np.ndarray]:
        """Training-face indices of each labelled identity with at least two faces."""
        order = np.argsort(self.identity_code, kind="stable")
        codes = self.identity_code[order]
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        groups = np.split(order, starts[1:])
        return [g for g, code in zip(groups, codes[starts], strict=True) if code >= 0 and len(g) >= 2]

    def labelled_batch(self, step: int, batch_size: int, pairs: int, seed: int) -> TrainingBatch:
        """The plain batch of ``batch_size - 2 * pairs`` faces, ``pairs`` same-identity pairs, identities."""
        index = self.batch_index(step, batch_size - 2 * pairs, seed)
        x, targets = self._augmented(index, _augment_generator(seed, step))
        if pairs:
            rng = np.random.default_rng([seed, step])
            groups = self.identity_groups
            chosen = rng.choice(len(groups), pairs, replace=False)
            paired = np.concatenate([rng.choice(groups[g], 2, replace=False) for g in chosen])
            x_pairs, targets_pairs = self._augmented(paired, _augment_generator(seed, step, stream=1))
            x, targets = torch.cat([x, x_pairs]), torch.cat([targets, targets_pairs])
            index = np.concatenate([index, paired])
        identity = torch.from_numpy(self.identity_code[index])
        return TrainingBatch(
            x.contiguous(memory_format=torch.channels_last), targets, identity, self.train.yaw[index]
        )

    def _augmented(self, index: np.ndarray, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        flip = flip_mask(len(index), generator)
        x = augment(batch_tensor(self.train.crops[index]), generator, flip)
        targets = self.targets[index]
        if self.mirror_targets is not None:
            targets = torch.where(flip[:, None], self.mirror_targets[index], targets)
        # NHWC: ~45 % faster CPU training steps than NCHW for this network (measured, 1 thread)
        return x.contiguous(memory_format=torch.channels_last), targets


def refit_embedding(
    model: SqueezeFaceNet, crops: np.ndarray, targets: torch.Tensor, ridge: float = 1e-2
) -> dict[str, float]:
    """Re-fit the embedding layer (linear + batch norm) to ``targets`` on the network's pooled features.

    A student of one teacher starts another teacher's targets with useful features but an embedding in the
    wrong space; a closed-form least-squares head gives the first steps a sensible target instead of a
    random rotation to undo through the whole backbone. The batch norm is set so that it passes the ridge
    prediction through unchanged in eval mode and starts near it in training mode.
    """
    model.eval()
    features = []
    with torch.no_grad():
        for start in range(0, len(crops), 256):
            x = batch_tensor(crops[start : start + 256])
            features.append(torch.flatten(model.global_pool(model.features(x)), 1))
    f = torch.cat(features).double()
    t = targets.double()
    gram = f.T @ f + ridge * len(f) * torch.eye(f.shape[1], dtype=torch.float64)
    weight = torch.linalg.solve(gram, f.T @ t)  # (features, dim)
    predicted = f @ weight
    cosine = F.cosine_similarity(predicted, t, dim=1).mean().item()
    mean, std = predicted.mean(0), predicted.std(0).clamp_min(1e-2)
    norm = model.embedding_bn
    with torch.no_grad():
        model.embedding.weight.copy_(weight.T.float())
        norm.weight.copy_(std.float())
        norm.bias.copy_(mean.float())
        norm.running_mean.copy_(mean.float())
        norm.running_var.copy_((std**2).float() - norm.eps)
    model.train()
    return {"faces": len(f), "ridge": ridge, "train_cosine": cosine}


def validate(model: torch.nn.Module, val: FaceSet) -> dict[str, object]:
    embeddings = torch_embed_fn(model)(val.crops)
    return calibrate(embeddings, val.identity)


def validation_score(metrics: dict[str, object]) -> float:
    """What picks the best checkpoint: TAR at FMR 1e-3, or minus the EER where too few impostor pairs."""
    return float(metrics.get("tar_at_fmr_1e-3", -metrics["eer"]))  # type: ignore[arg-type]


def _log(path: Path, record: dict[str, object]) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def train(config: TrainConfig, progress: bool = True) -> Path:
    from tqdm import tqdm

    torch.set_num_threads(config.threads)
    if not 0 <= 2 * config.identity_pairs < config.batch_size:  # before the minute of loading the crops
        raise ValueError(f"{config.identity_pairs} identity pairs do not fit a batch of {config.batch_size}")
    config.run_dir.mkdir(parents=True, exist_ok=True)
    data = DistillationData.load(
        config.crops_root, config.sources, config.val_fraction, teacher=config.teacher
    )
    train_set, val_set = data.train, data.val

    # --init brings its own widths (a pruned network trains on as it is); config.arch is for fresh models.
    init: Checkpoint | None = None
    if config.init is not None:
        model, init = load_checkpoint(config.init)
    else:
        model = create_model(config.arch or None)
    if config.pooling is not None:
        model = with_pooling(model, config.pooling)
    if config.refit_head and not (config.run_dir / "last.pt").exists():
        rng = np.random.default_rng(config.seed)
        sample = np.sort(rng.choice(len(train_set), min(config.refit_head, len(train_set)), replace=False))
        fit = refit_embedding(model, train_set.crops[sample], data.targets[sample])
        (config.run_dir / "refit_head.json").write_text(json.dumps(fit, indent=2) + "\n")
    # A pruned level keeps its pruning record through further training (publish reads it).
    lineage = init.lineage if init is not None else {}
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.identity_pairs > len(data.identity_groups):
        raise ValueError(f"only {len(data.identity_groups)} training identities have two faces or more")
    random_size = config.batch_size - 2 * config.identity_pairs
    steps_per_epoch = data.steps_per_epoch(random_size)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    model = model.to(memory_format=torch.channels_last)
    step, best = 0, -1.0

    last_path, best_path = config.run_dir / "last.pt", config.run_dir / "best.pt"
    if last_path.exists():
        model, state = load_checkpoint(last_path)
        model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        if state.optimizer is None or state.step is None or state.best is None:
            raise ValueError(f"{last_path} holds no training state to resume from")
        optimizer.load_state_dict(state.optimizer)
        step, best = state.step, state.best
    meta = CheckpointMeta(
        config=config.to_json(),
        data={"train": train_set.counts(), "val": val_set.counts()},
        val_identities=len(set(val_set.identity)),
        params=count_params(model),
        target_mean=data.target_mean.tolist(),
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        prune_config=init.meta.prune_config if init is not None else None,
    )
    (config.run_dir / "run.json").write_text(json.dumps(meta.to_dict(), indent=2) + "\n")

    stop = {"now": False}

    def request_stop(*_: object) -> None:
        stop["now"] = True

    # Restored on return: a caller (a test, a notebook) keeps its own handlers after the run.
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def save_last() -> None:
        save_checkpoint(
            last_path, model, optimizer=optimizer.state_dict(), step=step, best=best, meta=meta, **lineage
        )

    # Checkpoints and validation use the eager module; only the training step runs the compiled graph
    # (same parameters), so saved state dicts carry no compiler prefixes.
    forward = torch.compile(model) if config.compile else model

    log_path = config.run_dir / "metrics.jsonl"
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", disable=not progress)
    model.train()
    window_start, window_images = time.perf_counter(), 0
    while step < total_steps and not stop["now"]:
        epoch = step // steps_per_epoch
        x, targets, identity, yaw = data.labelled_batch(
            step, config.batch_size, config.identity_pairs, config.seed
        )
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total_steps, config)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
            embeddings = forward(x)
        loss, parts = distillation_loss(
            embeddings.float(),
            targets,
            sp_weight=config.sp_weight,
            nce_weight=config.nce_weight,
            nce_temperature=config.nce_temperature,
            weights=pose_weights(yaw, config.pose_weight) if config.pose_weight else None,
        )
        if config.identity_pairs:
            loss_id = identity_margin_loss(
                embeddings.float(),
                identity,
                config.identity_pairs,
                margin=config.identity_margin,
                temperature=config.nce_temperature,
            )
            loss = loss + config.identity_weight * loss_id
            parts["id"] = loss_id.item()
        if config.bank_weight:
            loss_bank = bank_relation_loss(
                embeddings.float(), targets, data.targets, temperature=config.bank_temperature
            )
            loss = loss + config.bank_weight * loss_bank
            parts["bank"] = loss_bank.item()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        window_images += len(x)
        bar.update()
        if step % 10 == 0:
            rate = window_images / (time.perf_counter() - window_start)
            window_start, window_images = time.perf_counter(), 0
            record = {
                "step": step,
                "epoch": epoch,
                "loss": loss.item(),
                **parts,
                "lr": lr_at(step, total_steps, config),
            }
            _log(log_path, record | {"images_per_s": rate})
            bar.set_postfix(loss=f"{loss.item():.3f}", cos=f"{parts['cos']:.3f}", ips=f"{rate:.0f}")
        if step % config.val_every == 0 or step == total_steps:
            metrics = validate(model, val_set)
            model.train()
            _log(log_path, {"step": step, "epoch": epoch, "val": metrics})
            score = validation_score(metrics)
            if score > best:
                best = score
                save_checkpoint(best_path, model, step=step, val=metrics, meta=meta, **lineage)
            save_last()
        elif step % config.checkpoint_every == 0:
            save_last()
    save_last()
    bar.close()
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    plot_curves(config.run_dir)
    return best_path


def plot_curves(run_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in records if "loss" in r]
    val_rows = [r for r in records if "val" in r]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=110)
    steps = [r["step"] for r in train_rows]
    axes[0].plot(steps, [r["loss"] for r in train_rows], lw=0.8)
    axes[0].set_title("training loss")
    axes[1].plot(steps, [r["cos"] for r in train_rows], lw=0.8)
    axes[1].set_title("cosine to centred teacher target")
    if val_rows:
        vsteps = [r["step"] for r in val_rows]
        axes[2].plot(
            vsteps, [r["val"].get("tar_at_fmr_1e-3", np.nan) for r in val_rows], "o-", label="TAR@FMR1e-3"
        )
        axes[2].plot(vsteps, [1 - r["val"]["eer"] for r in val_rows], "s-", label="1 - EER")
        axes[2].legend()
    axes[2].set_title("validation (held-out identities)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(run_dir / "curves.png")
    plt.close(fig)
