"""Swap feedback: tell a streaming chat client what it is waiting for.

With `router.notify_model_swap: true`, a streaming chat request whose model
is not ready gets its event stream at once. While the router swaps, it
sends ordinary `chat.completion.chunk`s whose delta carries only
`reasoning_content` ("unloading A", "loading B 40%", "B ready"), so any
OpenAI client shows them as thinking and then receives the real reply in
the same stream. A request that waits its turn (a queue, router/http/
requests_table.py) is told its place and an estimate ("position 3 in the
queue for B, about 12 s") whenever its place changes. If the load fails, or
the request's deadline passes, the stream ends with an error event, which
OpenAI clients raise as an API error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from aiohttp import web

from router.catalogue.config import ModelSpec
from router.core.events import EventBus
from router.core.manager import Lease, ModelManager, ModelUnavailable
from router.core.scheduler import State
from router.http.app_keys import state_or_none
from router.http.requests_table import REQUESTS, entry_of
from router.http.requests_table import acquire as acquire_lease
from router.http.sse import comment, event_stream, frame

log = logging.getLogger("router.swapnotify")

CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
KEEPALIVE_S = 10.0
POSITION_EVERY_S = 1.0  # how often a waiting request's place is looked at (told when it changed)
Relay = Callable[[Lease, web.StreamResponse], Awaitable[web.StreamResponse]]


class Releasable(Protocol):
    def release(self) -> None: ...


L = TypeVar("L", bound=Releasable)  # one host's Lease, the cluster front's RemoteLease


def wants_progress(manager: ModelManager, request: web.Request, spec: ModelSpec, body: bytes | None) -> bool:
    if not manager.config.swap_progress(spec) or request.path not in CHAT_PATHS:
        return False
    if manager.state(spec.name) is State.READY and not (manager.scheduler.waiting(spec.name)
                                                        or manager.scheduler.full(spec.name)):
        return False  # served at once (or after a short drain): nothing to tell
    return streamed(body)


def streamed(body: bytes | None) -> bool:
    """The request body asks for a streamed reply (`"stream": true`)."""
    try:
        return json.loads(body or b"{}").get("stream") is True
    except (ValueError, AttributeError):
        return False


class _Chunks:
    def __init__(self, resp: web.StreamResponse, model: str):
        self.resp, self.model = resp, model
        self.id = f"chatcmpl-swap-{uuid.uuid4().hex[:16]}"
        self.first = True

    async def say(self, text: str) -> None:
        delta = {"role": "assistant", "content": None} if self.first else {}
        delta["reasoning_content"] = text + "\n"
        self.first = False
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": int(time.time()),
                 "model": self.model, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        await self.resp.write(frame(chunk))

    async def error(self, message: str) -> None:
        err = {"error": {"message": message, "type": "unavailable_error", "code": 503}}
        await self.resp.write(frame(err))
        await self.resp.write_eof()


def place_text(request: web.Request, manager: ModelManager | None) -> str | None:
    """A waiting request's place in its model's queue, and the estimate when one is known
    (`manager`: None at the cluster front, whose table knows each request's host)."""
    entry, table = entry_of(request), state_or_none(request, REQUESTS)
    if entry is None or table is None:
        return None
    where = table.where(manager, entry)
    if where is None:
        return None
    position, estimate = where
    about = f", about {estimate:.0f} s" if estimate is not None else ""
    return f"position {position} in the queue for {entry.model}{about}"


async def with_progress(request: web.Request, manager: ModelManager, spec: ModelSpec, requested: str,
                        relay: Relay, stats: dict[str, Any] | None = None) -> web.StreamResponse:
    """`stats`: receives "status" 503 when the load fails (the stream began as a 200)."""
    def opening() -> list[str]:
        going = [v for v in manager.scheduler.evictions_for(spec.name) if manager.state(v) is not State.STOPPED]
        ready = manager.state(spec.name) is State.READY  # its slots are busy: it waits its turn
        return [*(f"unloading {name} to make room for {spec.name}" for name in going),
                f"waiting for {spec.name}" if ready else f"loading {spec.name}"]

    # Under the request's priority and deadline; a selector (`requested`) is chosen again there.
    return await stream_progress(request, manager.events, acquire_lease(request, spec, name=requested), spec.name,
                                 requested, opening, lambda: place_text(request, manager), relay, stats,
                                 lambda lease: f"{spec.name} ready")


async def stream_progress(request: web.Request, events: EventBus, acquiring: Awaitable[L], model: str,
                          requested: str, opening: Callable[[], list[str]], place: Callable[[], str | None],
                          relay: Callable[[L, web.StreamResponse], Awaitable[web.StreamResponse]],
                          stats: dict[str, Any] | None, ready: Callable[[L], str]) -> web.StreamResponse:
    """The event stream of a chat whose lease (`acquiring`) is awaited: `opening`'s lines, then
    the request's `place` whenever it changes, other models unloaded and `model`'s load
    progress from `events`, then `ready`'s line and the reply `relay` writes into the same
    stream; an error event when no lease comes. One host's and the cluster front's alike."""
    resp = event_stream()
    q = events.subscribe()
    acquire = asyncio.ensure_future(acquiring)
    try:
        await asyncio.sleep(0)  # the request joins its queue: its place goes in X-Queue-Position
        await resp.prepare(request)
        out = _Chunks(resp, requested)
        for text in opening():
            await out.say(text)
        last_pct, last_place, told = -1, None, time.monotonic()
        while not acquire.done():
            now_at = place()
            if now_at is not None and now_at != last_place:
                last_place = now_at
                await out.say(now_at)
                told = time.monotonic()
            getter = asyncio.ensure_future(q.get())
            done, _ = await asyncio.wait({acquire, getter}, timeout=POSITION_EVERY_S,
                                         return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                if not done and time.monotonic() - told >= KEEPALIVE_S:
                    await resp.write(comment("waiting for the model"))
                    told = time.monotonic()
                continue
            told = time.monotonic()
            msg = getter.result()
            status, host = msg["data"].get("status"), msg["data"].get("host")
            if msg["model"] != model and status == "unloaded":
                await out.say(f"{msg['model']} unloaded" + (f" on {host}" if host else ""))
            elif msg["model"] == model and status == "loading":
                progress = msg["data"].get("progress")
                pct = int(progress * 100) if isinstance(progress, (int, float)) else None
                if pct is not None and pct > last_pct:
                    last_pct = pct
                    await out.say(f"loading {model}: {pct}%")
        try:
            lease = acquire.result()
        except ModelUnavailable as e:
            if stats is not None:
                stats["status"] = 503
            await out.error(str(e))
            return resp
        await out.say(ready(lease))
    except BaseException:
        if not acquire.done():
            acquire.cancel()  # the client left: give up the place in the queue
        elif not acquire.cancelled() and acquire.exception() is None:
            acquire.result().release()
        raise
    finally:
        events.unsubscribe(q)
    return await relay(lease, resp)
