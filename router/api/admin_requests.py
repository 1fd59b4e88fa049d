"""The requests being served, for the operator: GET /admin/requests lists those
waiting for their model and those in flight (id, model, key, age, state, place
in the queue, tokens when known; never their text), DELETE /admin/requests/{id}
cancels one (router/http/requests_table.py; docs/scheduling.md)."""

from __future__ import annotations

from aiohttp import web

from router.api.metrics import METRICS
from router.http.access import ADMIN, Models, declare
from router.http.app_keys import MANAGER
from router.http.errors import HTTPError
from router.http.requests_table import REQUESTS


@declare(ADMIN, Models.EVERY)
async def handle_requests(request: web.Request) -> web.Response:
    table = request.config_dict[REQUESTS]
    return web.json_response({"requests": table.listing(request.config_dict[MANAGER])})


@declare(ADMIN, Models.EVERY)
async def handle_cancel(request: web.Request) -> web.Response:
    """Cancel a request: a waiting one leaves its queue, one in flight is cut off from its
    child (which stops generating); its client gets a 499 or a last error event."""
    rid = request.match_info["id"]
    table = request.config_dict[REQUESTS]
    entry = table.cancel(rid)
    if entry is None:
        raise HTTPError(404, f"no request {rid!r} is waiting or in flight", "invalid_request_error",
                        "request_not_found")
    request.config_dict[METRICS].cancelled.labels(entry.model, entry.state).inc()
    return web.json_response({"id": rid, "model": entry.model, "state": entry.state, "cancelled": True})


def add_request_routes(admin: web.Application) -> None:
    admin.router.add_get("/requests", handle_requests)
    admin.router.add_delete("/requests/{id}", handle_cancel)
