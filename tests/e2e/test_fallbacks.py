"""Fallbacks with real llama-servers (issue #27): a model that cannot serve a request
hands it to the first of its `fallbacks` that can; the reply names the model that
served it, and X-Fallback-From / X-Fallback-Reason say why."""

from __future__ import annotations

import json
import threading

import pytest
import requests

from tests.support.opskit import TIMEOUT, chat, model_state, tiny_catalogue, tiny_router, wait_until
from tests.support.tinygguf import write_truncated_gguf

pytestmark = pytest.mark.real

ADMIN = "admin-token-for-tests"


def _fell_back(resp: requests.Response, to: str, reason: str) -> None:
    assert resp.status_code == 200, resp.text
    assert resp.json()["model"] == to
    assert resp.headers["X-Fallback-From"] == "gone" and resp.headers["X-Fallback-Reason"] == reason


def test_a_model_whose_file_is_missing_falls_back(tmp_path, llama_server, tiny_dir):
    models = {"gone": {"path": str(tmp_path / "deleted.gguf"), "fallbacks": ["tiny-b"]},
              **tiny_catalogue(tiny_dir, "tiny-b")}
    with tiny_router(tmp_path, llama_server, models) as r:
        _fell_back(chat(r.url, "gone"), "tiny-b", "file_missing")
        # Streamed too: each chunk names the model that serves it.
        with requests.post(r.url + "/v1/chat/completions", stream=True, timeout=TIMEOUT, json={
                "model": "gone", "stream": True, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}) \
                as resp:
            assert resp.status_code == 200 and resp.headers["X-Fallback-Reason"] == "file_missing"
            chunks = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith(b"data: {")]
        assert chunks and {c["model"] for c in chunks} == {"tiny-b"}
        # The metrics count the model that served; keep_alive 0 unloads it after the reply.
        metrics = requests.get(r.url + "/metrics", timeout=TIMEOUT).text
        assert 'llama_router_requests_total{endpoint="/v1/chat/completions",model="tiny-b",status="200"} 2.0' \
            in metrics
        assert 'llama_router_requests_total{endpoint="/v1/chat/completions",model="gone"' not in metrics
        _fell_back(chat(r.url, "gone", keep_alive=0), "tiny-b", "file_missing")
        wait_until(lambda: model_state(r.url, "tiny-b") == "unloaded", 30, "tiny-b unloaded after its reply")


def test_a_model_whose_load_fails_falls_back(tmp_path, llama_server, tiny_dir):
    models = {"gone": {"path": str(write_truncated_gguf(tmp_path / "cut.gguf")), "fallbacks": ["tiny-a", "tiny-b"]},
              **tiny_catalogue(tiny_dir, "tiny-a", "tiny-b")}
    with tiny_router(tmp_path, llama_server, models) as r:
        _fell_back(chat(r.url, "gone"), "tiny-a", "load_failed")
        assert "[gone] served by its fallback tiny-a (load_failed)" in r.log()


def test_a_full_queue_falls_back(tmp_path, llama_server, tiny_dir):
    # LLAMA_SERVER_DEBUG_FAKE_TIMING: each relayed request holds its model 2 s, so the queue stays full.
    models = {"gone": {"path": str(tiny_dir / "tiny-a.gguf"), "concurrency_limit": 1, "max_queue": 1,
                       "fallbacks": ["tiny-b"], "group": "g"},
              **tiny_catalogue(tiny_dir, "tiny-b", group="g")}
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with tiny_router(tmp_path, llama_server, models, admin_token=ADMIN,
                     env={"LLAMA_SERVER_DEBUG_FAKE_TIMING": "1"}) as r:
        def gone() -> dict:
            status = requests.get(r.url + "/admin/status", headers=admin, timeout=TIMEOUT).json()
            return next(m for m in status["models"] if m["model"] == "gone")

        results: list[requests.Response] = []
        threads = [threading.Thread(target=lambda: results.append(chat(r.url, "gone"))) for _ in range(2)]
        threads[0].start()
        wait_until(lambda: gone()["in_flight"] == 1, 30, "the first request in flight")
        threads[1].start()
        wait_until(lambda: gone()["waiting"] == 1, 30, "the second request queued")
        third = chat(r.url, "gone")
        for t in threads:
            t.join(60)
        _fell_back(third, "tiny-b", "queue_full")
        assert [x.status_code for x in results] == [200, 200]
        assert all(x.json()["model"] == "gone" and "X-Fallback-From" not in x.headers for x in results)


def test_without_fallbacks_the_errors_are_unchanged(tmp_path, llama_server, tiny_dir):
    models = {"gone": {"path": str(tmp_path / "deleted.gguf")},
              "cut": {"path": str(write_truncated_gguf(tmp_path / "cut.gguf"))},
              **tiny_catalogue(tiny_dir, "tiny-b")}
    with tiny_router(tmp_path, llama_server, models) as r:
        missing = chat(r.url, "gone")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_missing"
        failed = chat(r.url, "cut")
        assert failed.status_code == 503 and failed.json()["error"]["code"] == "model_unavailable"
        assert "X-Fallback-From" not in failed.headers


def test_a_key_limited_to_some_models_is_served_only_by_fallbacks_it_may_use(tmp_path, llama_server, tiny_dir):
    """A fallback never widens what an API key reaches: one the key may not use is skipped."""
    models = {"gone": {"path": str(tmp_path / "deleted.gguf"), "fallbacks": ["tiny-b", "tiny-a"]},
              **tiny_catalogue(tiny_dir, "tiny-a", "tiny-b")}
    keys = [{"key": "sk-scoped-0123456789", "models": ["gone", "tiny-a"]}, {"key": "sk-every-0123456789"}]
    with tiny_router(tmp_path, llama_server, models, api_keys=keys) as r:
        _fell_back(chat(r.url, "gone", {"Authorization": "Bearer sk-scoped-0123456789"}), "tiny-a", "file_missing")
        _fell_back(chat(r.url, "gone", {"Authorization": "Bearer sk-every-0123456789"}), "tiny-b", "file_missing")
