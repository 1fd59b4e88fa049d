"""Swap feedback in the stream, and load/unload/crash events on /models/sse."""

from __future__ import annotations

import os
import signal

import openai
import pytest
import requests

from tests.support.opskit import TIMEOUT, SSEReader, chat, tiny_catalogue, tiny_router, wait_until

pytestmark = pytest.mark.real


def test_streaming_chat_tells_the_swap_then_replies(tmp_path, llama_server, tiny_dir):
    models = tiny_catalogue(tiny_dir, "tiny-a", "tiny-b")
    with tiny_router(tmp_path, llama_server, models, notify_model_swap=True) as r:
        client = openai.OpenAI(base_url=r.url + "/v1", api_key="unused", timeout=TIMEOUT, max_retries=0)
        assert chat(r.url, "tiny-a").status_code == 200  # tiny-a runs; tiny-b must swap it out
        stream = client.chat.completions.create(model="tiny-b", stream=True, max_tokens=8,
                                                messages=[{"role": "user", "content": "hi"}])
        thinking, content, finish = [], [], None
        for chunk in stream:  # every chunk parses as an OpenAI ChatCompletionChunk
            assert chunk.object == "chat.completion.chunk" and chunk.model == "tiny-b"
            delta = chunk.choices[0].delta
            extra = (delta.model_extra or {}).get("reasoning_content")
            if extra:
                assert not content, "progress must come before the reply"
                thinking.append(extra)
            if delta.content:
                content.append(delta.content)
            finish = chunk.choices[0].finish_reason or finish
        text = "".join(thinking)
        assert text.startswith("unloading tiny-a to make room for tiny-b\n"), text
        assert "loading tiny-b" in text and "tiny-a unloaded" in text
        assert text.endswith("tiny-b ready\n")
        assert content and finish == "length"

        # A model that is already loaded answers with no progress at all.
        again = client.chat.completions.create(model="tiny-b", stream=True, max_tokens=4,
                                               messages=[{"role": "user", "content": "hi"}])
        assert not any((c.choices[0].delta.model_extra or {}).get("reasoning_content")
                       for c in again if c.choices)


def test_failed_load_ends_the_stream_with_an_error(tmp_path, llama_server, tiny_dir):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF but not really a model")
    models = {"broken": {"path": str(broken)}}
    with tiny_router(tmp_path, llama_server, models, notify_model_swap=True) as r:
        client = openai.OpenAI(base_url=r.url + "/v1", api_key="unused", timeout=TIMEOUT, max_retries=0)
        stream = client.chat.completions.create(model="broken", stream=True, max_tokens=4,
                                                messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.APIError, match="failed to load"):
            for _ in stream:
                pass
        assert requests.get(r.url + "/health", timeout=TIMEOUT).status_code == 200
        # Recorded as the 503 the stream told, though it began as a 200.
        rows = wait_until(lambda: requests.get(r.url + "/api/activity", timeout=TIMEOUT).json()["data"],
                          what="the activity row")
        assert [(x["model"], x["status"]) for x in rows] == [("broken", 503)]


def test_sse_tells_load_unload_and_crash_apart(tmp_path, llama_server, tiny_dir):
    with tiny_router(tmp_path, llama_server, tiny_catalogue(tiny_dir, "tiny-a")) as r:
        with SSEReader(r.url + "/models/sse") as sse:
            assert requests.post(r.url + "/models/load", json={"model": "tiny-a"}, timeout=TIMEOUT).ok
            loading = sse.wait_for(lambda e: e["event"] == "status_change" and e["data"]["status"] == "loading")
            assert loading["model"] == "tiny-a" and loading["event"] == "status_change"
            loaded = sse.wait_for(lambda e: e["event"] == "status_change" and e["data"]["status"] == "loaded")
            assert loaded["model"] == "tiny-a" and loaded["data"]["load_seconds"] >= 0

            assert requests.post(r.url + "/models/unload", json={"model": "tiny-a"}, timeout=TIMEOUT).ok
            unloaded = sse.wait_for(lambda e: e["event"] == "status_change" and e["data"]["status"] == "unloaded")
            assert unloaded["data"]["reason"] == "unload" and not unloaded["data"].get("failed")
            assert unloaded["data"]["exit_code"] == 0

            assert chat(r.url, "tiny-a").status_code == 200
            sse.wait_for(lambda e: e["event"] == "status_change" and e["data"]["status"] == "loaded")
            pid = r.children()[0].pid
            os.kill(pid, signal.SIGKILL)
            crash = sse.wait_for(lambda e: e["event"] == "status_change" and e["data"]["status"] == "unloaded")
            assert crash["data"]["failed"] is True and crash["data"]["reason"] == "crash"
            assert crash["data"]["exit_code"] == -signal.SIGKILL
        models = requests.get(r.url + "/v1/models", timeout=TIMEOUT).json()["data"]
        assert models[0]["status"] == {"value": "unloaded", "args": [], "failed": True, "exit_code": -9}
        # The next request starts it again.
        assert chat(r.url, "tiny-a").status_code == 200
        wait_until(lambda: len(r.children()) == 1, what="the restarted child")
