"""The operator's API under /admin (token-protected by router.auth).

It exists only when router.admin_token (or --admin-token) is set; without
one every /admin path answers 403 "admin disabled".
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from aiohttp import web

from .api import MANAGER, read_body, resolve_model
from .errors import HTTPError
from .manager import ModelManager
from .process import rss_bytes
from .reload import Reloader
from .requestargs import load_overrides
from .scheduler import State

RELOADER = web.AppKey("reloader", Reloader)


def _inflight(manager: ModelManager, name: str) -> int:
    try:
        return manager.scheduler.inflight(name)
    except KeyError:  # not in the scheduler: never loaded since a reload
        return 0


def model_status(manager: ModelManager, name: str) -> dict[str, Any]:
    child = manager.children.get(name)
    state = manager.state(name)
    st = manager.status.get(name)
    now = time.time()
    out: dict[str, Any] = {
        "model": name,
        "state": state.value,
        "pid": child.pid if child else None,
        "port": child.port if child else None,
        "uptime_s": round(now - child.started_at, 3) if child else None,
        "rss_bytes": rss_bytes(child.pid) if child else None,
        "in_flight": _inflight(manager, name),
        "waiting": manager.scheduler.waiting(name),
        "loads": st.loads if st else 0,
        "last_load_s": st.last_load_s if st else None,
        "last_error": st.last_error if st else None,
        "exit_code": st.exit_code if st else None,
        "failed": bool(st and st.failed and state is State.STOPPED),
    }
    if st is not None and st.kv.enabled:
        out["kv"] = asdict(st.kv)  # KV cache saves and restores: timings, slots, tokens, bytes
    if child is not None:
        out["argv"] = list(child.plan.argv)
    return out


async def handle_status(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    names = list(manager.config.models) + [n for n in manager.children if n not in manager.config.models]
    return web.json_response({
        "catalogue": manager.config.source,
        "models_max": manager.config.router.models_max,
        "swap_target": manager.scheduler.swap_target,
        "models": [model_status(manager, n) for n in names],
    })


async def handle_reload(request: web.Request) -> web.Response:
    res = await request.app[RELOADER].reload("admin request")
    return web.json_response(res.to_json(), status=200 if res.ok else 400)


async def handle_rescan(request: web.Request) -> web.Response:
    """Re-read the catalogue and its model sources; reports what was added,
    removed and kept (model discovery plugs its scan into the loader)."""
    res = await request.app[RELOADER].reload("rescan")
    return web.json_response(res.to_json(), status=200 if res.ok else 400)


async def handle_load(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    spec = resolve_model(manager, request.match_info["name"])
    body = await read_body(request)
    extra = load_overrides(spec, body)
    if extra and manager.state(spec.name) is not State.STOPPED:
        raise HTTPError(409, f"model '{spec.name}' is running; unload it before loading it with other args",
                        code="model_running")
    manager.load(spec.name, extra)
    return web.json_response({"success": True, "model": spec.name, "state": manager.state(spec.name).value})


async def handle_unload(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    spec = resolve_model(manager, request.match_info["name"])
    if manager.state(spec.name) is State.STOPPED:
        raise HTTPError(400, f"model '{spec.name}' is not running", code="model_not_running")
    manager.unload(spec.name)
    return web.json_response({"success": True, "model": spec.name, "state": manager.state(spec.name).value})


def add_admin_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/admin/status", handle_status)
    r.add_post("/admin/reload", handle_reload)
    r.add_post("/admin/rescan", handle_rescan)
    r.add_post("/admin/models/{name}/load", handle_load)
    r.add_post("/admin/models/{name}/unload", handle_unload)
