"""Each model's output in cluster mode: the lines its agents keep, from every host.

`GET /logs/{model}` gathers the recent lines of `model` from every host (each
line led by `[host]`; `?format=json` keeps them per host), and
`GET /logs/stream/{model}` sends those, then each new line as the agents
report it (asked every POLL_S: the lines cross Ray as small lists, never a
stream). As on one host, a model's lines outlive its child, and the name only
selects a ring in the agents' memory.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from router.cluster.front import ClusterManager
from router.cluster.host import Host, awaitable
from router.http.access import INFERENCE, Models, declare
from router.http.app_keys import API_KEY, SHUTDOWN
from router.http.request import resolve_name
from router.http.sse import comment, event_stream, frame

POLL_S = 0.5
CALL_TIMEOUT_S = 5.0


async def _lines_of(host: Host, model: str, mark: int | None) -> dict[str, Any]:
    """{"total", "lines"} of `model` on `host` after `mark` (all kept with None); empty on a failed call."""
    try:
        return await asyncio.wait_for(awaitable(host.handle.logs.remote(model, mark)), CALL_TIMEOUT_S)
    except Exception:  # a host leaving or not answering just has no lines this time
        return {"total": mark or 0, "lines": []}


async def _gather(cluster: ClusterManager, model: str, marks: dict[str, int] | None = None) -> dict[str, Any]:
    hosts = [h for h in cluster.hosts.values() if h.incarnation is not None]
    got = await asyncio.gather(*(_lines_of(h, model, (marks or {}).get(h.name)) for h in hosts))
    return {h.name: g for h, g in zip(hosts, got, strict=True)}


def add_cluster_log_routes(app: web.Application, cluster: ClusterManager) -> None:
    @declare(INFERENCE, Models.NAMED)
    async def logs(request: web.Request) -> web.Response:
        spec = resolve_name(cluster.config, request.match_info["model"], request.get(API_KEY))
        by_host = await _gather(cluster, spec.name)
        if request.query.get("format") == "json":
            return web.json_response({"model": spec.name, "hosts": {h: g["lines"] for h, g in by_host.items()},
                                      "lines": [f"[{h}] {line}" for h, g in by_host.items() for line in g["lines"]]})
        return web.Response(text="".join(f"[{h}] {line}\n" for h, g in by_host.items() for line in g["lines"]))

    @declare(INFERENCE, Models.NAMED, holds=False)  # open as long as its page
    async def stream(request: web.Request) -> web.StreamResponse:
        spec = resolve_name(cluster.config, request.match_info["model"], request.get(API_KEY))
        shutdown = request.app[SHUTDOWN]
        resp = event_stream()
        await resp.prepare(request)
        by_host = await _gather(cluster, spec.name)
        marks = {h: g["total"] for h, g in by_host.items()}
        try:
            if request.query.get("tail") != "0":
                for h, g in by_host.items():
                    for line in g["lines"]:
                        await resp.write(frame({"model": spec.name, "line": line, "host": h}))
            idle = 0.0
            while not shutdown.is_set():
                await asyncio.sleep(POLL_S)
                new = await _gather(cluster, spec.name, marks)
                sent = False
                for h, g in new.items():
                    marks[h] = g["total"]
                    for line in g["lines"]:
                        await resp.write(frame({"model": spec.name, "line": line, "host": h}))
                        sent = True
                idle = 0.0 if sent else idle + POLL_S
                if idle >= 15:
                    await resp.write(comment("keep-alive"))
                    idle = 0.0
        except (ConnectionError, asyncio.CancelledError):
            pass
        return resp

    app.router.add_get("/logs/{model}", logs)
    app.router.add_get("/logs/stream/{model}", stream)
