"""Export the MTCNN P-, R- and O-Net weights shipped in the facenet-pytorch wheel to ONNX.

Zhang et al. 2016, "Joint Face Detection and Alignment using Multi-task Cascaded Convolutional Networks",
https://arxiv.org/abs/1604.02878. The weights are facenet-pytorch's port of the authors' Caffe models.
The service runs the exported graphs with ONNX Runtime (faces/detect.py), so it needs no torch.
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
    cut P/R/O-Net time by 36/29/18 % (1 thread, the batch shapes of a 250×250 photo). ``mtcnn@2`` uses it
    everywhere; from ``mtcnn@3`` it is kept only after the dense layers (2-D inputs, a few hundred values).
    """

    def __init__(self, prelu: torch.nn.PReLU) -> None:
        super().__init__()
        self.slope = torch.nn.Parameter(prelu.weight.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slope = self.slope.view(-1, *([1] * (x.dim() - 2)))  # per channel: (C,) → (C, 1, 1) for maps
        return torch.relu(x) - slope * torch.relu(-x)


class DepthwisePReLU(torch.nn.Module):
    """PReLU on feature maps as ``x + dwconv_{1-a}(relu(dwconv_{-1}(x)))``, two 1×1 depthwise convolutions.

    Same function for any slope a: x ≥ 0 gives x + 0, x < 0 gives x + (1 - a)·(-x) = a·x. Why: ONNX Runtime
    runs convolutions and pooling in its blocked NCHWc layout, but the Relu/Neg/Mul/Sub of the two-ReLU form
    are not NCHWc kernels, so every PReLU cost a reorder back to NCHW plus four elementwise passes (the ORT
    profiler showed the reorders alone at a fifth of R-/O-Net's time). Depthwise Conv (with the Relu fused)
    and Add stay in NCHWc: R-Net 2.2 → 1.6 ms, O-Net 2.6 → 1.6 ms for a 250×250 photo's batches (1 thread).
    """

    def __init__(self, prelu: torch.nn.PReLU) -> None:
        super().__init__()
        slope = prelu.weight.detach().clone()
        self.channels = slope.numel()
        self.negate = torch.nn.Parameter(-torch.ones(self.channels, 1, 1, 1), requires_grad=False)
        self.keep = torch.nn.Parameter((1 - slope).view(-1, 1, 1, 1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        negative_part = torch.relu(torch.nn.functional.conv2d(x, self.negate, groups=self.channels))
        return x + torch.nn.functional.conv2d(negative_part, self.keep, groups=self.channels)


def replace_prelu(net: torch.nn.Module, *, depthwise: bool = True) -> torch.nn.Module:
    """Swap every PReLU for an equivalent ORT-friendly form: depthwise after convolutions (``depthwise``),
    the two-ReLU form after dense layers (their inputs are vectors, which a 2-D convolution cannot take)."""
    previous: torch.nn.Module | None = None
    for name, child in net.named_children():
        if isinstance(child, torch.nn.PReLU):
            on_maps = depthwise and isinstance(previous, torch.nn.Conv2d)
            setattr(net, name, DepthwisePReLU(child) if on_maps else ReluFormPReLU(child))
        else:
            replace_prelu(child, depthwise=depthwise)
        previous = child
    return net


def widen_first_layer(net: torch.nn.Module, channels: int) -> torch.nn.Module:
    """Give ``conv1`` zero filters up to ``channels`` outputs, and ``conv2`` zero weights for them.

    The added maps are exactly 0 through PReLU and max pooling and meet only zero weights, so the outputs are
    unchanged. Why: ORT's NCHWc pooling needs a channel count that fills its 16-float blocks; R-Net's 28
    first-layer filters sent pool1 back to plain NCHW with a reorder either side (R-Net 1.56 → 1.23 ms a
    photo). P-Net's 10 measured no faster padded to 16, so only R-Net is widened.
    """
    conv1, prelu1, conv2 = net.conv1, net.prelu1, net.conv2
    old = conv1.out_channels
    if channels <= old:
        return net
    wide1 = torch.nn.Conv2d(conv1.in_channels, channels, conv1.kernel_size, conv1.stride)
    wide_prelu = torch.nn.PReLU(channels)
    wide2 = torch.nn.Conv2d(channels, conv2.out_channels, conv2.kernel_size, conv2.stride)
    with torch.no_grad():
        for module in (wide1, wide_prelu, wide2):
            module.weight.zero_()
        wide1.bias.zero_()
        wide1.weight[:old] = conv1.weight
        wide1.bias[:old] = conv1.bias
        wide_prelu.weight[:old] = prelu1.weight
        wide2.weight[:, :old] = conv2.weight
        wide2.bias.copy_(conv2.bias)
    net.conv1, net.prelu1, net.conv2 = wide1, wide_prelu, wide2
    return net


def ort_friendly(net: torch.nn.Module, role: str) -> torch.nn.Module:
    """The network as exported: same function, rearranged for ONNX Runtime's CPU kernels."""
    net = copy.deepcopy(net)
    if role == "rnet":
        widen_first_layer(net, 32)
    return replace_prelu(net)


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
    nets = {role: ort_friendly(net, role) for role, net in reference.items()}
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
        params = sum(p.numel() for net in reference.values() for p in net.parameters())  # the real weights
        manifest = Manifest(
            name="mtcnn",
            version=1,  # placeholder: the store assigns the next free version
            kind="detector",
            description=(
                "MTCNN face detector (P/R/O-Net, 5 landmarks) exported from facenet-pytorch 2.6.0; "
                "PReLU after convolutions exported as two 1x1 depthwise convolutions, after dense layers as "
                "relu(x) - a*relu(-x); R-Net's first layer padded with zero filters to 32 (faster on ONNX "
                "Runtime, same outputs)"
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
