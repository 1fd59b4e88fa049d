"""Each model's own output over HTTP: the recent lines, or a live stream.

The lines come from the manager's per-model ring (router.log_lines long),
which outlives the child, so the last words of a crashed model stay
readable. The model name only selects a ring in memory; it never reaches
the filesystem.
"""

from __future__ import annotations

from aiohttp import web

from router.http.access import INFERENCE, Models, declare
from router.http.app_keys import API_KEY, MANAGER, SHUTDOWN
from router.http.request import resolve_model
from router.http.sse import relay_events


def _lines(request: web.Request) -> tuple[str, list[str]]:
    manager = request.app[MANAGER]
    spec = resolve_model(manager, request.match_info["model"], request.get(API_KEY))
    return spec.name, list(manager.logs.get(spec.name, ()))


@declare(INFERENCE, Models.NAMED)
async def handle_logs(request: web.Request) -> web.Response:
    """Plain text by default (for curl); JSON with ?format=json."""
    name, lines = _lines(request)
    if request.query.get("format") == "json":
        return web.json_response({"model": name, "lines": lines})
    return web.Response(text="".join(line + "\n" for line in lines))


@declare(INFERENCE, Models.NAMED, holds=False)  # open as long as its page
async def handle_logs_stream(request: web.Request) -> web.StreamResponse:
    """SSE: the lines kept so far (unless ?tail=0), then each new line as it comes."""
    manager = request.app[MANAGER]
    name, lines = _lines(request)
    backlog = [] if request.query.get("tail") == "0" else [{"model": name, "line": line} for line in lines]
    return await relay_events(
        request, manager.log_events, request.app[SHUTDOWN],
        lambda msg: {"model": name, "line": msg["data"]["line"]} if msg["model"] == name else None, backlog)


def add_log_routes(app: web.Application) -> None:
    app.router.add_get("/logs/{model}", handle_logs)
    app.router.add_get("/logs/stream/{model}", handle_logs_stream)
