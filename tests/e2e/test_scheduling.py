"""A shared box with real llama-servers (issue #27, docs/scheduling.md): API keys'
priorities order a busy model's queue, a deadline ends a wait with a 503 and
Retry-After, an operator lists the requests and cancels one (waiting: it leaves
the queue; in flight: the child stops generating), X-Queue-Position says where a
request stood."""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import pytest
import requests

from tests.support.opskit import TIMEOUT, chat, tiny_catalogue, tiny_router, wait_until
from tests.support.routerproc import RouterProcess, child_command, write_config
from tests.support.tinygguf import write_tiny_model

pytestmark = pytest.mark.real

ADMIN = "admin-token-for-tests"
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
LOW = "sk-low-key-0123456789abcdef"
HIGH = "sk-high-key-0123456789abcdef"
SLOW = "sk-slow-key-0123456789abcdef"
PROMPT = "a-private-prompt-never-listed"
KEYS = [{"key": LOW, "priority": "low"}, {"key": HIGH, "priority": "high"}, {"key": SLOW, "max_wait": 0.5}]


def bearer(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


def listed(url: str) -> list[dict[str, Any]]:
    resp = requests.get(url + "/admin/requests", headers=ADMIN_H, timeout=TIMEOUT)
    assert resp.status_code == 200, resp.text
    return resp.json()["requests"]


def waiting(url: str) -> list[dict[str, Any]]:
    return [r for r in listed(url) if r["state"] == "waiting"]


def in_background(results: dict[str, requests.Response], order: list[str], name: str, url: str, key: str,
                  **headers: str) -> threading.Thread:
    """A chat sent in a thread; `order` gets its name when its reply arrives."""
    def send() -> None:
        results[name] = chat(url, "tiny-a", bearer(key, **{"X-Request-Id": name, **headers}),
                             messages=[{"role": "user", "content": PROMPT}])
        order.append(name)
    t = threading.Thread(target=send)
    t.start()
    return t


@pytest.fixture
def busy_router(tmp_path, llama_server, tiny_dir):
    """tiny-a takes one request at a time; each relayed request holds it 2 s
    (llama-server's LLAMA_SERVER_DEBUG_FAKE_TIMING), so a queue forms."""
    models = tiny_catalogue(tiny_dir, "tiny-a", tiny_a={"concurrency_limit": 1})
    with tiny_router(tmp_path, llama_server, models, api_keys=KEYS, admin_token=ADMIN,
                     env={"LLAMA_SERVER_DEBUG_FAKE_TIMING": "1"}) as r:
        assert chat(r.url, "tiny-a", bearer(LOW)).status_code == 200  # loaded
        yield r


def test_a_higher_priority_goes_first_and_each_reply_says_its_place(busy_router):
    url = busy_router.url
    results: dict[str, requests.Response] = {}
    order: list[str] = []
    threads = [in_background(results, order, "low-1", url, LOW)]
    wait_until(lambda: [r["state"] for r in listed(url)] == ["in_flight"], 30, "the first request in flight")
    for name in ("low-2", "low-3"):
        threads.append(in_background(results, order, name, url, LOW))
        wait_until(lambda: len(waiting(url)) == len(threads) - 1, 30, f"{name} queued")
    threads.append(in_background(results, order, "high", url, HIGH))
    wait_until(lambda: len(waiting(url)) == 3, 30, "the high request queued")

    # The operator's list: ids, model, key (its index, never the secret), state, place; never the text.
    resp = requests.get(url + "/admin/requests", headers=ADMIN_H, timeout=TIMEOUT)
    assert PROMPT not in resp.text and LOW not in resp.text and HIGH not in resp.text
    rows = {r["id"]: r for r in resp.json()["requests"]}
    assert rows["low-1"]["state"] == "in_flight" and rows["low-1"]["position"] is None
    assert rows["high"]["key"] == "api_keys[1]" and rows["low-2"]["key"] == "api_keys[0]"
    assert {n: rows[n]["position"] for n in ("high", "low-2", "low-3")} == {"high": 1, "low-2": 2, "low-3": 3}
    assert all(r["model"] == "tiny-a" and r["age_s"] >= 0 for r in rows.values())

    for t in threads:
        t.join(60)
    assert order == ["low-1", "high", "low-2", "low-3"]
    assert all(r.status_code == 200 for r in results.values())
    # Where each stood when it joined the queue: 0 served at once, 1 next.
    assert {n: results[n].headers["X-Queue-Position"] for n in order} == {
        "low-1": "0", "high": "1", "low-2": "1", "low-3": "2"}
    assert listed(url) == []


def test_a_request_may_lower_its_priority_never_raise_it(busy_router):
    url = busy_router.url
    results: dict[str, requests.Response] = {}
    order: list[str] = []
    threads = [in_background(results, order, "first", url, LOW)]
    wait_until(lambda: len(listed(url)) == 1, 30, "the first request in flight")
    threads.append(in_background(results, order, "low", url, LOW))
    wait_until(lambda: len(waiting(url)) == 1, 30, "the low request queued")
    threads.append(in_background(results, order, "humble-high", url, HIGH, **{"X-Priority": "low"}))
    wait_until(lambda: len(waiting(url)) == 2, 30, "the lowered request queued")
    threads.append(in_background(results, order, "pushy-low", url, LOW, **{"X-Priority": "high"}))
    wait_until(lambda: len(waiting(url)) == 3, 30, "the request asking for more queued")
    for t in threads:
        t.join(60)
    # Both at low: first come first served (the lowered high key's turn, then the low key's next).
    assert order[0] == "first" and order[1:] == ["low", "humble-high", "pushy-low"]

    bad = chat(url, "tiny-a", bearer(LOW, **{"X-Priority": "urgent"}))
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_priority"


def test_past_its_deadline_a_waiting_request_gets_a_503_with_retry_after_and_why(busy_router):
    url = busy_router.url
    results: dict[str, requests.Response] = {}
    order: list[str] = []
    threads = [in_background(results, order, "blocker", url, LOW)]
    wait_until(lambda: len(listed(url)) == 1, 30, "the first request in flight")
    threads.append(in_background(results, order, "filler", url, HIGH))  # the model stays busy 4 s
    wait_until(lambda: len(waiting(url)) == 1, 30, "the second request queued")

    started = time.monotonic()
    late = chat(url, "tiny-a", bearer(HIGH, **{"X-Max-Wait": "0.5"}))  # a header
    took = time.monotonic() - started
    assert late.status_code == 503, late.text
    assert int(late.headers["Retry-After"]) >= 1
    err = late.json()["error"]
    assert err["code"] == "queue_timeout" and err["type"] == "unavailable_error"
    assert "deadline" in err["message"] and "tiny-a" in err["message"] and "slots were busy" in err["message"]
    assert 0.4 < took < 1.9  # ended at its deadline, not when the model freed up (2 s and more)

    by_key = chat(url, "tiny-a", bearer(SLOW))  # the key's max_wait
    assert by_key.status_code == 503 and by_key.json()["error"]["code"] == "queue_timeout"
    assert "Retry-After" in by_key.headers

    # Ollama's API: the same refusal in Ollama's shape.
    ollama = requests.post(url + "/api/chat", headers=bearer(HIGH, **{"X-Max-Wait": "0.3"}), timeout=TIMEOUT,
                           json={"model": "tiny-a", "stream": False, "messages": [{"role": "user", "content": "hi"}]})
    assert ollama.status_code == 503 and "Retry-After" in ollama.headers
    assert list(ollama.json()) == ["error"] and "deadline" in ollama.json()["error"]

    for t in threads:
        t.join(60)
    assert results["blocker"].status_code == results["filler"].status_code == 200
    bad = chat(url, "tiny-a", bearer(HIGH, **{"X-Max-Wait": "soon"}))
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_max_wait"


def test_an_operator_cancels_a_waiting_request(busy_router):
    url = busy_router.url
    results: dict[str, requests.Response] = {}
    order: list[str] = []
    threads = [in_background(results, order, "first", url, LOW)]
    wait_until(lambda: len(listed(url)) == 1, 30, "the first request in flight")
    threads.append(in_background(results, order, "doomed", url, LOW))
    wait_until(lambda: len(waiting(url)) == 1, 30, "the second request queued")

    resp = requests.delete(url + "/admin/requests/doomed", headers=ADMIN_H, timeout=TIMEOUT)
    assert resp.status_code == 200 and resp.json()["state"] == "waiting"
    threads[1].join(10)
    doomed = results["doomed"]
    assert doomed.status_code == 499 and doomed.json()["error"]["code"] == "request_cancelled"
    assert [r["id"] for r in listed(url)] == ["first"]  # gone from the queue at once
    threads[0].join(60)
    assert results["first"].status_code == 200
    assert requests.delete(url + "/admin/requests/doomed", headers=ADMIN_H, timeout=TIMEOUT).status_code == 404
    metrics = requests.get(url + "/metrics", headers=bearer(HIGH), timeout=TIMEOUT).text
    assert 'llama_router_requests_cancelled_total{model="tiny-a",state="waiting"} 1.0' in metrics


@pytest.fixture
def long_router(tmp_path, llama_server):
    # A context of 16384 tokens: a reply runs on until cancelled (llama-server ends it at a full context).
    # The model is trained for that context too: llama-server caps a slot's at the model's, and the tiny
    # model's usual 2048 tokens could all be generated before the child notices a cancel.
    model = write_tiny_model(tmp_path / "tiny-a.gguf", name="tiny-a", n_ctx_train=16384)
    cfg = write_config(tmp_path / "config.yaml", {"tiny-a": {"path": str(model)}},
                       router={"watch_config": False, "admin_token": ADMIN},
                       spawn={"command": child_command(llama_server, ctx=16384)})
    with RouterProcess(cfg, tmp_path / "router.log") as r:
        yield r


def generating(url: str) -> bool:
    """The child is generating (llama-server's own /slots, a light request through the router)."""
    slots = requests.get(url + "/slots?model=tiny-a", timeout=TIMEOUT).json()
    return any(s["is_processing"] for s in slots)


def cancel_when_generating(url: str, rid: str) -> None:
    wait_until(lambda: generating(url) and [x["state"] for x in listed(url)] == ["in_flight"], 30,
               "the request generating")
    cancel = requests.delete(url + f"/admin/requests/{rid}", headers=ADMIN_H, timeout=TIMEOUT)
    assert cancel.status_code == 200 and cancel.json()["state"] == "in_flight"


def test_an_operator_cancels_a_whole_reply_in_flight_and_the_child_stops(long_router):
    """Its client gets a 499; the child says it stopped the task (its own log line) long
    before its context (16384 tokens) would have ended the reply. Its slots are not polled
    meanwhile: llama-server checks a whole reply's connection only when no other request
    (a /slots poll) woke it within a second."""
    url = long_router.url
    results: dict[str, requests.Response] = {}
    t = threading.Thread(target=lambda: results.setdefault("runaway", chat(
        url, "tiny-a", {"X-Request-Id": "runaway"}, max_tokens=400000, ignore_eos=True)))
    t.start()
    wait_until(lambda: "processing task" in long_router.log() and listed(url), 30, "the request generating")
    cancel = requests.delete(url + "/admin/requests/runaway", headers=ADMIN_H, timeout=TIMEOUT)
    assert cancel.status_code == 200 and cancel.json()["state"] == "in_flight"
    t.join(10)
    assert results["runaway"].status_code == 499
    assert results["runaway"].json()["error"]["code"] == "request_cancelled"
    stopped = wait_until(lambda: re.search(r"stop processing: n_tokens = (\d+)", long_router.log()), 15,
                         "the child to stop the task")
    # Cut short, not ended by a full context (16384 tokens). How far it got depends on the machine's
    # speed: the child notices a gone client about once a second, and a quiet 2-core machine
    # generates some 2,500 of the tiny model's tokens in that time.
    assert int(stopped[1]) < 16000, stopped[0]


def test_an_operator_cancels_a_streamed_request_in_flight_and_the_child_stops(long_router):
    """The client gets a last error event, the child stops generating (its /slots), metrics count it."""
    url = long_router.url
    body = {"model": "tiny-a", "stream": True, "max_tokens": 400000, "ignore_eos": True,
            "messages": [{"role": "user", "content": PROMPT}]}
    with requests.post(url + "/v1/chat/completions", json=body, stream=True, timeout=TIMEOUT,
                       headers={"X-Request-Id": "runaway"}) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        assert next(line for line in lines if line.startswith(b"data: {"))  # it is generating
        assert [(x["id"], x["model"], x["key"]) for x in listed(url)] == [("runaway", "tiny-a", None)]
        cancel_when_generating(url, "runaway")
        rest = [line for line in lines if line.startswith(b"data: ")]  # the stream ends
    last = json.loads(rest[-1][6:])
    assert last["error"]["code"] == "request_cancelled"
    wait_until(lambda: not generating(url), 10, "the child to stop generating")
    assert listed(url) == []
    metrics = requests.get(url + "/metrics", timeout=TIMEOUT).text
    assert 'llama_router_requests_cancelled_total{model="tiny-a",state="in_flight"} 1.0' in metrics
    assert chat(url, "tiny-a").status_code == 200  # the model serves on


def test_a_streamed_chat_waiting_its_turn_is_told_its_place_and_an_estimate(tmp_path, llama_server, tiny_dir):
    models = tiny_catalogue(tiny_dir, "tiny-a", tiny_a={"concurrency_limit": 1})
    with tiny_router(tmp_path, llama_server, models, admin_token=ADMIN, notify_model_swap=True,
                     env={"LLAMA_SERVER_DEBUG_FAKE_TIMING": "1"}) as r:
        assert chat(r.url, "tiny-a").status_code == 200  # loaded; a request's time is known (2 s)
        results: dict[str, requests.Response] = {}
        blocker = threading.Thread(target=lambda: results.setdefault("blocker", chat(r.url, "tiny-a")))
        blocker.start()
        wait_until(lambda: len(listed(r.url)) == 1, 30, "the first request in flight")
        body = {"model": "tiny-a", "stream": True, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
        with requests.post(r.url + "/v1/chat/completions", json=body, stream=True, timeout=TIMEOUT) as resp:
            assert resp.status_code == 200
            events = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith(b"data: {")]
        blocker.join(60)
        told = [e["choices"][0]["delta"].get("reasoning_content", "") for e in events if e.get("choices")]
        assert any(t.startswith("position 1 in the queue for tiny-a, about ") for t in told), told
        assert "error" not in events[-1] and results["blocker"].status_code == 200
