"""Where fetched photos and caches live: outside git, outside the work tree (which may be laid anew)."""

from __future__ import annotations

import os
from pathlib import Path


def data_root() -> Path:
    """``$FACEVERIFY_DATA`` or ``~/.cache/squeezerfacenet``."""
    return Path(os.environ.get("FACEVERIFY_DATA", Path.home() / ".cache" / "squeezerfacenet"))
