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
first come first served. `python -m bench.fairness` (`make bench-fairness`); also the
`fairness` group of `python -m bench` (quick: a smaller burst, QUICK; --full: the issue's
200 and 20 chats, FULL), section 13 of its report.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml

from . import suite
from .targets import Setup, Target, _popen, _wait_health, free_port, make_setup, router_config, start_llamacpp

KEY_X = "bench-key-x-0123456789abcdef"
KEY_Y = "bench-key-y-0123456789abcdef"
CHILD_ARGS = ("--ctx-size", "2048", "--parallel", "1")
REQUEST_TIMEOUT_S = 300.0
Y_GOAL = 2.0  # Y's p95 wait within this many times (one swap plus one reply)
X_GOAL = 1.15  # X's total within 15% of first come first served


@dataclass(frozen=True)
class Plan:
    """The scenario's size: X's burst, Y's chats, the reply length."""

    x_requests: int = 200
    x_concurrency: int = 8
    y_requests: int = 20
    y_interval: float = 3.0
    y_delay: float = 1.0  # Y's first chat, seconds after X's first
    tokens: int = 8
    swap_patience: float | None = None  # llama-router's router.swap_patience (None: its own default)


# `python -m bench`'s sizes, on the tiny model. 512-token replies keep X's burst going through
# all of Y's chats (with 64 tokens it is over before most of them): quick about 8 s of burst per
# target on 2 free cores, full about 30 s.
QUICK = Plan(x_requests=60, y_requests=6, y_interval=1.0, tokens=512)
FULL = Plan(x_requests=200, y_requests=20, y_interval=1.5, tokens=512)


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


async def scenario(t: Target, a: str, b: str, x_key: str | None, y_key: str | None, plan: Plan,
                   label: str) -> Outcome:
    out = Outcome(label)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as s:
        await chat(s, t.url, a, x_key, plan.tokens)  # A loaded: the scenario starts where X works
        offset = t.log_size()
        left = iter(range(plan.x_requests))

        async def x_worker() -> None:
            for _ in left:
                try:
                    await chat(s, t.url, a, x_key, plan.tokens)
                except (RuntimeError, aiohttp.ClientError, TimeoutError) as e:
                    out.failures += 1
                    out.errors.append(f"X: {e}")

        async def y_sender() -> None:
            async def one() -> None:
                try:
                    out.y_waits.append(await chat(s, t.url, b, y_key, plan.tokens))
                except (RuntimeError, aiohttp.ClientError, TimeoutError) as e:
                    out.failures += 1
                    out.errors.append(f"Y: {e}")
            sent = []
            await asyncio.sleep(plan.y_delay)
            for i in range(plan.y_requests):
                if i:
                    await asyncio.sleep(plan.y_interval)
                sent.append(asyncio.ensure_future(one()))
            await asyncio.gather(*sent)

        t0 = time.perf_counter()
        xs = [asyncio.ensure_future(x_worker()) for _ in range(plan.x_concurrency)]
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


def y_goal_met(o: Outcome, swap_s: float) -> bool:
    """Y's p95 wait within Y_GOAL x (one swap plus one reply); never met when a request failed or none replied."""
    return not o.failures and bool(o.y_waits) and o.p(0.95) <= Y_GOAL * swap_s


def x_goal_met(o: Outcome, fifo: Outcome) -> bool:
    """X's total within X_GOAL x first come first served's; never met when a request failed (a failed
    request ends sooner than a served one)."""
    return not o.failures and fifo.x_total > 0 and o.x_total <= X_GOAL * fifo.x_total


def _said(met: bool) -> str:
    return "met" if met else "not met"


def table(outcomes: list[Outcome], swap_s: float, fifo: Outcome) -> str:
    """One row per target, each with its two verdicts; `fifo` is the baseline of X's total."""
    lines = [f"| Target | Y wait p50 | Y wait p95 | X total | swaps | failed | Y p95 <= {Y_GOAL:g}x (swap + reply) "
             f"({Y_GOAL * swap_s:.2f} s) | X total vs FIFO (goal <= {X_GOAL:g}x) |",
             "|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        ratio = o.x_total / fifo.x_total if fifo.x_total else float("nan")
        x_cell = f"{ratio:.2f}x (the baseline)" if o is fifo else f"{ratio:.2f}x: {_said(x_goal_met(o, fifo))}"
        lines.append(f"| {o.label} | {o.p(0.5):.2f} s | {o.p(0.95):.2f} s | {o.x_total:.1f} s | {o.swaps} | "
                     f"{o.failures} | {_said(y_goal_met(o, swap_s))} | {x_cell} |")
    return "\n".join(lines)


def describe(plan: Plan, model_name: str) -> str:
    return (f"X: {plan.x_requests} chats to A, {plan.x_concurrency} at a time; Y: {plan.y_requests} chats to B, "
            f"one every {plan.y_interval:g} s from {plan.y_delay:g} s; {plan.tokens}-token replies; "
            f"{model_name}; llama-router's swap_patience: "
            f"{'default' if plan.swap_patience is None else f'{plan.swap_patience:g} s'}")


def section(outcomes: list[Outcome], swap_s: float, plan: Plan, model_name: str) -> str:
    """What `python -m bench` prints for its `fairness` group: the plan, the table, the goals of
    llama-router with fair share (outcomes as measure() returns them) and the first failures."""
    fair, fifo = outcomes[0], outcomes[1]
    ratio = fair.x_total / fifo.x_total if fifo.x_total else float("nan")
    lines = [describe(plan, model_name) + f"; one swap plus one reply on the idle router: {swap_s:.2f} s.", "",
             table(outcomes, swap_s, fifo), "",
             f"Issue #27's goals for {fair.label}: Y's p95 wait {fair.p(0.95):.2f} s <= {Y_GOAL * swap_s:.2f} s: "
             f"{_said(y_goal_met(fair, swap_s))}; X's total {fair.x_total:.1f} s, {ratio:.2f}x FIFO's "
             f"{fifo.x_total:.1f} s (goal <= {X_GOAL:g}x): {_said(x_goal_met(fair, fifo))}."]
    errors = [f"- {o.label}: {e}" for o in outcomes for e in o.errors[:3]]
    return "\n".join(lines + (["", *errors] if errors else []))


def measure(binary: str, model: Path, workdir: Path, plan: Plan,
            log: Callable[[str], None] = log) -> tuple[list[Outcome], float]:
    """The scenario on llama-router with fair share, llama-router FIFO and llama.cpp's router, one
    after the other (servers' logs in `workdir`): the three outcomes, in that order, and one swap
    plus one reply measured first on the idle llama-router."""
    s = make_setup(binary, model, ("model-a", "model-b"), CHILD_ARGS, workdir)
    a, b = s.names
    outcomes: list[Outcome] = []
    log("llama-router: one swap plus one reply on the idle router, then fair share and FIFO")
    router = start_router(s, plan.swap_patience)
    try:
        swap_s = asyncio.run(one_swap(router, a, b, KEY_X, plan.tokens, 3))
        log(f"one swap plus one reply: {swap_s:.2f} s")
        outcomes.append(asyncio.run(scenario(router, a, b, KEY_X, KEY_Y, plan, "llama-router, fair share")))
        log(f"fair share: {outcomes[-1]}")
        outcomes.append(asyncio.run(scenario(router, a, b, KEY_X, KEY_X, plan, "llama-router, FIFO (one key)")))
        log(f"FIFO: {outcomes[-1]}")
    finally:
        router.stop()
    log("llama.cpp router")
    cpp = start_llamacpp(s)
    try:
        outcomes.append(asyncio.run(scenario(cpp, a, b, None, None, plan, "llama.cpp router")))
        log(f"llama.cpp: {outcomes[-1]}")
    finally:
        cpp.stop()
    return outcomes, swap_s


def plan_for(mode: suite.Mode) -> Plan:
    """`python -m bench`'s size of the scenario for its quick or full mode."""
    return FULL if mode is suite.FULL else QUICK


def run(args: argparse.Namespace) -> int:
    from bench.__main__ import find_binary, find_gemma
    binary = find_binary()
    plan = Plan(x_requests=args.x_requests, x_concurrency=args.x_concurrency, y_requests=args.y_requests,
                y_interval=args.y_interval, y_delay=args.y_delay, tokens=args.tokens,
                swap_patience=args.swap_patience)
    with tempfile.TemporaryDirectory(prefix="llama-router-fairness-") as tmp:
        if args.model == "tiny":  # the tests' tiny stand-in: loads and replies in milliseconds
            from tests.support.tinygguf import write_tiny_model
            model = write_tiny_model(Path(tmp) / "tiny.gguf", name="tiny", seed=0)
        else:
            model = Path(args.model) if args.model else find_gemma()
        try:
            outcomes, swap_s = measure(binary, model, Path(tmp), plan)
        finally:
            if args.logs:
                Path(args.logs).mkdir(parents=True, exist_ok=True)
                for f in Path(tmp).glob("*.log"):
                    (Path(args.logs) / f.name).write_bytes(f.read_bytes())
    print(section(outcomes, swap_s, plan, model.name))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fairness", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Plan()
    p.add_argument("--x-requests", type=int, default=d.x_requests)
    p.add_argument("--x-concurrency", type=int, default=d.x_concurrency)
    p.add_argument("--y-requests", type=int, default=d.y_requests)
    p.add_argument("--y-interval", type=float, default=d.y_interval)
    p.add_argument("--y-delay", type=float, default=d.y_delay, help="Y's first chat, seconds after X's first")
    p.add_argument("--tokens", type=int, default=d.tokens, help="reply length of every chat")
    p.add_argument("--swap-patience", type=float, help="llama-router's router.swap_patience (default: its own)")
    p.add_argument("--logs", metavar="DIR", help="copy the servers' logs here")
    p.add_argument("--model", help="a GGUF, or `tiny` for the tests' stand-in (default: Gemma 3 270M, as make bench)")
    args = p.parse_args(argv)
    # Stopped (timeout, kill): still stop the servers it started, which run in sessions of their own.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
