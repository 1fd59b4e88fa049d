"""The Ollama bench row's pure parts (bench/ollama.py): both kinds send the child the
same request, the events and tokens read from the replies, the figures and their goals."""

from __future__ import annotations

import os
import time

import pytest

from bench.ollama import (
    ADDED_MS_GOAL,
    EVENT_RATIO_GOAL,
    CPUClock,
    Plan,
    Sample,
    body,
    events,
    figures,
    reply_tokens,
    table,
)
from router.api.ollama_translate import chat_request


@pytest.mark.parametrize("stream", [False, True])
def test_both_kinds_ask_the_child_for_the_same_reply(stream):
    openai = body("openai", 8, stream)
    translated, launch = chat_request(body("ollama", 8, stream), False, "tiny")
    assert launch == {}
    assert translated == {k: v for k, v in openai.items() if k not in ("model", "stream")}
    assert body("ollama", 8, stream)["stream"] is stream  # Ollama streams unless told not to


def test_events_count_sse_data_events_and_ndjson_lines():
    sse = (b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n'
           b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
           b': keep-alive comment\n\n'
           b'data: [DONE]\n\n')
    assert events("openai", sse) == 2
    ndjson = b'{"message":{"content":"a"},"done":false}\n{"message":{"content":""},"done":true}\n'
    assert events("ollama", ndjson) == 2


def test_reply_tokens_read_usage_and_eval_count():
    assert reply_tokens("openai", b'{"usage":{"completion_tokens":8,"prompt_tokens":30}}') == 8
    assert reply_tokens("ollama", b'{"done":true,"eval_count":8,"prompt_eval_count":30}') == 8


def _samples(openai_us_event: float, ollama_us_event: float, added_ms: float = 0.1) -> dict[str, Sample]:
    """Four pairs of requests; the last pair met a pause of the machine (10 ms more on one side)."""
    base = [0.010, 0.011, 0.012, 0.050]
    ollama = [t + added_ms / 1000 for t in base[:3]] + [0.060]
    return {
        "openai": Sample(latency_s=base, request_cpu_s=[0.0005, 0.0005, 0.0006, 0.004],
                         stream_cpu_s=openai_us_event * 1e-6 * 100, events=100, per_round_us_event=[openai_us_event]),
        "ollama": Sample(latency_s=ollama, request_cpu_s=[0.0006, 0.0006, 0.0007, 0.0005],
                         stream_cpu_s=ollama_us_event * 1e-6 * 200, events=200, per_round_us_event=[ollama_us_event]),
    }


def test_figures_take_the_median_of_pairs_and_divide_cpu_by_events():
    f = figures(_samples(40.0, 50.0, added_ms=0.1))
    assert f.added_p50_ms == pytest.approx(0.1)  # the pause of the last pair does not move it
    assert f.added_p95_ms == pytest.approx(10.0)
    assert f.us_per_request == pytest.approx({"openai": 550.0, "ollama": 600.0})
    assert f.added_us_per_request == pytest.approx(100.0)
    assert f.us_per_event == pytest.approx({"openai": 40.0, "ollama": 50.0})
    assert f.event_ratio == pytest.approx(1.25) and f.round_ratios == pytest.approx([1.25])
    assert f.rounds == 1 and f.passed == {"added": True, "event": True}


def test_without_a_precise_clock_cpu_per_request_is_the_mean_of_ticks():
    s = _samples(40.0, 40.0)
    s["openai"].request_cpu_s = [0.0, 0.0, 0.01, 0.0]  # 10 ms ticks
    s["ollama"].request_cpu_s = [0.0, 0.01, 0.0, 0.01]
    f = figures(s, precise=False)
    assert f.us_per_request == pytest.approx({"openai": 2500.0, "ollama": 5000.0})
    assert f.added_us_per_request == pytest.approx(2500.0)


def test_each_figure_prints_next_to_its_goal():
    text = table(figures(_samples(40.0, 40.0 * EVENT_RATIO_GOAL, added_ms=0.1)), Plan())
    assert f"<= +{ADDED_MS_GOAL} ms: pass" in text and f"<= {EVENT_RATIO_GOAL}x: pass" in text
    assert f"{Plan().pairs} pairs" in text
    bad = figures(_samples(40.0, 40.0 * EVENT_RATIO_GOAL * 1.01, added_ms=0.3))
    assert bad.passed == {"added": False, "event": False}
    text = table(bad, Plan())
    assert f"<= +{ADDED_MS_GOAL} ms: FAIL" in text and f"<= {EVENT_RATIO_GOAL}x: FAIL" in text
    assert "+0.300 ms" in text and "1.51x" in text


def test_the_cpu_clock_sees_less_than_a_tick():
    clock = CPUClock(os.getpid())
    c0, p0 = clock(), time.process_time()
    while time.process_time() - p0 < 0.003:  # 3 ms of CPU: under psutil's 10 ms tick
        pass
    spent = clock() - c0
    assert 0.002 < spent < 0.05
