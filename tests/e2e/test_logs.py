"""Each model's output over HTTP: recent lines and a live SSE stream."""

from __future__ import annotations

import os
import signal

import pytest
import requests

from tests.support.opskit import TIMEOUT, SSEReader, chat, tiny_catalogue, tiny_router, wait_until

pytestmark = pytest.mark.real


def test_recent_lines_and_the_live_stream(tmp_path, llama_server, tiny_dir):
    with tiny_router(tmp_path, llama_server, tiny_catalogue(tiny_dir, "tiny-a", "tiny-b"), log_lines=50) as r:
        empty = requests.get(r.url + "/logs/tiny-a", timeout=TIMEOUT)
        assert empty.status_code == 200 and empty.text == ""
        assert chat(r.url, "tiny-a").status_code == 200
        text = requests.get(r.url + "/logs/tiny-a", timeout=TIMEOUT).text
        assert "load_model: loading model" in text and "tiny-a.gguf" in text
        lines = requests.get(r.url + "/logs/tiny-a?format=json", timeout=TIMEOUT).json()["lines"]
        assert 0 < len(lines) <= 50, "the ring is bounded by router.log_lines"
        assert "cmd_child_to_router" not in text, "protocol lines are not log lines"

        with SSEReader(r.url + "/logs/stream/tiny-b") as stream:
            assert chat(r.url, "tiny-b").status_code == 200  # swaps tiny-a out, tiny-b in
            event = stream.wait_for(lambda e: "model loaded" in e["line"])
            assert event["model"] == "tiny-b"
            stream.wait_for(lambda e: "print_timing" in e["line"])
        assert requests.get(r.url + "/logs/tiny-c", timeout=TIMEOUT).status_code == 404
        bad = requests.get(r.url + "/logs/..%2F..%2Fetc%2Fpasswd", timeout=TIMEOUT)
        assert bad.status_code in (400, 404) and "error" in bad.json()


def test_a_crashed_models_last_lines_stay_readable(tmp_path, llama_server, tiny_dir):
    with tiny_router(tmp_path, llama_server, tiny_catalogue(tiny_dir, "tiny-a")) as r:
        assert chat(r.url, "tiny-a").status_code == 200

        def logged_timing() -> bool:
            return "print_timing" in requests.get(r.url + "/logs/tiny-a", timeout=TIMEOUT).text

        # llama-server writes its log from a worker thread: the reply can reach the
        # client before its timing lines reach the pipe. Kill only once they did.
        wait_until(logged_timing, what="the child's timing lines")
        os.kill(r.children()[0].pid, signal.SIGKILL)
        wait_until(lambda: not r.children(), what="the child to die")
        text = requests.get(r.url + "/logs/tiny-a", timeout=TIMEOUT).text
        assert "print_timing" in text, "lines written before the crash are kept"
        assert "load_model: loading model" in text
        assert "exited unexpectedly" in r.log()
