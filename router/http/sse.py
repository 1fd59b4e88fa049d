"""The one server-sent-events writer: frames, event-stream responses, and
relaying an EventBus (model states, log lines) to a client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from router.core.events import EventBus

KEEPALIVE_S = 15.0
HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def frame(payload: dict[str, Any]) -> bytes:
    """One `data:` event holding `payload` as JSON."""
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def comment(text: str) -> bytes:
    """A comment line: ignored by clients, keeps proxies from closing an idle stream."""
    return b": " + text.encode() + b"\n\n"


def event_stream() -> web.StreamResponse:
    """A response for server-sent events; the caller prepares it."""
    return web.StreamResponse(headers=HEADERS)


async def relay_events(request: web.Request, bus: EventBus, shutdown: asyncio.Event,
                       render: Callable[[dict[str, Any]], dict[str, Any] | None],
                       backlog: Iterable[dict[str, Any]] = ()) -> web.StreamResponse:
    """Write `backlog`, then each event of `bus` that `render` keeps, until
    shutdown or the client leaves. Subscribes before the backlog is written,
    so no event falls in between."""
    queue = bus.subscribe()
    resp = event_stream()
    waits: tuple[asyncio.Future[Any], ...] = ()
    try:
        await resp.prepare(request)
        for payload in backlog:
            await resp.write(frame(payload))
        while not shutdown.is_set():
            getter = asyncio.ensure_future(queue.get())
            closing = asyncio.ensure_future(shutdown.wait())
            waits = (getter, closing)
            done, _ = await asyncio.wait({getter, closing}, timeout=KEEPALIVE_S,
                                         return_when=asyncio.FIRST_COMPLETED)
            closing.cancel()
            if getter not in done:
                getter.cancel()
                if not shutdown.is_set():
                    await resp.write(comment("keep-alive"))
                continue
            rendered = render(getter.result())
            if rendered is not None:
                await resp.write(frame(rendered))
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        for waiting in waits:  # a client that left cancels us inside asyncio.wait
            waiting.cancel()
        bus.unsubscribe(queue)
    return resp
