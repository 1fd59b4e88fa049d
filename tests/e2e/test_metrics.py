"""The router's own Prometheus metrics, after a known sequence of requests
against real llama-server children: every counter equals what was sent."""

from __future__ import annotations

import json

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.opskit import TIMEOUT, chat, tiny_catalogue, tiny_router

pytestmark = [pytest.mark.real, pytest.mark.timeout(120)]
CHAT = "/v1/chat/completions"


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = requests.get(url + "/metrics", timeout=TIMEOUT)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(all_samples, name: str, **labels: str) -> float:
    return all_samples.get((name, tuple(sorted(labels.items()))), 0.0)


def streamed_usage(url: str, model: str) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": True,
            "stream_options": {"include_usage": True}}
    usage = None
    with requests.post(url + CHAT, json=body, stream=True, timeout=TIMEOUT) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith(b"data: {"):
                usage = json.loads(line[6:]).get("usage") or usage
    assert usage, "the stream carried its usage"
    return usage


def test_counters_equal_what_was_sent(tmp_path, llama_server, tiny_dir):
    with tiny_router(tmp_path, llama_server, tiny_catalogue(tiny_dir, "tiny-a", "tiny-b")) as r:
        prompt = completion = 0
        for _ in range(3):
            reply = chat(r.url, "tiny-a")
            assert reply.status_code == 200
            prompt += reply.json()["usage"]["prompt_tokens"]
            completion += reply.json()["usage"]["completion_tokens"]
        for _ in range(2):
            usage = streamed_usage(r.url, "tiny-a")
            prompt += usage["prompt_tokens"]
            completion += usage["completion_tokens"]
        assert chat(r.url, "tiny-b").status_code == 200  # swaps tiny-a out
        assert chat(r.url, "no-such-model").status_code == 404
        m = samples(r.url)

    assert value(m, "llama_router_requests_total", model="tiny-a", endpoint=CHAT, status="200") == 5
    assert value(m, "llama_router_requests_total", model="tiny-b", endpoint=CHAT, status="200") == 1
    assert value(m, "llama_router_requests_total", model="(unknown)", endpoint=CHAT, status="404") == 1
    assert value(m, "llama_router_tokens_total", model="tiny-a", kind="prompt") == prompt
    assert value(m, "llama_router_tokens_total", model="tiny-a", kind="completion") == completion
    assert value(m, "llama_router_request_duration_seconds_count", model="tiny-a", endpoint=CHAT) == 5
    assert value(m, "llama_router_time_to_first_token_seconds_count", model="tiny-a") == 5
    assert value(m, "llama_router_queue_wait_seconds_count", model="tiny-b") == 1
    assert value(m, "llama_router_model_loads_total", model="tiny-a", result="ok") == 1
    assert value(m, "llama_router_model_loads_total", model="tiny-b", result="ok") == 1
    assert value(m, "llama_router_model_unloads_total", model="tiny-a", reason="swap") == 1
    assert value(m, "llama_router_model_loaded", model="tiny-b") == 1
    assert value(m, "llama_router_model_loaded", model="tiny-a") == 0
    assert value(m, "llama_router_requests_in_flight", model="tiny-b") == 0
    # The running child's own metrics, merged under its model's name.
    children = {name for (name, labels) in m if name.startswith("llamacpp:") and ("model", "tiny-b") in labels}
    assert children, "tiny-b's own llamacpp:* metrics appear with model=tiny-b"


def test_metrics_of_one_model_still_come_from_its_child(tmp_path, llama_server, tiny_dir):
    with tiny_router(tmp_path, llama_server, tiny_catalogue(tiny_dir, "tiny-a")) as r:
        assert chat(r.url, "tiny-a").status_code == 200
        direct = requests.get(r.url + "/metrics?model=tiny-a", timeout=TIMEOUT)
        assert direct.status_code == 200 and "llamacpp:" in direct.text and "llama_router_" not in direct.text


def test_activity_lists_each_request_without_its_text_and_streams_new_ones(tmp_path, llama_server, tiny_dir):
    from tests.support.opskit import SSEReader

    with tiny_router(tmp_path, llama_server, tiny_catalogue(tiny_dir, "tiny-a")) as r:
        reply = chat(r.url, "tiny-a", headers={"X-Request-Id": "req-42"})
        assert reply.status_code == 200 and reply.headers["X-Request-Id"] == "req-42"
        usage = reply.json()["usage"]
        rows = requests.get(r.url + "/api/activity", timeout=TIMEOUT).json()["data"]
        assert len(rows) == 1
        row = rows[0]
        assert (row["model"], row["endpoint"], row["status"], row["request_id"]) == ("tiny-a", CHAT, 200, "req-42")
        assert (row["prompt_tokens"], row["completion_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
        assert 0 <= row["ttft_s"] <= row["total_s"] and row["queue_wait_s"] >= 0
        assert "hi" not in json.dumps(row).replace("chat", "")  # never the prompt's text
        with SSEReader(r.url + "/api/activity/stream") as stream:
            streamed = streamed_usage(r.url, "tiny-a")
            event = stream.wait_for(lambda e: e.get("model") == "tiny-a")
        assert event["completion_tokens"] == streamed["completion_tokens"] and event["tokens_per_s"] is not None
        generated = chat(r.url, "tiny-a").headers["X-Request-Id"]
        assert len(generated) == 32 and int(generated, 16) >= 0  # made by the router when the client sent none


def test_json_logs_name_the_model_and_the_request(tmp_path, llama_server, tiny_dir):
    with tiny_router(tmp_path, llama_server, tiny_catalogue(tiny_dir, "tiny-a"), "--log-format", "json") as r:
        assert chat(r.url, "tiny-a", headers={"X-Request-Id": "load-me"}).status_code == 200
    lines = [json.loads(line) for line in r.log_path.read_text().splitlines() if line.strip()]  # every line is JSON
    assert lines and all({"time", "level", "logger", "message"} <= set(x) for x in lines)
    ready = [x for x in lines if x.get("model") == "tiny-a" and x["message"].startswith("ready in")]
    assert ready and ready[0]["request_id"] == "load-me"  # the load this request caused
    assert any(x.get("model") == "tiny-a" and x["logger"] == "router.child" for x in lines)  # the child's own lines
