"""The requests the cluster front is serving, as on one host (router/http/requests_table.py):
GET /admin/requests lists those waiting and in flight with the host each was placed on,
DELETE /admin/requests/{id} cancels one, and each reply says where it joined its host's
queue (X-Queue-Position). Never a request's text.

The front keeps its own table: a request is listed from its arrival, its host once placement
chose one. A waiting request's place is its host's (the agent's report, twice a second,
carries the place of each listed request waiting there); a cancel abandons its call on the
agent (Host.call: Ray cancels it, the host's queue drops its ticket), or cuts the relay of
one in flight (the child stops generating); its client gets a 499 or a last error event.
"""

from __future__ import annotations

from aiohttp import web

from router.cluster.front import ClusterManager
from router.cluster.metrics import ClusterMetrics
from router.core.manager import ModelManager
from router.http.access import ADMIN, Models, declare
from router.http.errors import HTTPError
from router.http.requests_table import REQUESTS, RequestsTable, Tracked, on_prepare


class FrontRequests(RequestsTable):
    """The front's table: each request's host, and its place there from the agents' reports."""

    hosts = True

    def __init__(self, cluster: ClusterManager):
        super().__init__()
        self.cluster = cluster

    def where(self, manager: ModelManager | None, entry: Tracked) -> tuple[int, float | None] | None:
        """A waiting request's place in its host's queue (1: next; no estimate); None when not
        waiting there, or not yet reported."""
        if entry.state != "waiting" or entry.host is None:
            return None
        for host in list(self.cluster.hosts.values()):
            if host.name == entry.host:
                place = host.report.get("places", {}).get(entry.id)
                return (place, None) if place else None
        return None


def install(app: web.Application, cluster: ClusterManager) -> FrontRequests:
    table = app[REQUESTS] = FrontRequests(cluster)
    app.on_response_prepare.append(on_prepare)  # X-Queue-Position; a cancel ends a reply that began
    return table


def add_request_routes(admin: web.Application, table: FrontRequests, metrics: ClusterMetrics) -> None:
    """GET /admin/requests and DELETE /admin/requests/{id}, into the /admin sub-application."""
    @declare(ADMIN, Models.EVERY)
    async def listing(request: web.Request) -> web.Response:
        return web.json_response({"requests": table.listing(None)})

    @declare(ADMIN, Models.EVERY)
    async def cancel(request: web.Request) -> web.Response:
        rid = request.match_info["id"]
        entry = table.cancel(rid)
        if entry is None:
            raise HTTPError(404, f"no request {rid!r} is waiting or in flight", "invalid_request_error",
                            "request_not_found")
        metrics.cancelled.labels(entry.model, entry.state).inc()
        return web.json_response({"id": rid, "model": entry.model, "state": entry.state, "host": entry.host,
                                  "cancelled": True})

    admin.router.add_get("/requests", listing)
    admin.router.add_delete("/requests/{id}", cancel)
