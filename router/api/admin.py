"""The operator's API under /admin: a sub-application behind its own middleware
(router/http/access.py `require_admin`: the admin token or an admin-role key).

It exists only when router.admin_token (or --admin-token) is set, or an API
key has the admin role; without either every /admin path answers 403
"admin disabled". The catalogue itself
(GET/PUT /admin/config) is in api/admin_config.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aiohttp import web

from router.api.admin_config import add_config_routes
from router.catalogue.config import Config
from router.catalogue.yamlio import YAMLReadError, read_yaml
from router.core.model_files import RemovalRefused, allowed_root, files_in_use, plan_removal, remove_model
from router.core.scheduler import State
from router.core.snapshot import ModelSnapshot, snapshots
from router.discovery.naming import default_hf_cache_dir
from router.http.access import ADMIN, Models, declare
from router.http.app_keys import DOWNLOADS, MANAGER, RELOADER, SHUTDOWN
from router.http.errors import HTTPError
from router.http.launch_args import load_overrides
from router.http.request import parse_json_object, read_body, resolve_model, servable_model
from router.http.sse import relay_events

DOWNLOAD_EVENTS = frozenset({"download_progress", "download_finished", "download_failed", "model_remove",
                             "models_reload"})


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
    if snap.external is not None:  # served at its `url`: never started here (core/external.py)
        out["state"], out["external"] = "external", snap.external
    if snap.kv is not None:
        out["kv"] = asdict(snap.kv)  # KV cache saves and restores: timings, slots, tokens, bytes
    if snap.argv is not None:
        out["argv"] = list(snap.argv)
    return out


@declare(ADMIN, Models.EVERY)
async def handle_status(request: web.Request) -> web.Response:
    manager = request.config_dict[MANAGER]
    return web.json_response({
        "catalogue": manager.config.source,
        "models_max": manager.config.router.models_max,
        "memory": manager.memory_view(),
        "swap_target": manager.scheduler.swap_target,
        "models": [model_status(s) for s in snapshots(manager, include_removed=True)],
    })


@declare(ADMIN, Models.EVERY)
async def handle_reload(request: web.Request) -> web.Response:
    res = await request.config_dict[RELOADER].reload("admin request")
    return web.json_response(res.to_json(), status=200 if res.ok else 400)


@declare(ADMIN, Models.EVERY)
async def handle_rescan(request: web.Request) -> web.Response:
    """Re-read the catalogue and its model sources; reports what was added,
    removed and kept (model discovery plugs its scan into the loader)."""
    res = await request.config_dict[RELOADER].reload("rescan")
    return web.json_response(res.to_json(), status=200 if res.ok else 400)


@declare(ADMIN, Models.NAMED)
async def handle_load(request: web.Request) -> web.Response:
    manager = request.config_dict[MANAGER]
    spec = servable_model(manager, request.match_info["name"])
    body = await read_body(request)
    extra = load_overrides(spec, parse_json_object(body) if body.strip() else {})
    if extra and manager.state(spec.name) is not State.STOPPED:
        raise HTTPError(409, f"model '{spec.name}' is running; unload it before loading it with other args",
                        code="model_running")
    manager.load(spec.name, extra)
    return web.json_response({"success": True, "model": spec.name, "state": manager.state(spec.name).value})


@declare(ADMIN, Models.NAMED)
async def handle_unload(request: web.Request) -> web.Response:
    manager = request.config_dict[MANAGER]
    spec = resolve_model(manager, request.match_info["name"])
    if manager.state(spec.name) is State.STOPPED:
        raise HTTPError(400, f"model '{spec.name}' is not running", code="model_not_running")
    manager.unload(spec.name)
    return web.json_response({"success": True, "model": spec.name, "state": manager.state(spec.name).value})


@declare(ADMIN, Models.EVERY)
async def handle_download(request: web.Request) -> web.Response:
    """`{"repo": "user/repo", "quant": "Q4_K_M"}` or `{"model": "user/repo:QUANT"}`: POST /models's
    download; the first one to finish becomes router.startup_model when the file names none."""
    data = parse_json_object(await read_body(request))
    ref, repo, quant = data.get("model"), data.get("repo"), data.get("quant")
    if ref is not None and (repo is not None or quant is not None):
        raise HTTPError(400, "give either 'model' (user/repo:QUANT) or 'repo' and 'quant'", code="invalid_request")
    if ref is None:
        if not isinstance(repo, str) or not repo.strip():
            raise HTTPError(400, "missing 'repo' (user/repo) or 'model' (user/repo:QUANT)", code="model_required")
        if quant is not None and not isinstance(quant, str):
            raise HTTPError(400, "'quant' must be a string such as Q4_K_M", code="invalid_model")
        ref = f"{repo.strip()}:{quant.strip()}" if quant else repo
    dl = request.config_dict[DOWNLOADS].start(ref, startup_model=True)
    return web.json_response({"success": True, "model": dl.name, "events": "/admin/download/events"})


@declare(ADMIN, Models.EVERY)
async def handle_downloads(request: web.Request) -> web.Response:
    return web.json_response({"downloads": request.config_dict[DOWNLOADS].views()})


@declare(ADMIN, Models.EVERY, holds=False)
async def handle_download_events(request: web.Request) -> web.StreamResponse:
    """/models/sse's download events, for a client holding the admin token but no API key."""
    def render(msg: dict[str, Any]) -> dict[str, Any] | None:
        if msg["event"] in DOWNLOAD_EVENTS or msg["data"].get("status") == "downloading":
            return {"model": msg["model"], "event": msg["event"], "data": msg["data"]}
        return None

    return await relay_events(request, request.config_dict[MANAGER].events, request.config_dict[SHUTDOWN], render)


def _entry_in_file(path: Path | None, name: str) -> bool:
    try:
        data = read_yaml(path.read_text(encoding="utf-8")) if path is not None else None
    except (OSError, UnicodeDecodeError, YAMLReadError):
        return False
    models = data.get("models") if isinstance(data, dict) else None
    return isinstance(models, dict) and name in map(str, models)


def _roots(config: Config, *, scanned: bool) -> list[Path]:
    """The model folders: all of them (where files may be deleted), or only those the
    router scans now (where a file would be found again)."""
    hf = [default_hf_cache_dir()] if config.sources.hf_cache or not scanned else []
    return [*hf, *(Path(d) for d in (*config.sources.dirs, *config.sources.import_dirs))]


@declare(ADMIN, Models.EVERY)
async def handle_delete_model(request: web.Request) -> web.Response:
    """Remove a model from the catalogue; `?files=true` also deletes its files, only inside
    the HF cache, sources.dirs and sources.import_dirs (docs/operations.md has the rules)."""
    manager, reloader = request.config_dict[MANAGER], request.config_dict[RELOADER]
    name = request.match_info["name"]
    files = request.query.get("files", "").lower() in ("1", "true", "yes")
    if await request.config_dict[DOWNLOADS].cancel(name):
        return web.json_response({"success": True, "model": name, "cancelled": True})
    spec = resolve_model(manager, name)
    in_file = await asyncio.to_thread(_entry_in_file, reloader.path, spec.name)
    removal = None
    if files:
        try:
            removal = plan_removal(spec, _roots(manager.config, scanned=False), files_in_use(manager.config, spec.name))
        except RemovalRefused as e:
            raise HTTPError(403, f"not deleting the files of '{spec.name}': {e}", code="path_not_allowed") from None
    elif not in_file:
        raise HTTPError(409, f"model '{spec.name}' was found in a model folder or the Hugging Face cache, not "
                        "written in the catalogue file: only deleting its files removes it (?files=true)",
                        code="model_discovered")
    elif spec.model_file and allowed_root(spec.model_file, _roots(manager.config, scanned=True)) is not None:
        raise HTTPError(409, f"the file of '{spec.name}' is in a folder the router scans, so the model would come "
                        "back at the next reload: delete its files too (?files=true)", code="model_in_source")
    out = await remove_model(manager, reloader, spec, removal, drop_entry=in_file)
    return web.json_response(out)


def add_admin_routes(admin: web.Application) -> None:
    """Into the /admin sub-application (http/access.py admin_app): paths below /admin."""
    r = admin.router
    r.add_get("/status", handle_status)
    r.add_post("/reload", handle_reload)
    r.add_post("/rescan", handle_rescan)
    r.add_post("/models/{name}/load", handle_load)
    r.add_post("/models/{name}/unload", handle_unload)
    r.add_delete("/models/{name:.+}", handle_delete_model)  # a name may hold '/'
    r.add_post("/download", handle_download)
    r.add_get("/downloads", handle_downloads)
    r.add_get("/download/events", handle_download_events)
    add_config_routes(admin)
