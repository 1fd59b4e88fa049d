"""Two checkouts of llama-router, side by side: `python -m bench.ab BEFORE AFTER`.

For a change on the request path: each checkout's router in turn (alternating
which goes first, round after round) in front of the tiny stand-in model
(tests/support/tinygguf.py, `-np 4`: the child is fast, so the router is what
is busy), measuring what bench/event_loop.py measures: /tokenize requests per
second over 4 kept-alive clients and the router's CPU time per request, the
router's CPU time per relayed stream event, and its RSS.

    git worktree add /tmp/before HEAD~1
    .venv/bin/python -m bench.ab /tmp/before . --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from .event_loop import measure, tiny_catalogue
from .targets import ROOT


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    p.add_argument("checkouts", nargs=2, type=Path, help="two llama-router checkouts (before, after)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=8000)
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from router.backend.launch import find_llama_server

    binary = find_llama_server()
    if binary is None:
        print("needs llama-server (make setup)", file=sys.stderr)
        return 2
    checkouts = [c.resolve() for c in args.checkouts]
    with tempfile.TemporaryDirectory(prefix="llama-router-ab-") as tmp:
        work = Path(tmp)
        config, port = tiny_catalogue(binary, work)
        runs: dict[Path, list[dict[str, float]]] = {c: [] for c in checkouts}
        for i in range(args.rounds):
            for c in (checkouts if i % 2 == 0 else checkouts[::-1]):
                r = measure(config, port, args.requests, work / "router.log", cwd=c)
                runs[c].append(r)
                print(f"round {i + 1} {c}: {r['req_s']:6.0f} req/s  {r['us_per_request']:5.0f} us/request  "
                      f"{r['us_per_event']:5.1f} us/event  {r['rss_mib']:.1f} MiB", flush=True)
    print("\n| checkout | /tokenize req/s | router CPU per request | per stream event | RSS |\n|---|---|---|---|---|")
    for c, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(f"| {c} | {med['req_s']:.0f} | {med['us_per_request']:.0f} us | {med['us_per_event']:.1f} us | "
              f"{med['rss_mib']:.1f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
