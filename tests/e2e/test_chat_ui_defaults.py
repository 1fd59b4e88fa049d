"""What a chat UI such as Open WebUI gets: names that tell models apart, and a reply
cap for the requests that set none (its background tasks set none, and a model
that rambles would hold a slot until its context is full).

A real router and real llama-server children on a tiny model that never emits EOS,
so a reply is exactly as long as its cap allows.
"""

from __future__ import annotations

import pytest

from tests.support.http import call, post_ok
from tests.support.routerproc import RouterProcess, child_command, write_config
from tests.support.tinygguf import write_tiny_model

pytestmark = pytest.mark.real

DEFAULT = 9  # router.max_tokens_default
OWN = 5  # models.capped.max_tokens_default
GGUF_NAME = "Tiny Model"
HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def router(tmp_path_factory, llama_server):
    """Three entries on one file, as the demo's gemma and gemma-creative: one with the
    router's default cap, one with its own cap and display name, one with none."""
    tmp = tmp_path_factory.mktemp("chat-ui")
    model = str(write_tiny_model(tmp / "tiny.gguf", name=GGUF_NAME))
    cfg = write_config(tmp / "config.yaml", {
        "tiny": {"path": model},
        "capped": {"path": model, "name": "Tiny (capped)", "max_tokens_default": OWN},
        "uncapped": {"path": model, "max_tokens_default": 0},
    }, router={"max_tokens_default": DEFAULT, "models_max": 3},
        spawn={"command": child_command(llama_server, ctx=256)})
    with RouterProcess(cfg, tmp / "router.log") as r:
        yield r


def post(r: RouterProcess, path: str, body: dict) -> dict:
    return post_ok(r.url + path, body)


def chat_tokens(r: RouterProcess, model: str, **cap: int) -> int:
    return post(r, "/v1/chat/completions", {"model": model, "messages": HELLO, **cap})["usage"]["completion_tokens"]


def test_models_are_listed_by_their_names_not_by_the_files_general_name(router):
    for path in ("/v1/models", "/models"):
        status, body = call(router.url + path)
        assert status == 200
        entries = {m["id"]: m for m in body["data"]}
        assert {i: m["name"] for i, m in entries.items()} == {"tiny": "tiny", "capped": "Tiny (capped)",
                                                             "uncapped": "uncapped"}
        assert {m["meta"]["name"] for m in entries.values()} == {GGUF_NAME}  # the GGUF's own, kept in meta


def test_a_request_without_a_cap_gets_the_default_on_every_generation_endpoint(router):
    assert chat_tokens(router, "tiny") == DEFAULT
    assert post(router, "/v1/completions", {"model": "tiny", "prompt": "hi"})["usage"]["completion_tokens"] == DEFAULT
    assert post(router, "/completion", {"model": "tiny", "prompt": "hi"})["tokens_predicted"] == DEFAULT
    assert post(router, "/v1/messages", {"model": "tiny", "messages": HELLO})["usage"]["output_tokens"] == DEFAULT
    assert post(router, "/v1/responses", {"model": "tiny", "input": "hi"})["usage"]["output_tokens"] == DEFAULT
    assert chat_tokens(router, "tiny", max_tokens=None) == DEFAULT  # null is no cap


def test_a_request_with_its_own_cap_is_left_alone(router):
    assert chat_tokens(router, "tiny", max_tokens=3) == 3
    assert chat_tokens(router, "tiny", max_completion_tokens=DEFAULT + 4) == DEFAULT + 4  # more than the default
    assert post(router, "/completion", {"model": "tiny", "prompt": "hi", "n_predict": 4})["tokens_predicted"] == 4
    assert post(router, "/v1/responses", {"model": "tiny", "input": "hi", "max_output_tokens": 6}
                )["usage"]["output_tokens"] == 6


def test_a_models_own_default_wins_and_zero_means_none(router):
    assert chat_tokens(router, "capped") == OWN
    assert chat_tokens(router, "uncapped") > 4 * DEFAULT  # until the context is full, as llama.cpp
