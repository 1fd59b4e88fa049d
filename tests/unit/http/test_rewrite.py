"""A model's request rewriting (strip_params, set_params, set_params_by_id, use_model_name):
the body its server receives, decided in one pure function."""

from __future__ import annotations

from typing import Any

from router.catalogue.parse import parse_config
from router.http.rewrite import has_rules, rewrite_body


def spec(**entry: Any):
    config = parse_config({"models": {"m": {"path": "/m.gguf", **entry}}})
    return config.models["m"]


def test_a_model_without_rules_leaves_the_body_alone():
    body = {"model": "m", "temperature": 1.0}
    assert not has_rules(spec()) and rewrite_body(body, spec(), "m") is False
    assert body == {"model": "m", "temperature": 1.0}


def test_stripped_params_go_and_set_params_win_over_the_clients():
    s = spec(strip_params=["top_k", "mirostat"], set_params={"temperature": 0.5, "stop": ["\n"]})
    body = {"model": "m", "top_k": 3, "temperature": 2.0, "messages": []}
    assert rewrite_body(body, s, "m") is True
    assert body == {"model": "m", "temperature": 0.5, "stop": ["\n"], "messages": []}


def test_a_param_ending_in_a_question_mark_is_a_default_only():
    s = spec(set_params={"top_p?": 0.9, "seed?": 7})
    body = {"model": "m", "top_p": 0.5, "seed": None}
    rewrite_body(body, s, "m")
    assert body == {"model": "m", "top_p": 0.5, "seed": 7}  # the client's value stays; a null one is none


def test_a_stripped_param_may_get_a_default_back():
    body = {"model": "m", "top_k": 100}
    rewrite_body(body, spec(strip_params=["top_k"], set_params={"top_k?": 20}), "m")
    assert body == {"model": "m", "top_k": 20}


def test_a_virtual_id_sets_its_own_params_last():
    s = spec(set_params={"temperature": 0.5, "chat_template_kwargs": {"x": 1}},
             set_params_by_id={"m:high": {"chat_template_kwargs": {"reasoning_effort": "high"}, "temperature": 1.0},
                               "m": {"temperature": 0.1}})
    high = {"model": "m:high", "chat_template_kwargs": {"enable_thinking": True}}
    rewrite_body(high, s, "m:high")
    # a mapping replaces the client's whole value, as llama-swap's setParams does
    assert high == {"model": "m:high", "temperature": 1.0, "chat_template_kwargs": {"reasoning_effort": "high"}}
    plain = {"model": "m"}
    rewrite_body(plain, s, "m")  # the model's own name may have params too
    assert plain == {"model": "m", "temperature": 0.1, "chat_template_kwargs": {"x": 1}}
    alias = {"model": "other"}
    rewrite_body(alias, s, "other")  # any other name: set_params alone
    assert alias == {"model": "other", "temperature": 0.5, "chat_template_kwargs": {"x": 1}}


def test_use_model_name_is_the_model_the_server_receives():
    body = {"model": "m:high"}
    rewrite_body(body, spec(use_model_name="org/served-name", set_params_by_id={"m:high": {"top_k": 1}}), "m:high")
    assert body == {"model": "org/served-name", "top_k": 1}
    no_model = {"prompt": "x"}  # a body that named its model in ?model=
    rewrite_body(no_model, spec(use_model_name="org/served-name"), "m")
    assert no_model == {"prompt": "x", "model": "org/served-name"}
