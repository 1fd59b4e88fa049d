"""llama.cpp's router-mode model API: /models (with status), /models/load,
/models/unload, /models/sse, the router's own /props, and /health; and its
model management: POST /models (download), DELETE /models, ?reload=1 (and
POST /models/reload)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any

from aiohttp import web

from router import __version__
from router.api.peers import peer_entries
from router.api.profiles import profile_entries
from router.catalogue.config import ApiKey, Config, ModelSpec, SelectorSpec
from router.catalogue.sources import model_card
from router.core.events import EventBus
from router.core.model_files import cache_removal, prune_hf_repo, remove_model
from router.core.reload import reload_models
from router.core.scheduler import State
from router.core.selector import SPILLOVER, order
from router.core.snapshot import ModelSnapshot, listed_status, snapshots
from router.discovery.huggingface import parse_hf_ref
from router.http.access import INFERENCE, PUBLIC, READ, Models, declare
from router.http.api_keys import listed_selectors, may_see, may_use
from router.http.app_keys import API_KEY, DOWNLOADS, MANAGER, RELOADER, SHUTDOWN
from router.http.errors import HTTPError
from router.http.launch_args import load_overrides
from router.http.request import parse_json_object, read_body, resolve_model, servable_model
from router.http.sse import relay_events


def router_props(config: Config, build: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp's router /props; `build_info` is the children's llama.cpp build
    (`b<build>-<commit>`, as llama.cpp's clients parse it), llama-router's own version
    is `router_version`."""
    return {
        "role": "router",
        "max_instances": config.router.models_max,
        "models_autoload": config.router.models_autoload,
        "model_alias": "llama-router",
        "model_path": "none",
        "default_generation_settings": {"params": {}, "n_ctx": 0},
        "build_info": build.get("build_info", "unknown"),
        "router_version": f"llama-router {__version__}",
        "ui_settings": {},
        "cors_proxy_enabled": False,
    }


def model_entry(snap: ModelSnapshot, now: int) -> dict[str, Any]:
    """One model as llama.cpp's router lists it, plus what we know from its GGUF file."""
    spec = snap.spec
    assert spec is not None
    state = snap.state
    status: dict[str, Any] = {"value": listed_status(state), "args": list(spec.args)}
    if snap.external is not None:  # served at its `url`: its last health check, not a state of ours
        status = {"value": "external", **{k: v for k, v in snap.external.items() if k != "url"}}
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


def with_virtual_ids(entry: dict[str, Any], spec: ModelSpec) -> list[dict[str, Any]]:
    """A model's entry, then one per virtual id (`set_params_by_id`): the same model, served
    by the same child, under another id (`virtual_of` names the model)."""
    ids = [i for i in spec.set_params_by_id if i != spec.name and i not in spec.aliases]
    return [entry, *({**entry, "id": i, "aliases": [], "virtual_of": spec.name} for i in ids)]


def selector_entry(selector: SelectorSpec, states: dict[str, State], now: int) -> dict[str, Any]:
    """A selector as /v1/models lists it (llama-swap's api.go): its name and description, the
    status of the target it would choose now, and `metadata` telling it is a selector, its
    strategy and targets (and spillover's `spillover`), over its own `metadata`."""
    about: dict[str, Any] = {"type": "selector", "strategy": selector.strategy, "targets": list(selector.targets)}
    if selector.strategy == SPILLOVER:
        about["spillover"] = selector.spillover
    entry: dict[str, Any] = {
        "id": selector.id, "aliases": [], "tags": [], "object": "model", "owned_by": "llama-router",
        "created": now, "status": {"value": listed_status(states.get(order(selector, states)[0], State.STOPPED))},
        "name": selector.display_name or selector.id, "metadata": {**selector.metadata, **about},
    }
    if selector.description:
        entry["description"] = selector.description
    return entry


def selector_entries(config: Config, states: dict[str, State], key: ApiKey | None, now: int) -> list[dict[str, Any]]:
    """The listed selectors `key` may use: its patterns match the id and one of the targets."""
    return [selector_entry(s, states, now) for s in listed_selectors(key, config)]


@declare(READ, Models.FILTERED, when={"reload": (INFERENCE, Models.EVERY)})
async def handle_models(request: web.Request) -> web.Response:
    if request.query.get("reload"):  # llama.cpp: any non-empty value re-reads the sources first
        await reload_models(request.app[RELOADER], "GET /models?reload")
    now = int(time.time())
    key = request.get(API_KEY)
    # Unlisted models, models whose file is gone and models the API key may not use are not
    # offered (the WebUI's selector reads this).
    data = [entry for s in snapshots(request.app[MANAGER])
            if s.spec and not s.spec.unlisted and not s.missing and may_use(key, s.spec)
            for entry in with_virtual_ids(model_entry(s, now), s.spec)]
    manager = request.app[MANAGER]
    if manager.config.selectors:
        data += selector_entries(manager.config, {n: manager.state(n) for n in manager.config.models}, key, now)
    data += [e for e in request.app[DOWNLOADS].entries(now) if may_see(key, e["id"], manager.config)]
    data += peer_entries(request, now)  # the peers' models (api/peers.py)
    data += profile_entries(manager, key, data, now)  # the active profile's pins
    return web.json_response({"object": "list", "data": data})


@declare(INFERENCE, Models.EVERY)  # changes the catalogue
async def handle_models_reload(request: web.Request) -> web.Response:
    """Not in llama.cpp (which has GET /models?reload=1): the reload's own answer."""
    res = await reload_models(request.app[RELOADER], "POST /models/reload")
    if not res.ok:
        raise HTTPError(400, res.error or "reload failed", code="reload_failed")
    return web.json_response({"success": True, **res.to_json()})


@declare(INFERENCE, Models.EVERY)
async def handle_models_download(request: web.Request) -> web.Response:
    """llama.cpp's POST /models: start downloading `user/repo[:QUANT]`, answer at once."""
    data = parse_json_object(await read_body(request))
    request.app[DOWNLOADS].start(data.get("model"))
    return web.json_response({"success": True})


@declare(INFERENCE, Models.EVERY)
async def handle_models_delete(request: web.Request) -> web.Response:
    """llama.cpp's DELETE /models?model=: a download in progress is cancelled; a model
    found in the Hugging Face cache (not an entry of the catalogue file) loses its files."""
    name = request.query.get("model", "")
    if not name:
        raise HTTPError(400, "model must be a non-empty string", code="model_required")
    manager, reloader, downloads = request.app[MANAGER], request.app[RELOADER], request.app[DOWNLOADS]
    if await downloads.cancel(name):
        repo = parse_hf_ref(name)[0]
        if not downloads.fetching(repo):  # what the cancelled download left, unless another one is under way
            await asyncio.to_thread(prune_hf_repo, repo)
        manager.events.emit(name, "model_remove", {"deleted": []})
        await reload_models(reloader, f"removed {name}")
        return web.json_response({"success": True})
    spec = resolve_model(manager, name, request.get(API_KEY))
    await remove_model(manager, reloader, spec, cache_removal(manager.config, spec))
    return web.json_response({"success": True})


@declare(INFERENCE, Models.NAMED)
async def handle_models_load(request: web.Request) -> web.Response:
    body = await read_body(request)
    manager = request.app[MANAGER]
    data = parse_json_object(body)
    spec = servable_model(manager, data.get("model"), request.get(API_KEY))
    extra = load_overrides(spec, data)
    if extra and manager.state(spec.name) is not State.STOPPED:
        raise HTTPError(409, f"model '{spec.name}' is running; unload it before loading it with other args",
                        code="model_running")
    manager.load(spec.name, extra)
    return web.json_response({"success": True})


@declare(INFERENCE, Models.NAMED)
async def handle_models_unload(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    name = parse_json_object(await read_body(request)).get("model")
    if isinstance(name, str) and may_see(request.get(API_KEY), name, manager.config) and \
            await request.app[DOWNLOADS].cancel(name):
        return web.json_response({"success": True})  # llama.cpp: unloading a download cancels it
    spec = resolve_model(manager, name, request.get(API_KEY))
    if spec.url is not None:
        raise HTTPError(400, f"model '{spec.name}' is served by a server the router does not run ({spec.name}.url): "
                        "it is never unloaded here", code="model_external")
    if manager.state(spec.name) is State.STOPPED:
        raise HTTPError(400, f"model '{spec.name}' is not running", code="model_not_running")
    manager.unload(spec.name)
    return web.json_response({"success": True})


@declare(READ, Models.FILTERED, holds=False)  # open as long as its page
async def handle_models_sse(request: web.Request) -> web.StreamResponse:
    manager = request.app[MANAGER]
    return await relay_model_events(request, manager.events, manager.config)


async def relay_model_events(request: web.Request, bus: EventBus, config: Config) -> web.StreamResponse:
    """llama.cpp's /models/sse from `bus`: each model event the request's API key may see
    (the single-host manager's events, or the cluster front's)."""
    key = request.get(API_KEY)
    return await relay_events(request, bus, request.app[SHUTDOWN],
                              lambda msg: {"model": msg["model"], "event": msg["event"], "data": msg["data"]}
                              if may_see(key, msg["model"], config) else None)


@declare(PUBLIC, Models.NONE)
async def handle_health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def add_model_api_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/health", handle_health)
    r.add_get("/v1/health", handle_health)
    for path in ("/models", "/v1/models"):
        r.add_get(path, handle_models)
    r.add_post("/models", handle_models_download)
    r.add_delete("/models", handle_models_delete)
    r.add_post("/models/reload", handle_models_reload)
    r.add_post("/models/load", handle_models_load)
    r.add_post("/models/unload", handle_models_unload)
    r.add_get("/models/sse", handle_models_sse)
