"""Ollama's bodies as llama-server's, and llama-server's replies as Ollama's
(router/api/ollama_translate.py, router/api/ollama_reply.py), without a server."""

from __future__ import annotations

import base64
import json

import pytest

from router.api.ollama_reply import ChildError, Reply, durations, embeddings, ollama_tool_calls
from router.api.ollama_translate import (
    CHAT_PATH,
    COMPLETION_PATH,
    INFILL_PATH,
    chat_request,
    data_uri,
    embed_inputs,
    generate_request,
    options,
    response_format,
    think_params,
    wants_stream,
)
from router.http.errors import HTTPError

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + b"\0" * 16).decode()
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def refused(fn, *args) -> str:
    with pytest.raises(HTTPError) as e:
        fn(*args)
    assert e.value.status == 400
    return e.value.message


def lines(data: bytes) -> list[dict]:
    return [json.loads(ln) for ln in data.splitlines()]


def test_ollama_streams_unless_told_not_to():
    assert wants_stream({}) is True and wants_stream({"stream": None}) is True
    assert wants_stream({"stream": False}) is False
    assert "stream" in refused(wants_stream, {"stream": "no"})


def test_sampling_options_map_to_llama_server_keys_and_launch_options_are_set_apart():
    params, launch = options({"options": {
        "temperature": 0.2, "top_k": 5, "top_p": 0.9, "min_p": 0.1, "seed": 7, "repeat_penalty": 1.1,
        "presence_penalty": 0.5, "frequency_penalty": 0.4, "num_keep": 4, "num_predict": 12, "stop": "\n",
        "num_ctx": 4096, "num_gpu": 99, "penalize_newline": True, "unknown_option": 1}}, "max_tokens")
    assert params == {"temperature": 0.2, "top_k": 5, "top_p": 0.9, "min_p": 0.1, "seed": 7, "repeat_penalty": 1.1,
                      "presence_penalty": 0.5, "frequency_penalty": 0.4, "n_keep": 4, "max_tokens": 12, "stop": ["\n"]}
    assert launch == {"num_ctx": 4096, "num_gpu": 99}
    assert options({"options": {"num_predict": -2}}, "n_predict")[0] == {"n_predict": -1}  # Ollama's "fill the context"
    assert options({}, "max_tokens") == ({}, {})


@pytest.mark.parametrize("opts", ["hot", [1], {"temperature": "hot"}, {"temperature": True},
                                  {"top_k": float("nan")}, {"stop": [1]}, {"num_predict": "10"}])
def test_options_of_the_wrong_type_are_a_400(opts):
    refused(options, {"options": opts}, "max_tokens")


def test_format_is_a_response_format():
    assert response_format("json") == {"type": "json_object"}
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}}
    assert response_format(schema) == {"type": "json_schema", "json_schema": {"name": "format", "schema": schema}}
    assert response_format(None) is None and response_format("") is None
    assert "format" in refused(response_format, "yaml")
    assert "format" in refused(response_format, 5)


def test_think_sets_the_templates_variables():
    assert think_params(None) == {}
    assert think_params(False) == {"chat_template_kwargs": {"enable_thinking": False}}
    assert think_params("max") == {"chat_template_kwargs": {"enable_thinking": True, "reasoning_effort": "high"}}
    refused(think_params, "very")


def test_images_become_data_uris_with_their_type():
    assert data_uri(PNG).startswith("data:image/png;base64,")
    assert data_uri(JPEG).startswith("data:image/jpeg;base64,")
    assert data_uri("data:image/gif;base64,R0lG") == "data:image/gif;base64,R0lG"
    refused(data_uri, 5)


def test_a_chat_with_images_tools_and_a_tool_answer_is_openais():
    body = {"model": "m", "format": "json", "options": {"temperature": 0}, "think": True, "tools": [WEATHER],
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "what is this?", "images": [PNG]},
                {"role": "assistant", "content": "", "thinking": "hmm",
                 "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                {"role": "tool", "content": "11 C", "tool_name": "get_weather"}]}
    out, launch = chat_request(body, True, "m")
    assert launch == {}
    assert out["response_format"] == {"type": "json_object"} and out["temperature"] == 0
    assert out["chat_template_kwargs"] == {"enable_thinking": True} and out["tools"] == [WEATHER]
    system, user, assistant, tool = out["messages"]
    assert system == {"role": "system", "content": "be brief"}
    assert user["content"] == [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                               {"type": "text", "text": "what is this?"}]
    call = assistant["tool_calls"][0]
    assert call["type"] == "function" and call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert assistant["reasoning_content"] == "hmm"
    assert tool == {"role": "tool", "content": "11 C", "tool_call_id": call["id"], "name": "get_weather"}


def test_a_tool_answer_without_a_name_answers_the_oldest_open_call():
    out, _ = chat_request({"messages": [
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "a", "function": {"name": "f", "arguments": {}}},
            {"id": "b", "function": {"name": "g", "arguments": {}}}]},
        {"role": "tool", "content": "from g", "tool_name": "g"},
        {"role": "tool", "content": "from f"}]}, False, "m")
    assert [m.get("tool_call_id") for m in out["messages"][1:]] == ["b", "a"]


@pytest.mark.parametrize("messages", ["hi", [1], [{"content": "no role"}], [{"role": "robot", "content": "x"}],
                                      [{"role": "user", "content": 5}], [{"role": "user", "images": "x"}],
                                      [{"role": "assistant", "tool_calls": [{"function": {}}]}]])
def test_malformed_messages_are_a_400(messages):
    refused(chat_request, {"messages": messages}, True, "m")


def test_images_for_a_model_without_a_projector_are_a_400():
    message = refused(chat_request, {"messages": [{"role": "user", "content": "x", "images": [PNG]}]}, False, "m")
    assert "does not support images" in message


def test_generate_is_one_user_turn_raw_is_a_completion_and_suffix_an_infill():
    path, body, _ = generate_request({"prompt": "hi", "system": "s", "options": {"num_predict": 3}}, False, "m")
    assert path == CHAT_PATH and body == {"messages": [{"role": "system", "content": "s"},
                                                       {"role": "user", "content": "hi"}], "max_tokens": 3}
    path, body, _ = generate_request({"prompt": "<s>raw", "raw": True, "options": {"num_predict": 3}}, False, "m")
    assert path == COMPLETION_PATH and body == {"prompt": "<s>raw", "n_predict": 3}
    path, body, _ = generate_request({"prompt": "def f(", "suffix": "return 1", "format": {"type": "object"}},
                                     False, "m")
    assert path == INFILL_PATH and body == {"input_prefix": "def f(", "input_suffix": "return 1", "prompt": "",
                                            "json_schema": {"type": "object"}}
    assert "template" in refused(generate_request, {"prompt": "x", "template": "{{ .Prompt }}"}, False, "m")
    refused(generate_request, {"prompt": "x", "raw": "yes"}, False, "m")
    refused(generate_request, {"prompt": 5}, False, "m")


def test_embed_inputs():
    assert embed_inputs({"input": "a"}, False) == ["a"]
    assert embed_inputs({"input": ["a", "b"]}, False) == ["a", "b"]
    assert embed_inputs({"input": []}, False) == [] and embed_inputs({}, False) == []
    assert embed_inputs({"prompt": "a"}, True) == ["a"]
    refused(embed_inputs, {"input": [1]}, False)


def test_embeddings_come_in_input_order_and_dimensions_cut_and_normalise():
    reply = {"data": [{"index": 1, "embedding": [0.0, 3.0, 4.0]}, {"index": 0, "embedding": [1.0, 0.0, 0.0]}]}
    assert embeddings(reply, None) == [[1.0, 0.0, 0.0], [0.0, 3.0, 4.0]]
    assert embeddings(reply, 2) == [[1.0, 0.0], [0.0, 1.0]]


def test_the_last_objects_durations_are_nanoseconds_from_the_timings():
    timings = {"cache_n": 3, "prompt_n": 5, "prompt_ms": 12.5, "predicted_n": 7, "predicted_ms": 70.25}
    assert durations(timings, None, 1.5, 0.25) == {
        "total_duration": 1_500_000_000, "load_duration": 250_000_000, "prompt_eval_count": 8,
        "prompt_eval_duration": 12_500_000, "eval_count": 7, "eval_duration": 70_250_000}
    usage = {"prompt_tokens": 20, "completion_tokens": 7}
    assert durations(timings, usage, 0, 0)["prompt_eval_count"] == 20


def chunk(content=None, reasoning=None, finish=None, calls=None, **extra) -> dict:
    delta = {k: v for k, v in (("content", content), ("reasoning_content", reasoning), ("tool_calls", calls)) if v}
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


def test_a_streamed_chat_is_one_object_per_piece_then_the_last_with_counts():
    reply = Reply("gemma:latest", chat=True, native=False)
    out = reply.event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]})
    out += reply.event(chunk("Hel")) + reply.event(chunk('lo "x"')) + reply.event(chunk(reasoning="think"))
    out += reply.event(chunk(finish="length"))
    out += reply.event({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3},
                        "timings": {"prompt_ms": 1.0, "predicted_ms": 2.0, "prompt_n": 9, "predicted_n": 3}})
    out += reply.end(0.5, 0.1)
    objs = lines(out)
    assert [o["message"].get("content") for o in objs[:3]] == ["Hel", 'lo "x"', ""]
    assert objs[2]["message"]["thinking"] == "think"
    assert all(o["model"] == "gemma:latest" and o["created_at"].endswith("Z") for o in objs)
    assert [o["done"] for o in objs] == [False, False, False, True]
    last = objs[-1]
    assert last["done_reason"] == "length" and last["message"] == {"role": "assistant", "content": ""}
    assert last["eval_count"] == 3 and last["prompt_eval_count"] == 9 and last["eval_duration"] == 2_000_000
    assert last["total_duration"] == 500_000_000 and last["load_duration"] == 100_000_000


def test_streamed_tool_calls_are_gathered_and_sent_whole():
    reply = Reply("m", chat=True, native=False)
    reply.event(chunk(calls=[{"index": 0, "id": "c1", "function": {"name": "get_weather", "arguments": '{"ci'}}]))
    reply.event(chunk(calls=[{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}], finish="tool_calls"))
    calls, last = lines(reply.end(0, 0))
    assert calls["done"] is False and calls["message"]["tool_calls"] == [
        {"function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}, "id": "c1"}]
    assert last["done"] is True and last["done_reason"] == "stop"


def test_thinking_is_dropped_when_the_request_said_think_false():
    reply = Reply("m", chat=True, native=False, thinking=False)
    assert reply.event(chunk(reasoning="secret")) == b""


def test_a_whole_reply_and_a_native_stream_for_generate():
    whole = Reply("m", chat=False, native=False).whole({
        "choices": [{"message": {"role": "assistant", "content": "hi", "reasoning_content": "r"},
                     "finish_reason": "stop"}], "usage": {"prompt_tokens": 4, "completion_tokens": 1},
        "timings": {"prompt_ms": 1, "predicted_ms": 1}}, 0.1, 0.0)
    assert whole["response"] == "hi" and whole["thinking"] == "r" and whole["done"] and whole["eval_count"] == 1
    native = Reply("m", chat=False, native=True)
    out = native.event({"content": "a", "stop": False}) + native.event(
        {"content": "", "stop": True, "stop_type": "limit", "tokens_evaluated": 6, "tokens_predicted": 1,
         "timings": {"prompt_ms": 1, "predicted_ms": 1}}) + native.end(0, 0)
    first, last = lines(out)
    assert first["response"] == "a" and last["done_reason"] == "length" and last["prompt_eval_count"] == 6


def test_an_error_inside_the_childs_stream_is_raised():
    with pytest.raises(ChildError, match="boom"):
        Reply("m", chat=True, native=False).event({"error": {"message": "boom", "code": 500}})


def test_tool_call_arguments_that_are_not_json_are_kept():
    assert ollama_tool_calls([{"function": {"name": "f", "arguments": "not json"}}]) == [
        {"function": {"index": 0, "name": "f", "arguments": {"arguments": "not json"}}}]


@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("event", [
    b'{"choices":[{"finish_reason":null,"index":0,"delta":{"content":"a \\"b\\" \\u00e9 \xc3\xa9\\n"}}],"id":"x"}',
    b'{"choices":[{"finish_reason":null,"index":0,"delta":{"content":""}}],"id":"x"}',
    b'{"choices":[{"finish_reason":null,"index":0,"delta":{"content":"x","reasoning_content":"y"}}]}',
    b'{"choices":[{"finish_reason":"stop","index":0,"delta":{}}],"timings":{"predicted_n":1}}',
    b'{"choices":[{"finish_reason":null,"index":0,"delta":{"content":"cut',
])
def test_a_piece_of_text_is_copied_without_parsing_the_event_and_means_the_same(chat, event):
    fast, parsed = Reply("m", chat=chat, native=False), Reply("m", chat=chat, native=False)
    try:
        slow = parsed.event(json.loads(event))
    except ValueError:
        with pytest.raises(ValueError):  # not JSON: the same error, from the fallback's parse
            fast.raw_event(event)
        return
    strip = [{k: v for k, v in o.items() if k != "created_at"} for o in lines(fast.raw_event(event))]
    assert strip == [{k: v for k, v in o.items() if k != "created_at"} for o in lines(slow)]
    assert (fast.finish, fast.timings) == (parsed.finish, parsed.timings)
