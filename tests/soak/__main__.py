"""`python -m tests.soak`: one soak run (`make soak`: ten minutes, 300 clients).
Prints the invariant table; exits 1 when any invariant fails."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.soak.harness import SoakSettings, run_soak
from tests.support.binaries import find_llama_server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load with chaos (default 600)")
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds of load before the chaos (default 20)")
    ap.add_argument("--clients", type=int, default=300, help="concurrent clients (default 300)")
    ap.add_argument("--timeout", type=float, nargs=2, default=(120.0, 180.0), metavar=("MIN", "MAX"),
                    help="each request's own timeout is drawn from this range (default 120 180)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--run-dir", type=Path, help="where the router log and report go (default: a new temp folder)")
    args = ap.parse_args(argv)
    binary = find_llama_server()
    if binary is None:
        print("soak: no llama-server found (make setup builds one)", file=sys.stderr)
        return 2
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="llama-router-soak-"))
    settings = SoakSettings(run_dir=run_dir, llama_server=binary, duration_s=args.duration, warmup_s=args.warmup,
                            clients=args.clients, timeouts=tuple(args.timeout), seed=args.seed,
                            breaks=SoakSettings.breaks_from_env())
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    t0 = time.monotonic()
    report = run_soak(settings)
    print(f"soak started {started}, took {time.monotonic() - t0:.0f} s")
    print(report.summary)
    print(report.table)
    print("soak: PASS" if report.ok else "soak: FAIL")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
