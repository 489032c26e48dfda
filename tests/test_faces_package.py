"""The ``faces`` package stands alone: no torch, no service, no offline package, whatever it does."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import faces

FORBIDDEN = ("torch", "torchvision", "pruning", "service", "faceverify", "sklearn")


def test_every_faces_module_imports_without_torch_service_or_pruning() -> None:
    modules = sorted(f"faces.{m.name}" for m in pkgutil.iter_modules(faces.__path__))
    assert {"faces.decode", "faces.detect", "faces.align", "faces.embed", "faces.pipeline"} <= set(modules)
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        # build the real pipeline too: loading models must not pull anything in either
        "from model_store import ModelStore\n"
        "from faces.pipeline import FacePipeline\n"
        "from faces.spec import SERVING\n"
        "FacePipeline.from_spec(SERVING, ModelStore())\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
