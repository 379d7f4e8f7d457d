"""The web UI: static files shipped in the package, served at the app's root with no build step.

The page asks for everything by URLs relative to itself (`ui/js/app.js`, `v1/threads`), so it works
wherever the app is: at `/`, or mounted under a prefix inside another app (`/chat/`). Those URLs need
the page's own URL to end in a slash: a request for the mount point without it (`/chat`) is
redirected to `/chat/` by the router's `redirect_slashes` (the host's, or this app's when only
`root_path` says it is mounted); tests/browser/test_mounted_ui.py checks both.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

UI_DIR = Path(__file__).resolve().parent.parent / "ui"


class _RevalidatedFiles(StaticFiles):
    """Static files that browsers check again on each load, so an upgraded server is seen at once."""

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        return response


def mount_ui(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(UI_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/ui", _RevalidatedFiles(directory=UI_DIR), name="ui")
