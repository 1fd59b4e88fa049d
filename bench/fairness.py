"""Fair share between API keys (issue #27): one key's burst against another's chats.

Two names of one GGUF (A and B) with room for one (`models_max: 1`, llama.cpp's
`--models-max 1`). Key X sends `--x-requests` chats to A, `--x-concurrency` at a
time, as fast as it can; key Y meanwhile sends `--y-requests` chats to B, one every
`--y-interval` seconds. Measured, one after the other, on:

* llama-router with fair share: X and Y are two API keys of the same priority, so
  Y's request takes its turn before X's queue is drained;
* llama-router first come first served: the same router, both sending with key X
  (one tenant: exactly the order of arrival);
* llama.cpp's router (`--models-max 1`), which has no keys and no scheduler.

Per target: Y's median and p95 wait (request sent to reply received: the queue,
the swap and the reply), X's total time (first request sent to last reply), the
swaps (child loads) and failed requests. The goal: Y's p95 within 2x (one swap
plus one reply), measured first on the idle router; X's total within 15% of
first come first served. `python -m bench.fairness` (`make bench-fairness`).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml

from .targets import Setup, Target, _popen, _wait_health, free_port, make_setup, router_config, start_llamacpp

KEY_X = "bench-key-x-0123456789abcdef"
KEY_Y = "bench-key-y-0123456789abcdef"
CHILD_ARGS = ("--ctx-size", "2048", "--parallel", "1")
REQUEST_TIMEOUT_S = 300.0


@dataclass
class Outcome:
    label: str
    y_waits: list[float] = field(default_factory=list)
    x_total: float = 0.0
    swaps: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)

    def p(self, q: float) -> float:
        w = sorted(self.y_waits)
        return w[min(len(w) - 1, round(q * (len(w) - 1)))] if w else float("nan")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def body(model: str, tokens: int) -> dict:
    return {"model": model, "max_tokens": tokens, "temperature": 0,
            "messages": [{"role": "user", "content": "Say something about the sea."}]}


async def chat(s: aiohttp.ClientSession, url: str, model: str, key: str | None, tokens: int) -> float:
    """One chat; its seconds from sent to the last byte of the reply. RuntimeError when it failed."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    t0 = time.perf_counter()
    async with s.post(url + "/v1/chat/completions", json=body(model, tokens), headers=headers) as r:
        text = await r.text()
        if r.status != 200:
            raise RuntimeError(f"{r.status}: {text[:200]}")
    return time.perf_counter() - t0


async def scenario(t: Target, a: str, b: str, x_key: str | None, y_key: str | None, args: argparse.Namespace,
                   label: str) -> Outcome:
    out = Outcome(label)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as s:
        await chat(s, t.url, a, x_key, args.tokens)  # A loaded: the scenario starts where X works
        offset = t.log_size()
        left = iter(range(args.x_requests))

        async def x_worker() -> None:
            for _ in left:
                try:
                    await chat(s, t.url, a, x_key, args.tokens)
                except (RuntimeError, aiohttp.ClientError, TimeoutError) as e:
                    out.failures += 1
                    out.errors.append(f"X: {e}")

        async def y_sender() -> None:
            async def one() -> None:
                try:
                    out.y_waits.append(await chat(s, t.url, b, y_key, args.tokens))
                except (RuntimeError, aiohttp.ClientError, TimeoutError) as e:
                    out.failures += 1
                    out.errors.append(f"Y: {e}")
            sent = []
            await asyncio.sleep(args.y_delay)
            for i in range(args.y_requests):
                if i:
                    await asyncio.sleep(args.y_interval)
                sent.append(asyncio.ensure_future(one()))
            await asyncio.gather(*sent)

        t0 = time.perf_counter()
        xs = [asyncio.ensure_future(x_worker()) for _ in range(args.x_concurrency)]
        ys = asyncio.ensure_future(y_sender())
        await asyncio.gather(*xs)
        out.x_total = time.perf_counter() - t0
        await ys
        await asyncio.sleep(0.5)  # the last load's log line
        out.swaps = len(t.loads_since(offset))
    return out


async def one_swap(t: Target, a: str, b: str, key: str | None, tokens: int, reps: int) -> float:
    """Seconds for one request that swaps (A loaded, one chat to B) on the idle server: the median."""
    times = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as s:
        for _ in range(reps):
            await chat(s, t.url, a, key, tokens)
            times.append(await chat(s, t.url, b, key, tokens))
    return statistics.median(times)


def start_router(s: Setup, swap_patience: float | None) -> Target:
    port = free_port()
    cfg = router_config(s, port)
    if swap_patience is not None:
        cfg["router"]["swap_patience"] = swap_patience
    cfg["router"]["api_keys"] = [{"key": KEY_X, "priority": "normal"}, {"key": KEY_Y, "priority": "normal"}]
    path = s.workdir / "router.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    argv = [sys.executable, "-m", "router", "--config", str(path), "--log-level", "info"]
    proc, logf = _popen(argv, s.workdir / "router.log")
    t = Target("router", f"http://127.0.0.1:{port}", proc, s.workdir / "router.log", s.names, logf)
    _wait_health(t)
    return t


def table(outcomes: list[Outcome], swap_s: float, fifo_total: float) -> str:
    goal = 2 * swap_s
    lines = ["| Target | Y wait p50 | Y wait p95 | X total | swaps | failed | Y p95 <= 2x swap+reply "
             f"({goal:.2f} s) | X total vs FIFO |", "|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        ratio = o.x_total / fifo_total if fifo_total else float("nan")
        lines.append(f"| {o.label} | {o.p(0.5):.2f} s | {o.p(0.95):.2f} s | {o.x_total:.1f} s | {o.swaps} | "
                     f"{o.failures} | {'yes' if o.p(0.95) <= goal else 'no'} | {ratio:.2f}x |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from bench.__main__ import find_binary, find_gemma
    binary = find_binary()
    with tempfile.TemporaryDirectory(prefix="llama-router-fairness-") as tmp:
        if args.model == "tiny":  # the tests' tiny stand-in: loads and replies in milliseconds
            from tests.support.tinygguf import write_tiny_model
            model = write_tiny_model(Path(tmp) / "tiny.gguf", name="tiny", seed=0)
        else:
            model = Path(args.model) if args.model else find_gemma()
        s = make_setup(binary, model, ("model-a", "model-b"), CHILD_ARGS, Path(tmp))
        a, b = s.names
        outcomes: list[Outcome] = []
        log("llama-router: one swap plus one reply on the idle router, then fair share and FIFO")
        router = start_router(s, args.swap_patience)
        try:
            swap_s = asyncio.run(one_swap(router, a, b, KEY_X, args.tokens, 3))
            log(f"one swap plus one reply: {swap_s:.2f} s")
            outcomes.append(asyncio.run(scenario(router, a, b, KEY_X, KEY_Y, args, "llama-router, fair share")))
            log(f"fair share: {outcomes[-1]}")
            outcomes.append(asyncio.run(scenario(router, a, b, KEY_X, KEY_X, args, "llama-router, FIFO (one key)")))
            log(f"FIFO: {outcomes[-1]}")
        finally:
            router.stop()
        log("llama.cpp router")
        cpp = start_llamacpp(s)
        try:
            outcomes.append(asyncio.run(scenario(cpp, a, b, None, None, args, "llama.cpp router")))
            log(f"llama.cpp: {outcomes[-1]}")
        finally:
            cpp.stop()
            if args.logs:
                Path(args.logs).mkdir(parents=True, exist_ok=True)
                for f in Path(tmp).glob("*.log"):
                    (Path(args.logs) / f.name).write_bytes(f.read_bytes())
    print(f"X: {args.x_requests} chats to A, {args.x_concurrency} at a time; Y: {args.y_requests} chats to B, "
          f"one every {args.y_interval:g} s from {args.y_delay:g} s; {args.tokens}-token replies; "
          f"{model.name}; llama-router's swap_patience: "
          f"{'default' if args.swap_patience is None else f'{args.swap_patience:g} s'}")
    print(table(outcomes, swap_s, outcomes[1].x_total))
    for o in outcomes:
        for e in o.errors[:3]:
            print(f"- {o.label}: {e}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fairness", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--x-requests", type=int, default=200)
    p.add_argument("--x-concurrency", type=int, default=8)
    p.add_argument("--y-requests", type=int, default=20)
    p.add_argument("--y-interval", type=float, default=3.0)
    p.add_argument("--y-delay", type=float, default=1.0, help="Y's first chat, seconds after X's first")
    p.add_argument("--tokens", type=int, default=8, help="reply length of every chat")
    p.add_argument("--swap-patience", type=float, help="llama-router's router.swap_patience (default: its own)")
    p.add_argument("--logs", metavar="DIR", help="copy the servers' logs here")
    p.add_argument("--model", help="a GGUF, or `tiny` for the tests' stand-in (default: Gemma 3 270M, as make bench)")
    args = p.parse_args(argv)
    # Stopped (timeout, kill): still stop the servers it started, which run in sessions of their own.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
