"""uvloop against asyncio's own loop, in llama-router itself: `python -m bench.event_loop`.

Starts llama-router in front of a tiny stand-in model (tests/support/tinygguf.py,
`-np 4`: the child is fast, so the router is what is busy) once per loop and
pair, alternating which loop goes first, and measures for each:

* /tokenize: N requests over 4 kept-alive clients; requests per second and the
  router's CPU time per request (psutil, around the run);
* streams: 100 streamed 64-token replies over 4 clients; the router's CPU time
  per relayed event;
* the router's RSS after both.

The loop is chosen with LLAMA_ROUTER_LOOP (router/server.py `run`).
    .venv/bin/python -m bench.event_loop --pairs 5 --requests 8000
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
from pathlib import Path
from typing import Any

import psutil

from .targets import ROOT, free_port, llama_server_or_say, stop_tree

CLIENTS = 4


def _wait(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the router exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the router did not answer /health")


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def _clients(port: int, body: bytes, path: str, count: int, out: list[int]) -> None:
    def one() -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(count):
            c.request("POST", path, body, {"Content-Type": "application/json"})
            out.append(c.getresponse().read().count(b"data: "))
    threads = [threading.Thread(target=one) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def measure(config: Path, port: int, requests: int, log_path: Path, *, cwd: Path = ROOT,
            env: dict[str, str] | None = None) -> dict[str, float]:
    """The router of the checkout `cwd`, with `env`, in front of the catalogue `config`'s tiny model."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "router", "--config", str(config)], cwd=cwd,
                                env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        _wait(port, proc)
        router = psutil.Process(proc.pid)
        tokenize = json.dumps({"model": "tiny", "content": "hello world"}).encode()
        _clients(port, tokenize, "/tokenize", 50, [])  # warm: the child loads
        c0, t0 = _cpu(router), time.monotonic()
        _clients(port, tokenize, "/tokenize", requests // CLIENTS, [])
        c1, t1 = _cpu(router), time.monotonic()
        stream = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64,
                             "stream": True, "ignore_eos": True}).encode()
        events: list[int] = []
        c2 = _cpu(router)
        _clients(port, stream, "/v1/chat/completions", 25, events)
        c3 = _cpu(router)
        n = (requests // CLIENTS) * CLIENTS
        return {"req_s": n / (t1 - t0), "us_per_request": (c1 - c0) * 1e6 / n,
                "us_per_event": (c3 - c2) * 1e6 / max(1, sum(events)), "rss_mib": router.memory_info().rss / 2**20}
    finally:
        stop_tree(proc)


def tiny_catalogue(binary: str, work: Path) -> tuple[Path, int]:
    """A catalogue of one tiny stand-in model "tiny" (`-np 4`) in `work`, on a free port."""
    from tests.support.tinygguf import write_tiny_model

    write_tiny_model(work / "tiny.gguf")
    port = free_port()
    config = work / "config.yaml"
    config.write_text(json.dumps({  # JSON is YAML
        "router": {"port": port, "kv_persistence": False, "watch_config": False},
        "spawn": {"command": [binary, "--model", "$path", "--alias", "$name", "--host", "$host", "--port",
                              "$port", "-c", "512", "-np", "4"]},
        "models": {"tiny": {"path": str(work / "tiny.gguf")}}}))
    return config, port


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.event_loop", description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--requests", type=int, default=8000)
    args = p.parse_args()
    binary = llama_server_or_say()
    if binary is None:
        return 2
    with tempfile.TemporaryDirectory(prefix="llama-router-loop-") as tmp:
        work = Path(tmp)
        config, port = tiny_catalogue(binary, work)
        alternate({loop: {"env": {"LLAMA_ROUTER_LOOP": loop}} for loop in ("uvloop", "asyncio")},
                  args.pairs, config, port, args.requests, work, "loop")
    return 0


def alternate(variants: dict[str, dict[str, Any]], rounds: int, config: Path, port: int, requests: int,
              work: Path, column: str) -> None:
    """measure() each variant (its keyword arguments) in turn, which goes first alternating
    round by round; print each run, then a table of medians headed `column`."""
    labels = list(variants)
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in labels}
    for i in range(rounds):
        for label in (labels if i % 2 == 0 else labels[::-1]):
            r = measure(config, port, requests, work / "router.log", **variants[label])
            runs[label].append(r)
            print(f"round {i + 1} {label}: {r['req_s']:6.0f} req/s  {r['us_per_request']:5.0f} us/request  "
                  f"{r['us_per_event']:5.1f} us/event  {r['rss_mib']:.1f} MiB", flush=True)
    print(f"\n| {column} | /tokenize req/s | router CPU per request | per stream event | RSS |\n|---|---|---|---|---|")
    for label, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(f"| {label} | {med['req_s']:.0f} | {med['us_per_request']:.0f} us | {med['us_per_event']:.1f} us | "
              f"{med['rss_mib']:.1f} MiB |")


if __name__ == "__main__":
    sys.exit(main())
