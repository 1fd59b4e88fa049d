"""The conversation-turn bench row's pure parts (bench/conversation_turn.py): the TTFT and
usage read from a Responses API stream, and issue #26's goal (within the child's load + 0.05 s)."""

from __future__ import annotations

import json

import pytest

from bench.conversation_turn import GOAL_EXTRA_S, Round, Streamed, compute_of, read_stream, table, within_goal


def sse(kind: str, **data: object) -> list[bytes]:
    return [f"event: {kind}\n".encode(), f"data: {json.dumps({'type': kind, **data})}\n".encode(), b"\n"]


def stream(*events: list[bytes], start: float = 10.0, step: float = 0.5) -> list[tuple[float, bytes]]:
    """The events' lines, each event arriving `step` seconds after the one before."""
    return [(start + step * (i + 1), line) for i, e in enumerate(events) for line in e]


COMPLETED = {"id": "resp_1", "output": [{"type": "message", "role": "assistant",
                                        "content": [{"type": "output_text", "text": "Fact 7"}]}],
             "usage": {"input_tokens": 3102, "output_tokens": 8, "input_tokens_details": {"cached_tokens": 3065}}}


def test_ttft_is_the_first_output_text_with_text_and_usage_comes_from_the_completed_event():
    lines = stream(sse("response.created", response={"id": "resp_1"}),
                   sse("response.output_item.added", item={"type": "message"}),
                   sse("response.output_text.delta", delta=""),
                   sse("response.output_text.delta", delta="Fact"),
                   sse("response.output_text.delta", delta=" 7"),
                   sse("response.completed", response=COMPLETED))
    got = read_stream(lines, t0=10.0)
    assert got.ttft_s == pytest.approx(2.0)  # the fourth event: the first delta with text
    assert (got.input_tokens, got.cached_tokens, got.response_id) == (3102, 3065, "resp_1")
    assert got.output == COMPLETED["output"]


def test_a_stream_without_text_or_without_its_end_is_an_error():
    with pytest.raises(RuntimeError, match="no output text"):
        read_stream(stream(sse("response.completed", response=COMPLETED)), 0.0)
    with pytest.raises(RuntimeError, match=r"without response\.completed"):
        read_stream(stream(sse("response.output_text.delta", delta="a")), 0.0)


def test_the_goal_allows_the_childs_load_and_fifty_milliseconds_beyond_the_direct_servers_ttft():
    assert GOAL_EXTRA_S == 0.05
    assert within_goal(3.0 + 0.9 + 0.04, 0.9, 3.0)
    assert not within_goal(3.0 + 0.9 + 0.06, 0.9, 3.0)
    assert not within_goal(0.96, 0.9, 0.0)


def turn(ttft: float) -> Streamed:
    return Streamed(ttft, 3102, 3065, [], "resp_1", 0.8)


def test_the_table_gives_each_round_and_the_median_with_their_verdicts():
    rounds = [Round(turn(4.0), turn(0.9), 3.0, 9.0, 20.0), Round(turn(4.2), turn(1.0), 3.2, 9.0, 20.0),
              Round(turn(3.9), turn(0.9), 3.0, 9.0, 20.0)]
    assert [round(r.beyond_s, 3) for r in rounds] == [0.1, 0.0, 0.0]
    assert [r.passed for r in rounds] == [False, True, True]
    text = table(rounds, 3067)
    assert "+0.100 s: FAIL" in text
    assert "| median | 4.000 s | 3.000 s | | | 0.900 s | | | +0.100 s: FAIL |" in text
    assert "3065 / 3102" in text and "3067 tokens" in text


ROUTER_LOG = """\
04:56:53 INFO    router.child: [tiny] 0.00.545 I slot print_timing: id  0 | task 1 | prompt eval time =     223.85 ms /     1 tokens (  223.85 ms per token,     4.47 tokens per second)
04:56:59 INFO    router.child: [gemma] 0.06.503 I slot print_timing: id  0 | task 1 | prompt eval time =    1178.93 ms /    35 tokens (   33.68 ms per token,    29.69 tokens per second)
04:56:59 INFO    router.child: [tiny] 0.00.600 I slot print_timing: id  0 | task 2 |        eval time =      10.00 ms /     1 tokens
04:56:59 INFO    router.child: [gemma] 0.06.503 I slot print_timing: id  0 | task 1 |        eval time =    2382.60 ms /     8 tokens (  340.37 ms per token,     2.94 tokens per second)
04:56:59 INFO    router.child: [gemma] 0.06.503 I slot print_timing: id  0 | task 1 |       total time =    3561.53 ms /    43 tokens
"""  # noqa: E501 - llama-server's lines as the router logs them


def test_the_childs_compute_to_the_first_token_is_read_from_its_own_timing_lines():
    assert compute_of(ROUTER_LOG, "[gemma]") == pytest.approx((1178.93 + 2382.60 / 8) / 1000)
    direct = "\n".join(ln.split("router.child: [gemma] ", 1)[1] for ln in ROUTER_LOG.splitlines() if "[gemma]" in ln)
    assert compute_of(direct) == pytest.approx((1178.93 + 2382.60 / 8) / 1000)  # a direct server's log: no tag


def test_no_compute_until_both_timing_lines_of_the_request_are_logged():
    prompt_only = "\n".join(ROUTER_LOG.splitlines()[:2])
    assert compute_of(prompt_only, "[gemma]") is None
    assert compute_of("", "[gemma]") is None
