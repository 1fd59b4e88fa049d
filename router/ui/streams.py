"""Resumable streams: the WebUI's /v1/stream routes, sent to the right child.

llama-server keeps a replayable buffer of each generation tagged with an
`X-Conversation-Id` header; the WebUI reattaches to it after a reload
(GET /v1/stream, POST /v1/streams/lookup) and stops it with the Stop button
(DELETE /v1/stream). Only the child that generated knows the conversation,
so the router remembers which model each conversation id last went to, as
llama-server's own router does.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from router.core.scheduler import State
from router.http.access import INFERENCE, Models, declare
from router.http.app_keys import CONVERSATIONS, MANAGER, UPSTREAM
from router.http.errors import HTTPError
from router.http.proxy import forward
from router.http.request import parse_json_object, read_body
from router.upstream.client import ChildClient
from router.upstream.pool import UpstreamError

log = logging.getLogger("router.streams")
LOOKUP_TIMEOUT_S = 5.0

def _ready_child(request: web.Request, conv_id: str) -> Any:
    manager = request.app[MANAGER]
    model = request.app[CONVERSATIONS].owner(conv_id)
    if model is None:
        return None, None
    if manager.state(model) is State.READY:
        return model, manager.children.get(model)
    return model, None


async def _to_child(request: web.Request, child: Any, body: bytes | None) -> web.StreamResponse:
    r = request.app[MANAGER].config.router
    return await forward(request, request.app[UPSTREAM], child.base_url, request.path, body,
                         connect_timeout=r.connect_timeout, read_timeout=r.read_timeout)


def _conv_id(request: web.Request) -> str:
    conv_id = request.query.get("conv_id", "")
    if not conv_id:
        raise HTTPError(400, "missing conversation id (?conv_id=)", code="conv_id_required")
    return conv_id


@declare(INFERENCE, Models.NONE)  # a conversation id names the stream, not a model
async def handle_stream_get(request: web.Request) -> web.StreamResponse:
    conv_id = _conv_id(request)
    model, child = _ready_child(request, conv_id)
    if child is None:
        if model is not None and request.app[MANAGER].state(model) is State.STARTING:
            raise HTTPError(503, "stream owner model is loading, retry later", code="model_loading")
        raise HTTPError(404, "stream not found or expired", code="stream_not_found")
    return await _to_child(request, child, None)


@declare(INFERENCE, Models.NONE)
async def handle_stream_delete(request: web.Request) -> web.StreamResponse:
    conv_id = _conv_id(request)
    _, child = _ready_child(request, conv_id)
    request.app[CONVERSATIONS].forget(conv_id)
    if child is None:
        return web.Response(status=204)
    return await _to_child(request, child, None)


@declare(INFERENCE, Models.NONE)
async def handle_streams_lookup(request: web.Request) -> web.Response:
    """Ask each owning child about its own conversations only, and merge the answers."""
    try:
        ids = parse_json_object(await read_body(request)).get("conversation_ids")
    except HTTPError:
        return web.json_response([])
    per_child: dict[str, tuple[Any, list[str]]] = {}
    for cid in ids if isinstance(ids, list) else []:
        if isinstance(cid, str) and cid:
            model, child = _ready_child(request, cid)
            if child is not None:
                per_child.setdefault(model, (child, []))[1].append(cid)
    merged: list[Any] = []
    client = request.app[MANAGER].client
    for model, (child, owned) in per_child.items():
        data = await _child_lookup(client, child.base_url, owned)
        if data is None:
            log.info("[%s] did not answer a stream lookup", model)
        elif isinstance(data, list):
            merged.extend(e for e in data if isinstance(e, dict))
    return web.json_response(merged)


async def _child_lookup(client: ChildClient, base_url: str, owned: list[str]) -> Any:
    """One child's answer, or None (it failed or took over LOOKUP_TIMEOUT_S)."""
    try:
        answer = await client.post_json(base_url, "/v1/streams/lookup", {"conversation_ids": owned},
                                        timeout=LOOKUP_TIMEOUT_S)
        return answer.json() if answer.status == 200 else []
    except (TimeoutError, UpstreamError):
        return None


def add_stream_routes(app: web.Application) -> None:
    app.router.add_get("/v1/stream", handle_stream_get)
    app.router.add_delete("/v1/stream", handle_stream_delete)
    app.router.add_post("/v1/streams/lookup", handle_streams_lookup)
