"""Placement under one RAM budget: a trace of requests over four models of
different sizes (Gemma 3 270M at four context sizes), with Zipf-like
popularity (the smaller, the more popular), replayed one request at a time
against, in turn:

* llama-router placing by memory (`models_max: 0`, `memory.ram: BUDGET`);
* llama-router counting models (`models_max: N`, memory off), N the largest
  count that is safe for the budget (the N largest models fit);
* llama.cpp's router with the same `--models-max N` (`--models-preset` gives
  each model its arguments).

Per target: loads (child starts), total time, and the peak of the children's
resident memory summed (sampled every 50 ms). `python -m bench.placement`
runs it alone; `python -m bench` adds it to docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml

from .targets import Target, _popen, _wait_health, free_port

MiB = 1 << 20
MODELS = {  # smallest (most popular) first
    "g2k": ["-c", "2048", "-np", "1"],
    "g8k": ["-c", "8192", "-np", "1", "--swa-full"],
    "g16k": ["-c", "16384", "-np", "1", "--swa-full"],
    "g32k": ["-c", "32768", "-np", "1", "--swa-full"],
}
SEED = 20261124


@dataclass
class Outcome:
    label: str
    loads: int
    total_s: float
    peak_mib: float
    failures: int


def trace(n: int) -> list[str]:
    names = list(MODELS)
    weights = [1 / (rank + 1) for rank in range(len(names))]  # Zipf, s = 1
    return random.Random(SEED).choices(names, weights, k=n)


def budget_and_count(gemma: Path) -> tuple[int, int]:
    """A budget that fits the two largest models (by estimate) with 5% to spare,
    and the largest models_max that is safe for it."""
    from router.backend.memory_estimate import estimate
    from router.discovery.gguf_meta import read_gguf_meta

    meta = read_gguf_meta(gemma)
    sizes = sorted((estimate(meta, args).total for args in MODELS.values()), reverse=True)
    budget = int(sum(sizes[:2]) * 1.05)
    safe = max(n for n in range(1, len(sizes) + 1) if sum(sizes[:n]) <= budget)
    return budget, safe


class PeakMemory:
    def __init__(self, t: Target):
        self.t, self.peak = t, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for c in self.t.children():
                try:
                    total += c.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.05)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def start_ours(binary: str, gemma: Path, work: Path, label: str, router: dict) -> Target:
    port = free_port()
    cfg = work / f"{label}.yaml"
    cfg.write_text(yaml.safe_dump({
        "router": {"host": "127.0.0.1", "port": port, "port_range": [54000, 54999], "kv_persistence": False,
                   "watch_config": False, "slot_save_path": str(work / f"{label}-slots"), **router},
        "spawn": {"command": [binary, "--model", "$path", "--alias", "$name", "--host", "$host", "--port", "$port"]},
        "models": {n: {"path": str(gemma), "args": a} for n, a in MODELS.items()},
    }, sort_keys=False))
    proc, log = _popen([sys.executable, "-m", "router", "--config", str(cfg), "--log-level", "info"],
                       work / f"{label}.log")
    t = Target("router", f"http://127.0.0.1:{port}", proc, work / f"{label}.log", ("g2k", "g8k"), log)
    _wait_health(t)
    return t


def start_llamacpp(binary: str, gemma: Path, work: Path, models_max: int) -> Target:
    port = free_port()
    ini = work / "models.ini"
    lines = ["version = 1", ""]
    for name, args in MODELS.items():
        lines += [f"[{name}]", f"model = {gemma}"]
        it = iter(args)
        for flag in it:
            if flag == "--swa-full":
                lines.append("swa-full = true")
            else:
                lines.append(f"{flag.lstrip('-')} = {next(it)}")
        lines.append("")
    ini.write_text("\n".join(lines))
    argv = [binary, "--models-preset", str(ini), "--models-max", str(models_max), "--host", "127.0.0.1",
            "--port", str(port)]
    proc, log = _popen(argv, work / "llamacpp-placement.log")
    t = Target("llamacpp", f"http://127.0.0.1:{port}", proc, work / "llamacpp-placement.log", ("g2k", "g8k"), log)
    _wait_health(t)
    return t


def replay(t: Target, label: str, requests: list[str]) -> Outcome:
    failures = 0
    off = t.log_size()
    with PeakMemory(t) as peak:
        t0 = time.perf_counter()
        for name in requests:
            body = json.dumps({"model": name, "messages": [{"role": "user", "content": "Hi"}],
                               "max_tokens": 1, "temperature": 0}).encode()
            req = urllib.request.Request(t.url + "/v1/chat/completions", body,
                                         {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=120) as r:
                    r.read()
            except OSError:
                failures += 1
        total = time.perf_counter() - t0
    return Outcome(label, len(t.loads_since(off)), total, peak.peak / MiB, failures)


def run(binary: str, gemma: Path, work: Path, n: int, log=print) -> tuple[list[Outcome], int, int]:
    budget, count = budget_and_count(gemma)
    requests = trace(n)
    outcomes = []
    plans = [
        ("llama-router, memory placement", lambda: start_ours(binary, gemma, work, "mem", {
            "models_max": 0, "memory": {"ram": budget, "gpu": "off"}})),
        (f"llama-router, models_max {count}", lambda: start_ours(binary, gemma, work, "count", {
            "models_max": count, "memory": {"ram": "off", "gpu": "off"}})),
        (f"llama.cpp router, --models-max {count}", lambda: start_llamacpp(binary, gemma, work, count)),
    ]
    for label, start in plans:
        log(f"placement trace ({n} requests, budget {budget / MiB:.0f} MiB): {label}")
        t = start()
        try:
            outcomes.append(replay(t, label, requests))
        finally:
            t.stop()
    return outcomes, budget, count


def table(outcomes: list[Outcome], budget: int, n: int) -> str:
    lines = [f"Placement trace: {n} requests over 4 models (Gemma 3 270M at -c 2048, 8192, 16384, 32768), "
             f"Zipf popularity, one at a time, RAM budget {budget / MiB:.0f} MiB.", "",
             "| Placement | loads (swaps) | total time | peak memory of the children | failed |",
             "|---|---|---|---|---|"]
    for o in outcomes:
        lines.append(f"| {o.label} | {o.loads} | {o.total_s:.1f} s | {o.peak_mib:.0f} MiB | {o.failures} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from .__main__ import find_binary, find_gemma

    p = argparse.ArgumentParser(prog="python -m bench.placement", description=__doc__)
    p.add_argument("-n", "--requests", type=int, default=200)
    args = p.parse_args(argv)
    import tempfile
    with tempfile.TemporaryDirectory(prefix="llama-router-placement-") as tmp:
        outcomes, budget, _ = run(find_binary(), find_gemma(), Path(tmp), args.requests,
                                  log=lambda s: print(s, file=sys.stderr))
    print(table(outcomes, budget, args.requests))
    return 0


if __name__ == "__main__":
    sys.exit(main())
