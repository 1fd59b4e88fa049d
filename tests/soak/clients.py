"""The soak's load: many concurrent clients, each a loop of requests of mixed
kinds, each request with its own timeout, each reply judged on its own.

A reply is one of:
- `complete`: a whole answer (a JSON completion; a stream that ended with
  `data: [DONE]` or llama.cpp's final `"stop": true` event);
- `error`: a well-formed error (a JSON `{"error": {...}}` body, or an SSE
  `{"error": {...}}` event that ends the stream);
- `cancelled`: the client closed the connection mid-stream on purpose, after a
  well-formed first event;
- `hung`: no reply within the request's timeout;
- `broken`: the connection failed under the client (reset, truncated body);
- `malformed`: a reply that is none of the above (a stream that stopped
  without its end, a body that is not JSON, a 200 with no answer in it).
The last three break the soak's first invariant.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "red", "birds",
         "sing", "about", "rivers", "mountains", "coffee", "tables", "windows", "numbers", "music", "blue", "skies")
# (kind, weight): what a client sends, picked at random for each request.
KINDS = (
    ("chat", 26), ("chat_stream", 22), ("completion", 8), ("completion_stream", 6), ("v1_completion", 5),
    ("cancel_stream", 9), ("slow_stream", 4), ("unknown_model", 5), ("bad_name", 2), ("bad_json", 4),
    ("wrong_types", 5), ("huge_body", 2), ("missing_model", 2),
)
UPSTREAM_MARKERS = ("upstream model server failed", "upstream_error")
# A child too slow for router.read_timeout (a starved CPU, or a child frozen by the chaos): a
# well-formed 502 the router gives on purpose, not a lost child.
READ_TIMEOUT_MARKERS = ("Timeout on reading", "TimeoutError")


@dataclass
class Outcome:
    client: int
    kind: str
    model: str | None
    request_id: str
    started: float  # time.time()
    ended: float
    timeout: float
    status: int | None
    result: str  # complete | error | cancelled | hung | broken | malformed
    error: str = ""  # the error's type and message, when the reply is one
    detail: str = ""  # what was wrong, for broken/malformed replies

    @property
    def upstream_failure(self) -> bool:
        """An error that says the child went away or stopped answering under the request."""
        return self.result == "error" and any(m in self.error for m in UPSTREAM_MARKERS)

    @property
    def read_timeout(self) -> bool:
        return self.upstream_failure and any(m in self.error for m in READ_TIMEOUT_MARKERS)

    @property
    def child_lost(self) -> bool:
        """The connection to the child broke under the request: the child exited."""
        return self.upstream_failure and not self.read_timeout


@dataclass(frozen=True)
class Plan:
    """One request: where it goes and what it carries."""

    kind: str
    model: str | None
    path: str
    body: bytes
    stream: bool


def _prompt(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 45)))


def plan_request(rng: random.Random, models: list[str], max_body: int) -> Plan:
    kind = rng.choices([k for k, _ in KINDS], [w for _, w in KINDS])[0]
    model = rng.choice(models)
    n = rng.randint(4, 96)
    chat = {"model": model, "messages": [{"role": "user", "content": _prompt(rng)}], "max_tokens": n}
    if kind in ("chat", "chat_stream", "cancel_stream", "slow_stream"):
        stream = kind != "chat"
        return Plan(kind, model, "/v1/chat/completions", json.dumps({**chat, "stream": stream}).encode(), stream)
    if kind in ("completion", "completion_stream"):
        body = {"model": model, "prompt": _prompt(rng), "n_predict": n, "stream": kind == "completion_stream"}
        return Plan(kind, model, "/completion", json.dumps(body).encode(), kind == "completion_stream")
    if kind == "v1_completion":
        body = {"model": model, "prompt": _prompt(rng), "max_tokens": n}
        return Plan(kind, model, "/v1/completions", json.dumps(body).encode(), False)
    return _bad_request(rng, kind, model, chat, max_body)


def _bad_request(rng: random.Random, kind: str, model: str, chat: dict[str, Any], max_body: int) -> Plan:
    path = "/v1/chat/completions"
    if kind == "unknown_model":
        return Plan(kind, "no-such-model", path, json.dumps({**chat, "model": "no-such-model"}).encode(), False)
    if kind == "bad_name":
        return Plan(kind, "../../etc/passwd", path, json.dumps({**chat, "model": "../../etc/passwd"}).encode(), False)
    if kind == "bad_json":
        text = json.dumps(chat)
        return Plan(kind, model, path, text[: rng.randint(1, len(text) - 1)].encode(), False)
    if kind == "wrong_types":
        broken: dict[str, Any] = rng.choice([{"model": 123}, {"messages": "hi"}, {"max_tokens": "ten"},
                                             {"messages": [{"role": 5, "content": ["x"]}]},
                                             {"temperature": "hot"}])
        return Plan(kind, model, path, json.dumps({**chat, **broken}).encode(), False)
    if kind == "huge_body":
        filler = "x" * (max_body + rng.randint(1, 4096))
        body = {**chat, "messages": [{"role": "user", "content": filler}]}
        return Plan(kind, model, path, json.dumps(body).encode(), False)
    body = {k: v for k, v in chat.items() if k != "model"}  # missing_model
    return Plan(kind, None, path, json.dumps(body).encode(), False)


def _error_text(err: Any) -> str | None:
    """`{"message": ..., "type": ...}` as one line, or None when it is not a well-formed error."""
    if not isinstance(err, dict) or not isinstance(err.get("message"), str):
        return None
    return f"{err.get('type', '')}: {err['message']}"[:300]


def judge_json(status: int, body: bytes, kind: str) -> tuple[str, str, str]:
    """(result, error, detail) of a reply that is not an event stream."""
    try:
        data = json.loads(body)
    except ValueError:
        return "malformed", "", f"HTTP {status}, body is not JSON: {body[:120]!r}"
    if not isinstance(data, dict):
        return "malformed", "", f"HTTP {status}, JSON that is not an object"
    if status >= 400:
        text = _error_text(data.get("error"))
        if text is None:
            return "malformed", "", f"HTTP {status} without an error object: {body[:120]!r}"
        return "error", text, ""
    if status != 200:
        return "malformed", "", f"unexpected HTTP {status}"
    choices = data.get("choices")
    if isinstance(choices, list) and choices and choices[0].get("finish_reason"):
        return "complete", "", ""
    if kind == "completion" and isinstance(data.get("content"), str) and data.get("stop") is True:
        return "complete", "", ""
    return "malformed", "", f"HTTP 200 without a finished answer: {body[:160]!r}"


class StreamJudge:
    """Reads `data:` events as they come; knows when a stream has ended well."""

    def __init__(self) -> None:
        self.events = 0
        self.done = False
        self.error: str | None = None
        self.bad: str | None = None
        self._pending = b""

    def feed(self, chunk: bytes) -> None:
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            line = line.rstrip(b"\r")
            if not line.startswith(b"data: ") or self.bad:
                continue
            payload = line[6:]
            if payload == b"[DONE]":
                self.done = True
                continue
            try:
                event = json.loads(payload)
            except ValueError:
                self.bad = f"event is not JSON: {payload[:120]!r}"
                continue
            self.events += 1
            if isinstance(event, dict) and "error" in event:
                self.error = _error_text(event["error"]) or ""
                if not self.error:
                    self.bad = f"error event without a message: {payload[:120]!r}"
            elif isinstance(event, dict) and event.get("stop") is True:
                self.done = True  # llama.cpp's /completion stream ends with "stop": true

    def verdict(self) -> tuple[str, str, str]:
        if self.bad:
            return "malformed", "", self.bad
        if self.error is not None:
            return "error", self.error, ""
        if self.done:
            return "complete", "", ""
        return "malformed", "", f"stream ended after {self.events} event(s) without [DONE], stop or an error"


async def send(session: aiohttp.ClientSession, base: str, plan: Plan, rid: str, timeout: float,
               rng: random.Random) -> tuple[int | None, str, str, str]:
    """Send one request; (status, result, error, detail)."""
    headers = {"Content-Type": "application/json", "X-Request-Id": rid}
    async with session.post(base + plan.path, data=plan.body, headers=headers,
                            timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
        ctype = resp.headers.get("Content-Type", "")
        if not ctype.startswith("text/event-stream"):
            return resp.status, *judge_json(resp.status, await resp.read(), plan.kind)
        judge = StreamJudge()
        async for chunk in resp.content.iter_any():
            judge.feed(chunk)
            if plan.kind == "cancel_stream" and judge.events and not judge.bad and judge.error is None:
                resp.close()  # the client goes away mid-stream
                return resp.status, "cancelled", "", ""
            if plan.kind == "slow_stream":
                await asyncio.sleep(rng.uniform(0.005, 0.05))
        return resp.status, *judge.verdict()


async def client_loop(index: int, base: str, models: Callable[[], list[str]], until: float, record: list[Outcome],
                      *, seed: int, timeouts: tuple[float, float], think: tuple[float, float], max_body: int,
                      phase: str) -> None:
    """One client: its own connection pool, requests until `until`, then it closes."""
    rng = random.Random(seed)
    n = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        while time.time() < until:
            n += 1
            plan = plan_request(rng, models(), max_body)
            rid = f"soak-{phase}{index}-{n}"
            timeout = rng.uniform(*timeouts)
            t0 = time.time()
            try:
                status, result, error, detail = await send(session, base, plan, rid, timeout, rng)
            except TimeoutError:
                status, result, error, detail = None, "hung", "", f"no reply within {timeout:.0f} s"
            except (aiohttp.ClientError, ConnectionError) as e:
                status, result, error, detail = None, "broken", "", f"{type(e).__name__}: {e}"[:300]
            record.append(Outcome(index, plan.kind, plan.model, rid, t0, time.time(), timeout, status, result,
                                  error, detail))
            await asyncio.sleep(rng.uniform(*think))


async def run_clients(base: str, models: Callable[[], list[str]], count: int, seconds: float, record: list[Outcome],
                      *, seed: int, timeouts: tuple[float, float], think: tuple[float, float],
                      max_body: int, phase: str) -> None:
    """`count` clients for `seconds`; returns once every client's last request is judged.
    Request ids are `soak-<phase><client>-<n>`, so the router's records name each one."""
    until = time.time() + seconds
    await asyncio.gather(*(client_loop(i, base, models, until, record, seed=seed * 100003 + i, timeouts=timeouts,
                                       think=think, max_body=max_body, phase=phase) for i in range(count)))
