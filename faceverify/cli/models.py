"""``faceverify models list|show|verify``: the model store (no torch, no ONNX Runtime session)."""

from __future__ import annotations

import argparse
import json
import sys

from faceverify.cli.common import _print_table
from model_store import ModelStore, ModelStoreError


def register(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="list, show or verify published models")
    models.add_argument("action", choices=["list", "show", "verify"])
    models.add_argument("ref", nargs="?", help="name, name@version or alias (verify: default all)")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(handler=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    store = ModelStore(args.store)
    if args.action == "list":
        aliases = store.aliases()
        rows = []
        for ref in store.refs():
            manifest = store.manifest(ref)
            rows.append(
                {
                    "ref": str(ref),
                    "kind": manifest.kind,
                    "params": manifest.params,
                    "flops": manifest.flops,
                    "aliases": ",".join(a for a, target in aliases.items() if target == str(ref)),
                    "created_at": manifest.created_at.isoformat(timespec="seconds"),
                }
            )
        if args.json:
            print(json.dumps({"models": rows, "aliases": aliases}, indent=2))
        elif rows:
            _print_table(rows, ["ref", "kind", "params", "flops", "aliases", "created_at"])
        else:
            print(f"no models in {store.root}")
        return 0

    refs = [args.ref] if args.ref else [str(r) for r in store.refs()]
    if args.action == "show":
        if not args.ref:
            print("faceverify models show: a model reference is required", file=sys.stderr)
            return 2
        print(store.manifest(args.ref).model_dump_json(indent=2))
        return 0

    # verify
    results = []
    for ref in refs:
        try:
            store.verify(ref)
            results.append({"ref": str(store.resolve(ref)), "ok": True, "error": ""})
        except ModelStoreError as error:
            results.append({"ref": ref, "ok": False, "error": str(error)})
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _print_table(results, ["ref", "ok", "error"])
    return 0 if all(r["ok"] for r in results) else 1
