"""What /metrics and /api/activity record for each request, as real clients use
the router: the OpenAI and Anthropic Python SDKs, streamed and not, with and
without a swap, against real llama-server children. A reply the client had
whole is a 200 with its tokens; tokens/s is llama-server's own generation rate."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

import anthropic
import openai
import pytest
import requests

from tests.support.opskit import TIMEOUT, tiny_catalogue, tiny_router, wait_until
from tests.support.routerproc import RouterProcess, write_config

pytestmark = [pytest.mark.real, pytest.mark.timeout(180)]
HI = [{"role": "user", "content": "hi"}]


class Expected:
    """What each request's reply said of itself, by request id."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def rid(self, model: str, endpoint: str) -> dict[str, str]:
        rid = uuid.uuid4().hex
        self.rows[rid] = {"model": model, "endpoint": endpoint}
        return {"X-Request-Id": rid}

    def saw(self, headers: dict[str, str], prompt: int, completion: int, per_second: float | None) -> None:
        self.rows[headers["X-Request-Id"]].update(prompt=prompt, completion=completion, per_second=per_second)


def recorded(url: str, n: int) -> dict[str, dict[str, Any]]:
    """The activity rows by request id, once all `n` requests have ended on the router's side."""
    rows = wait_until(lambda: (d := requests.get(url + "/api/activity", timeout=TIMEOUT).json()["data"])
                      and len(d) >= n and d, what=f"{n} activity rows")
    return {r["request_id"]: r for r in rows}


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(url + "/metrics", timeout=TIMEOUT).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples if s.name.startswith("llama_router_")}


def check(url: str, expected: Expected) -> None:
    """Each row: status 200, the reply's own token counts, llama-server's own tokens/s (rounded
    to 0.1); /metrics: every request a 200, the token counters their sums."""
    rows = recorded(url, len(expected.rows))
    for rid, want in expected.rows.items():
        row = rows[rid]
        assert (row["model"], row["endpoint"], row["status"]) == (want["model"], want["endpoint"], 200), row
        assert (row["prompt_tokens"], row["completion_tokens"]) == (want["prompt"], want["completion"]), row
        if want["per_second"] is not None:
            assert row["tokens_per_s"] == pytest.approx(want["per_second"], abs=0.051), row
        elif want.get("stream"):
            # No timings in Anthropic replies: a stream's rate is over its own generation window.
            assert (row["completion_tokens"] - 1) / row["total_s"] <= row["tokens_per_s"] < 1e6, row
        else:
            assert row["tokens_per_s"] is None, row  # a whole reply without timings: no time to divide by
    m = samples(url)
    assert not [k for k in m if k[0] == "llama_router_requests_total" and ("status", "200") not in k[1]], m
    for model in {w["model"] for w in expected.rows.values()}:
        mine = [w for w in expected.rows.values() if w["model"] == model]
        for endpoint in {w["endpoint"] for w in mine}:
            labels = (("endpoint", endpoint), ("model", model), ("status", "200"))
            assert m[("llama_router_requests_total", labels)] == sum(w["endpoint"] == endpoint for w in mine)
        for kind in ("prompt", "completion"):
            total = m[("llama_router_tokens_total", (("kind", kind), ("model", model)))]
            assert total == sum(w[kind] for w in mine), (model, kind)


def final_timings(chunks: list[Any]) -> dict[str, Any]:
    return next(c.model_extra["timings"] for c in reversed(chunks) if (c.model_extra or {}).get("timings"))


def test_openai_sdk_chat_and_completions_streamed_or_not_with_and_without_a_swap(tmp_path, llama_server, tiny_dir):
    chat, comp = "/v1/chat/completions", "/v1/completions"
    with tiny_router(tmp_path, llama_server, tiny_catalogue(tiny_dir, "tiny-a", "tiny-b"),
                     notify_model_swap=True) as r:
        client = openai.OpenAI(base_url=r.url + "/v1", api_key="unused", timeout=TIMEOUT, max_retries=0)
        want = Expected()
        for model in ("tiny-a", "tiny-b", "tiny-a"):  # each first stream swaps the other model out
            for include_usage in (True, False):  # the stream's usage, else only llama-server's timings
                h = want.rid(model, chat)
                extra = {"stream_options": {"include_usage": True}} if include_usage else {}
                chunks = list(client.chat.completions.create(model=model, messages=HI, max_tokens=8, stream=True,
                                                             extra_headers=h, **extra))
                t = final_timings(chunks)
                usage = chunks[-1].usage
                if include_usage:
                    assert usage is not None
                    want.saw(h, usage.prompt_tokens, usage.completion_tokens, t["predicted_per_second"])
                else:
                    want.saw(h, t["cache_n"] + t["prompt_n"], t["predicted_n"], t["predicted_per_second"])
            h = want.rid(model, chat)
            reply = client.chat.completions.create(model=model, messages=HI, max_tokens=8, extra_headers=h)
            assert reply.usage is not None
            want.saw(h, reply.usage.prompt_tokens, reply.usage.completion_tokens,
                     reply.model_extra["timings"]["predicted_per_second"])
        h = want.rid("tiny-b", comp)
        text = client.completions.create(model="tiny-b", prompt="Once upon", max_tokens=8, extra_headers=h)
        assert text.usage is not None
        want.saw(h, text.usage.prompt_tokens, text.usage.completion_tokens,
                 text.model_extra["timings"]["predicted_per_second"])
        h = want.rid("tiny-b", comp)
        chunks = list(client.completions.create(model="tiny-b", prompt="Once upon", max_tokens=8, stream=True,
                                                extra_headers=h))
        t = final_timings(chunks)
        want.saw(h, t["cache_n"] + t["prompt_n"], t["predicted_n"], t["predicted_per_second"])
        check(r.url, want)


def test_llama_cpp_completion_streamed_or_not(tmp_path, llama_server, tiny_dir):
    with tiny_router(tmp_path, llama_server, tiny_catalogue(tiny_dir, "tiny-a")) as r:
        want = Expected()
        for stream in (False, True):
            h = want.rid("tiny-a", "/completion")
            body = {"model": "tiny-a", "prompt": "Once upon", "n_predict": 8, "stream": stream}
            with requests.post(r.url + "/completion", json=body, headers=h, stream=True, timeout=TIMEOUT) as reply:
                assert reply.status_code == 200
                lines = [json.loads(x[6:]) for x in reply.iter_lines() if x.startswith(b"data: ")] \
                    if stream else [reply.json()]
            t = lines[-1]["timings"]
            want.saw(h, t["cache_n"] + t["prompt_n"], t["predicted_n"], t["predicted_per_second"])
        check(r.url, want)


def test_openai_sdk_responses_streamed_or_not(tmp_path, llama_server, tiny_dir):
    with tiny_router(tmp_path, llama_server, tiny_catalogue(tiny_dir, "tiny-a", "tiny-b")) as r:
        client = openai.OpenAI(base_url=r.url + "/v1", api_key="unused", timeout=TIMEOUT, max_retries=0)
        want = Expected()
        for model in ("tiny-a", "tiny-b"):  # the second swaps
            h = want.rid(model, "/v1/responses")
            events = list(client.responses.create(model=model, input="hi", max_output_tokens=8, stream=True,
                                                  extra_headers=h))
            done = next(e for e in events if e.type == "response.completed")
            usage = done.response.usage
            want.saw(h, usage.input_tokens, usage.output_tokens, done.model_extra["timings"]["predicted_per_second"])
            h = want.rid(model, "/v1/responses")
            whole = client.responses.create(model=model, input="hi", max_output_tokens=8, extra_headers=h)
            want.saw(h, whole.usage.input_tokens, whole.usage.output_tokens, None)  # no timings in this reply
        check(r.url, want)


def test_anthropic_sdk_messages_streamed_or_not_with_and_without_a_swap(tmp_path, llama_server, tiny_dir):
    with tiny_router(tmp_path, llama_server, tiny_catalogue(tiny_dir, "tiny-a", "tiny-b"),
                     notify_model_swap=True) as r:
        client = anthropic.Anthropic(base_url=r.url, api_key="unused", timeout=TIMEOUT, max_retries=0)
        want = Expected()
        for model in ("tiny-a", "tiny-b", "tiny-a"):  # each first request swaps the other model out
            h = want.rid(model, "/v1/messages")
            with client.messages.stream(model=model, max_tokens=8, messages=HI, extra_headers=h) as stream:
                events = list(stream)
                final = stream.get_final_message()
            start = next(e for e in events if e.type == "message_start").message.usage
            prompt = start.input_tokens + (getattr(start, "cache_read_input_tokens", None) or 0)
            want.saw(h, prompt, final.usage.output_tokens, None)
            want.rows[h["X-Request-Id"]]["stream"] = True
            h = want.rid(model, "/v1/messages")
            whole = client.messages.create(model=model, max_tokens=8, messages=HI, extra_headers=h)
            u = whole.usage
            want.saw(h, u.input_tokens + (getattr(u, "cache_read_input_tokens", None) or 0), u.output_tokens, None)
        check(r.url, want)


def fake_models(*names: str) -> dict[str, Any]:
    spawn = {"command": [sys.executable, "-m", "tests.support.fakebackend", "--port", "$port"]}
    return {n: {"spawn": spawn} for n in names}


def test_a_stream_whose_client_leaves_after_its_last_event_is_a_200(tmp_path):
    """The OpenAI SDK closes the connection as soon as it reads `data: [DONE]`, which can be
    before the child's end of reply (its last, empty chunk) reaches the router: a stand-in
    backend sends that end 0.2 s late, every time. The client had the whole reply: a 200
    with its tokens, after a swap (with swap progress) or not. A client that leaves while
    the reply still comes is a 499."""
    cfg = write_config(tmp_path / "config.yaml", fake_models("fake-a", "fake-b"),
                       router={"notify_model_swap": True, "health_timeout": 20})
    with RouterProcess(cfg, tmp_path / "router.log") as r:
        client = openai.OpenAI(base_url=r.url + "/v1", api_key="unused", timeout=TIMEOUT, max_retries=0)
        for n, model in enumerate(("fake-a", "fake-b", "fake-b")):  # a load, a swap, neither; each ends late
            chunks = list(client.chat.completions.create(
                model=model, messages=HI, max_tokens=3, stream=True, stream_options={"include_usage": True},
                extra_body={"end_delay": 0.2}, extra_headers={"X-Request-Id": f"r{n}"}))
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "xxx"
        stream = client.chat.completions.create(model="fake-b", messages=HI, max_tokens=50, stream=True,
                                                extra_body={"delay": 0.1}, extra_headers={"X-Request-Id": "r3"})
        next(iter(stream))
        stream.close()  # leaves while the reply still comes
        rows = recorded(r.url, 4)
        got = [(rows[f"r{n}"]["model"], rows[f"r{n}"]["status"], rows[f"r{n}"]["completion_tokens"]) for n in range(4)]
        assert got == [("fake-a", 200, 3), ("fake-b", 200, 3), ("fake-b", 200, 3), ("fake-b", 499, None)]
        m = samples(r.url)
        chat = "/v1/chat/completions"
        assert m[("llama_router_requests_total", (("endpoint", chat), ("model", "fake-b"), ("status", "200")))] == 2
        assert m[("llama_router_requests_total", (("endpoint", chat), ("model", "fake-b"), ("status", "499")))] == 1
        assert m[("llama_router_tokens_total", (("kind", "completion"), ("model", "fake-b")))] == 6
