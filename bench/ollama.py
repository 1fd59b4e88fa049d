"""Ollama's API against the OpenAI one, in one llama-router: `python -m bench.ollama`.

Issue #24's bench row. One llama-router in front of the tiny stand-in model
(tests/support/tinygguf.py, `-np 4`: the child is fast, so the router is what
is busy) serves the same chat both ways, interleaved, so both kinds see the
same machine at the same moments:

* non-streamed: `POST /api/chat` (`"stream": false`, `options.num_predict`)
  and `POST /v1/chat/completions` (`max_tokens`), the same messages, in pairs
  of one request of each kind sent back to back (which goes first
  alternates), each kind on its own kept-alive connection. What /api/chat
  adds is the median over pairs of the difference (a pair shares the
  machine's load of that moment, so a busy machine's pauses mostly cancel
  out), and the difference of the two kinds' p95; the router's CPU time per
  request is read around each request (median per kind and of the pairs'
  differences);
* streamed: `/api/chat` (NDJSON, Ollama's default) and `/v1/chat/completions`
  (`"stream": true`, SSE), 64-token replies, 4 clients at once, in blocks
  that alternate: the router's CPU time per event the client received (an
  NDJSON line; an SSE `data: {...}` event) and the ratio of the two.

The router's CPU time is its process's, all threads (CPUClock: Linux's
per-thread schedstat, in nanoseconds; psutil's cpu_times elsewhere).

Goals (issue #24): /api/chat adds at most 0.2 ms per non-streamed request,
and its per-event CPU is at most 1.5x the SSE relay's. Each figure prints
with its goal. `python -m bench` runs this as its `ollama` group (quick: up to
3 rounds within about 25 s; --full: 5 rounds).

    .venv/bin/python -m bench.ollama --rounds 3
    .venv/bin/python -m bench.ollama --same     # the noise floor: /v1 on both sides
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
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
from .targets import ROOT, llama_server_or_say, stop_tree

ADDED_MS_GOAL = 0.2  # what a non-streamed /api/chat may add over /v1/chat/completions
EVENT_RATIO_GOAL = 1.5  # a streamed /api/chat's router CPU per event over the SSE relay's
MODEL = "tiny"
MESSAGES = [{"role": "user", "content": "Say hello to the lighthouse keeper."}]
CLIENTS = 4
KINDS = ("openai", "ollama")
PATHS = {"openai": "/v1/chat/completions", "ollama": "/api/chat"}


@dataclass(frozen=True)
class Plan:
    """How much to send per round and kind."""

    rounds: int = 3
    pairs: int = 80  # non-streamed requests of each kind per round
    streams: int = 1  # per client and stream block (CLIENTS clients)
    stream_blocks: int = 6  # per round and kind
    reply_tokens: int = 8
    stream_tokens: int = 64
    budget_s: float = 0.0  # no new round past this many seconds (0: all rounds); one round at least
    same: bool = False  # the noise floor: /v1/chat/completions on both sides


def body(kind: str, tokens: int, stream: bool) -> dict:
    """The same chat both ways: OpenAI's `max_tokens` is Ollama's `options.num_predict`."""
    if kind == "openai":
        return {"model": MODEL, "messages": MESSAGES, "max_tokens": tokens, "temperature": 0, "stream": stream}
    return {"model": MODEL, "messages": MESSAGES, "options": {"num_predict": tokens, "temperature": 0},
            "stream": stream}


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
    request_cpu_s: list[float] = field(default_factory=list)
    stream_cpu_s: float = 0.0
    events: int = 0
    per_round_us_event: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Figures:
    rounds: int
    added_p50_ms: float  # median over pairs of (/api/chat - /v1/chat/completions)
    added_p95_ms: float  # p95 of one kind minus p95 of the other
    p50_ms: dict[str, float]
    p95_ms: dict[str, float]
    us_per_request: dict[str, float]  # median per kind (mean without a precise clock)
    added_us_per_request: float  # median over pairs (mean without a precise clock)
    us_per_event: dict[str, float]
    event_ratio: float
    round_ratios: list[float]

    @property
    def passed(self) -> dict[str, bool]:
        return {"added": self.added_p50_ms <= ADDED_MS_GOAL, "event": self.event_ratio <= EVENT_RATIO_GOAL}


def figures(samples: dict[str, Sample], precise: bool = True) -> Figures:
    """The row's figures from both kinds' samples, whose requests were sent in pairs
    (the i-th request of one kind next to the i-th of the other). Without a `precise`
    CPU clock a request's CPU time is 0 or a 10 ms tick: the mean per request, not the median."""
    o, a = samples["ollama"], samples["openai"]
    p50 = {k: 1000 * percentile(s.latency_s, 50) for k, s in samples.items()}
    p95 = {k: 1000 * percentile(s.latency_s, 95) for k, s in samples.items()}
    middle = median if precise else statistics.fmean
    per_req = {k: 1e6 * middle(s.request_cpu_s) for k, s in samples.items()}
    per_ev = {k: 1e6 * s.stream_cpu_s / s.events if s.events else float("nan") for k, s in samples.items()}
    rounds = [x / y for x, y in zip(o.per_round_us_event, a.per_round_us_event, strict=True) if y > 0]
    ratio = per_ev["ollama"] / per_ev["openai"] if per_ev["openai"] > 0 else float("nan")
    added = 1000 * median([x - y for x, y in zip(o.latency_s, a.latency_s, strict=True)])
    added_cpu = 1e6 * middle([x - y for x, y in zip(o.request_cpu_s, a.request_cpu_s, strict=True)])
    return Figures(len(o.per_round_us_event), added, p95["ollama"] - p95["openai"], p50, p95, per_req, added_cpu,
                   per_ev, ratio, rounds)


def _mark(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def table(f: Figures, plan: Plan) -> str:
    """The row as a markdown table, each figure next to its goal."""
    ok = f.passed
    rounds = ", ".join(f"{r:.2f}x" for r in f.round_ratios)
    n = f.rounds * plan.pairs
    return "\n".join([
        "| Measurement | /v1/chat/completions | /api/chat | /api/chat adds | goal |",
        "|---|---|---|---|---|",
        f"| non-streamed, {plan.reply_tokens}-token reply, {n} pairs: latency p50 | {f.p50_ms['openai']:.2f} ms | "
        f"{f.p50_ms['ollama']:.2f} ms | {f.added_p50_ms:+.3f} ms (median of pairs) | <= +{ADDED_MS_GOAL} ms: "
        f"{_mark(ok['added'])} |",
        f"| non-streamed: latency p95 | {f.p95_ms['openai']:.2f} ms | {f.p95_ms['ollama']:.2f} ms | "
        f"{f.added_p95_ms:+.2f} ms | - |",
        f"| non-streamed: router CPU per request (median) | {f.us_per_request['openai']:.0f} us | "
        f"{f.us_per_request['ollama']:.0f} us | {f.added_us_per_request:+.0f} us (median of pairs) | - |",
        f"| streamed, {plan.stream_tokens} tokens, {CLIENTS} clients: router CPU per event (SSE event / NDJSON line) "
        f"| {f.us_per_event['openai']:.1f} us | {f.us_per_event['ollama']:.1f} us | {f.event_ratio:.2f}x "
        f"(by round: {rounds}) | <= {EVENT_RATIO_GOAL}x: {_mark(ok['event'])} |",
    ])


class CPUClock:
    """The router process's CPU time in seconds, all threads: to the nanosecond from Linux's
    /proc/PID/task/*/schedstat where there is one (psutil's cpu_times counts 10 ms ticks,
    too coarse for one request); psutil's cpu_times elsewhere (`precise` false)."""

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


def _pairs(port: int, sends: dict[str, tuple[str, bytes]], n: int, samples: dict[str, Sample], cpu: CPUClock,
           first: int) -> None:
    """`n` pairs of requests, one of each kind back to back (which goes first alternating),
    each kind on its own kept-alive connection (opened, and its first request sent, before
    the clock starts); each request's time and the router's CPU time while it was served
    go to its kind's sample."""
    conns = {k: http.client.HTTPConnection("127.0.0.1", port, timeout=60) for k in KINDS}
    try:
        for k, c in conns.items():
            _post(c, *sends[k])
        for i in range(n):
            for k in _order(first + i):
                c0, t0 = cpu(), time.perf_counter()
                _post(conns[k], *sends[k])
                took = time.perf_counter() - t0
                samples[k].request_cpu_s.append(cpu() - c0)
                samples[k].latency_s.append(took)
    finally:
        for c in conns.values():
            c.close()


def _streams(port: int, kind: str, payload: bytes, per_client: int, sample: Sample, cpu: CPUClock) -> float:
    """CLIENTS clients at once, `per_client` streams each of `kind` (its path and events):
    the router's CPU time and the events in `sample`."""
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
    """Both kinds side by side against the router on `port` (serving MODEL), round after round
    (with `plan.same`, the "ollama" side sends what the "openai" side does)."""
    cpu = CPUClock(router_pid)
    sent_as = {k: "openai" if plan.same else k for k in KINDS}
    whole = {k: (PATHS[sent_as[k]], json.dumps(body(sent_as[k], plan.reply_tokens, False)).encode()) for k in KINDS}
    streamed = {k: json.dumps(body(sent_as[k], plan.stream_tokens, True)).encode() for k in KINDS}
    samples = {k: Sample() for k in KINDS}
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        tokens = {k: reply_tokens(sent_as[k], _post(c, *whole[k])) for k in KINDS}  # warm: the child loads
    finally:
        c.close()
    if len(set(tokens.values())) != 1:
        raise RuntimeError(f"the two replies differ in length: {tokens}")
    started = time.perf_counter()
    for r in range(plan.rounds):
        if r and plan.budget_s and time.perf_counter() - started > plan.budget_s:
            log(f"ollama: {r} of {plan.rounds} rounds within the {plan.budget_s:g} s budget")
            break
        t0 = time.perf_counter()
        _pairs(port, whole, plan.pairs, samples, cpu, r)
        t1 = time.perf_counter()
        spent = {k: 0.0 for k in KINDS}
        events0 = {k: samples[k].events for k in KINDS}
        for b in range(plan.stream_blocks):
            for k in _order(r + b):
                spent[k] += _streams(port, sent_as[k], streamed[k], plan.streams, samples[k], cpu)
        for k in KINDS:
            samples[k].per_round_us_event.append(1e6 * spent[k] / max(1, samples[k].events - events0[k]))
        log(f"ollama round {r + 1}/{plan.rounds}: non-streamed {t1 - t0:.1f} s, "
            f"streamed {time.perf_counter() - t1:.1f} s")
    return figures(samples, cpu.precise)


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
    p.add_argument("--pairs", type=int, default=Plan.pairs, help="non-streamed requests of each kind per round")
    p.add_argument("--stream-blocks", type=int, default=Plan.stream_blocks,
                   help=f"blocks of {CLIENTS} streams per round and kind")
    p.add_argument("--budget", type=float, default=0.0, help="start no round past this many seconds (0: no limit)")
    p.add_argument("--same", action="store_true",
                   help="the noise floor: /v1/chat/completions on both sides (the /api/chat column too)")
    p.add_argument("--work", type=Path, help="keep the catalogue and the router's log here (default: a temp dir)")
    args = p.parse_args(argv)
    binary = llama_server_or_say()
    if binary is None:
        return 2
    plan = Plan(rounds=args.rounds, pairs=args.pairs, stream_blocks=args.stream_blocks, budget_s=args.budget,
                same=args.same)
    t0 = time.perf_counter()
    if args.work:
        text, f = run(binary, args.work, plan)
    else:
        with tempfile.TemporaryDirectory(prefix="llama-router-ollama-") as tmp:
            text, f = run(binary, Path(tmp), plan)
    note = " (--same: both columns are /v1/chat/completions)" if args.same else ""
    print(f"\n{text}\n\n({time.perf_counter() - t0:.1f} s{note})")
    return 0 if all(f.passed.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
