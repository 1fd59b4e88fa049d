"""Expanding a conversation for the child and fitting it (router/http/responses_chain.py)."""

from __future__ import annotations

import pytest

from router.http.errors import HTTPError
from router.http.responses_chain import chat_messages, expand, fit_items, input_items, with_ids


def msg(role: str, text: str) -> dict:
    return {"type": "message", "role": role, "content": text}


def test_a_chain_expands_to_every_turn_then_the_new_input_without_replayed_thoughts():
    chain = [([msg("user", "I am Zorblax")], [{"type": "reasoning", "summary": []}, msg("assistant", "Hi")]),
             ([msg("user", "I like tea")], [msg("assistant", "Noted")])]
    got = expand(chain, input_items("What is my name?"))
    assert [(i.get("role"), i["content"]) for i in got][:4] == [
        ("user", "I am Zorblax"), ("assistant", "Hi"), ("user", "I like tea"), ("assistant", "Noted")]
    assert got[4]["content"] == [{"type": "input_text", "text": "What is my name?"}]
    assert len(got) == 5


def test_input_must_be_text_or_items_and_kept_items_get_ids():
    with pytest.raises(HTTPError) as e:
        input_items(42)
    assert e.value.status == 400
    kept = with_ids([msg("user", "a"), {"id": "msg_own", **msg("user", "b")}])
    assert kept[0]["id"].startswith("msg_") and kept[1]["id"] == "msg_own"


def test_fitting_drops_the_oldest_and_a_tool_output_with_its_call():
    items = [msg("user", "a"), {"type": "function_call", "call_id": "c"},
             {"type": "function_call_output", "call_id": "c", "output": "x"}, msg("user", "b")]
    assert fit_items(items, [10, 10, 10, 10], 40, 40) == items
    assert fit_items(items, [10, 10, 10, 10], 40, 30) == items[1:]
    assert fit_items(items, [10, 10, 10, 10], 40, 25) == items[3:], "an output without its call goes too"
    assert fit_items(items, [10, 10, 10, 10], 40, 1) == items[3:], "the newest item always stays"


def test_chat_messages_carry_the_instructions_first_and_the_items_text():
    got = chat_messages("Be brief.", [msg("developer", "rules"), input_items("hi")[0]])
    assert got == [{"role": "system", "content": "Be brief."}, {"role": "system", "content": "rules"},
                   {"role": "user", "content": "hi"}]
