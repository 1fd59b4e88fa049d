"""The reply cap the router gives a generation request that sets none (max_tokens_default)."""

from __future__ import annotations

import pytest

from router.catalogue.parse import parse_config
from router.http.request import REPLY_CAP_KEYS, default_reply_cap


@pytest.mark.parametrize(("path", "key"), [
    ("/v1/chat/completions", "max_tokens"), ("/chat/completions", "max_tokens"), ("/v1/completions", "max_tokens"),
    ("/v1/messages", "max_tokens"), ("/completion", "n_predict"), ("/completions", "n_predict"),
    ("/infill", "n_predict"), ("/v1/responses", "max_output_tokens"), ("/responses", "max_output_tokens"),
])
def test_each_endpoint_gets_the_cap_under_the_key_it_reads(path, key):
    data = {"model": "m", "stream": True}
    assert default_reply_cap(path, data, 256) is True
    assert data == {"model": "m", "stream": True, key: 256}


@pytest.mark.parametrize("key", REPLY_CAP_KEYS)
@pytest.mark.parametrize("value", [1, 100_000, -1, 0])
def test_any_cap_the_request_sets_is_left_alone(key, value):
    """-1 is llama.cpp's "no limit": the request asked for it."""
    data = {"model": "m", key: value}
    assert default_reply_cap("/v1/chat/completions", data, 256) is False
    assert data == {"model": "m", key: value}


def test_a_null_cap_is_no_cap_and_does_not_linger_beside_the_default():
    data = {"model": "m", "max_completion_tokens": None, "n_predict": None}
    assert default_reply_cap("/v1/chat/completions", data, 64) is True
    assert data == {"model": "m", "max_tokens": 64}


@pytest.mark.parametrize("path", ["/v1/embeddings", "/tokenize", "/rerank", "/apply-template",
                                  "/v1/messages/count_tokens", "/v1/chat/completions/control"])
def test_requests_that_generate_nothing_are_left_alone(path):
    data = {"model": "m"}
    assert default_reply_cap(path, data, 64) is False and data == {"model": "m"}


def test_no_default_leaves_every_request_alone():
    data = {"model": "m"}
    assert default_reply_cap("/v1/chat/completions", data, 0) is False and data == {"model": "m"}


def test_a_models_own_default_wins_over_the_routers():
    config = parse_config({"router": {"max_tokens_default": 512}, "models": {
        "a": {"path": "/a.gguf"}, "b": {"path": "/a.gguf", "max_tokens_default": 64},
        "c": {"path": "/a.gguf", "max_tokens_default": 0}}})
    assert [config.max_tokens_default(config.models[n]) for n in "abc"] == [512, 64, 0]
    bare = parse_config({"models": {"a": {"path": "/a.gguf"}}})
    assert bare.max_tokens_default(bare.models["a"]) == 0  # off unless asked for, as in llama.cpp
