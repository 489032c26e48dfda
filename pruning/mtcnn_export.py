"""Export the MTCNN P-, R- and O-Net weights shipped in the facenet-pytorch wheel to ONNX.

Zhang et al. 2016, "Joint Face Detection and Alignment using Multi-task Cascaded Convolutional Networks",
https://arxiv.org/abs/1604.02878. The weights are facenet-pytorch's port of the authors' Caffe models.
The service runs the exported graphs with ONNX Runtime (service/vision/detect.py), so it needs no torch.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from model_store import InputSpec, Manifest, ModelStore, Provenance

OPSET = 17
# role → (output names, fixed input side or None for any size). Output order is facenet-pytorch's.
NETS: dict[str, tuple[list[str], int | None]] = {
    "pnet": (["bbox_reg", "prob"], None),
    "rnet": (["bbox_reg", "prob"], 24),
    "onet": (["bbox_reg", "landmarks", "prob"], 48),
}


class ReluFormPReLU(torch.nn.Module):
    """PReLU written as ``relu(x) - slope * relu(-x)``: the same function, exported as Relu/Neg/Mul/Sub.

    ONNX Runtime's CPU PRelu kernel broadcasts the per-channel slope through a generic path: it was about
    half of R-/O-Net's run time (ORT profiler, 1 thread). The two-ReLU form gives bit-identical outputs and
    cut P/R/O-Net time by 36/29/18 % (1 thread, the batch shapes of a 250×250 photo; reports/detector.md).
    """

    def __init__(self, prelu: torch.nn.PReLU) -> None:
        super().__init__()
        self.slope = torch.nn.Parameter(prelu.weight.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slope = self.slope.view(-1, *([1] * (x.dim() - 2)))  # per channel: (C,) → (C, 1, 1) for maps
        return torch.relu(x) - slope * torch.relu(-x)


def replace_prelu(net: torch.nn.Module) -> torch.nn.Module:
    for name, child in net.named_children():
        if isinstance(child, torch.nn.PReLU):
            setattr(net, name, ReluFormPReLU(child))
        else:
            replace_prelu(child)
    return net


def _load_nets() -> dict[str, torch.nn.Module]:
    from facenet_pytorch import ONet, PNet, RNet  # imported here: heavy, and pulls torchvision

    return {"pnet": PNet().eval(), "rnet": RNet().eval(), "onet": ONet().eval()}


def export_net(net: torch.nn.Module, role: str, path: Path) -> None:
    outputs, side = NETS[role]
    example = torch.rand(2, 3, side or 64, side or 80) * 2 - 1
    dynamic = {"input": {0: "batch"}} | {name: {0: "batch"} for name in outputs}
    if side is None:  # the P-Net is fully convolutional and runs on every pyramid level
        dynamic["input"] |= {2: "height", 3: "width"}
        dynamic |= {name: {0: "batch", 2: "grid_h", 3: "grid_w"} for name in outputs}
    torch.onnx.export(
        net,
        (example,),
        str(path),
        input_names=["input"],
        output_names=outputs,
        dynamic_axes=dynamic,
        opset_version=OPSET,
        dynamo=False,  # the TorchScript exporter handles PReLU/ceil-mode pooling with plain dynamic axes
    )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def check_parity(net: torch.nn.Module, role: str, path: Path, *, seed: int = 0) -> float:
    """Largest absolute difference between torch and ONNX Runtime outputs on random inputs."""
    _, side = NETS[role]
    generator = torch.Generator().manual_seed(seed)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch, (h, w) in ((1, (side or 37, side or 53)), (5, (side or 120, side or 96))):
        x = torch.rand(batch, 3, h, w, generator=generator) * 2 - 1
        with torch.no_grad():
            expected = [t.numpy() for t in net(x)]
        got = session.run(None, {"input": x.numpy()})
        worst = max(worst, *(float(np.abs(a - b).max()) for a, b in zip(expected, got, strict=True)))
    return worst


def export_and_publish(
    store: ModelStore, *, tolerance: float = 1e-4, code_commit: str | None = None
) -> Manifest:
    reference = _load_nets()
    nets = {role: replace_prelu(copy.deepcopy(net)) for role, net in reference.items()}
    with tempfile.TemporaryDirectory() as tmp:
        files: dict[str, Path] = {}
        parity: dict[str, float] = {}
        for role, net in nets.items():
            path = Path(tmp) / f"{role}.onnx"
            export_net(net, role, path)
            parity[role] = check_parity(reference[role], role, path)  # against the untouched network
            if parity[role] > tolerance:
                raise RuntimeError(f"{role}: ONNX differs from torch by {parity[role]:.2e} > {tolerance}")
            files[role] = path
        params = sum(p.numel() for net in nets.values() for p in net.parameters())
        manifest = Manifest(
            name="mtcnn",
            version=1,  # placeholder: the store assigns the next free version
            kind="detector",
            description=(
                "MTCNN face detector (P/R/O-Net, 5 landmarks) exported from facenet-pytorch 2.6.0; "
                "PReLU exported as relu(x) - a*relu(-x) (faster on ONNX Runtime, same outputs)"
            ),
            artifacts={},
            # MTCNN normalises pixels as (x - 127.5) * 0.0078125, i.e. std = 128.
            input=InputSpec(mean=(127.5,) * 3, std=(128.0,) * 3, layout="NCHW", channel_order="RGB"),
            params=params,
            metrics={"onnx_parity_max_abs_diff": {role: diff for role, diff in parity.items()}},
            provenance=Provenance(
                code_commit=code_commit,
                command="faceverify export-mtcnn",
                notes="weights: facenet-pytorch 2.6.0 wheel, facenet_pytorch/data/{pnet,rnet,onet}.pt",
            ),
        )
        return store.publish(manifest, files)
