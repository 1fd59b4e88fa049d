"""How an Ollama request reaches a child: the model it names, resolved as
Ollama clients write names; a lease from the scheduler; the request sent to the
child's llama-server endpoint on a connection of its own; its reply read whole
or as a stream and handed to a translation (api/ollama_reply.py); the request
recorded (metrics, activity) and its keep_alive applied.

It goes the way an OpenAI request does in api/inference.py: a model the API key
may not use is a 404 like one that does not exist, a full queue is a 429 with
Retry-After, a model that cannot load a 503; the wait for the lease (a load, a
swap) is Ollama's load_duration. A selector or a model with fallbacks is leased
by its name (ModelManager.acquire tries the targets, the fallbacks); the model
that serves is named in the reply (api/ollama_served.py) and takes keep_alive.
The child's body is written by the rules of the model that serves (its vision, its
filters, its reply cap), as api/inference.py writes it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web

from router.api.metrics import METRICS
from router.api.ollama_models import name_candidates
from router.api.ollama_reply import ChildError, Reply, line
from router.api.ollama_served import Named, Served, selector_headers, served
from router.api.ollama_translate import now_iso
from router.catalogue.config import ModelSpec
from router.core.manager import Lease, ModelUnavailable
from router.core.scheduler import State
from router.http.api_keys import may_use
from router.http.app_keys import API_KEY, CONVERSATIONS, MANAGER, REQUEST_ID, UPSTREAM
from router.http.errors import HTTPError
from router.http.launch_args import check_args
from router.http.outcome import CLIENT_LEFT, Outcome
from router.http.request import parse_json_object, read_body, servable_model
from router.http.requests_table import acquire, serve_tracked, unavailable
from router.upstream.endpoint import endpoint
from router.upstream.pool import Reply as ChildReply
from router.upstream.pool import UpstreamError

log = logging.getLogger("router.ollama")

NDJSON = "application/x-ndjson"
TAIL_BYTES = 4096  # the child's reply's first and last bytes, where the activity log finds its token counts
_UPSTREAM_ERRORS = (UpstreamError, TimeoutError, ConnectionError)
_told: set[tuple[str, str]] = set()  # (model, option): launch options ignored, logged once each
Answer = Callable[[ChildReply, Served, dict[str, Any]], Awaitable[web.StreamResponse]]
Write = Callable[[ModelSpec], dict[str, Any]]  # the child's body, as a model's rules write it


class _ClientGone(Exception):
    """The client's connection closed while its reply was being written."""


async def read_json(request: web.Request) -> dict[str, Any]:
    return parse_json_object(await read_body(request))


def resolve(request: web.Request, requested: Any) -> ModelSpec:
    """The catalogue's entry of the model an Ollama client names (`named`)."""
    return named(request, requested).spec


def named(request: web.Request, requested: Any) -> Named:
    """The model an Ollama client names: as sent, without `hf.co/`, without `:latest`, or
    the one name that matches ignoring case; a selector's id; else 400/404 as any request
    (http/request.py)."""
    manager, key = request.app[MANAGER], request.get(API_KEY)
    if isinstance(requested, str) and requested:
        config = manager.config
        for name in name_candidates(requested):
            if name in config.selectors:
                return Named(servable_model(manager, name, key), name, requested)
            spec = config.resolve(name)
            if spec is None:
                folded = [s for s in config.models.values()
                          if any(n.lower() == name.lower() for n in (s.name, *s.aliases))]
                spec = folded[0] if len(folded) == 1 else None
            if spec is not None and may_use(key, spec):
                return Named(servable_model(manager, spec.name, key), spec.name, requested)
    spec = servable_model(manager, requested, key)  # a 400 or a 404, or router.active_model's
    assert isinstance(requested, str)  # servable_model took it
    return Named(spec, spec.name, requested)


async def lease(request: web.Request, named: Named, light: bool = False) -> Lease:
    """The child of the model named (a selector's target, a fallback), under the request's
    priority and deadline (http/queue_terms.py); a full queue is a 429, a deadline passed a
    503, both with Retry-After; a model whose file and fallbacks' files are gone a 404."""
    try:
        return await acquire(request, named.spec, light=light, name=named.asked)
    except ModelUnavailable as e:
        raise unavailable(e, request) from None


async def load_or_unload(request: web.Request, named: Named, keep: float | None,
                         reply: dict[str, Any]) -> web.Response:
    """A request with nothing to generate: load the model and wait until it is ready (a
    selector's: the target its strategy picks, else the next that can load), or with
    keep_alive 0 unload it (waited for, within router.stop_timeout), as Ollama does; `reply`
    is what to answer, with `done_reason` when it has `done`, its `model` the one loaded."""
    manager, spec = request.app[MANAGER], named.spec
    if keep == 0:  # a selector's: the target it would choose now (warm: the one loaded)
        manager.unload(spec.name, "keep_alive")
        await manager.wait_state(spec.name, {State.STOPPED}, manager.config.router.stop_timeout + 1)
        selector = named.asked if named.asked in manager.config.selectors else None
        who = Served(spec.name if selector else named.requested, selector_headers(selector))
    else:
        async with await lease(request, named, light=True) as held:
            who = served(held, named)
            if keep is not None:
                manager.keep_alive(held.model, keep)
    if "model" in reply:
        reply = {**reply, "model": who.model}
    if "done" in reply:
        reply = {**reply, "created_at": now_iso(), "done_reason": "unload" if keep == 0 else "load"}
    return web.json_response(reply, headers=who.headers)


async def serve(request: web.Request, named: Named, keep: float | None, launch: dict[str, Any], path: str,
                body: dict[str, Any], write: Write, started: float, answer: Answer) -> web.StreamResponse:
    """Lease the model named, send `body` to its child's `path` (`write`'s for another model
    that serves instead: a selector's other target, a fallback), let `answer` translate the
    reply; record the request (metrics, activity) and apply its keep_alive to the model that
    served it."""
    manager, spec = request.app[MANAGER], named.spec
    if not manager.config.router.models_autoload and manager.state(spec.name) is State.STOPPED:
        raise HTTPError(400, f"model '{spec.name}' is not loaded", code="model_not_loaded")
    _launch_options(request, spec, launch)
    request.app[CONVERSATIONS].remember_request(request, spec.name)
    stats: dict[str, Any] = {}
    outcome = Outcome(stats)
    try:
        with outcome:
            return outcome.served(await serve_tracked(  # listed in GET /admin/requests
                request, spec.name, lambda: _answer(request, named, keep, path, body, write, stats, answer), stats,
                ollama=True))
    finally:
        request.app[METRICS].observe(stats.get("served_by", spec.name), request.path, outcome.status, started,
                                     stats.get("first_byte"), stats.get("waited"), stats.get("head", b""),
                                     stats.get("tail", b""), stats.get("streamed", False), request.get(REQUEST_ID, ""))
        if keep == 0 and "served_model" in stats:
            manager.unload(stats["served_model"], "keep_alive")  # once idle, after this reply


def _launch_options(request: web.Request, spec: ModelSpec, launch: dict[str, Any]) -> None:
    """`num_ctx` loads a stopped model with `--ctx-size N` when its allow_args lists the flag
    (the per-request launch whitelist, http/launch_args.py); a running model keeps its
    context. The other launch options are the catalogue's: ignored, and logged once."""
    manager = request.app[MANAGER]
    launch = dict(launch)
    ctx = launch.pop("num_ctx", None)
    flag = next((f for f in ("--ctx-size", "-c") if f in spec.allow_args), None)
    if ctx is not None:
        if isinstance(ctx, bool) or not isinstance(ctx, int) or ctx <= 0:
            raise HTTPError(400, "option 'num_ctx' must be a positive integer", code="invalid_request")
        if flag is None:
            launch["num_ctx"] = ctx
        elif manager.state(spec.name) is State.STOPPED:
            manager.load(spec.name, check_args(spec, [flag, str(ctx)]))
    for option in launch:
        if (spec.name, option) not in _told:
            _told.add((spec.name, option))
            log.info("[%s] option %s ignored: a model's launch settings come from the catalogue%s", spec.name,
                     option, " (num_ctx applies when its allow_args lists --ctx-size)" if option == "num_ctx" else "")


async def _answer(request: web.Request, named: Named, keep: float | None, path: str, body: dict[str, Any],
                  write: Write, stats: dict[str, Any], answer: Answer) -> web.StreamResponse:
    async with _child_reply(request, named, keep, path, body, write, stats) as (up, who):
        return await answer(up, who, stats)


@asynccontextmanager
async def _child_reply(request: web.Request, named: Named, keep: float | None, path: str, body: dict[str, Any],
                       write: Write, stats: dict[str, Any]) -> AsyncIterator[tuple[ChildReply, Served]]:
    """The child's reply to `body` (or `write`'s for another model that serves), under a lease
    of the model named (held until the reply is read), and who served it; `keep` (keep_alive)
    is that model's from now on."""
    manager = request.app[MANAGER]
    waiting = time.perf_counter()
    held = await lease(request, named)
    stats["waited"] = time.perf_counter() - waiting
    stats["served_model"] = held.model  # keep_alive 0 unloads it
    if held.stands_in:
        stats["served_by"] = held.model  # the metrics' model: the one that served (as api/inference.py)
    if keep is not None and keep != 0:
        manager.keep_alive(held.model, keep)
    r = manager.config.router
    headers = {"Content-Type": "application/json"}
    if request.get(REQUEST_ID):
        headers["X-Request-Id"] = request[REQUEST_ID]
    async with held:
        if held.model != named.spec.name and (other := manager.config.models.get(held.model)) is not None:
            body = write(other)  # its own rules (within the lease: a 400 here releases it)
        where = endpoint(held.child.base_url)  # a child, or a `url` model: its TLS, root path and key
        headers.update(held.child.plan.headers)
        try:
            up = await request.app[UPSTREAM].request(
                "POST", where.host, where.port, where.target(path), headers,
                json.dumps(body, separators=(",", ":")).encode(),
                connect_timeout=r.connect_timeout, read_timeout=r.read_timeout, keep_alive=False, tls=where.tls)
        except _UPSTREAM_ERRORS as e:
            raise _failed(e) from None
        async with up:
            yield up, served(held, named)


def _failed(e: BaseException) -> HTTPError:
    return HTTPError(502, f"upstream model server failed: {type(e).__name__}: {e}".rstrip(": "), code="upstream_error")


async def read_whole(up: ChildReply, stats: dict[str, Any]) -> dict[str, Any]:
    """The child's whole reply as JSON; its error (status and message) as the router's."""
    try:
        data = await up.read()
    except _UPSTREAM_ERRORS as e:
        raise _failed(e) from None
    stats["first_byte"] = time.perf_counter()
    stats["head"], stats["tail"] = data[:TAIL_BYTES], data[-TAIL_BYTES:]
    try:
        reply = json.loads(data)
    except ValueError:
        reply = None
    if up.status != 200 or not isinstance(reply, dict):
        err = reply.get("error") if isinstance(reply, dict) else None
        message = err.get("message") if isinstance(err, dict) else (err or data.decode("utf-8", "replace")[:500])
        message = str(message or f"HTTP {up.status}").strip()
        if up.status == 501:  # llama-server's "not supported" (embeddings, infill...): the request's, not a failure
            raise HTTPError(400, f"the model does not support this request: {message}", code="not_supported")
        raise HTTPError(up.status if up.status >= 400 else 502, message, code="upstream_error")
    return reply


async def whole(up: ChildReply, reply: Reply, headers: dict[str, str], started: float,
                stats: dict[str, Any]) -> web.Response:
    data = await read_whole(up, stats)
    return web.json_response(reply.whole(data, time.perf_counter() - started, stats.get("waited", 0.0)),
                             headers=headers)


async def stream(request: web.Request, up: ChildReply, reply: Reply, headers: dict[str, str], started: float,
                 stats: dict[str, Any]) -> web.StreamResponse:
    """The child's events, each as Ollama's NDJSON lines as it arrives, then the last object;
    a failure once the reply began is one `{"error": ...}` line, as Ollama ends a stream."""
    if up.status != 200 or not up.headers.get("Content-Type", "").startswith("text/event-stream"):
        await read_whole(up, stats)  # raises the child's error
        raise HTTPError(502, "the model server did not stream its reply", code="upstream_error")
    resp = web.StreamResponse(headers={"Content-Type": NDJSON, **headers})
    await resp.prepare(request)
    stats["streamed"] = True
    head = tail = pending = b""
    try:
        async for chunk in up.iter_any():
            if not tail:
                stats["first_byte"] = time.perf_counter()
            if len(head) < TAIL_BYTES:
                head = stats["head"] = (head + chunk)[:TAIL_BYTES]
            tail = stats["tail"] = (tail + chunk)[-TAIL_BYTES:]
            *lines, pending = (pending + chunk).split(b"\n")
            out = b""
            for ln in lines:
                if ln.startswith(b"data: ") and ln[6:].strip() != b"[DONE]":
                    out += reply.raw_event(ln[6:])
                elif ln.startswith(b"error:"):
                    reply.event({"error": json.loads(ln[6:])})  # raises ChildError
            if out:
                await _write(resp, out)
        await _write(resp, reply.end(time.perf_counter() - started, stats.get("waited", 0.0)))
    except _ClientGone:
        up.close()  # the child stops generating
        stats["status"] = CLIENT_LEFT
        return resp
    except (ChildError, ValueError, *_UPSTREAM_ERRORS) as e:
        why = str(e) if isinstance(e, ChildError) else f"upstream model server failed mid-stream: {e}"
        stats["status"] = 500 if isinstance(e, ChildError) else 502
        log.warning("%s: %s", request.path, why)
        try:
            await _write(resp, line({"error": why}))
        except _ClientGone:
            return resp
    try:
        await resp.write_eof()
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        pass
    return resp


async def _write(resp: web.StreamResponse, data: bytes) -> None:
    try:
        await resp.write(data)
    except (ConnectionResetError, aiohttp.ClientConnectionResetError) as e:
        raise _ClientGone() from e
