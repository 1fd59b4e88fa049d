"""The dashboard at /dashboard: every model's state, memory, load and logs.

One static page (router/ui/static/dashboard.html, no build step) reads three
things from here: a JSON snapshot of the models (GET /dashboard/api/models),
each child's log as server-sent events (GET /logs/stream/{model}, router/api/logs.py), and the
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

from router.core.snapshot import ModelSnapshot, snapshots
from router.http.access import PUBLIC, READ, Models, declare
from router.http.app_keys import MANAGER

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
            except TimeoutError:
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


def model_row(snap: ModelSnapshot, vram: dict[int, int] | None) -> dict[str, Any]:
    spec = snap.spec
    assert spec is not None
    return {
        "name": snap.name,
        "aliases": list(spec.aliases),
        "group": spec.group,
        "state": "external" if snap.external is not None else snap.state.value,  # a `url` model
        "port": snap.port,
        "pid": snap.pid,
        "rss_bytes": snap.rss_bytes,
        "vram_bytes": None if vram is None or snap.pid is None else vram.get(snap.pid, 0),
        "inflight": snap.in_flight,
        "waiting": snap.waiting,
        "progress": snap.progress,
        "ready_since": snap.ready_at,
        "loads": snap.loads,
        "last_load_s": snap.last_load_s,
        "failed": snap.failed,
        "exit_code": snap.exit_code,
        "last_error": snap.last_error,
        "missing": snap.missing,
        "memory": snap.memory,
    }


@declare(PUBLIC, Models.NONE)  # the page asks for a key; its calls need one
async def handle_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "dashboard.html", headers={"Cache-Control": "no-cache"})


class Dashboard:
    """The page and its model snapshot, with one VRAM probe per application."""

    def __init__(self) -> None:
        self.vram = VramProbe()

    @declare(READ, Models.EVERY)
    async def models(self, request: web.Request) -> web.Response:
        manager = request.app[MANAGER]
        vram = await self.vram.by_pid()
        rows = [model_row(s, vram) for s in snapshots(manager)]
        return web.json_response({"models": rows, "models_max": manager.config.router.models_max,
                                  "memory": manager.memory_view(),
                                  "vram_available": vram is not None, "time": time.time()})


def add_dashboard_routes(app: web.Application) -> None:
    dashboard = Dashboard()
    app.router.add_get("/dashboard", handle_page)
    app.router.add_get("/dashboard/", handle_page)
    app.router.add_get("/dashboard/api/models", dashboard.models)
