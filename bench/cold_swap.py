"""Cold swap: the time to a swapped-in model's first reply when its file is not
in the page cache, llama-router and llama.cpp's router mode side by side in
one run.

A readahead of the target's files when the swap is decided
(`posix_fadvise(WILLNEED)` while the victim saves its KV cache and exits) was
measured here and reverted: with this model the victim is gone in
milliseconds, and the readahead then competes with llama-server's own read
(median 1.127 s with it, 0.943 s without, 7 rounds; docs/performance.md).

    .venv/bin/python -m bench.cold_swap              # 5 rounds
    .venv/bin/python -m bench.cold_swap --rounds 9 --json out.json

A and B are two *copies* of one GGUF (the Gemma 3 270M by default), so
evicting B from the page cache (`posix_fadvise(POSIX_FADV_DONTNEED)`) leaves
A's pages alone. Each round: a reply from A (A loaded, B's file evicted), then
the timed request for B, which swaps A out and B in (`models_max: 1`). The
llama-router targets run with KV persistence on, as users run it: the victim
saves its KV cache before it exits, the window the readahead fills.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench import measure as m
from bench.targets import ROOT, Target, _popen, _wait_health, free_port
from router.backend.launch import find_llama_server

DEFAULT_MODEL = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / \
    "llama-router" / "models" / "gemma-3-270m-it-Q4_K_M.gguf"
NAMES = ("cold-a", "cold-b")
# --load-mode none (no mmap): the load reads the whole file, as a load onto a GPU does; with mmap on a CPU
# only the pages a reply touches are read, a fraction of a small model.
CHILD_ARGS = ("-c", "2048", "-np", "1", "--load-mode", "none")


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def start_router(binary: str, models: Path, work: Path) -> Target:
    port = free_port()
    cfg = work / "router.yaml"
    cfg.write_text(yaml.safe_dump({
        "router": {"host": "127.0.0.1", "port": port, "models_max": 1, "port_range": [53000, 53999],
                   "slot_save_path": str(work / "slots")},
        "spawn": {"command": [binary, "--model", "$path", "--alias", "$name", "--host", "$host",
                              "--port", "$port", *CHILD_ARGS]},
        "sources": {"hf_cache": False},
        "models": {n: {"path": str(models / f"{n}.gguf")} for n in NAMES},
    }, sort_keys=False))
    key = "router"
    proc, log = _popen([sys.executable, "-m", "router", "--config", str(cfg)], work / f"{key}.log")
    t = Target(key, f"http://127.0.0.1:{port}", proc, work / f"{key}.log", NAMES, log)
    _wait_health(t)
    return t


def start_llamacpp(binary: str, models: Path, work: Path) -> Target:
    port = free_port()
    argv = [binary, "--models-dir", str(models), "--models-max", "1", "--host", "127.0.0.1",
            "--port", str(port), *CHILD_ARGS]
    proc, log = _popen(argv, work / "llamacpp.log")
    t = Target("llamacpp", f"http://127.0.0.1:{port}", proc, work / "llamacpp.log", NAMES, log)
    _wait_health(t)
    return t


async def rounds(t: Target, models: Path, n: int) -> list[float]:
    out = []
    for _ in range(n):
        await m.one_reply(t.url, NAMES[0], total=120)
        await asyncio.sleep(0.5)  # A idle: its KV cache is saved at the swap, not cut off
        evict(models / f"{NAMES[1]}.gguf")
        t0 = time.perf_counter()
        await m.one_reply(t.url, NAMES[1], total=120)
        out.append(time.perf_counter() - t0)
    return out


def measure(binary: str, model: Path, work: Path, n: int, log=print) -> dict[str, list[float]]:
    """Seconds from the request for B to its reply, B's file evicted first, per target:
    llama.cpp's router then llama-router, `n` rounds each."""
    models = work / "models"
    models.mkdir(parents=True)
    for name in NAMES:
        shutil.copyfile(model, models / f"{name}.gguf")
    starters = {
        "llamacpp": lambda: start_llamacpp(binary, models, work),
        "router": lambda: start_router(binary, models, work),
    }
    results: dict[str, list[float]] = {}
    for key, start in starters.items():
        t = start()
        try:
            results[key] = asyncio.run(rounds(t, models, n))
        finally:
            t.stop()
        log(f"{key:18s} cold swap to first reply: median {m.median(results[key]):.3f} s "
            f"(rounds: {', '.join(f'{x:.3f}' for x in results[key])})")
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    binary = find_llama_server()
    if binary is None or not a.model.exists():
        print("cold_swap: needs llama-server and the model (make setup)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="cold-swap-", dir=os.environ.get("BENCH_TMP")) as tmp:
        results = measure(binary, a.model, Path(tmp), a.rounds, log=lambda line: print(line, flush=True))
    if a.json:
        a.json.write_text(json.dumps({"rounds": a.rounds, "model": str(a.model), "seconds": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
