"""Swap-back time-to-first-token: a long conversation on model A, a swap to B,
then the next turn on A - with the router's KV persistence, without it, and
with llama.cpp's own router mode (`llama-server --models-dir`) side by side.

    .venv/bin/python bench/kv_swapback.py                 # all three, ~3,200 tokens
    .venv/bin/python bench/kv_swapback.py --tokens 6000 --modes kv,nokv --json out.json

A and B are the same GGUF under two names (default: the Gemma 3 270M the tests
use), so the swap costs a real model load. Each mode runs in its own fresh
process tree and temporary folder; every process this script starts is
stopped by its process group id before it exits. Time-to-first-token is
measured on the client, from sending the streamed request for A (which
triggers the swap back) to the first content token, so it includes the
child's start, the restore and the prompt processing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.targets import wait_healthy  # noqa: E402
from router.backend.launch import find_llama_server  # noqa: E402

DEFAULT_MODEL = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / \
    "llama-router" / "models" / "gemma-3-270m-it-Q4_K_M.gguf"
MODES = ("kv", "nokv", "llamacpp", "direct")  # direct: one llama-server, never swapped
START_TIMEOUT_S = 60
REQUEST_TIMEOUT_S = 600


@dataclass
class Result:
    mode: str
    context_tokens: int   # what turn 1 left in the cache
    first_turn_s: float
    swap_back_ttft_s: float
    cache_n: int | None   # of the swap-back turn, as llama-server reports it
    prompt_n: int | None
    prompt_ms: float | None  # the child's own prompt-processing time for that turn
    kv_save_ms: float | None = None     # the router's save before the swap (kv mode)
    kv_restore_ms: float | None = None  # and its restore after the swap back
    kv_bytes: int | None = None
    load_s: float | None = None  # the swap-back's child load, spawn to ready (the KV restore included)
    compute_s: float | None = None  # the child's own time for that turn's new tokens and first token
    overhead_s: float | None = None  # the rest of the TTFT: the router's share


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group we created, then SIGKILL what is left."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def chat(url: str, model: str, messages: list[dict], max_tokens: int) -> tuple[float, str, dict]:
    """Stream one chat turn; returns (time to first token, text, timings)."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t0 = time.monotonic()
    ttft: float | None = None
    text, timings = "", {}
    with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as r:
        for raw in r:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            timings = chunk.get("timings") or timings
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    if ttft is None:
                        ttft = time.monotonic() - t0
                    text += piece
    return (ttft if ttft is not None else time.monotonic() - t0), text, timings


def conversation(tokens: int) -> list[dict]:
    """About `tokens` tokens of Gemma chat (13-14 tokens a fact)."""
    facts = " ".join(f"Fact {i}: the number {i} is {'even' if i % 2 == 0 else 'odd'}."
                     for i in range(max(10, tokens // 13)))
    return [{"role": "user", "content": facts + " Which fact mentions the number 7?"}]


def start_router(mode: str, model: Path, ctx: int, work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = ["llama-server", "--model", "$path", "--alias", "$name", "--host", "$host", "--port", "$port",
               "--ctx-size", str(ctx), "-np", "1"]
    config = {
        "router": {"port": port, "models_max": 1, "kv_persistence": mode == "kv",
                   "slot_save_path": str(work / "slots")},
        "spawn": {"command": command},
        "models": {"a": {"path": str(model)}, "b": {"path": str(model)}},
    }
    cfg = work / "config.json"  # JSON is YAML
    cfg.write_text(json.dumps(config))
    return started([sys.executable, "-m", "router", "--config", str(cfg)], port, work / "router.log")


def started(argv: list[str], port: int, log: Path) -> tuple[subprocess.Popen, str]:
    """Start `argv` in its own process group, its output into `log`; wait for /health on `port`."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc, Path(argv[0]).name, log, START_TIMEOUT_S)
    return proc, url


def llama_server() -> str:
    binary = find_llama_server()
    if binary is None:
        raise RuntimeError("llama-server not found")
    return binary


def start_llamacpp(model: Path, ctx: int, work: Path) -> tuple[subprocess.Popen, str]:
    models = work / "models"
    models.mkdir()
    for name in ("a", "b"):
        (models / f"{name}.gguf").symlink_to(model)
    port = free_port()
    return started([llama_server(), "--models-dir", str(models), "--models-max", "1", "--host", "127.0.0.1",
                    "--port", str(port), "--ctx-size", str(ctx), "-np", "1"], port, work / "llamacpp.log")


def start_direct(model: Path, ctx: int, work: Path) -> tuple[subprocess.Popen, str]:
    """One llama-server serving "a": the same next turn, never swapped out (the floor)."""
    port = free_port()
    return started([llama_server(), "--model", str(model), "--alias", "a", "--host", "127.0.0.1",
                    "--port", str(port), "--ctx-size", str(ctx), "-np", "1"], port, work / "direct.log")


def run_mode(mode: str, model: Path, tokens: int, ctx: int) -> Result:
    starters = {"llamacpp": start_llamacpp, "direct": start_direct}
    with tempfile.TemporaryDirectory(prefix=f"kv-swapback-{mode}-") as tmp:
        work = Path(tmp)
        proc, url = starters[mode](model, ctx, work) if mode in starters else start_router(mode, model, ctx, work)
        try:
            messages = conversation(tokens)
            t0 = time.monotonic()
            _, answer, timings = chat(url, "a", messages, 16)
            first_turn_s = time.monotonic() - t0
            context = int(timings.get("prompt_n", 0)) + int(timings.get("cache_n", 0))
            if mode != "direct":
                chat(url, "b", [{"role": "user", "content": "Hi"}], 4)  # swap A out
            messages += [{"role": "assistant", "content": answer},
                         {"role": "user", "content": "And which one mentions 8?"}]
            ttft, _, timings = chat(url, "a", messages, 8)  # swap back
            prompt_ms = timings.get("prompt_ms")
            result = Result(mode, context, round(first_turn_s, 2), round(ttft, 3), timings.get("cache_n"),
                            timings.get("prompt_n"), round(prompt_ms, 1) if prompt_ms is not None else None)
            if mode == "kv":
                with urllib.request.urlopen(url + "/models", timeout=30) as r:
                    kv = next(m for m in json.load(r)["data"] if m["id"] == "a").get("kv") or {}
                save, restore = kv.get("last_save") or {}, kv.get("last_restore") or {}
                result.kv_save_ms, result.kv_restore_ms = save.get("ms"), restore.get("ms")
                result.kv_bytes = save.get("bytes")
            if mode in ("kv", "nokv"):
                with urllib.request.urlopen(url + "/dashboard/api/models", timeout=30) as r:
                    row = next(m for m in json.load(r)["models"] if m["name"] == "a")
                per_token = timings.get("predicted_per_token_ms") or 0.0
                if row.get("last_load_s") is not None and prompt_ms is not None:
                    result.load_s = round(row["last_load_s"], 3)
                    result.compute_s = round((prompt_ms + per_token) / 1000, 3)
                    result.overhead_s = round(ttft - result.load_s - result.compute_s, 3)
            return result
        finally:
            stop(proc)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="GGUF used for both A and B")
    p.add_argument("--tokens", type=int, default=3200, help="length of the conversation (default 3200)")
    p.add_argument("--ctx", type=int, default=8192, help="context size of each child (default 8192)")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    p.add_argument("--json", metavar="PATH", help="also write the results here; '-' prints them as the "
                   "last line of output, with \"ttft_s\": the swap-back TTFT with persistence (for `python -m bench`)")
    args = p.parse_args()
    if not args.model.is_file():
        p.error(f"model not found: {args.model} (run `make setup`)")
    results = []
    for mode in args.modes.split(","):
        if mode not in MODES:
            p.error(f"unknown mode {mode!r}")
        r = run_mode(mode, args.model, args.tokens, args.ctx)
        print(f"{r.mode:9s} context {r.context_tokens:5d} tok  first turn {r.first_turn_s:6.2f} s  "
              f"swap-back TTFT {r.swap_back_ttft_s:7.3f} s  cache_n {r.cache_n}  prompt_n {r.prompt_n}  "
              f"prompt_ms {r.prompt_ms}" + (f"  save {r.kv_save_ms} ms  restore {r.kv_restore_ms} ms  "
                                         f"{(r.kv_bytes or 0) / 1e6:.1f} MB" if r.mode == "kv" else ""), flush=True)
        results.append(r)
    by_mode = {r.mode: r for r in results}
    summary: dict[str, object] = {"results": [asdict(r) for r in results]}
    if "kv" in by_mode:
        for other in ("nokv", "llamacpp"):
            if other in by_mode:
                ratio = by_mode[other].swap_back_ttft_s / by_mode["kv"].swap_back_ttft_s
                summary[f"ttft_ratio_{other}_over_kv"] = round(ratio, 1)
                print(f"swap-back TTFT, {other} / kv: {ratio:.1f}x")
    if "kv" in by_mode:
        kv = by_mode["kv"]
        summary["ttft_s"] = kv.swap_back_ttft_s
        summary.update(load_s=kv.load_s, compute_s=kv.compute_s, overhead_s=kv.overhead_s)
        print(f"kv swap-back TTFT {kv.swap_back_ttft_s:.3f} s = child load {kv.load_s} s + the turn's own "
              f"compute {kv.compute_s} s + router {kv.overhead_s} s")
    if "direct" in by_mode:
        summary["direct_ttft_s"] = by_mode["direct"].swap_back_ttft_s
    if args.json == "-":
        print(json.dumps(summary))
    elif args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
