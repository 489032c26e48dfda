"""GET /demo: a small browser page over the /v1 API (plain HTML, JS and CSS from ``service/static/demo``).

The page is static: it calls the same /v1 routes any client does, sending ``X-API-Key`` when one is typed
in, so it needs no server-side state and no build step. Its responses carry a strict Content-Security-Policy
(only this origin's own files; no inline script or style, no framing, no form posts) and ``nosniff``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

DEMO_DIR = Path(__file__).resolve().parents[2] / "static" / "demo"
DEMO_PATH = "/demo"
ASSETS_PATH = f"{DEMO_PATH}/assets"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",  # the photo previews are canvases drawn from the chosen files, not URLs
        "connect-src 'self'",
        "form-action 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # a redeployed page never runs against an older script
}

router = APIRouter(include_in_schema=False)


@router.get(DEMO_PATH)
async def demo_page() -> FileResponse:
    return FileResponse(
        DEMO_DIR / "index.html", media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS
    )


@router.get(f"{DEMO_PATH}/")
async def demo_slash() -> RedirectResponse:
    return RedirectResponse(DEMO_PATH, status_code=308)


class _DemoAssets(StaticFiles):
    """The page's script and style sheet, with the same headers as the page."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(ASSETS_PATH, _DemoAssets(directory=DEMO_DIR), name="demo-assets")
