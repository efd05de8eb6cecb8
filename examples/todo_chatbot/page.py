"""The example's web page: one static HTML file and its script, served as they are (no build
step, nothing fetched from elsewhere). The page talks to the JSON API of ``app.py`` only.

    GET /          static/index.html: chats, messages, streamed replies, edit, regenerate,
                   "< 2/3 >" between versions, rename, search (``?user=NAME``, default demo)
    GET /page.js   static/page.js, the page's script
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

__all__ = ["STATIC", "install_page"]

STATIC = Path(__file__).resolve().parent / "static"
# Revalidate on every load: an edited page shows at once, no stale script after an update.
_HEADERS = {"cache-control": "no-cache"}


def install_page(app: FastAPI) -> None:
    """Serve the page at ``/`` and its script at ``/page.js``."""

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=_HEADERS)

    @app.get("/page.js", include_in_schema=False)
    async def script() -> FileResponse:
        return FileResponse(STATIC / "page.js", media_type="text/javascript",
                            headers=_HEADERS)
