"""Server-sent event streams fed from an EventBus queue (models, logs)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable, Iterable

from aiohttp import web

KEEPALIVE_S = 15.0


def sse_data(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


async def relay(request: web.Request, queue: "asyncio.Queue[dict[str, Any]]", shutdown: asyncio.Event,
                render: Callable[[dict[str, Any]], dict[str, Any] | None],
                backlog: Iterable[dict[str, Any]] = ()) -> web.StreamResponse:
    """Write `backlog`, then each queued event `render` keeps, until shutdown or the client leaves.

    A comment line every KEEPALIVE_S keeps proxies from closing an idle stream.
    The caller subscribed `queue` and unsubscribes it afterwards.
    """
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    try:
        await resp.prepare(request)
        for payload in backlog:
            await resp.write(sse_data(payload))
        while not shutdown.is_set():
            getter = asyncio.ensure_future(queue.get())
            closing = asyncio.ensure_future(shutdown.wait())
            done, _ = await asyncio.wait({getter, closing}, timeout=KEEPALIVE_S,
                                         return_when=asyncio.FIRST_COMPLETED)
            closing.cancel()
            if getter not in done:
                getter.cancel()
                if not shutdown.is_set():
                    await resp.write(b": keep-alive\n\n")
                continue
            payload = render(getter.result())
            if payload is not None:
                await resp.write(sse_data(payload))
    except (ConnectionError, asyncio.CancelledError):
        pass
    return resp
