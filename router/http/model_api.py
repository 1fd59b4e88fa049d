"""llama.cpp's router-mode model API: /models (with status), /models/load,
/models/unload, /models/sse, the router's own /props, and /health."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from aiohttp import web

from router import __version__
from router.catalogue.sources import model_card
from router.core.manager import ModelManager
from router.core.scheduler import State
from router.core.snapshot import ModelSnapshot, snapshots
from router.http.errors import HTTPError
from router.http.keys import MANAGER, SHUTDOWN
from router.http.launch_args import load_overrides
from router.http.request import parse_json_object, read_body, resolve_model, servable_model
from router.http.sse import relay_events


def router_props(manager: ModelManager) -> dict[str, Any]:
    return {
        "role": "router",
        "max_instances": manager.config.router.models_max,
        "models_autoload": True,
        "model_alias": "llama-router",
        "model_path": "none",
        "default_generation_settings": {"params": {}, "n_ctx": 0},
        "build_info": f"llama-router {__version__}",
        "ui_settings": {},
        "cors_proxy_enabled": False,
    }


def model_entry(snap: ModelSnapshot, now: int) -> dict[str, Any]:
    """One model as llama.cpp's router lists it, plus what we know from its GGUF file."""
    spec = snap.spec
    assert spec is not None
    state = snap.state
    status: dict[str, Any] = {"value": state.value if state is not State.STOPPING else "loaded",
                              "args": list(spec.args)}
    if snap.failed:
        status.update(failed=True, exit_code=snap.exit_code)
    if state is State.STARTING and snap.progress is not None:
        status["progress"] = snap.progress
    entry: dict[str, Any] = {
        "id": spec.name, "aliases": list(spec.aliases), "tags": [], "object": "model",
        "owned_by": "llama-router", "created": now, "status": status,
    }
    if spec.group:
        entry["group"] = spec.group
    entry.update(model_card(spec))
    if snap.memory["figure"] or snap.memory["estimate"]:
        entry["memory"] = snap.memory  # bytes per device: docs/memory.md
    if snap.kv is not None:
        entry["kv"] = asdict(snap.kv)  # KV cache persistence: last save/restore, see docs/kv-persistence.md
    for k, v in snap.ready_info.items():  # a loaded model adds its child's own description
        if k == "meta" and isinstance(v, dict):
            entry["meta"] = {**entry.get("meta", {}), **v}
        elif k not in entry and k not in ("aliases", "tags", "id"):
            entry[k] = v
    return entry


async def handle_models(request: web.Request) -> web.Response:
    now = int(time.time())
    # Unlisted models, and models whose file is gone, are not offered (the WebUI's selector reads this).
    data = [model_entry(s, now) for s in snapshots(request.app[MANAGER])
            if s.spec and not s.spec.unlisted and not s.missing]
    return web.json_response({"object": "list", "data": data})


async def handle_models_load(request: web.Request) -> web.Response:
    body = await read_body(request)
    manager = request.app[MANAGER]
    data = parse_json_object(body)
    spec = servable_model(manager, data.get("model"))
    extra = load_overrides(spec, data)
    if extra and manager.state(spec.name) is not State.STOPPED:
        raise HTTPError(409, f"model '{spec.name}' is running; unload it before loading it with other args",
                        code="model_running")
    manager.load(spec.name, extra)
    return web.json_response({"success": True})


async def handle_models_unload(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    spec = resolve_model(manager, parse_json_object(await read_body(request)).get("model"))
    if manager.state(spec.name) is State.STOPPED:
        raise HTTPError(400, f"model '{spec.name}' is not running", code="model_not_running")
    manager.unload(spec.name)
    return web.json_response({"success": True})


async def handle_models_sse(request: web.Request) -> web.StreamResponse:
    return await relay_events(request, request.app[MANAGER].events, request.app[SHUTDOWN],
                              lambda msg: {"model": msg["model"], "event": msg["event"], "data": msg["data"]})


async def handle_health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def add_model_api_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/health", handle_health)
    r.add_get("/v1/health", handle_health)
    for path in ("/models", "/v1/models"):
        r.add_get(path, handle_models)
    r.add_post("/models/load", handle_models_load)
    r.add_post("/models/unload", handle_models_unload)
    r.add_get("/models/sse", handle_models_sse)
