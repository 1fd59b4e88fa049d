"""What each request did, for people: the last router.activity_size requests
(time, model, endpoint, status, tokens, time to first token, tokens/s, total
time, time waiting for a load or a slot). GET /api/activity gives them as
JSON, GET /api/activity/stream each new one as a server-sent event. Never
the prompt or the reply."""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from dataclasses import asdict, dataclass

from aiohttp import web

from router.core.events import EventBus
from router.http.sse import relay_events

# The usage (or llama-server's timings) at the end of a reply; streamed replies carry it in their last event.
_USAGE = re.compile(rb'"prompt_tokens":\s*(\d+).{0,200}?"completion_tokens":\s*(\d+)', re.S)
_TIMINGS = re.compile(rb'"cache_n":\s*(\d+).{0,80}?"prompt_n":\s*(\d+).{0,400}?"predicted_n":\s*(\d+)', re.S)
TAIL_BYTES = 4096


def tokens_in(tail: bytes) -> tuple[int, int] | None:
    """(prompt, completion) tokens from the end of a reply: its usage, else llama-server's timings."""
    found = list(_USAGE.finditer(tail))
    if found:
        return int(found[-1].group(1)), int(found[-1].group(2))
    timings = list(_TIMINGS.finditer(tail))
    if timings:
        cache_n, prompt_n, predicted_n = (int(x) for x in timings[-1].groups())
        return cache_n + prompt_n, predicted_n
    return None


@dataclass(frozen=True)
class Activity:
    time: float  # when it ended, seconds since the epoch
    request_id: str
    model: str
    endpoint: str
    status: int
    prompt_tokens: int | None
    completion_tokens: int | None
    ttft_s: float | None
    tokens_per_s: float | None
    total_s: float
    queue_wait_s: float | None

    @property
    def tokens(self) -> tuple[int, int] | None:
        if self.prompt_tokens is None or self.completion_tokens is None:
            return None
        return self.prompt_tokens, self.completion_tokens


class ActivityLog:
    def __init__(self, size: int, shutdown: asyncio.Event):
        self.rows: deque[Activity] = deque(maxlen=max(size, 1))
        self.events = EventBus()
        self.shutdown = shutdown

    def record(self, *, request_id: str, model: str, endpoint: str, status: int, started: float,
               first_byte: float | None, waited: float | None, tail: bytes, now: float) -> None:
        counts = tokens_in(tail) if status == 200 and tail else None
        prompt, completion = counts if counts else (None, None)
        generating = now - first_byte if first_byte is not None else None
        rate = completion / generating if completion and generating and generating > 0 else None
        row = Activity(time=time.time(), request_id=request_id, model=model, endpoint=endpoint, status=status,
                       prompt_tokens=prompt, completion_tokens=completion,
                       ttft_s=_round(first_byte - started if first_byte is not None else None),
                       tokens_per_s=_round(rate, 1), total_s=round(now - started, 4), queue_wait_s=_round(waited))
        self.rows.append(row)
        if self.events.listened:
            self.events.emit(model, "activity", asdict(row))

    async def handle_list(self, request: web.Request) -> web.Response:
        """GET /api/activity: the rows kept, oldest first."""
        return web.json_response({"data": [asdict(r) for r in self.rows]})

    async def handle_stream(self, request: web.Request) -> web.StreamResponse:
        """GET /api/activity/stream: each new row as a server-sent event."""
        return await relay_events(request, self.events, self.shutdown, lambda msg: msg["data"])

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/activity", self.handle_list)
        app.router.add_get("/api/activity/stream", self.handle_stream)


def _round(v: float | None, digits: int = 4) -> float | None:
    return None if v is None else round(v, digits)
