"""`python -m bench.profile`: where llama-router's own time goes under load.

Runs llama-router in front of the tiny stand-in model (fast, so the router
and not the model is what is busy), drives it with concurrent streams and
/tokenize calls, and samples the router process with py-spy meanwhile
(`pip install py-spy`). Prints the busiest functions (self and inclusive
share of samples) and the share per package.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from . import measure as m
from .targets import make_setup, start_router

CHILD_ARGS = ("--ctx-size", "4096", "--parallel", "1")


async def load(url: str, model: str, seconds: float, streams: int, tokenizers: int) -> int:
    """Keep `streams` streaming clients and `tokenizers` /tokenize clients busy for `seconds`."""
    deadline = time.monotonic() + seconds
    done = 0

    async def streamer() -> None:
        nonlocal done
        async with m.session(fresh=True) as s:
            while time.monotonic() < deadline:
                await m.stream(s, url, m.chat(model, 32, stream=True), total=60)
                done += 1

    async def tokenizer() -> None:
        nonlocal done
        body = {"model": model, "content": "The quick brown fox jumps over the lazy dog."}
        async with m.session() as s:
            while time.monotonic() < deadline:
                await m.post_json(s, url + "/tokenize", body, total=30)
                done += 1

    await asyncio.gather(*(streamer() for _ in range(streams)), *(tokenizer() for _ in range(tokenizers)))
    return done


def summarize(raw: Path, top: int = 20) -> str:
    """Self and inclusive sample shares from py-spy's collapsed ("raw") output."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    pkg: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
        pkg[_package(frames[-1])] += n
    if not total:
        return "no samples"
    out = [f"{total} samples", "", "self %  function (innermost frame)"]
    out += [f"{100 * c / total:6.1f}  {f}" for f, c in own.most_common(top)]
    out += ["", "incl %  function (anywhere on the stack; router code only)"]
    ours = [(f, c) for f, c in incl.most_common() if "router/" in f and "bench/" not in f][:top]
    out += [f"{100 * c / total:6.1f}  {f}" for f, c in ours]
    out += ["", "self %  by package"]
    out += [f"{100 * c / total:6.1f}  {p}" for p, c in pkg.most_common(12)]
    return "\n".join(out)


def _package(frame: str) -> str:
    """`func (path/to/file.py:12)` -> a short package name."""
    path = frame.rsplit("(", 1)[-1]
    for key in ("router/", "aiohttp/", "asyncio/", "multidict", "yarl/", "json/", "logging/", "psutil", "ssl"):
        if key in path:
            return key.strip("/")
    return "other" if "(" in frame else frame


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--streams", type=int, default=32)
    p.add_argument("--tokenizers", type=int, default=4)
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--out", default=None, help="directory for the raw profile (default: a temp dir)")
    args = p.parse_args(argv)
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        sys.exit("bench.profile: py-spy not found; `pip install py-spy` into this environment")
    from tests.support.tinygguf import write_tiny_model

    from .__main__ import find_binary
    with tempfile.TemporaryDirectory(prefix="llama-router-profile-") as tmp:
        work = Path(tmp)
        tiny = write_tiny_model(work / "tiny.gguf", name="tiny", seed=0)
        setup = make_setup(find_binary(), tiny, ("tiny-a", "tiny-b"), CHILD_ARGS, work)
        t = start_router(setup)
        out_dir = Path(args.out) if args.out else work
        out_dir.mkdir(parents=True, exist_ok=True)
        raw = out_dir / "router-profile.txt"
        spy = None
        try:
            asyncio.run(m.one_reply(t.url, "tiny-a"))
            spy = subprocess.Popen([pyspy, "record", "-p", str(t.proc.pid), "-d", str(int(args.seconds)),
                                    "-r", str(args.rate), "-f", "raw", "-o", str(raw), "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(0.5)
            with m.Sampler(t.proc.pid) as smp:
                n = asyncio.run(load(t.url, "tiny-a", args.seconds, args.streams, args.tokenizers))
            spy.wait(args.seconds + 60)
            err = spy.stderr.read().decode(errors="replace") if spy.stderr else ""
        finally:
            if spy is not None and spy.poll() is None:
                spy.kill()
                spy.wait(10)
            t.stop()
        print(f"{n} requests in {args.seconds:.0f} s ({n / args.seconds:.0f}/s) with {args.streams} streams "
              f"+ {args.tokenizers} /tokenize clients; router CPU {smp.cpu_percent:.0f}% of one core")
        if not raw.exists():
            print(f"py-spy wrote no profile: {err.strip()[-500:]}")
            return 1
        print(summarize(raw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
