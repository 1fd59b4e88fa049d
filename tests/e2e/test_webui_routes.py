"""The llama.cpp router-API details the WebUI relies on, against real children."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.http import call, wait_until
from tests.support.routerproc import RouterProcess, child_command, write_config

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def router(llama_server: Path, tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    d = tmp_path_factory.mktemp("webui-routes")
    config = write_config(d / "config.yaml", {
        "tiny-a": {"path": str(tiny_dir / "tiny-a.gguf"), "group": "both"},
        "tiny-b": {"path": str(tiny_dir / "tiny-b.gguf"), "group": "both"},
    }, router={"models_max": 2}, spawn={"command": child_command(llama_server)})
    with RouterProcess(config, d / "router.log") as r:
        yield r


def state(router: RouterProcess, model: str) -> str:
    models = call(router.url + "/models")[1]["data"]
    return next(m["status"]["value"] for m in models if m["id"] == model)


def test_props_with_autoload_false_never_loads_a_model(router: RouterProcess) -> None:
    status, body = call(router.url + "/props?model=tiny-a&autoload=false")
    assert status == 400 and body["error"]["code"] == "model_not_loaded"
    assert state(router, "tiny-a") == "unloaded"
    call(router.url + "/models/load", {"model": "tiny-a"})
    wait_until(lambda: state(router, "tiny-a") == "loaded", 60, "tiny-a loaded")
    status, props = call(router.url + "/props?model=tiny-a&autoload=false")
    assert status == 200 and "default_generation_settings" in props


def _chat(router: RouterProcess, model: str, conv_id: str) -> list[bytes]:
    req = urllib.request.Request(router.url + "/v1/chat/completions", method="POST", data=json.dumps({
        "model": model, "stream": True, "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"Content-Type": "application/json", "X-Conversation-Id": conv_id})
    with urllib.request.urlopen(req, timeout=60) as r:
        return [line for line in r.read().splitlines() if line.startswith(b"data: ")]


def test_a_conversation_can_be_looked_up_replayed_and_stopped_on_its_own_child(router: RouterProcess) -> None:
    live_a = _chat(router, "tiny-a", "conv-a")
    _chat(router, "tiny-b", "conv-b")
    status, found = call(router.url + "/v1/streams/lookup", {"conversation_ids": ["conv-a", "conv-b", "unknown"]})
    assert status == 200
    assert sorted(e["conversation_id"] for e in found) == ["conv-a", "conv-b"]
    # The replay comes from the child that generated conv-a: the same events, in order.
    with urllib.request.urlopen(router.url + "/v1/stream?conv_id=conv-a&from=0", timeout=30) as r:
        replay = [line for line in r.read().splitlines() if line.startswith(b"data: ")]
    assert replay == live_a
    req = urllib.request.Request(router.url + "/v1/stream?conv_id=conv-a", method="DELETE")
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status in (200, 204)
    status, body = call(router.url + "/v1/stream?conv_id=conv-a")
    assert status == 404 and body["error"]["code"] == "stream_not_found"
    status, found = call(router.url + "/v1/streams/lookup", {"conversation_ids": ["conv-a", "conv-b"]})
    assert [e["conversation_id"] for e in found] == ["conv-b"]


def test_stream_routes_need_a_conversation_id(router: RouterProcess) -> None:
    status, body = call(router.url + "/v1/stream")
    assert status == 400 and body["error"]["code"] == "conv_id_required"


def test_a_request_right_after_a_streamed_reply_is_answered(router: RouterProcess) -> None:
    """The WebUI asks for /props, /slots... the moment a reply ends. llama-server may
    close the connection the router pooled just then; that must not surface as a 502."""
    failures = []
    for i in range(40):
        _chat(router, "tiny-a", f"burst-{i}")
        status, body = call(router.url + "/tokenize", {"model": "tiny-a", "content": "hello"})
        if status != 200:
            failures.append((status, body))
    assert failures == []
