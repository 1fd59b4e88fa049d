"""The operator's API under /admin (token-protected by router.auth).

It exists only when router.admin_token (or --admin-token) is set; without
one every /admin path answers 403 "admin disabled".
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aiohttp import web

from router.core.scheduler import State
from router.core.snapshot import ModelSnapshot, snapshots
from router.http.errors import HTTPError
from router.http.keys import MANAGER, RELOADER
from router.http.launch_args import load_overrides
from router.http.request import parse_json_object, read_body, resolve_model, servable_model


def model_status(snap: ModelSnapshot) -> dict[str, Any]:
    """One model as an operator sees it: its process, its load history, its KV cache."""
    out: dict[str, Any] = {
        "model": snap.name,
        "state": snap.state.value,
        "pid": snap.pid,
        "port": snap.port,
        "uptime_s": snap.uptime_s,
        "rss_bytes": snap.rss_bytes,
        "in_flight": snap.in_flight,
        "waiting": snap.waiting,
        "loads": snap.loads,
        "last_load_s": snap.last_load_s,
        "last_error": snap.last_error,
        "exit_code": snap.exit_code,
        "failed": snap.failed,
        "missing": snap.missing,
        "memory": snap.memory,
    }
    if snap.kv is not None:
        out["kv"] = asdict(snap.kv)  # KV cache saves and restores: timings, slots, tokens, bytes
    if snap.argv is not None:
        out["argv"] = list(snap.argv)
    return out


async def handle_status(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    return web.json_response({
        "catalogue": manager.config.source,
        "models_max": manager.config.router.models_max,
        "memory": manager.memory_view(),
        "swap_target": manager.scheduler.swap_target,
        "models": [model_status(s) for s in snapshots(manager, include_removed=True)],
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
    spec = servable_model(manager, request.match_info["name"])
    body = await read_body(request)
    extra = load_overrides(spec, parse_json_object(body) if body.strip() else {})
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
