"""Live-teacher distillation on an accelerator: the teacher describes every augmented face as it is trained.

``pruning.train`` distils cached teacher descriptors on a CPU (~150 faces/s): the target is the descriptor of
the un-augmented crop, so only augmentations a descriptor should be invariant to are possible, and a run
sees a few hundred thousand faces. On a GPU the teacher (SFace, converted from its verified ONNX bytes by
onnx2torch) runs beside the students, so the target is the teacher's descriptor of exactly the pixels the
student sees — "function matching", with geometric jitter and blends of two faces (Beyer et al. 2022,
https://arxiv.org/abs/2106.05237: a patient, consistent teacher and many more samples). Several students (any
families of ``pruning.models``) may share one teacher pass per batch.

Everything is budgeted in wall-clock seconds, because an accelerator is lent by the minute: after a short
probe the cosine schedule is fitted to the steps the remaining time allows. Students are validated on the
held-out identities (never LFW) every ``val_every`` steps; each student's best weights are written as an
ordinary project checkpoint (``<name>-best.pt``) that ``faceverify publish`` and ``faceverify prune`` take.

:class:`LiveData` gives the pruning schedule (``pruning.prune``) the same batches, so pruning and its
fine-tuning can run on the accelerator too.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pruning.augment import augment, flip_mask, geometric, mixup
from pruning.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from pruning.data.faceset import FaceSet, load_faceset, validation_mask
from pruning.models import INPUT_CARD, FaceEmbedder, count_params, create_model
from pruning.train import distillation_loss, validate, validation_score, warmup_cosine

MEAN = torch.tensor(INPUT_CARD.mean).view(1, 3, 1, 1)
STD = torch.tensor(INPUT_CARD.std).view(1, 3, 1, 1)


@dataclass
class StudentSpec:
    """One network to train: a fresh ``family`` or the checkpoint ``init`` (a file or a published variant's
    weights materialised to a file), at peak learning rate ``lr``."""

    name: str
    family: str = "squeezefacenet"
    init: Path | None = None
    lr: float = 2e-3

    @classmethod
    def parse(cls, text: str) -> StudentSpec:
        """``name:family[:lr[:init]]``, e.g. ``sq:squeezefacenet:2e-3:weights.pt``."""
        parts = text.split(":")
        init = Path(parts[3]) if len(parts) > 3 and parts[3] else None
        lr = float(parts[2]) if len(parts) > 2 and parts[2] else 2e-3
        return cls(name=parts[0], family=parts[1], init=init, lr=lr)


@dataclass
class LiveConfig:
    run_dir: Path
    crops_root: Path
    teacher_onnx: Path
    students: list[StudentSpec]
    seconds: float = 300.0
    batch_size: int = 512
    warmup_steps: int = 200
    weight_decay: float = 5e-4
    sp_weight: float = 2.0
    nce_weight: float = 0.2
    nce_temperature: float = 0.1
    val_every: int = 500
    val_fraction: float = 0.1
    probe_steps: int = 40
    geometric: float = 0.8
    mixup: float = 0.15
    seed: int = 0
    # The target space: the mean raw teacher descriptor to centre on (the published students' own, so a
    # student continued from one keeps its space); None computes it from the training faces.
    target_mean: list[float] | None = None

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        out["students"] = [
            {k: str(v) if isinstance(v, Path) else v for k, v in asdict(s).items()} for s in self.students
        ]
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in out.items() if k != "target_mean"}


class LiveData:
    """Training crops resident on the device, augmented there and described by the live teacher.

    ``batch(step, batch_size, seed)`` has the interface of ``pruning.train.DistillationData.batch``
    (normalised NCHW inputs, centred unit targets), so ``pruning.prune`` runs on it unchanged.
    """

    def __init__(
        self,
        train: FaceSet,
        val: FaceSet,
        teacher: torch.nn.Module,
        target_mean: np.ndarray | None,
        device: torch.device,
        *,
        geometric_p: float = 0.8,
        mixup_p: float = 0.15,
    ) -> None:
        self.train, self.val = train, val
        self.device = device
        self.crops = torch.from_numpy(train.crops).to(device)  # (N, 112, 112, 3) uint8
        self.teacher_module = teacher.to(device).to(memory_format=torch.channels_last)
        self._input_mean, self._input_std = MEAN.to(device), STD.to(device)
        # None: the teacher's own mean over the training crops and their mirror images
        own = target_mean is None
        self.target_mean = self._teacher_mean() if own else np.asarray(target_mean, np.float32)
        self._mean = torch.from_numpy(self.target_mean).to(device)
        self.teacher = "sface"
        self.geometric_p, self.mixup_p = geometric_p, mixup_p
        self._order: tuple[int, torch.Tensor] | None = None

    def steps_per_epoch(self, batch_size: int) -> int:
        return len(self.train) // batch_size

    def _teacher_mean(self, batch_size: int = 1024) -> np.ndarray:
        """Mean raw teacher descriptor of the training crops and their mirror images (no augmentation)."""
        total = torch.zeros(128, device=self.device, dtype=torch.float64)
        count = 0
        for start in range(0, len(self.crops), batch_size):
            raw = self.crops[start : start + batch_size].permute(0, 3, 1, 2).float()
            for view in (raw, raw.flip(3)):
                with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16):
                    described = self.teacher_module(view.contiguous(memory_format=torch.channels_last))
                total += described.double().sum(0)
                count += len(view)
        return (total / count).float().cpu().numpy()

    def describe(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw RGB 0–255 NCHW → centred unit teacher targets."""
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16):
            descriptors = self.teacher_module(raw.contiguous(memory_format=torch.channels_last))
        return F.normalize(descriptors.float() - self._mean, dim=1)

    def batch(self, step: int, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, within = divmod(step, self.steps_per_epoch(batch_size))
        if self._order is None or self._order[0] != epoch:
            generator = torch.Generator(device="cpu").manual_seed(seed + epoch)
            self._order = (epoch, torch.randperm(len(self.train), generator=generator).to(self.device))
        index = self._order[1][within * batch_size : (within + 1) * batch_size]
        gen = torch.Generator(device=self.device).manual_seed(seed * 1_000_003 + step)
        raw = self.crops[index].permute(0, 3, 1, 2).float()
        flip = flip_mask(len(index), gen)
        raw = torch.where(flip[:, None, None, None], raw.flip(3), raw)
        raw = geometric(raw, gen, p=self.geometric_p)
        raw = mixup(raw, gen, p=self.mixup_p)
        x = augment((raw - self._input_mean) / self._input_std, gen, torch.zeros_like(flip))
        targets = self.describe(x * self._input_std + self._input_mean)  # the pixels the student sees
        return x.contiguous(memory_format=torch.channels_last), targets


def load_teacher(path: Path) -> torch.nn.Module:
    from pruning.sface import sface_module

    return sface_module(path.read_bytes())


def split_faces(crops_root: Path, val_fraction: float) -> tuple[FaceSet, FaceSet]:
    faces = load_faceset(crops_root, teacher=None)
    held_out = validation_mask(faces.identity, val_fraction)
    return faces.subset(~held_out), faces.subset(held_out)


@dataclass
class Student:
    spec: StudentSpec
    model: FaceEmbedder
    optimizer: torch.optim.Optimizer
    lineage: dict[str, object]
    best: float = -1.0
    best_step: int = 0

    @property
    def name(self) -> str:
        return self.spec.name


def build_student(spec: StudentSpec, config: LiveConfig, device: torch.device) -> Student:
    lineage: dict[str, object] = {}
    if spec.init is not None:
        model, checkpoint = load_checkpoint(spec.init)
        lineage = checkpoint.lineage
    else:
        torch.manual_seed(config.seed)
        model = create_model(family=spec.family)
    model = model.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=spec.lr, weight_decay=config.weight_decay, fused=device.type == "cuda"
    )
    return Student(spec, model, optimizer, lineage)


def _save_cpu(path: Path, model: FaceEmbedder, **extra: object) -> None:
    save_checkpoint(
        path, copy.deepcopy(model).float().cpu().to(memory_format=torch.contiguous_format), **extra
    )


def train_live(
    config: LiveConfig, device: torch.device | None = None, progress: bool = True
) -> dict[str, object]:
    """Train every student for ``config.seconds``; returns each student's best validation record."""
    from tqdm import tqdm

    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    config.run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train_set, val_set = split_faces(config.crops_root, config.val_fraction)
    teacher = load_teacher(config.teacher_onnx)
    data = LiveData(
        train_set,
        val_set,
        teacher,
        None if config.target_mean is None else np.asarray(config.target_mean, np.float32),
        device,
        geometric_p=config.geometric,
        mixup_p=config.mixup,
    )
    mean = data.target_mean
    students = [build_student(spec, config, device) for spec in config.students]
    meta = {
        s.name: CheckpointMeta(
            config=config.to_json() | {"teacher": "sface", "student": s.name, "family": s.model.family},
            data={"train": train_set.counts(), "val": val_set.counts()},
            val_identities=len(set(val_set.identity)),
            params=count_params(s.model),
            target_mean=mean.tolist(),
        )
        for s in students
    }
    log_path = config.run_dir / "metrics.jsonl"

    def log(record: dict[str, object]) -> None:
        with log_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    log(
        {
            "event": "start",
            "setup_s": time.perf_counter() - started,
            "train": len(train_set),
            "val": len(val_set),
            "students": {s.name: count_params(s.model) for s in students},
        }
    )
    for s in students:
        metrics = validate(s.model, val_set)
        s.model.train()
        s.best = validation_score(metrics)
        log({"step": 0, "student": s.name, "val": metrics})
        _save_cpu(
            config.run_dir / f"{s.name}-best.pt", s.model, step=0, val=metrics, meta=meta[s.name], **s.lineage
        )

    budget_end = started + config.seconds
    total = None  # fitted after the probe
    step = 0
    bar = tqdm(desc="live distillation", unit="step", disable=not progress)
    window_start, window_steps = time.perf_counter(), 0
    probe_start = None
    while True:
        if total is None and step == 5:
            if device.type == "cuda":
                torch.cuda.synchronize()
            probe_start = time.perf_counter()
        if total is None and step == 5 + config.probe_steps:
            if device.type == "cuda":
                torch.cuda.synchronize()
            per_step = (time.perf_counter() - probe_start) / config.probe_steps  # type: ignore[operator]
            # validation costs ~ a few steps each; keep 4 % slack for it and the final saves
            remaining = budget_end - time.perf_counter()
            total = step + max(1, int(0.96 * remaining / per_step))
            log(
                {
                    "event": "plan",
                    "step": step,
                    "s_per_step": per_step,
                    "total_steps": total,
                    "images_per_s": config.batch_size / per_step,
                }
            )
            bar.total = total
        if total is not None and step >= total:
            break
        x, targets = data.batch(step, config.batch_size, config.seed)
        parts_by = {}
        for s in students:
            factor = warmup_cosine(step, total or 10**9, config.warmup_steps)
            for group in s.optimizer.param_groups:
                group["lr"] = s.spec.lr * factor
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                out = s.model(x)
            loss, parts = distillation_loss(
                out.float(),
                targets,
                sp_weight=config.sp_weight,
                nce_weight=config.nce_weight,
                nce_temperature=config.nce_temperature,
            )
            s.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            s.optimizer.step()
            parts_by[s.name] = (loss.detach(), parts)
        step += 1
        window_steps += 1
        bar.update()
        if step % 50 == 0:
            rate = window_steps * config.batch_size / (time.perf_counter() - window_start)
            window_start, window_steps = time.perf_counter(), 0
            for name, (loss, parts) in parts_by.items():
                log(
                    {
                        "step": step,
                        "student": name,
                        "loss": loss.item(),
                        **parts,
                        "images_per_s": rate,
                        "lr_factor": warmup_cosine(step, total or 10**9, config.warmup_steps),
                    }
                )
        last = total is not None and step >= total
        if step % config.val_every == 0 or last:
            for s in students:
                metrics = validate(s.model, val_set)
                s.model.train()
                log(
                    {
                        "step": step,
                        "student": s.name,
                        "val": metrics,
                        "elapsed_s": time.perf_counter() - started,
                    }
                )
                if validation_score(metrics) > s.best:
                    s.best, s.best_step = validation_score(metrics), step
                    _save_cpu(
                        config.run_dir / f"{s.name}-best.pt",
                        s.model,
                        step=step,
                        val=metrics,
                        meta=meta[s.name],
                        **s.lineage,
                    )
            bar.set_postfix({s.name: f"{s.best:.3f}" for s in students})
    bar.close()
    for s in students:
        _save_cpu(config.run_dir / f"{s.name}-last.pt", s.model, step=step, meta=meta[s.name], **s.lineage)
    summary = {
        "steps": step,
        "samples": step * config.batch_size,
        "seconds": time.perf_counter() - started,
        "students": {
            s.name: {"best": s.best, "best_step": s.best_step, "params": count_params(s.model)}
            for s in students
        },
    }
    log({"event": "end", **summary})
    (config.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_curves(config.run_dir)
    return summary


def plot_curves(run_dir: Path) -> Path:
    """``curves.png`` beside ``metrics.jsonl``: per student, training cosine and validation TAR@FMR1e-3."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    names = sorted({str(r["student"]) for r in records if "student" in r})
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), dpi=110)
    for name in names:
        rows = [r for r in records if r.get("student") == name and "cos" in r]
        axes[0].plot([r["step"] for r in rows], [r["cos"] for r in rows], lw=0.8, label=name)
        vals = [r for r in records if r.get("student") == name and "val" in r]
        tar = [r["val"].get("tar_at_fmr_1e-3", np.nan) for r in vals]
        axes[1].plot([r["step"] for r in vals], tar, "o-", label=name)
    axes[0].set_title("cosine to the live teacher's centred target")
    axes[1].set_title("validation TAR@FMR1e-3 (held-out identities, one pass)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out = run_dir / "curves.png"
    fig.savefig(out)
    plt.close(fig)
    return out


# ---- command line (what a lent accelerator runs; see pruning/device_job.sh) --------------------------------
def bench(teacher_onnx: Path, families: list[str], batch_size: int, steps: int) -> dict:
    """Images per second of the teacher alone and of one training step per family (synthetic timing)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    teacher = load_teacher(teacher_onnx).to(device).to(memory_format=torch.channels_last)
    x = torch.rand(batch_size, 3, 112, 112, device=device).contiguous(memory_format=torch.channels_last)
    out: dict[str, float] = {}

    def timed(fn) -> float:  # type: ignore[no-untyped-def]
        for _ in range(3):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return batch_size * steps / (time.perf_counter() - start)

    def teacher_step() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            teacher(x * 255)

    out["teacher"] = timed(teacher_step)
    targets = F.normalize(torch.randn(batch_size, 128, device=device), dim=1)
    for family in families:
        model = create_model(family=family).to(device).to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type == "cuda")

        def train_step(model=model, optimizer=optimizer) -> None:  # type: ignore[no-untyped-def]
            with torch.autocast(device.type, dtype=torch.bfloat16):
                y = model(x)
            loss, _ = distillation_loss(y.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        out[family] = timed(train_step)
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pruning.live", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="images/s of the teacher and one training step per family")
    b.add_argument("--teacher", type=Path, required=True)
    b.add_argument("--family", nargs="+", default=["squeezefacenet", "mobilenetv2", "resnet50"])
    b.add_argument("--batch-size", type=int, default=512)
    b.add_argument("--steps", type=int, default=20)
    t = sub.add_parser("train", help="distil students from the live teacher for --seconds")
    t.add_argument("--crops-root", type=Path, required=True)
    t.add_argument("--teacher", type=Path, required=True)
    t.add_argument("--run-dir", type=Path, required=True)
    t.add_argument("--student", action="append", required=True, help="name:family[:lr[:init.pt]]")
    t.add_argument("--seconds", type=float, default=300.0)
    t.add_argument("--batch-size", type=int, default=512)
    t.add_argument("--val-every", type=int, default=500)
    t.add_argument("--warmup-steps", type=int, default=200)
    t.add_argument("--target-mean-from", type=Path, help="a checkpoint whose target space to keep")
    p = sub.add_parser("prune", help="the pruning schedule (pruning.prune) with the live teacher's batches")
    p.add_argument("--crops-root", type=Path, required=True)
    p.add_argument("--teacher", type=Path, required=True)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--criterion", default="taylor")
    p.add_argument("--pruning-ratio", type=float, default=0.4)
    p.add_argument("--iterative-steps", type=int, default=8)
    p.add_argument("--levels", type=float, nargs="+", default=[0.4])
    p.add_argument("--round-to", type=int, default=16)
    p.add_argument("--finetune-steps", type=int, default=100)
    p.add_argument("--final-finetune-steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--importance-batches", type=int, default=8)
    p.add_argument("--val-fraction", type=float, default=0.1)
    args = parser.parse_args(argv)
    if args.command == "bench":
        print(json.dumps(bench(args.teacher, args.family, args.batch_size, args.steps)))
        return 0
    if args.command == "train":
        mean = None
        if args.target_mean_from is not None:
            mean = load_checkpoint(args.target_mean_from)[1].meta.target_mean
        config = LiveConfig(
            run_dir=args.run_dir,
            crops_root=args.crops_root,
            teacher_onnx=args.teacher,
            students=[StudentSpec.parse(s) for s in args.student],
            seconds=args.seconds,
            batch_size=args.batch_size,
            val_every=args.val_every,
            warmup_steps=args.warmup_steps,
            target_mean=mean,
        )
        print(json.dumps(train_live(config)))
        return 0
    from pruning.prune import PruneConfig, prune

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    _, dense = load_checkpoint(args.checkpoint)
    train_set, val_set = split_faces(args.crops_root, args.val_fraction)
    data = LiveData(
        train_set, val_set, load_teacher(args.teacher), np.asarray(dense.meta.target_mean), device
    )
    # every flag of this subcommand is named after its PruneConfig field
    names = {f.name for f in dataclasses.fields(PruneConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    config = PruneConfig(**values | {"levels": tuple(args.levels)})
    summary = prune(config, data=data, device=device)
    print(json.dumps({"levels": [h["removed_share"] for h in summary["history"]]}))  # type: ignore[index]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
