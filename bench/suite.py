"""The measurements, one function per row group of the table.

Each round measures every target in turn (the order rotates per round, so
no target always goes first on a machine that is busier at some moments
than others) and the "added" figures are paired within a round: router
value minus direct value from the same round. The report takes medians.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

from . import measure as m
from .targets import ROOT, Setup, Target, free_port, stop_tree

KEYS = ("direct", "llamacpp", "router")
ROUTERS = ("llamacpp", "router")
MIB = 1 << 20
WIDE = 256  # row 10's concurrent streams


@dataclass(frozen=True)
class Mode:
    name: str
    rounds: int = 3
    seq_n: int = 200
    thr_slices: int = 1
    thr_chat: int = 8  # requests per slice and target
    thr_tok: int = 200
    thr_tok8: int = 40
    stream_reps: int = 2
    swap_cycles: int = 1
    swapback_reps: int = 1
    burst_reps: int = 1
    scaling_rounds: int = 3
    scaling_counts: tuple[int, ...] = (1, 8, 32, 128)
    conversation_tokens: int = 3000
    placement_requests: int = 60


QUICK = Mode("quick")
FULL = Mode("full", rounds=5, seq_n=1000, thr_slices=3, thr_tok=400, thr_tok8=60, stream_reps=5, swap_cycles=2,
            swapback_reps=3, burst_reps=3, scaling_rounds=5, placement_requests=200)


@dataclass
class Results:
    """Per-round values: rows[row][target] -> list of floats."""

    rows: dict[str, dict[str, list[float]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    notes: list[str] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)

    def add(self, row: str, key: str, value: float) -> None:
        self.rows[row][key].append(value)

    def paired(self, row: str, values: dict[str, float]) -> None:
        """Direct as is; routers as the amount they add to direct in this round."""
        self.add(row, "direct", values["direct"])
        for k in ROUTERS:
            if k in values:
                self.add(row, k, values[k] - values["direct"])


def rotate(keys: tuple[str, ...], r: int) -> list[str]:
    r %= len(keys)
    return list(keys[r:] + keys[:r])


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def warm(t: Target, model: str) -> None:
    await m.one_reply(t.url, model)


# ----- rows 1-3 and 6: latency, throughput, streaming, memory ----------------
async def proxy_rows(targets: dict[str, Target], mode: Mode, res: Results) -> None:
    for t in targets.values():
        await warm(t, t.names[0])
    for key, t in targets.items():
        own, kids = m.rss(t.proc.pid)
        if t.is_router:
            res.add("rss_idle", key, own / MIB)
            res.add("rss_children", key, kids / MIB)
        else:
            res.add("rss_children", key, own / MIB)
    tok = {"content": "The quick brown fox jumps over the lazy dog."}
    for r in range(mode.rounds):
        log(f"latency/throughput/streaming round {r + 1}/{mode.rounds}")
        vals: dict[str, dict[str, float]] = defaultdict(dict)
        order = rotate(KEYS, r)
        samplers = {k: m.Sampler(targets[k].proc.pid) for k in ROUTERS}
        for smp in samplers.values():
            smp.__enter__()
        try:
            for key in order:
                t = targets[key]
                lat = await m.sequential_latency(t.url, t.names[0], mode.seq_n)
                vals["lat_p50"][key] = 1000 * m.percentile(lat, 50)
                vals["lat_p99"][key] = 1000 * m.percentile(lat, 99)
            # Throughput and streams in small slices, target after target, so a
            # burst of load from elsewhere on the machine hits all three alike.
            spent: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
            for i in range(mode.thr_slices):
                for key in rotate(KEYS, r + i):
                    t = targets[key]
                    a = t.names[0]
                    for row, path, body, n, clients in (
                            ("thr_chat", "/v1/chat/completions", m.chat(a, 8), mode.thr_chat, 4),
                            ("thr_tok", "/tokenize", {"model": a, **tok}, mode.thr_tok, 4),
                            ("thr_tok8", "/tokenize", {"model": a, **tok}, mode.thr_tok8, 8)):
                        spent[row][key] += n / await m.throughput(t.url, path, [body] * n, clients)
            for row, per in spent.items():
                for key, secs in per.items():
                    vals[row][key] = mode.thr_slices * (getattr(mode, row)) / secs
            streams: dict[str, list[m.StreamStats]] = defaultdict(list)
            for i in range(mode.stream_reps):
                for key in rotate(KEYS, r + i):
                    t = targets[key]
                    async with m.session(fresh=True) as s:
                        streams[key].append(await m.stream(
                            s, t.url, m.chat(t.names[0], 64, stream=True, timings_per_token=True)))
        finally:
            for smp in samplers.values():
                smp.__exit__(None, None, None)
        for key, st in streams.items():
            for row, attr in (("st_ttfb", "ttfb"), ("st_total", "total"), ("st_gap", "max_gap"),
                              ("st_first_over", "first_overhead"), ("st_total_over", "total_overhead"),
                              ("st_delay", "max_delay")):
                vals[row][key] = 1000 * m.median([getattr(x, attr) for x in st])
        for key, smp in samplers.items():
            res.add("rss_load", key, smp.peak_rss / MIB)
        for row in ("lat_p50", "lat_p99", "st_ttfb", "st_total", "st_gap", "st_first_over", "st_total_over",
                    "st_delay"):
            res.paired(row, vals[row])
        for row in ("thr_chat", "thr_tok", "thr_tok8"):
            d = vals[row]["direct"]
            res.add(row, "direct", d)
            for k in ROUTERS:
                res.add(row, k, 100 * vals[row][k] / d)


# ----- row 4: swaps ----------------------------------------------------------
def cold_start(s: Setup, timeout: float = 60.0) -> tuple[float, float, float]:
    """Seconds from exec of a plain llama-server to its first 1-token reply: a swap's floor.

    Returns (total, spawn to healthy, the reply's server compute)."""
    port = free_port()
    argv = [s.binary, "--model", str(s.path(s.names[0])), "--alias", s.names[0],
            "--host", "127.0.0.1", "--port", str(port), *s.child_args]
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        deadline = t0 + timeout
        while time.perf_counter() < deadline:
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.01)
        healthy = time.perf_counter() - t0
        t = _post(url + "/v1/chat/completions", m.chat(s.names[0], 1), timeout).get("timings") or {}
        return time.perf_counter() - t0, healthy, (t.get("prompt_ms", 0) + t.get("predicted_ms", 0)) / 1000
    finally:
        stop_tree(proc, timeout=15)


async def swap_rows(setup: Setup, targets: dict[str, Target], mode: Mode, res: Results) -> None:
    for r in range(mode.rounds):
        log(f"swap round {r + 1}/{mode.rounds}")
        total, healthy, compute = await asyncio.to_thread(cold_start, setup)
        res.add("swap", "direct", total)
        res.add("swap_load", "direct", healthy)
        res.add("swap_compute", "direct", compute)
        res.add("swap_overhead", "direct", total - healthy - compute)
        for key in rotate(ROUTERS, r):
            t = targets[key]
            a, b = t.names
            await warm(t, a)
            for _ in range(mode.swap_cycles):
                off = t.log_size()
                replies = [await m.one_reply(t.url, b), await m.one_reply(t.url, a)]
                await asyncio.sleep(0.3)  # let the log reach the file
                loads = [s for _, s in t.loads_since(off)]
                for i, (dt, compute) in enumerate(replies):
                    res.add("swap", key, dt)
                    res.add("swap_compute", key, compute)
                    if i < len(loads):
                        res.add("swap_load", key, loads[i])
                        res.add("swap_overhead", key, dt - loads[i] - compute)


# ----- row 5: swap-back with a long conversation -----------------------------
def conversation(url: str, model: str, tokens: int) -> tuple[list[dict], int]:
    """A deterministic multi-turn chat of at least `tokens` tokens after templating."""
    msgs: list[dict] = [{"role": "system", "content": "You are a careful logistics assistant."}]
    i = 0
    n = 0
    while n < tokens and i < 400:
        facts = " ".join(f"Crate {i * 10 + j} left dock {(i * 7 + j) % 13} on day {(i * 3 + j) % 31} "
                         f"carrying {(i + j) * 17 % 97} units of item {chr(65 + (i + j) % 26)}." for j in range(8))
        msgs.append({"role": "user", "content": f"Log entry {i}: {facts} Please remember this."})
        msgs.append({"role": "assistant", "content": f"Noted entry {i}: eight crates recorded."})
        i += 1
        if i % 2 == 0 or n == 0:
            n = _count_tokens(url, model, msgs)
    msgs.append({"role": "user", "content": "Which dock did crate 3 leave from? Answer in one word."})
    return msgs, _count_tokens(url, model, msgs)


def _post(url: str, body: dict, timeout: float = 60) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def _count_tokens(url: str, model: str, msgs: list[dict]) -> int:
    prompt = _post(url + "/apply-template", {"model": model, "messages": msgs})["prompt"]
    return len(_post(url + "/tokenize", {"model": model, "content": prompt})["tokens"])


async def swapback_rows(targets: dict[str, Target], mode: Mode, res: Results) -> None:
    d = targets["direct"]
    msgs, n = await asyncio.to_thread(conversation, d.url, d.names[0], mode.conversation_tokens)
    res.extra["conversation_tokens"] = n
    log(f"swap-back: conversation of {n} tokens")
    async with m.session(fresh=True) as s:
        body = m.chat(d.names[0], 2, stream=True, messages=msgs)
        cold = await m.stream(s, d.url, body)
        res.add("sb_prefill", "direct", cold.ttft)
        for _ in range(mode.swapback_reps):
            res.add("sb_ttft", "direct", (await m.stream(s, d.url, body)).ttft)
    for key in ROUTERS:
        t = targets[key]
        a, b = t.names
        body = m.chat(a, 2, stream=True, messages=msgs)
        async with m.session(fresh=True) as s:
            await m.stream(s, t.url, body)  # the conversation on A, as a user would have had it
            for rep in range(mode.swapback_reps):
                log(f"swap-back {key} {rep + 1}/{mode.swapback_reps}")
                await m.one_reply(t.url, b)
                off = t.log_size()
                st = await m.stream(s, t.url, body)
                await asyncio.sleep(0.3)
                res.add("sb_ttft", key, st.ttft)
                loads = t.loads_since(off)
                if loads:
                    res.add("sb_load", key, loads[0][1])
    kv_swapback_hook(res)


def kv_swapback_hook(res: Results, timeout: float = 900) -> None:
    """'With KV persistence': filled by bench/kv_swapback.py once that feature exists.

    Contract: `python -m bench.kv_swapback --modes kv,direct --json -` prints, as its last line, a
    JSON object with "ttft_s": a number or a list of numbers (the swap-back
    time to first token of the same kind of >= 3,000-token conversation with
    persistence on). Without the script the row says "not built yet".
    """
    script = ROOT / "bench" / "kv_swapback.py"
    if not script.exists():
        res.notes.append("KV persistence: bench/kv_swapback.py is not in this tree yet, so the "
                         "'with persistence' row is empty.")
        return
    log("swap-back with KV persistence (bench/kv_swapback.py)")
    try:
        out = subprocess.run([sys.executable, "-m", "bench.kv_swapback", "--modes", "kv,direct", "--json", "-"],
                             cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
        data = json.loads(out.stdout.strip().splitlines()[-1])
        vals = data["ttft_s"] if isinstance(data["ttft_s"], list) else [data["ttft_s"]]
        for v in vals:
            res.add("sb_ttft_kv", "router", float(v))
        if isinstance(data.get("direct_ttft_s"), int | float):
            res.add("sb_kv_direct", "direct", float(data["direct_ttft_s"]))
        for key, row in (("load_s", "sb_kv_load"), ("compute_s", "sb_kv_compute"), ("overhead_s", "sb_kv_overhead")):
            if isinstance(data.get(key), int | float):
                res.add(row, "router", float(data[key]))
    except (subprocess.TimeoutExpired, OSError, ValueError, KeyError, IndexError) as e:
        res.notes.append(f"KV persistence: bench/kv_swapback.py failed ({type(e).__name__}: {e}).")


# ----- row 8: scheduling quality -------------------------------------------
async def burst_rows(targets: dict[str, Target], mode: Mode, res: Results, n: int = 32, clients: int = 16) -> None:
    for r in range(mode.burst_reps):
        log(f"mixed burst {r + 1}/{mode.burst_reps}")
        for key in rotate(KEYS, r):
            t = targets[key]
            a, b = t.names
            await warm(t, a)
            off = t.log_size()
            bodies = [m.chat(a if i % 2 == 0 else b, 4) for i in range(n)]
            failures: list[str] = []
            rps = await m.throughput(t.url, "/v1/chat/completions", bodies, clients, failures)
            if failures:
                res.notes.append(f"mixed burst {r + 1}: {t.label} failed {len(failures)} of {n} requests "
                                 f"(first: {failures[0]})")
            await asyncio.sleep(0.3)
            res.add("burst_time", key, n / rps)
            if t.is_router:
                res.add("burst_swaps", key, len(t.loads_since(off)))


# ----- row 7: scaling ------------------------------------------------------
async def scaling_rows(targets: dict[str, Target], mode: Mode, res: Results, tokens: int = 32) -> None:
    for t in targets.values():
        await warm(t, t.names[0])
    for r in range(mode.scaling_rounds):
        for c in mode.scaling_counts:
            log(f"scaling round {r + 1}/{mode.scaling_rounds}: {c} streams")
            vals: dict[str, float] = {}
            for key in rotate(KEYS, r):
                t = targets[key]
                with m.Sampler(t.proc.pid) as smp:
                    st = await m.concurrent_streams(t.url, m.chat(t.names[0], tokens, stream=True), c)
                vals[key] = 1000 * m.median([x.total for x in st])
                if t.is_router:
                    res.add(f"sc_cpu_{c}", key, smp.cpu_percent)
                    res.add("rss_load_scaling", key, smp.peak_rss / MIB)
            res.paired(f"sc_lat_{c}", vals)
        await wide_rows(targets, res, r, tokens)


async def wide_rows(targets: dict[str, Target], res: Results, r: int, tokens: int, clients: int = WIDE) -> None:
    """Row 10: `clients` streaming clients at once (a gateway's worst case): time to
    first token p50 and p99 and the median whole stream, added to direct; and the
    router process's own CPU time per 1,000 stream events it relayed."""
    log(f"wide round {r + 1}: {clients} streams")
    ttft50: dict[str, float] = {}
    ttft99: dict[str, float] = {}
    total: dict[str, float] = {}
    for key in rotate(KEYS, r):
        t = targets[key]
        with m.Sampler(t.proc.pid) as smp:
            st = await m.concurrent_streams(t.url, m.chat(t.names[0], tokens, stream=True), clients)
        ttft = [x.ttft for x in st]
        ttft50[key], ttft99[key] = 1000 * m.percentile(ttft, 50), 1000 * m.percentile(ttft, 99)
        total[key] = 1000 * m.median([x.total for x in st])
        if t.is_router:
            res.add("wide_cpu", key, 1000 * smp.cpu_s / max(1, sum(x.events for x in st)) * 1000)
            res.add("rss_load_scaling", key, smp.peak_rss / MIB)
    res.paired("wide_ttft50", ttft50)
    res.paired("wide_ttft99", ttft99)
    res.paired("wide_total", total)
