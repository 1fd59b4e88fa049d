"""OpenAI's stateful Responses API on any model (docs/conversations.md).

POST /v1/responses is relayed as every inference request is (api/inference.py),
with what llama-server does not do done here: `previous_response_id` is
expanded into the input the child receives (the conversation's earlier input
and output items, from the store: core/response_store.py; http/responses_chain.py),
fitted to the target's context (api/responses_fit.py), and the reply is kept
(`store`, true by default) under its id: its own input items and its output
items, taken from the whole reply, or from a stream's last event
(response.completed), read once the stream has been relayed.

GET /v1/responses/{id}, GET /v1/responses/{id}/input_items and DELETE
/v1/responses/{id} answer from the store. Everything stored belongs to the API
key that made it (a digest of the key): to another key it does not exist (404).
The admin lists how much each key keeps and deletes by key (/admin/responses).
Stored text is never logged.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from router.api.inference import STATEFUL_ROUTES, handle_inference
from router.api.peers import peer_route
from router.api.responses_fit import fit_to_model
from router.backend.launch import slot_save_dir
from router.core.response_store import NO_KEY, STORE_NAME, ResponseStore, Stored, owner_of
from router.http.access import ADMIN, INFERENCE, Models, declare
from router.http.app_keys import API_KEY, MANAGER
from router.http.errors import HTTPError
from router.http.request import pinned, read_body, read_request
from router.http.responses_chain import expand, input_items, with_ids

RESPONSES = web.AppKey("responses", ResponseStore)
# Responses being written: a next turn that names one waits for it (a client may send it
# as soon as it has read the last event, before the router has kept the reply).
PENDING: web.AppKey[dict[str, asyncio.Event]] = web.AppKey("responses_pending")
TRUNCATIONS = ("disabled", "auto")


def _owner(request: web.Request) -> str:
    key = request.get(API_KEY)
    return owner_of(key.key if key is not None else None)


def _store(request: web.Request) -> ResponseStore:
    return request.app[RESPONSES]


@declare(INFERENCE, Models.NAMED)
async def create_response(request: web.Request) -> web.StreamResponse:
    body = await read_body(request)
    name, data = await read_request(request, body)
    assert data is not None  # a JSON object: read_request refused anything else
    settings = request.app[MANAGER].config.router
    previous = data.pop("previous_response_id", None)
    store = data.pop("store", True)
    truncation = data.pop("truncation", None) or "disabled"
    if previous is not None and not isinstance(previous, str):
        raise HTTPError(400, "'previous_response_id' must be a string", code="invalid_value")
    if not isinstance(store, bool):
        raise HTTPError(400, "'store' must be true or false", code="invalid_value")
    if truncation not in TRUNCATIONS:
        raise HTTPError(400, "'truncation' must be \"auto\" or \"disabled\"", code="invalid_value")
    store = store and settings.responses_store
    target = pinned(request.app[MANAGER], name)  # the model it goes to (handle_inference pins the body)
    if (previous is None and not store) or await peer_route(request, target) is not None:
        # Nothing to expand, nothing to keep; or a peer's model (another server, which keeps its
        # own responses: OpenAI's does): the request goes as it came.
        return await handle_inference(request)
    owner = _owner(request)
    new = input_items(data.get("input", []))
    sent = new
    if previous is not None:
        pending = request.app[PENDING].get(previous)
        if pending is not None:
            await pending.wait()
        chain = await asyncio.to_thread(_store(request).chain, owner, previous)
        if chain is None:
            raise HTTPError(400, f"Previous response with id '{previous[:80]}' not found.",
                            code="previous_response_not_found")
        sent = expand(chain, new)
    if isinstance(target, str) and (previous is not None or truncation == "auto"):
        sent = await fit_to_model(request, target, data, sent, truncation)
    data["input"] = sent
    stats: dict[str, Any] = {"reply": []} if store else {}
    try:
        resp = await handle_inference(request, json.dumps(data).encode(), stats)
    except asyncio.CancelledError:
        # A client that closes its connection as soon as a stream has ended cancels this handler
        # (handler_cancellation): the reply it had in full is kept all the same.
        if store and stats.get("status") == 200:
            _keep_anyway(request, owner, previous, str(name), data, new, _reply_of(b"".join(stats["reply"]), True))
        raise
    if store and resp.status == 200:
        reply = _reply_of(b"".join(stats["reply"]), bool(stats.get("streamed")))
        keeping = _keep_anyway(request, owner, previous, str(name), data, new, reply)
        if keeping is not None:
            await asyncio.shield(keeping)  # stored even if the client leaves meanwhile
    return resp


_KEEPING: set[asyncio.Task[None]] = set()  # replies being stored, whether or not their client waits


def _keep_anyway(request: web.Request, owner: str, previous: str | None, model: str, data: dict[str, Any],
                 new: list[dict[str, Any]], reply: dict[str, Any] | None) -> asyncio.Task[None] | None:
    if reply is None:
        return None
    task = asyncio.create_task(_keep(request, owner, previous, model, data, new, reply))
    _KEEPING.add(task)
    task.add_done_callback(_KEEPING.discard)
    return task


def _reply_of(whole: bytes, streamed: bool) -> dict[str, Any] | None:
    """The response object of a child's reply: the body, or a stream's response.completed event."""
    try:
        if not streamed:
            reply = json.loads(whole)
        else:
            at = whole.rfind(b"event: response.completed")
            start = whole.find(b"data: ", at) if at >= 0 else -1
            if start < 0:
                return None
            end = whole.find(b"\n", start)
            reply = json.loads(whole[start + 6:end if end >= 0 else None]).get("response")
    except (ValueError, AttributeError):
        return None
    if not isinstance(reply, dict) or not isinstance(reply.get("id"), str) or not isinstance(reply.get("output"), list):
        return None
    return reply


async def _keep(request: web.Request, owner: str, previous: str | None, model: str, data: dict[str, Any],
                new: list[dict[str, Any]], reply: dict[str, Any]) -> None:
    settings = request.app[MANAGER].config.router
    response_id = reply["id"]
    reply = {**reply, "model": model, "previous_response_id": previous, "store": True,
             "instructions": data.get("instructions")}
    reply.pop("timings", None)
    item = Stored(response_id, previous, model, time.time(), with_ids(new), reply["output"], reply)
    pending = request.app[PENDING]
    pending[response_id] = done = asyncio.Event()
    try:
        await asyncio.to_thread(_store(request).put, owner, item, settings.responses_max_bytes,
                                settings.responses_max_age)
    finally:
        done.set()
        pending.pop(response_id, None)


async def _stored(request: web.Request) -> Stored:
    found = await asyncio.to_thread(_store(request).get, _owner(request), request.match_info["id"])
    if found is None:  # another key's is as absent as one that never was
        raise HTTPError(404, f"No response found with id '{request.match_info['id'][:80]}'.", "invalid_request_error",
                        "not_found")
    return found


@declare(INFERENCE, Models.NONE)
async def get_response(request: web.Request) -> web.Response:
    return web.json_response((await _stored(request)).response)


@declare(INFERENCE, Models.NONE)
async def delete_response(request: web.Request) -> web.Response:
    response_id = request.match_info["id"]
    if not await asyncio.to_thread(_store(request).delete, _owner(request), response_id):
        raise HTTPError(404, f"No response found with id '{response_id[:80]}'.", "invalid_request_error", "not_found")
    return web.json_response({"id": response_id, "object": "response", "deleted": True})


@declare(INFERENCE, Models.NONE)
async def list_input_items(request: web.Request) -> web.Response:
    """OpenAI's list: `limit` (1-100, 20), `order` (desc by default), `after` (an item id)."""
    items = (await _stored(request)).input
    q = request.query
    try:
        limit = int(q.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100 or q.get("order", "desc") not in ("asc", "desc"):
        raise HTTPError(400, "limit must be 1-100 and order asc or desc", code="invalid_value")
    if q.get("order", "desc") == "desc":
        items = items[::-1]
    after = q.get("after")
    if after:
        ids = [i.get("id") for i in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    page = items[:limit]
    return web.json_response({"object": "list", "data": page, "first_id": page[0].get("id") if page else None,
                              "last_id": page[-1].get("id") if page else None, "has_more": len(items) > limit})


def _key_names(request: web.Request) -> dict[str, str]:
    """Each owner digest of the keys in force, and how the catalogue names that key."""
    names = {NO_KEY: "none"}
    for i, entry in enumerate(request.config_dict[MANAGER].config.router.api_keys):
        secret = entry if isinstance(entry, str) else entry.key
        names[owner_of(secret)] = f"api_keys[{i}]"
    return names


@declare(ADMIN, Models.EVERY)
async def admin_list(request: web.Request) -> web.Response:
    """How many responses each key keeps, and their bytes; a key no longer in the catalogue shows
    by the start of its digest."""
    names = _key_names(request)
    rows = await asyncio.to_thread(request.config_dict[RESPONSES].owners)
    return web.json_response({"object": "list", "data": [
        {"key": names.get(owner, "removed key"), "owner": owner[:12], "responses": count, "bytes": size}
        for owner, count, size in rows]})


@declare(ADMIN, Models.EVERY)
async def admin_delete(request: web.Request) -> web.Response:
    """?key=api_keys[N] (or none), or ?owner=DIGEST (the start GET shows): delete all it keeps."""
    key, prefix = request.query.get("key"), request.query.get("owner")
    store = request.config_dict[RESPONSES]
    owners = [o for o, _, _ in await asyncio.to_thread(store.owners)]
    if key is not None:
        names = _key_names(request)
        chosen = [o for o in owners if names.get(o) == key]
    elif prefix and len(prefix) >= 6:
        chosen = [o for o in owners if o.startswith(prefix)]
    else:
        raise HTTPError(400, "name the key: ?key=api_keys[N] (or ?key=none), or ?owner=DIGEST (6+ characters)",
                        code="invalid_value")
    deleted = 0
    for owner in chosen:
        deleted += await asyncio.to_thread(store.delete_owner, owner)
    return web.json_response({"deleted": deleted})


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    path = slot_save_dir(app[MANAGER].config).parent / STORE_NAME
    app[RESPONSES] = ResponseStore(path)
    app[PENDING] = {}
    try:
        yield
    finally:
        await asyncio.to_thread(app[RESPONSES].close)


def add_response_routes(app: web.Application, admin: web.Application) -> None:
    """After the app's own lifetime context (the manager) is installed."""
    app.cleanup_ctx.append(_lifetime)
    for path in STATEFUL_ROUTES:
        app.router.add_post(path, create_response)
        app.router.add_get(path + "/{id}", get_response)
        app.router.add_delete(path + "/{id}", delete_response)
        app.router.add_get(path + "/{id}/input_items", list_input_items)
    admin.router.add_get("/responses", admin_list)
    admin.router.add_delete("/responses", admin_delete)
