"""Read, verify and atomically publish versions in the store."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from model_store.manifest import MANIFEST_FILE, Artifact, Manifest

DEFAULT_ROOT = Path(__file__).resolve().parent / "models"
ALIASES_FILE = "aliases.json"
_REF = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_.-]*)(?:@(?P<version>\d+))?$")


class ModelStoreError(Exception):
    """Base class of store errors."""


class ModelNotFound(ModelStoreError):
    def __init__(self, ref: str, available: list[str]) -> None:
        super().__init__(f"unknown model {ref!r}; available: {', '.join(available) or 'none'}")
        self.ref = ref
        self.available = available


class ArtifactIntegrityError(ModelStoreError):
    """A published file is missing or its content no longer matches the manifest."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"artifact {path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_json_atomic(path: Path, payload: object) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ModelStore:
    """A directory of ``<name>/<version>/`` folders plus an aliases file."""

    def __init__(self, root: Path | str = DEFAULT_ROOT) -> None:
        self.root = Path(root)

    # ---- listing -------------------------------------------------------------------------------
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def versions(self, name: str) -> list[int]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted(
            int(p.name) for p in folder.iterdir() if p.name.isdigit() and (p / MANIFEST_FILE).is_file()
        )

    def refs(self) -> list[ModelRef]:
        return [ModelRef(n, v) for n in self.names() for v in self.versions(n)]

    def aliases(self) -> dict[str, str]:
        path = self.root / ALIASES_FILE
        if not path.is_file():
            return {}
        return dict(json.loads(path.read_text()))

    # ---- resolution ----------------------------------------------------------------------------
    def resolve(self, ref: str | ModelRef) -> ModelRef:
        """``name`` (latest version), ``name@version`` or an alias → a concrete, existing version."""
        if isinstance(ref, ModelRef):
            ref = str(ref)
        target = self.aliases().get(ref, ref)
        match = _REF.match(target)
        available = [str(r) for r in self.refs()]
        if match is None:
            raise ModelNotFound(ref, available)
        name = match["name"]
        versions = self.versions(name)
        if not versions:
            raise ModelNotFound(ref, available)
        version = int(match["version"]) if match["version"] else versions[-1]
        if version not in versions:
            raise ModelNotFound(ref, available)
        return ModelRef(name, version)

    def version_dir(self, ref: str | ModelRef) -> Path:
        resolved = self.resolve(ref)
        return self.root / resolved.name / str(resolved.version)

    def manifest(self, ref: str | ModelRef) -> Manifest:
        return Manifest.model_validate_json((self.version_dir(ref) / MANIFEST_FILE).read_text())

    # ---- integrity -----------------------------------------------------------------------------
    def _read_verified(self, folder: Path, artifact: Artifact) -> bytes:
        path = folder / artifact.file
        if not path.is_file():
            raise ArtifactIntegrityError(path, "file is missing")
        data = path.read_bytes()
        if len(data) != artifact.bytes:
            raise ArtifactIntegrityError(path, f"size {len(data)} != manifest {artifact.bytes}")
        if hashlib.sha256(data).hexdigest() != artifact.sha256:
            raise ArtifactIntegrityError(path, "sha256 does not match the manifest (corrupted?)")
        return data

    def verify(self, ref: str | ModelRef) -> Manifest:
        """Check every artifact of a version against its manifest; raise on the first mismatch."""
        folder = self.version_dir(ref)
        manifest = self.manifest(ref)
        for artifact in manifest.artifacts.values():
            self._read_verified(folder, artifact)
        return manifest

    def load(self, ref: str | ModelRef, role: str = "model") -> tuple[Manifest, bytes]:
        """Return a manifest and the verified bytes of one artifact.

        Returning the bytes that were hashed (rather than a path) means what runs is exactly what was
        checked: ONNX Runtime builds a session straight from them.
        """
        folder = self.version_dir(ref)
        manifest = self.manifest(ref)
        if role not in manifest.artifacts:
            raise ModelStoreError(f"{manifest.ref} has no artifact {role!r}")
        return manifest, self._read_verified(folder, manifest.artifacts[role])

    # ---- publishing ----------------------------------------------------------------------------
    def publish(self, manifest: Manifest, files: dict[str, Path], *, version: int | None = None) -> Manifest:
        """Copy ``files`` (role → path) into a new version, atomically.

        Everything is written into a hidden temporary folder beside the target and renamed into place
        in one step, so readers never see half a version. The manifest's ``version`` and ``artifacts``
        are filled in here from what was actually written.
        """
        name_dir = self.root / manifest.name
        name_dir.mkdir(parents=True, exist_ok=True)
        if version is None:
            existing = self.versions(manifest.name)
            version = (existing[-1] + 1) if existing else 1
        target = name_dir / str(version)
        if target.exists():
            raise ModelStoreError(f"{manifest.name}@{version} already exists")

        staging = Path(tempfile.mkdtemp(dir=name_dir, prefix=f".staging-{version}-"))
        try:
            artifacts: dict[str, Artifact] = {}
            for role, source in files.items():
                dest = staging / Path(source).name
                shutil.copyfile(source, dest)
                artifacts[role] = Artifact(
                    file=dest.name, sha256=sha256_file(dest), bytes=dest.stat().st_size
                )
            final = manifest.model_copy(update={"version": version, "artifacts": artifacts})
            Manifest.model_validate(final.model_dump())  # re-validate the filled-in copy
            (staging / MANIFEST_FILE).write_text(final.model_dump_json(indent=2) + "\n")
            for path in staging.iterdir():
                with path.open("rb") as handle:
                    os.fsync(handle.fileno())
            staging.chmod(0o755)
            os.rename(staging, target)  # atomic on one filesystem; fails if target appeared meanwhile
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final

    def set_alias(self, alias: str, ref: str | ModelRef) -> ModelRef:
        resolved = self.resolve(ref)
        if _REF.match(alias) is None or alias in self.names():
            raise ModelStoreError(f"invalid alias {alias!r} (must be a plain name that is not a model)")
        aliases = self.aliases()
        aliases[alias] = str(resolved)
        self.root.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(self.root / ALIASES_FILE, aliases)
        return resolved
