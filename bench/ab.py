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
import sys
import tempfile
from pathlib import Path

from .event_loop import alternate, tiny_catalogue
from .targets import llama_server_or_say


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    p.add_argument("checkouts", nargs=2, type=Path, help="two llama-router checkouts (before, after)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=8000)
    args = p.parse_args()
    binary = llama_server_or_say()
    if binary is None:
        return 2
    checkouts = [c.resolve() for c in args.checkouts]
    with tempfile.TemporaryDirectory(prefix="llama-router-ab-") as tmp:
        work = Path(tmp)
        config, port = tiny_catalogue(binary, work)
        alternate({str(c): {"cwd": c} for c in checkouts}, args.rounds, config, port, args.requests, work,
                  "checkout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
