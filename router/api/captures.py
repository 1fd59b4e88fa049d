"""GET /admin/captures: the requests router.capture_bytes keeps for debugging
(router/http/capture.py), newest first, and GET /admin/captures/{id}: one of
them whole (llama-swap's /api/captures/{id}). Admins only: a capture holds
prompts and replies."""

from __future__ import annotations

from aiohttp import web

from router.http.access import ADMIN, Models, declare
from router.http.app_keys import ROUTER_SETTINGS
from router.http.capture import CAPTURES
from router.http.errors import HTTPError


@declare(ADMIN, Models.EVERY)
async def handle_captures(request: web.Request) -> web.Response:
    store = request.config_dict[CAPTURES]
    limit = request.config_dict[ROUTER_SETTINGS]().capture_bytes
    return web.json_response({"object": "list", "capture_bytes": limit, "used_bytes": store.used,
                              "data": [c.summary() for c in store.newest_first()]})


@declare(ADMIN, Models.EVERY)
async def handle_capture(request: web.Request) -> web.Response:
    raw = request.match_info["id"]
    if not raw.isdigit():
        raise HTTPError(400, "a capture id is a number (GET /admin/captures lists them)", code="invalid_capture_id")
    capture = request.config_dict[CAPTURES].get(int(raw))
    if capture is None:
        raise HTTPError(404, f"capture {raw} not found (dropped to stay within router.capture_bytes, or never "
                        "taken)", code="capture_not_found")
    return web.json_response(capture.to_json())


def add_capture_routes(admin: web.Application) -> None:
    admin.router.add_get("/captures", handle_captures)
    admin.router.add_get("/captures/{id}", handle_capture)
