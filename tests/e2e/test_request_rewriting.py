"""A model's request rewriting, checked on what its server received: a real llama-server
echoes the sampling settings it used (`generation_settings` of /completion) and renders
`chat_template_kwargs` into its prompt (/apply-template, with a template that prints
one); a virtual id is served by the same child. `use_model_name` is checked on a
stand-in (tests/support/fakebackend.py) because llama-server names itself in replies,
whatever `model` it received."""

from __future__ import annotations

import sys

import pytest

from tests.support.http import call, post_ok
from tests.support.routerproc import RouterProcess, child_command, write_config
from tests.support.tinygguf import write_tiny_model

pytestmark = [pytest.mark.real, pytest.mark.timeout(120)]

# ChatML, with a first line that shows the reasoning_effort the template was given.
TEMPLATE = """\
{%- if reasoning_effort is defined %}effort={{ reasoning_effort }}
{% endif -%}
{%- for message in messages %}<|im_start|>{{ message['role'] }}
{{ message['content'] }}<|im_end|>
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""
HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def router(tmp_path_factory, llama_server):
    tmp = tmp_path_factory.mktemp("rewrite")
    model = str(write_tiny_model(tmp / "tiny.gguf", name="tiny"))
    (tmp / "template.jinja").write_text(TEMPLATE)
    cfg = write_config(tmp / "config.yaml", {
        "tiny": {"path": model, "description": "A tiny model", "metadata": {"family": "tests"},
                 "strip_params": ["top_k"],
                 "set_params": {"temperature": 0.25, "top_p?": 0.5},
                 "set_params_by_id": {"tiny:high": {"temperature": 0.75,
                                                    "chat_template_kwargs": {"reasoning_effort": "high"}}}},
        "echo": {"spawn": {"command": [sys.executable, "-m", "tests.support.fakebackend", "--port", "$port"]},
                 "use_model_name": "org/served-name", "set_params": {"max_tokens": 3}},
        "gone": {"path": str(tmp / "deleted.gguf"), "fallbacks": ["echo"],
                 "use_model_name": "org/gone-name", "set_params": {"max_tokens": 5}},
    }, router={"models_max": 2},
        spawn={"command": child_command(llama_server, "--chat-template-file", str(tmp / "template.jinja"))})
    with RouterProcess(cfg, tmp / "router.log") as r:
        yield r


def post(r: RouterProcess, path: str, body: dict) -> dict:
    return post_ok(r.url + path, body)


def settings(r: RouterProcess, model: str, **params: float) -> dict:
    """The sampling settings the child used for a /completion request."""
    reply = post(r, "/completion", {"model": model, "prompt": "hi", "n_predict": 1, **params})
    got = reply["generation_settings"]
    return {k: round(got[k], 3) for k in ("temperature", "top_p", "top_k")}


def test_stripped_and_set_params_are_what_the_child_uses(router):
    # temperature set over the client's, top_k stripped (the server's default 40), top_p a default
    assert settings(router, "tiny", temperature=1.5, top_k=7) == {"temperature": 0.25, "top_p": 0.5, "top_k": 40}
    assert settings(router, "tiny", top_p=0.8) == {"temperature": 0.25, "top_p": 0.8, "top_k": 40}


def test_a_virtual_id_sends_its_own_params_to_the_same_child(router):
    assert settings(router, "tiny:high", temperature=1.5) == {"temperature": 0.75, "top_p": 0.5, "top_k": 40}
    high = post(router, "/apply-template", {"model": "tiny:high", "messages": HELLO})
    assert high["prompt"].startswith("effort=high\n<|im_start|>user")
    plain = post(router, "/apply-template", {"model": "tiny", "messages": HELLO})
    assert plain["prompt"].startswith("<|im_start|>user")
    reply = post(router, "/v1/chat/completions", {"model": "tiny:high", "messages": HELLO, "max_tokens": 2})
    assert reply["model"] == "tiny:high"  # the name the client sent
    _, rows = call(router.url + "/dashboard/api/models")
    row = next(m for m in rows["models"] if m["name"] == "tiny")
    assert row["loads"] == 1 and row["state"] == "loaded"  # one child served both names


def test_v1_models_lists_the_virtual_id_with_its_models_description(router):
    _, body = call(router.url + "/v1/models")
    entries = {m["id"]: m for m in body["data"]}
    assert entries["tiny:high"]["virtual_of"] == "tiny"
    for key in ("name", "description", "metadata", "architecture"):
        assert entries["tiny:high"][key] == entries["tiny"][key]
    assert entries["tiny"]["description"] == "A tiny model" and entries["tiny"]["metadata"] == {"family": "tests"}


def test_use_model_name_is_the_model_the_server_receives(router):
    reply = post(router, "/v1/chat/completions", {"model": "echo", "messages": HELLO, "max_tokens": 2})
    assert reply["model"] == "org/served-name"  # the stand-in echoes the model it received


def test_ollama_routes_send_the_rewritten_body(router):
    """Ollama's /api/chat and /api/generate are translated, then the model's rules apply as on
    every route: the stand-in answers as many tokens as the max_tokens it received."""
    reply = post(router, "/api/chat", {"model": "echo", "messages": HELLO, "stream": False,
                                       "options": {"num_predict": 8}})
    assert reply["message"]["content"] == "xxx" and reply["model"] == "echo"


def test_a_fallback_gets_the_body_its_own_rules_write(router):
    """`gone` (its file deleted) falls back to `echo`: the body echo's server receives is
    written by echo's rules (its use_model_name, its max_tokens), not gone's."""
    reply = post(router, "/v1/chat/completions", {"model": "gone", "messages": HELLO})
    assert reply["model"] == "org/served-name" and reply["choices"][0]["message"]["content"] == "xxx"


def test_on_ollamas_routes_a_fallback_gets_the_body_its_own_rules_write(router):
    """The same through /api/chat: echo's max_tokens (3 tokens), not gone's (5)."""
    reply = post(router, "/api/chat", {"model": "gone", "messages": HELLO, "stream": False})
    assert reply["message"]["content"] == "xxx" and reply["model"] == "echo", reply
