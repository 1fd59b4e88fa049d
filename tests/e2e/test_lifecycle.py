"""Start-up model, idle TTL unloads, and graceful shutdown with a request in flight."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import requests

from tests.support.opskit import TIMEOUT, chat, model_state, tiny_catalogue, tiny_router, wait_until
from tests.support.routerproc import ROOT, child_command, write_config

pytestmark = pytest.mark.real


def test_startup_model_is_loaded_before_the_port_opens(tmp_path, llama_server, tiny_dir):
    models = tiny_catalogue(tiny_dir, "tiny-a", "tiny-b", tiny_b={"aliases": ["bee"]})
    with tiny_router(tmp_path, llama_server, models, startup_model="bee") as r:
        # The very first answer of the router already shows it loaded.
        assert model_state(r.url, "tiny-b") == "loaded"
        assert model_state(r.url, "tiny-a") == "unloaded"
        assert len(r.children()) == 1
        log = r.log()
        assert log.index("[tiny-b] ready") < log.index("llama-router listening on")


def test_startup_model_that_fails_is_a_clear_startup_error(tmp_path, llama_server):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a model at all")
    cfg = write_config(tmp_path / "config.yaml", {"broken": {"path": str(broken)}},
                       router={"startup_model": "broken", "watch_config": False},
                       spawn={"command": child_command(llama_server)})
    proc = subprocess.run([sys.executable, "-m", "router", "-c", str(cfg)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "cannot start: start-up model 'broken' failed to load" in proc.stderr
    assert "listening on" not in proc.stderr


def test_unknown_startup_model_is_a_configuration_error(tmp_path, llama_server, tiny_dir):
    cfg = write_config(tmp_path / "config.yaml", tiny_catalogue(tiny_dir, "tiny-a"),
                       router={"startup_model": "tiny-z"})
    proc = subprocess.run([sys.executable, "-m", "router", "-c", str(cfg)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "router.startup_model: expected the name of a model in the catalogue, got 'tiny-z'" in proc.stderr


def test_idle_models_unload_after_their_ttl(tmp_path, llama_server, tiny_dir):
    # tiny-a has its own ttl; tiny-b follows the global one; tiny-c opts out with ttl 0.
    models = tiny_catalogue(tiny_dir, "tiny-a", "tiny-b", "tiny-c", group="g",
                            tiny_a={"ttl": 1}, tiny_c={"ttl": 0})
    with tiny_router(tmp_path, llama_server, models, models_max=3, ttl=2) as r:
        started = time.monotonic()
        for name in ("tiny-a", "tiny-b", "tiny-c"):
            assert chat(r.url, name).status_code == 200
        wait_until(lambda: model_state(r.url, "tiny-a") == "unloaded", timeout=10, what="tiny-a ttl")
        wait_until(lambda: model_state(r.url, "tiny-b") == "unloaded", timeout=10, what="tiny-b global ttl")
        assert time.monotonic() - started >= 1.0
        assert model_state(r.url, "tiny-c") == "loaded"
        assert "[tiny-a] idle for 1 s: unloading (ttl)" in r.log()
        assert "[tiny-b] idle for 2 s: unloading (ttl)" in r.log()


@pytest.mark.gemma
def test_busy_model_is_not_unloaded_by_ttl(tmp_path, llama_server, gemma):
    ttl = 0.1
    with tiny_router(tmp_path, llama_server, {"gemma": {"path": str(gemma), "ttl": ttl}}) as r:
        body = {"model": "gemma", "stream": True, "max_tokens": 64, "ignore_eos": True,
                "messages": [{"role": "user", "content": "Tell me a story."}]}
        with requests.post(r.url + "/v1/chat/completions", json=body, stream=True, timeout=TIMEOUT) as s:
            lines = s.iter_lines()
            first = next(lines)
            started = time.monotonic()
            rest = [line for line in lines if line]
        assert time.monotonic() - started > 2 * ttl, "the stream must outlive the ttl for this test to mean much"
        assert first.startswith(b"data: ") and rest[-1] == b"data: [DONE]" and len(rest) >= 20
        wait_until(lambda: model_state(r.url, "gemma") == "unloaded", timeout=10, what="ttl after the request")


@pytest.mark.gemma
def test_sigterm_lets_the_request_in_flight_finish(tmp_path, llama_server, gemma):
    r = tiny_router(tmp_path, llama_server, {"gemma": {"path": str(gemma)}}, drain_timeout=60).wait_ready()
    try:
        body = {"model": "gemma", "stream": True, "max_tokens": 12, "ignore_eos": True,
                "messages": [{"role": "user", "content": "Tell me a story."}]}
        with requests.post(r.url + "/v1/chat/completions", json=body, stream=True, timeout=TIMEOUT) as s:
            lines = s.iter_lines()
            assert next(lines).startswith(b"data: ")
            r.proc.send_signal(signal.SIGTERM)
            # New connections are refused at once while the stream goes on.
            wait_until(lambda: _refused(r.url), timeout=5, what="the port to close")
            rest = [line for line in lines if line]
        assert rest[-1] == b"data: [DONE]" and len(rest) >= 12
        assert r.proc.wait(30) == 0
    finally:
        r.stop()
    assert "shutting down: finishing requests in flight" in r.log_path.read_text()


def _refused(url: str) -> bool:
    try:
        requests.get(url + "/health", timeout=2)
        return False
    except requests.ConnectionError:
        return True


@pytest.mark.gemma
def test_a_second_signal_exits_at_once_and_still_stops_the_children(tmp_path, llama_server, gemma):
    """Ctrl-C twice: the drain is cut short, the children are killed, none is left running."""
    r = tiny_router(tmp_path, llama_server, {"gemma": {"path": str(gemma)}}, drain_timeout=60).wait_ready()
    try:
        body = {"model": "gemma", "stream": True, "max_tokens": 2000, "ignore_eos": True,
                "messages": [{"role": "user", "content": "Tell me a long story."}]}
        with requests.post(r.url + "/v1/chat/completions", json=body, stream=True, timeout=TIMEOUT) as s:
            lines = s.iter_lines()
            assert next(lines).startswith(b"data: ")
            children = r.children()
            assert children, "the model's child should be running"
            r.proc.send_signal(signal.SIGINT)
            wait_until(lambda: "shutting down" in r.log(), timeout=5, what="the drain to begin")
            started = time.monotonic()
            r.proc.send_signal(signal.SIGINT)
            code = r.proc.wait(10)
            took = time.monotonic() - started
        assert code == 130 and took < 5, (code, took)
        for child in children:
            assert not child.is_running() or child.status() == "zombie", f"child {child.pid} outlived the router"
        assert "second signal: exiting now" in r.log_path.read_text()
    finally:
        r.stop()
