"""The operator's API in cluster mode: what /admin offers on one host and makes
sense across hosts. An /admin sub-application behind the same middleware as on
one host (router.admin_token, or an API key with the admin role: http/access.py).

- GET /admin/status: the catalogue file and every host's last report;
- POST /admin/reload, /admin/rescan: the catalogue read again (its sources
  too) and handed to every agent, answered with what changed;
- POST /admin/models/{name}/load, /unload: as /models/load and /models/unload.
- GET /admin/requests, DELETE /admin/requests/{id}: the front's own requests,
  listed with their host and cancelled (cluster/requests.py).

Downloads, deletes and the config API stay single-host (docs/cluster.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web

from router.catalogue.config import Config, ConfigError, ModelSpec
from router.cluster.front import ClusterManager
from router.core.manager import ModelUnavailable
from router.core.reload import ReloadResult, diff
from router.http.access import ADMIN, Models, declare
from router.http.errors import HTTPError
from router.http.launch_args import load_overrides
from router.http.request import parse_json_object, read_body, resolve_name

log = logging.getLogger("router.cluster")

Loader = Callable[[], Config]


async def reload_catalogue(cluster: ClusterManager, loader: Loader | None, why: str) -> ReloadResult:
    """Read the catalogue again and hand it to every host; an invalid one changes nothing."""
    if loader is None:
        return ReloadResult(ok=False, error="the front was started without a catalogue file")
    try:
        new = await asyncio.get_running_loop().run_in_executor(None, loader)
    except ConfigError as e:
        log.error("reload (%s) failed; keeping the running catalogue: %s", why, e)
        return ReloadResult(ok=False, error=str(e))
    res = diff(cluster.config, new)
    await cluster.set_config(new)
    return res


async def load_model(cluster: ClusterManager, spec: ModelSpec, extra: tuple[str, ...]) -> str:
    """Start `spec` where placement puts it (POST /models/load and /admin/...): the host's name."""
    try:
        return await cluster.load(spec.name, extra)
    except ModelUnavailable as e:
        raise HTTPError(503, str(e), "unavailable_error", "model_unavailable") from None


async def unload_model(cluster: ClusterManager, spec: ModelSpec) -> list[str]:
    """Stop `spec` once idle on every host that holds it: their names; 400 when none does."""
    hosts = await cluster.unload(spec.name)
    if not hosts:
        raise HTTPError(400, f"model '{spec.name}' is not running", code="model_not_running")
    return hosts


def add_cluster_admin_routes(admin: web.Application, cluster: ClusterManager, loader: Loader | None) -> None:
    """Into the /admin sub-application (http/access.py admin_app): paths below /admin."""
    @declare(ADMIN, Models.EVERY)
    async def status(request: web.Request) -> web.Response:
        hosts = [{"host": h.name, **{k: v for k, v in h.report.items() if k != "name"}}
                 for h in cluster.hosts.values()]
        return web.json_response({"catalogue": cluster.config.source, "placement": cluster.config.cluster.placement,
                                  "hosts": hosts})

    @declare(ADMIN, Models.EVERY)
    async def reload(request: web.Request) -> web.Response:
        why = "rescan" if request.path.endswith("rescan") else "admin request"
        res = await reload_catalogue(cluster, loader, why)
        return web.json_response(res.to_json(), status=200 if res.ok else 400)

    @declare(ADMIN, Models.NAMED)
    async def load(request: web.Request) -> web.Response:
        spec = resolve_name(cluster.config, request.match_info["name"])
        body = await read_body(request, cluster.config.router)
        host = await load_model(cluster, spec, load_overrides(spec, parse_json_object(body) if body.strip() else {}))
        return web.json_response({"success": True, "model": spec.name, "host": host})

    @declare(ADMIN, Models.NAMED)
    async def unload(request: web.Request) -> web.Response:
        spec = resolve_name(cluster.config, request.match_info["name"])
        hosts = await unload_model(cluster, spec)
        return web.json_response({"success": True, "model": spec.name, "hosts": hosts})

    r = admin.router
    r.add_get("/status", status)
    r.add_post("/reload", reload)
    r.add_post("/rescan", reload)
    r.add_post("/models/{name}/load", load)
    r.add_post("/models/{name}/unload", unload)
