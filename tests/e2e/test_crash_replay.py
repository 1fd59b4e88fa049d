"""A child that dies costs only the replies already under way: requests it had
not begun to answer (no byte sent to the client) are sent once more to the
restarted child; a stream that had begun ends with a clean error event."""

from __future__ import annotations

import json
import signal
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.http import call, wait_until
from tests.support.routerproc import RouterProcess, child_command, write_config

pytestmark = [pytest.mark.real, pytest.mark.timeout(240)]

PROMPT = [{"role": "user", "content": "Count from one to fifty in words, separated by commas."}]


def chat(url: str, max_tokens: int = 48) -> tuple[int, dict]:
    return call(url + "/v1/chat/completions", {"model": "gemma", "messages": PROMPT, "max_tokens": max_tokens,
                                               "temperature": 0}, timeout=180)


def the_child(router: RouterProcess):
    kids = [p for p in router.children() if "llama-server" in " ".join(p.cmdline())]
    assert len(kids) == 1, kids
    return kids[0]


def generating(router: RouterProcess) -> bool:
    """The child is answering a request (llama-server's own /slots, a light request through the router)."""
    status, slots = call(router.url + "/slots?model=gemma")
    assert status == 200, slots
    return any(s["is_processing"] for s in slots)


def in_flight(router: RouterProcess, token: str) -> int:
    status, body = call(router.url + "/admin/status", headers={"Authorization": f"Bearer {token}"})
    assert status == 200, body
    return next(m["in_flight"] for m in body["models"] if m["model"] == "gemma")


def test_requests_not_yet_answered_survive_a_child_kill(tmp_path: Path, llama_server: Path, gemma: Path):
    token = "admin-token-for-replay"
    cfg = write_config(tmp_path / "c.yaml", {"gemma": {"path": str(gemma)}},
                       router={"admin_token": token, "kv_persistence": False},
                       spawn={"command": child_command(llama_server, ctx=2048)})
    with RouterProcess(cfg, tmp_path / "router.log") as router:
        assert chat(router.url, 1)[0] == 200  # loaded
        first = the_child(router)
        with ThreadPoolExecutor(6) as pool:
            replies = [pool.submit(chat, router.url) for _ in range(6)]
            # One request is inside the child (it has one slot); the router holds the other five.
            wait_until(lambda: in_flight(router, token) >= 1, 30, "a request inside the child")
            wait_until(lambda: generating(router), 30, "the child to work on it")  # no byte of its reply left yet
            first.send_signal(signal.SIGKILL)
            results = [r.result(timeout=180) for r in replies]
        assert [s for s, _ in results] == [200] * 6, [b for s, b in results if s != 200]
        assert all(b["choices"][0]["message"]["content"] for _, b in results)
        assert the_child(router).pid != first.pid  # served by the restarted child
        assert "replaying the request once" in router.log()


def test_a_stream_under_way_when_the_child_dies_ends_with_an_error_event(tmp_path: Path, llama_server: Path,
                                                                          gemma: Path):
    cfg = write_config(tmp_path / "c.yaml", {"gemma": {"path": str(gemma)}}, router={"kv_persistence": False},
                       spawn={"command": child_command(llama_server, ctx=2048)})
    with RouterProcess(cfg, tmp_path / "router.log") as router:
        assert chat(router.url, 1)[0] == 200
        child = the_child(router)
        body = json.dumps({"model": "gemma", "messages": PROMPT, "max_tokens": 200, "stream": True}).encode()
        req = urllib.request.Request(router.url + "/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        events = []
        with urllib.request.urlopen(req, timeout=120) as r:
            for raw in r:
                line = raw.decode().strip()
                if not line.startswith("data: "):
                    continue
                events.append(line[6:])
                if len(events) == 3:
                    child.send_signal(signal.SIGKILL)  # the reply is under way: it cannot be replayed
        errors = [json.loads(e)["error"] for e in events if e.startswith("{") and "error" in json.loads(e)]
        assert len(errors) == 1 and errors[0]["type"] == "upstream_error", events[-3:]
        assert "replaying" not in router.log()
        assert chat(router.url, 4)[0] == 200  # and the model comes back for the next request
