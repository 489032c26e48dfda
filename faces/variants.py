"""The embedding variants loaded at start-up, and how a requested name (``X-Model-Variant``) selects one."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence

from faces.align import TEMPLATES
from faces.embed import Embedder
from faces.errors import NotReady, UnknownVariant
from model_store import ModelNotFound, ModelStore

log = logging.getLogger(__name__)

_MAX_REQUESTED_LENGTH = 200


class VariantRegistry:
    """Immutable after start-up: requests resolve against this snapshot, never against the store on disk
    (a version published while the service runs is picked up by a restart, not half-way through)."""

    def __init__(
        self, embedders: Sequence[Embedder], aliases: Mapping[str, str], default_ref: str | None
    ) -> None:
        self.embedders: dict[str, Embedder] = {e.ref: e for e in embedders}
        # name → its highest loaded version, for "NAME" without "@VERSION".
        self._latest: dict[str, Embedder] = {}
        for embedder in sorted(embedders, key=lambda e: e.manifest.version):
            self._latest[embedder.manifest.name] = embedder
        self.aliases = {alias: ref for alias, ref in aliases.items() if ref in self.embedders}
        self.default_ref = default_ref if default_ref in self.embedders else None

    @classmethod
    def load(
        cls,
        store: ModelStore,
        *,
        default: str,
        target_fmr: str,
        intra_op_threads: int,
        only: Sequence[str] = (),
    ) -> VariantRegistry:
        """Build one ONNX Runtime session per published embedder that can make decisions.

        ``only``: serve just these (refs, names = their latest version, or aliases) and the default;
        empty: every calibrated embedder. Each served variant costs a session and, at enrolment, a template
        per image, so a deployment serves the few its clients ask for.
        """
        wanted = {str(store.resolve(name)) for name in only} if only else None  # unknown: ModelNotFound
        if wanted is not None:
            with contextlib.suppress(ModelNotFound):  # no default: warned about below
                wanted.add(str(store.resolve(default)))
        embedders = []
        for ref in store.refs():
            manifest = store.manifest(ref)
            if manifest.kind != "embedder" or (wanted is not None and str(ref) not in wanted):
                continue
            # Skipped, not fatal: one uncalibrated experiment in the store must not take the service down.
            if target_fmr not in manifest.thresholds:
                log.warning("not serving %s: no threshold for false-match rate %s", ref, target_fmr)
                continue
            template = manifest.input.alignment_template or "arcface_112"
            if template not in TEMPLATES:
                log.warning("not serving %s: unknown alignment template %s", ref, template)
                continue
            embedders.append(Embedder.from_store(store, str(ref), intra_op_threads=intra_op_threads))
        try:
            default_ref: str | None = str(store.resolve(default))
        except ModelNotFound:
            default_ref = None
        registry = cls(embedders, store.aliases(), default_ref)
        if registry.default_ref is None:
            log.warning("default variant %r is not a loaded embedder; requests must name one", default)
        return registry

    def valid_names(self) -> list[str]:
        """What X-Model-Variant accepts: refs, bare names and aliases of loaded variants."""
        return sorted({*self.embedders, *self._latest, *self.aliases})

    @property
    def default(self) -> Embedder | None:
        return self.embedders[self.default_ref] if self.default_ref else None

    def select(self, requested: str | None) -> Embedder:
        """``None`` → the default; else a ref, a bare name (latest loaded version) or an alias."""
        if requested is None or not requested.strip():
            if self.default is None:
                raise NotReady("No default model variant is loaded; name one in X-Model-Variant.")
            return self.default
        wanted = requested.strip()
        if len(wanted) <= _MAX_REQUESTED_LENGTH:
            wanted = self.aliases.get(wanted, wanted)
            found = self.embedders.get(wanted) or self._latest.get(wanted)
            if found is not None:
                return found
        valid = self.valid_names()
        # The client's own string is not echoed back: it is untrusted and ends up in logs and UIs.
        raise UnknownVariant(
            f"Unknown model variant; valid values: {', '.join(valid) or 'none loaded'}.",
            field="X-Model-Variant",
            valid_variants=valid,
        )
