"""``faceverify serve``: the REST service, one uvicorn process or gunicorn with uvicorn workers.

Torch-free: this is what the serving image runs.
"""

from __future__ import annotations

import argparse
import os
import sys

from faceverify.cli.common import positive_int

GUNICORN_APP = "service.main:create_app()"  # gunicorn calls the factory in each worker


def register(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="start the REST service (settings from FACEVERIFY_* env)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--workers",
        type=positive_int,
        help="worker processes; above 1 runs gunicorn with uvicorn workers (default 1)",
    )
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers > 1:
        return _serve_gunicorn(args)
    import logging

    import uvicorn

    from service.config import Settings
    from service.main import create_app
    from service.server import uvicorn_options

    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    settings = Settings(**overrides)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # uvicorn's access log prints raw paths, and /v1/users/{user_id} paths carry user ids; the service writes
    # its own access line (logger service.access) with the route template instead.
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
        **uvicorn_options(settings),  # header limits and timeouts, as under gunicorn
    )
    return 0


def _serve_gunicorn(args: argparse.Namespace) -> int:
    """Several worker processes: gunicorn with uvicorn workers, configured by ``service.gunicorn_conf``."""
    env = dict(os.environ, FACEVERIFY_WORKERS=str(args.workers))
    if args.host is not None:
        env["FACEVERIFY_HOST"] = args.host
    if args.port is not None:
        env["FACEVERIFY_PORT"] = str(args.port)
    command = [sys.executable, "-m", "gunicorn", "-c", "python:service.gunicorn_conf", GUNICORN_APP]
    # exec: gunicorn's master becomes this process, so signals to it (SIGTERM, SIGHUP) reach gunicorn.
    os.execvpe(command[0], command, env)
