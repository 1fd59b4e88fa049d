"""Ollama's API against the OpenAI one, in one llama-router: `python -m bench.ollama`.

Issue #24's bench row. One llama-router in front of the tiny stand-in model
(tests/support/tinygguf.py, `-np 4`: the child is fast, so the router is what
is busy) serves the same requests both ways, block after block (which goes
first alternates), so both see the same machine at the same moments:

* non-streamed: `POST /api/chat` (`"stream": false`, `options.num_predict`)
  and `POST /v1/chat/completions` (`max_tokens`), the same messages, one
  kept-alive client, one request at a time: what /api/chat adds to the time
  of a request (median and p95 over all requests of a kind, the difference of
  the two kinds'), and the router's CPU time per request (psutil, around
  each block);
* streamed: `/api/chat` (NDJSON, Ollama's default) and `/v1/chat/completions`
  (`"stream": true`, SSE), 64-token replies over 4 clients: the router's CPU
  time per event the client received (an NDJSON line; an SSE `data: {...}`
  event) and the ratio of the two.

Goals (issue #24): /api/chat adds at most 0.2 ms per non-streamed request,
and its per-event CPU is at most 1.5x the SSE relay's. Each figure prints
with its goal. `python -m bench` runs this as its `ollama` group.

    .venv/bin/python -m bench.ollama --rounds 3
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .event_loop import _wait, tiny_catalogue
from .measure import median, percentile
from .targets import ROOT, stop_tree

ADDED_MS_GOAL = 0.2  # what a non-streamed /api/chat may add over /v1/chat/completions
EVENT_RATIO_GOAL = 1.5  # a streamed /api/chat's router CPU per event over the SSE relay's
MODEL = "tiny"
MESSAGES = [{"role": "user", "content": "Say hello to the lighthouse keeper."}]
CLIENTS = 4
KINDS = ("openai", "ollama")


@dataclass(frozen=True)
class Plan:
    """How much to send per round and kind."""

    rounds: int = 3
    requests: int = 10  # non-streamed, sequential, per block
    blocks: int = 8  # non-streamed blocks per round and kind (alternating kinds)
    streams: int = 2  # per client and stream block (CLIENTS clients)
    stream_blocks: int = 3  # per round and kind
    reply_tokens: int = 8
    stream_tokens: int = 64


def body(kind: str, tokens: int, stream: bool) -> dict:
    """The same chat both ways: OpenAI's `max_tokens` is Ollama's `options.num_predict`."""
    if kind == "openai":
        return {"model": MODEL, "messages": MESSAGES, "max_tokens": tokens, "temperature": 0, "stream": stream}
    return {"model": MODEL, "messages": MESSAGES, "options": {"num_predict": tokens, "temperature": 0},
            "stream": stream}


PATHS = {"openai": "/v1/chat/completions", "ollama": "/api/chat"}


def events(kind: str, data: bytes) -> int:
    """The events a streamed reply carried: SSE `data: {...}` lines (not `[DONE]`), or NDJSON lines."""
    if kind == "openai":
        return sum(1 for ln in data.split(b"\n") if ln.startswith(b"data: {"))
    return sum(1 for ln in data.split(b"\n") if ln.strip())


def reply_tokens(kind: str, data: bytes) -> int:
    """The generated tokens a non-streamed reply counts (usage, or Ollama's eval_count)."""
    obj = json.loads(data)
    return int(obj["usage"]["completion_tokens"] if kind == "openai" else obj["eval_count"])


@dataclass
class Sample:
    """What one kind collected over a run."""

    latency_s: list[float] = field(default_factory=list)
    request_cpu_s: float = 0.0
    requests: int = 0
    stream_cpu_s: float = 0.0
    events: int = 0
    per_round_us_event: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Figures:
    added_p50_ms: float  # median of (/api/chat - /v1/chat/completions) over pairs of requests sent back to back
    added_p95_ms: float  # p95 of one kind minus p95 of the other
    p50_ms: dict[str, float]
    p95_ms: dict[str, float]
    us_per_request: dict[str, float]
    us_per_event: dict[str, float]
    event_ratio: float
    round_ratios: list[float]

    @property
    def passed(self) -> dict[str, bool]:
        return {"added": self.added_p50_ms <= ADDED_MS_GOAL, "event": self.event_ratio <= EVENT_RATIO_GOAL}


def figures(samples: dict[str, Sample], pairs: list[tuple[float, float]]) -> Figures:
    """The row's figures from both kinds' samples and the (ollama, openai) latency pairs."""
    o, a = samples["ollama"], samples["openai"]
    p50 = {k: 1000 * percentile(s.latency_s, 50) for k, s in samples.items()}
    p95 = {k: 1000 * percentile(s.latency_s, 95) for k, s in samples.items()}
    per_req = {k: 1e6 * s.request_cpu_s / s.requests if s.requests else float("nan") for k, s in samples.items()}
    per_ev = {k: 1e6 * s.stream_cpu_s / s.events if s.events else float("nan") for k, s in samples.items()}
    rounds = [x / y for x, y in zip(o.per_round_us_event, a.per_round_us_event, strict=False) if y > 0]
    ratio = per_ev["ollama"] / per_ev["openai"] if per_ev["openai"] > 0 else float("nan")
    added = 1000 * median([x - y for x, y in pairs])
    return Figures(added, p95["ollama"] - p95["openai"], p50, p95, per_req, per_ev, ratio, rounds)


def _mark(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def table(f: Figures, plan: Plan) -> str:
    """The row as a markdown table, each figure next to its goal."""
    ok = f.passed
    rounds = ", ".join(f"{r:.2f}x" for r in f.round_ratios)
    return "\n".join([
        "| Measurement | /v1/chat/completions | /api/chat | /api/chat adds | goal |",
        "|---|---|---|---|---|",
        f"| non-streamed, {plan.reply_tokens}-token reply, one client: latency p50 | {f.p50_ms['openai']:.2f} ms | "
        f"{f.p50_ms['ollama']:.2f} ms | {f.added_p50_ms:+.3f} ms (median of pairs) | <= +{ADDED_MS_GOAL} ms: "
        f"{_mark(ok['added'])} |",
        f"| non-streamed: latency p95 | {f.p95_ms['openai']:.2f} ms | {f.p95_ms['ollama']:.2f} ms | "
        f"{f.added_p95_ms:+.2f} ms | - |",
        f"| non-streamed: router CPU per request | {f.us_per_request['openai']:.0f} us | "
        f"{f.us_per_request['ollama']:.0f} us | {f.us_per_request['ollama'] - f.us_per_request['openai']:+.0f} us "
        "| - |",
        f"| streamed {plan.stream_tokens} tokens, {CLIENTS} clients: router CPU per event (SSE / NDJSON) | "
        f"{f.us_per_event['openai']:.1f} us | {f.us_per_event['ollama']:.1f} us | {f.event_ratio:.2f}x "
        f"(rounds: {rounds}) | <= {EVENT_RATIO_GOAL}x: {_mark(ok['event'])} |",
    ])


class CPUClock:
    """The router process's CPU time in seconds, all threads: to the nanosecond from Linux's
    /proc/PID/task/*/schedstat where there is one (psutil's cpu_times counts 10 ms ticks,
    too coarse for blocks of a few requests); psutil's cpu_times elsewhere."""

    def __init__(self, pid: int):
        self.pid = pid
        self.process = psutil.Process(pid)
        self.precise = Path(f"/proc/{pid}/schedstat").exists()

    def __call__(self) -> float:
        if self.precise:
            total = 0
            for tid in os.listdir(f"/proc/{self.pid}/task"):
                try:
                    with open(f"/proc/{self.pid}/task/{tid}/schedstat", "rb") as f:
                        total += int(f.read().split()[0])
                except FileNotFoundError:  # a thread that just ended
                    pass
            return total / 1e9
        t = self.process.cpu_times()
        return t.user + t.system


def _post(c: http.client.HTTPConnection, path: str, payload: bytes) -> bytes:
    c.request("POST", path, payload, {"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    if r.status != 200:
        raise RuntimeError(f"POST {path} -> {r.status}: {data[:300]!r}")
    return data


def _sequential(port: int, kind: str, payload: bytes, n: int, sample: Sample, cpu: CPUClock) -> list[float]:
    """`n` requests one after another on a kept-alive connection (opened, and its first
    request sent, before the clock starts): their times; the router's CPU time in `sample`."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    out = []
    try:
        _post(c, PATHS[kind], payload)
        c0 = cpu()
        for _ in range(n):
            t0 = time.perf_counter()
            _post(c, PATHS[kind], payload)
            out.append(time.perf_counter() - t0)
        sample.request_cpu_s += cpu() - c0
    finally:
        c.close()
    sample.requests += n
    sample.latency_s += out
    return out


def _streams(port: int, kind: str, payload: bytes, per_client: int, sample: Sample, cpu: CPUClock) -> float:
    """CLIENTS clients at once, `per_client` streams each: the router's CPU time and events in `sample`."""
    counts: list[int] = []
    errors: list[BaseException] = []

    def client() -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            for _ in range(per_client):
                counts.append(events(kind, _post(c, PATHS[kind], payload)))
        except (OSError, RuntimeError, http.client.HTTPException) as e:
            errors.append(e)
        finally:
            c.close()

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    c0 = cpu()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spent = cpu() - c0
    if errors:
        raise RuntimeError(f"{kind}: {len(errors)} stream clients failed; first: {errors[0]!r}")
    sample.stream_cpu_s += spent
    sample.events += sum(counts)
    return spent


def measure(port: int, router_pid: int, plan: Plan, log: Callable[[str], None] = print) -> Figures:
    """Both kinds side by side against the router on `port`, block after block, which kind
    goes first alternating."""
    cpu = CPUClock(router_pid)
    whole = {k: json.dumps(body(k, plan.reply_tokens, False)).encode() for k in KINDS}
    streamed = {k: json.dumps(body(k, plan.stream_tokens, True)).encode() for k in KINDS}
    samples = {k: Sample() for k in KINDS}
    pairs: list[tuple[float, float]] = []
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        tokens = {k: reply_tokens(k, _post(c, PATHS[k], whole[k])) for k in KINDS}  # warm: the child loads
    finally:
        c.close()
    if len(set(tokens.values())) != 1:
        raise RuntimeError(f"the two replies differ in length: {tokens}")
    for r in range(plan.rounds):
        t0 = time.perf_counter()
        for b in range(plan.blocks):
            lat = {k: _sequential(port, k, whole[k], plan.requests, samples[k], cpu) for k in _order(r + b)}
            pairs += zip(lat["ollama"], lat["openai"], strict=True)
        t1 = time.perf_counter()
        spent = {k: 0.0 for k in KINDS}
        events0 = {k: samples[k].events for k in KINDS}
        for b in range(plan.stream_blocks):
            for k in _order(r + b):
                spent[k] += _streams(port, k, streamed[k], plan.streams, samples[k], cpu)
        for k in KINDS:
            samples[k].per_round_us_event.append(1e6 * spent[k] / max(1, samples[k].events - events0[k]))
        log(f"ollama round {r + 1}/{plan.rounds}: non-streamed {t1 - t0:.1f} s, "
            f"streamed {time.perf_counter() - t1:.1f} s")
    return figures(samples, pairs)


def _order(i: int) -> tuple[str, ...]:
    return KINDS if i % 2 == 0 else KINDS[::-1]


def run(binary: str, work: Path, plan: Plan, log: Callable[[str], None] = print) -> tuple[str, Figures]:
    """Start llama-router on the tiny model in `work`, measure, stop it: (markdown table, figures)."""
    work.mkdir(parents=True, exist_ok=True)
    config, port = tiny_catalogue(binary, work)
    with open(work / "router.log", "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "router", "--config", str(config)], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait(port, proc)
        f = measure(port, proc.pid, plan, log)
    finally:
        stop_tree(proc)
    return table(f, plan), f


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ollama", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=Plan.rounds)
    p.add_argument("--requests", type=int, default=Plan.requests, help="non-streamed requests per block")
    p.add_argument("--blocks", type=int, default=Plan.blocks, help="non-streamed blocks per round and kind")
    p.add_argument("--streams", type=int, default=Plan.streams, help="streams per client and stream block")
    p.add_argument("--work", type=Path, help="keep the catalogue and the router's log here (default: a temp dir)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from router.backend.launch import find_llama_server
    binary = find_llama_server()
    if binary is None:
        print("needs llama-server (make setup)", file=sys.stderr)
        return 2
    plan = Plan(rounds=args.rounds, requests=args.requests, blocks=args.blocks, streams=args.streams)
    t0 = time.perf_counter()
    if args.work:
        text, f = run(binary, args.work, plan)
    else:
        with tempfile.TemporaryDirectory(prefix="llama-router-ollama-") as tmp:
            text, f = run(binary, Path(tmp), plan)
    print(f"\n{text}\n\n({time.perf_counter() - t0:.1f} s)")
    return 0 if all(f.passed.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
