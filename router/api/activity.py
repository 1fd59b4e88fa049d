"""What each request did, for people: the last router.activity_size requests
(time, model, endpoint, status, tokens, time to first token, tokens/s, total
time, time waiting for a load or a slot). GET /api/activity gives them as
JSON, GET /api/activity/stream each new one as a server-sent event. Never
the prompt or the reply."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from router.core.events import EventBus
from router.http.access import READ, Models, declare
from router.http.sse import relay_events

# A reply's `usage` or llama-server's `timings`: OpenAI, Anthropic and Responses replies, streamed
# ones in their last events (an Anthropic stream's prompt count in its first, message_start).
_COLON = re.compile(rb"\s*:\s*")
_JSON = json.JSONDecoder()
TAIL_BYTES = 4096  # the first and last bytes of a reply kept for its counts


@dataclass(frozen=True)
class Counts:
    prompt: int | None
    completion: int | None
    per_second: float | None  # the child's own generation rate (llama-server's timings), None without them


def counts_in(head: bytes, tail: bytes) -> Counts | None:
    """The token counts of a reply from its first and last bytes: its usage (OpenAI's
    prompt/completion_tokens; Anthropic's and the Responses API's input/output_tokens),
    else llama-server's timings, which also give the generation rate (its
    predicted_per_second, else predicted_n over predicted_ms: generation only, the
    prompt's time left out)."""
    prompt, completion = _usage_counts(_object(tail, b'"usage"', last=True))
    if prompt is None:  # an Anthropic stream: its last usage has the output only
        prompt = _usage_counts(_object(head, b'"usage"', last=False))[0]
    timings = _object(tail, b'"timings"', last=True)
    predicted_n, predicted_ms = _int(timings.get("predicted_n")), timings.get("predicted_ms")
    prompt_n = _int(timings.get("prompt_n"))
    if prompt is None and prompt_n is not None:
        prompt = prompt_n + (_int(timings.get("cache_n")) or 0)
    if completion is None:
        completion = predicted_n
    rate = timings.get("predicted_per_second")  # the child's own figure, whatever its convention
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or rate <= 0:
        rate = None
        if predicted_n and isinstance(predicted_ms, (int, float)) and predicted_ms > 0:
            rate = predicted_n * 1000.0 / predicted_ms
    if prompt is None and completion is None and rate is None:
        return None
    return Counts(prompt, completion, rate)


def _object(data: bytes, key: bytes, last: bool) -> dict[str, Any]:
    """The last (or first) whole `"key": {...}` object in `data`, else {}. A key inside a
    string never matches: its quotes are escaped there."""
    at = data.rfind(key) if last else data.find(key)
    while at >= 0:
        colon = _COLON.match(data, at + len(key))
        start = colon.end() if colon else -1
        if data[start:start + 1] == b"{":
            try:
                obj, _ = _JSON.raw_decode(data[start:].decode("utf-8", "replace"))
            except ValueError:
                obj = None  # cut off by the head's end
            if isinstance(obj, dict):
                return obj
        at = data.rfind(key, 0, at) if last else data.find(key, at + 1)
    return {}


def _usage_counts(usage: dict[str, Any]) -> tuple[int | None, int | None]:
    """(prompt, completion) of a usage object; None where it has no such count."""
    if "prompt_tokens" in usage or "completion_tokens" in usage:  # OpenAI
        return _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
    prompt = _int(usage.get("input_tokens"))
    if prompt is not None:  # Anthropic counts cached prompt tokens apart; the Responses API includes them
        prompt += sum(_int(usage.get(k)) or 0 for k in ("cache_read_input_tokens", "cache_creation_input_tokens"))
    return prompt, _int(usage.get("output_tokens"))


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


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


class ActivityLog:
    def __init__(self, size: int, shutdown: asyncio.Event):
        self.rows: deque[Activity] = deque(maxlen=max(size, 1))
        self.events = EventBus()
        self.shutdown = shutdown

    def record(self, *, request_id: str, model: str, endpoint: str, status: int, started: float,
               first_byte: float | None, waited: float | None, head: bytes, tail: bytes, streamed: bool,
               now: float) -> Activity:
        """`head`, `tail`: the reply's first and last bytes; `streamed`: relayed as it came, so
        the time from its first byte to its end is the generation's (a whole reply's is nil)."""
        counts = counts_in(head, tail) if status == 200 else None
        prompt, completion = (counts.prompt, counts.completion) if counts else (None, None)
        rate = counts.per_second if counts else None
        if rate is None and streamed and completion and completion > 1 and first_byte is not None and now > first_byte:
            # No timings (Anthropic's stream, another backend's): the tokens after the first over the time
            # from the first to the end, as llama-server counts (its first token comes with the prompt).
            rate = (completion - 1) / (now - first_byte)
        row = Activity(time=time.time(), request_id=request_id, model=model, endpoint=endpoint, status=status,
                       prompt_tokens=prompt, completion_tokens=completion,
                       ttft_s=_round(first_byte - started if first_byte is not None else None),
                       tokens_per_s=_round(rate, 1), total_s=round(now - started, 4), queue_wait_s=_round(waited))
        self.rows.append(row)
        if self.events.listened:
            self.events.emit(model, "activity", asdict(row))
        return row

    @declare(READ, Models.EVERY)
    async def handle_list(self, request: web.Request) -> web.Response:
        """GET /api/activity: the rows kept, oldest first."""
        return web.json_response({"data": [asdict(r) for r in self.rows]})

    @declare(READ, Models.EVERY, holds=False)  # open as long as its page
    async def handle_stream(self, request: web.Request) -> web.StreamResponse:
        """GET /api/activity/stream: each new row as a server-sent event."""
        return await relay_events(request, self.events, self.shutdown, lambda msg: msg["data"])

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/activity", self.handle_list)
        app.router.add_get("/api/activity/stream", self.handle_stream)


def _round(v: float | None, digits: int = 4) -> float | None:
    return None if v is None else round(v, digits)
