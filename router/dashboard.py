"""The dashboard at /dashboard: every model's state, memory, load and logs.

One static page (router/static/dashboard.html, no build step) reads three
things from here: a JSON snapshot of the models (GET /dashboard/api/models),
each child's log as server-sent events (GET /logs/stream/{model}, router/logs.py), and the
state changes the WebUI also listens to (GET /models/sse). Load and unload
go through the public POST /models/load and /models/unload.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from .api import MANAGER
from .manager import ModelManager
from .process import rss_bytes

STATIC = Path(__file__).parent / "static"
VRAM_CACHE_S = 5.0


class VramProbe:
    """Per-pid GPU memory from nvidia-smi, when there is one; cached briefly
    because the dashboard polls and nvidia-smi is slow to start."""

    def __init__(self) -> None:
        self.binary = shutil.which("nvidia-smi")
        self._at = 0.0
        self._by_pid: dict[int, int] = {}

    async def by_pid(self) -> dict[int, int] | None:
        if self.binary is None:
            return None
        if time.monotonic() - self._at < VRAM_CACHE_S:
            return self._by_pid
        self._at = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                self.binary, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), 3)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
                return None
        except OSError:
            return None
        used: dict[int, int] = {}
        for line in out.decode(errors="replace").splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                used[int(parts[0])] = used.get(int(parts[0]), 0) + int(parts[1]) * 1024 * 1024
        self._by_pid = used
        return used


VRAM = web.AppKey("vram", VramProbe)


def model_row(manager: ModelManager, name: str, vram: dict[int, int] | None) -> dict[str, Any]:
    spec = manager.config.models[name]
    child = manager.children.get(name)
    status = manager.status.get(name)
    pid = child.pid if child and child.returncode is None else None
    try:
        inflight, waiting = manager.scheduler.inflight(name), manager.scheduler.waiting(name)
    except KeyError:
        inflight, waiting = 0, 0
    return {
        "name": name,
        "aliases": list(spec.aliases),
        "group": spec.group,
        "state": manager.state(name).value,
        "port": child.port if child else None,
        "pid": pid,
        "rss_bytes": rss_bytes(pid),
        "vram_bytes": None if vram is None or pid is None else vram.get(pid, 0),
        "inflight": inflight,
        "waiting": waiting,
        "progress": child.progress if child else None,
        "ready_since": child.ready_at if child else None,
        "loads": status.loads if status else 0,
        "last_load_s": status.last_load_s if status else None,
        "failed": bool(status and status.failed),
        "exit_code": status.exit_code if status else None,
        "last_error": status.last_error if status else None,
    }


async def handle_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "dashboard.html", headers={"Cache-Control": "no-cache"})


async def handle_models(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    vram = await request.app[VRAM].by_pid()
    rows = [model_row(manager, name, vram) for name in manager.config.models]
    return web.json_response({"models": rows, "models_max": manager.config.router.models_max,
                              "vram_available": vram is not None, "time": time.time()})


def add_dashboard_routes(app: web.Application) -> None:
    app[VRAM] = VramProbe()
    app.router.add_get("/dashboard", handle_page)
    app.router.add_get("/dashboard/", handle_page)
    app.router.add_get("/dashboard/api/models", handle_models)
