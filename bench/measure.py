"""Client-side measurement primitives: timed requests over kept-alive
connections, streamed replies chunk by chunk, and a process sampler.

Every request has a total timeout, so a stuck server fails the run instead
of hanging it.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from dataclasses import dataclass, field

import aiohttp
import psutil

REQUEST_TIMEOUT_S = 180.0
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def timeout(total: float = REQUEST_TIMEOUT_S) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=total)


def session(limit: int = 0, *, fresh: bool = False) -> aiohttp.ClientSession:
    """A client session; `limit=1` keeps every request on one kept-alive connection.

    `fresh` opens a connection per request: llama-server closes a connection
    after a streamed reply, so streams are timed on new connections everywhere.
    """
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, force_close=fresh))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; q in [0, 100]."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))
    return s[k]


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def chat(model: str, max_tokens: int, *, stream: bool = False, messages: list[dict] | None = None,
         **extra: object) -> dict:
    return {"model": model, "messages": messages or [{"role": "user", "content": PROMPT}],
            "max_tokens": max_tokens, "stream": stream, "temperature": 0, "ignore_eos": True, **extra}


async def post_json(s: aiohttp.ClientSession, url: str, body: dict, total: float = REQUEST_TIMEOUT_S) -> dict:
    async with s.post(url, json=body, timeout=timeout(total)) as r:
        data = await r.read()
        if r.status != 200:
            raise RuntimeError(f"POST {url} -> {r.status}: {data[:300]!r}")
        return json.loads(data)


async def sequential_latency(url: str, model: str, n: int) -> list[float]:
    """n small `/tokenize` requests one after another on one kept-alive connection."""
    out: list[float] = []
    body = {"model": model, "content": "The quick brown fox jumps over the lazy dog."}
    async with session(limit=1) as s:
        await post_json(s, url + "/tokenize", body)  # open the connection
        for _ in range(n):
            t0 = time.perf_counter()
            async with s.post(url + "/tokenize", json=body, timeout=timeout(30)) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"/tokenize -> {r.status}")
            out.append(time.perf_counter() - t0)
    return out


async def throughput(url: str, path: str, bodies: list[dict], clients: int,
                     failures: list[str] | None = None) -> float:
    """Requests per second for `bodies` sent by `clients` concurrent workers.

    With `failures`, a failed request is recorded there instead of ending the run.
    """
    q: asyncio.Queue[dict] = asyncio.Queue()
    for b in bodies:
        q.put_nowait(b)

    async def worker(s: aiohttp.ClientSession) -> None:
        while True:
            try:
                b = q.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                await post_json(s, url + path, b)
            except (TimeoutError, RuntimeError, aiohttp.ClientError) as e:
                if failures is None:
                    raise
                failures.append(str(e)[:200])

    async with session() as s:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(s) for _ in range(clients)))
        return len(bodies) / (time.perf_counter() - t0)


@dataclass
class StreamStats:
    ttfb: float  # first byte of the body
    ttft: float  # first event that carries generated text
    total: float
    max_gap: float  # largest pause between two events
    events: int
    # What the path (HTTP, and a router if any) adds on top of the server's own
    # compute, from the `timings` llama-server puts in each event when asked
    # (`timings_per_token`); NaN without them. Model speed drops out of these.
    first_overhead: float = float("nan")  # arrival of first token minus its server time
    total_overhead: float = float("nan")  # end of reply minus the server's total compute
    max_delay: float = float("nan")  # worst event's extra delay relative to the best event


async def stream(s: aiohttp.ClientSession, url: str, body: dict, total: float = REQUEST_TIMEOUT_S) -> StreamStats:
    """One streamed chat completion, timed event by event as the client sees it."""
    t0 = time.perf_counter()
    first = first_text = None
    last = t0
    gap = 0.0
    events = 0
    lags: list[float] = []
    server_total = float("nan")
    async with s.post(url + "/v1/chat/completions", json=body, timeout=timeout(total)) as r:
        if r.status != 200:
            raise RuntimeError(f"stream -> {r.status}: {(await r.read())[:300]!r}")
        async for line in r.content:
            now = time.perf_counter()
            if first is None:
                first = now
            if not line.startswith(b"data: {"):
                continue
            if events:
                gap = max(gap, now - last)
            last = now
            events += 1
            try:
                data = json.loads(line[6:])
            except ValueError:
                continue
            if first_text is None and _has_text(data):
                first_text = now
            t = data.get("timings")
            if isinstance(t, dict) and "predicted_ms" in t:
                server_total = (t.get("prompt_ms", 0) + t["predicted_ms"]) / 1000
                lags.append(now - t0 - server_total)
    end = time.perf_counter()
    first = first or end
    return StreamStats(first - t0, (first_text or first) - t0, end - t0, gap, events,
                       lags[0] if lags else float("nan"), end - t0 - server_total,
                       max(lags) - min(lags) if lags else float("nan"))


def _has_text(data: dict) -> bool:
    """Does this event carry generated text (not just the role or usage)?"""
    choices = data.get("choices") or [{}]
    return bool((choices[0].get("delta") or {}).get("content"))


async def concurrent_streams(url: str, body: dict, clients: int, total: float = REQUEST_TIMEOUT_S) -> list[StreamStats]:
    async with session(fresh=True) as s:
        return list(await asyncio.gather(*(stream(s, url, body, total) for _ in range(clients))))


async def one_reply(url: str, model: str, total: float = REQUEST_TIMEOUT_S) -> tuple[float, float]:
    """(seconds, server compute seconds) for a 1-token chat reply; forces a load
    when `model` is not loaded. The compute part comes from the reply's `timings`."""
    async with session() as s:
        t0 = time.perf_counter()
        data = await post_json(s, url + "/v1/chat/completions", chat(model, 1), total)
        elapsed = time.perf_counter() - t0
    t = data.get("timings") or {}
    return elapsed, (t.get("prompt_ms", 0) + t.get("predicted_ms", 0)) / 1000


@dataclass
class Sampler:
    """Samples RSS of a process and its children in a thread, and its CPU time."""

    pid: int
    interval: float = 0.2
    peak_rss: int = 0
    peak_children_rss: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _cpu0: float = 0.0
    _t0: float = 0.0
    cpu_s: float = 0.0
    wall_s: float = 0.0

    def _sample(self) -> None:
        try:
            p = psutil.Process(self.pid)
            self.peak_rss = max(self.peak_rss, p.memory_info().rss)
            kids = 0
            for c in p.children(recursive=True):
                try:
                    kids += c.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.peak_children_rss = max(self.peak_children_rss, kids)
        except psutil.NoSuchProcess:
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _cpu(self) -> float:
        t = psutil.Process(self.pid).cpu_times()
        return t.user + t.system

    def __enter__(self) -> Sampler:
        self._cpu0, self._t0 = self._cpu(), time.perf_counter()
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self.cpu_s = self._cpu() - self._cpu0
        self.wall_s = time.perf_counter() - self._t0

    @property
    def cpu_percent(self) -> float:
        """Share of one core the process used while sampled."""
        return 100 * self.cpu_s / self.wall_s if self.wall_s else float("nan")


def rss(pid: int) -> tuple[int, int]:
    """(own RSS, RSS of all descendants) in bytes."""
    p = psutil.Process(pid)
    kids = 0
    for c in p.children(recursive=True):
        try:
            kids += c.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return p.memory_info().rss, kids
