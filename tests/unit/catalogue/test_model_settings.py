"""A model's own settings (llama-swap's per-model keys): what /v1/models tells about it
(description, metadata, capabilities over its GGUF header, its virtual ids), its own
timeouts, stop timeout and swap progress, and its virtual ids as names."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from router.api.model_api import with_virtual_ids
from router.catalogue.config import ConfigError
from router.catalogue.parse import parse_config
from router.catalogue.sources import model_card
from router.core.manager import ModelManager
from router.core.scheduler import State
from router.http.swap_progress import wants_progress
from router.upstream.client import ChildClient
from router.upstream.pool import UpstreamPool
from tests.unit.core.fakechild import FakeFactory

P = {"path": "/models/m.gguf"}


def config(router: dict[str, Any] | None = None, **models: dict[str, Any]):
    return parse_config({"router": router or {}, "models": models})


def test_a_virtual_id_names_its_model():
    c = config(m={**P, "aliases": ["m:fast"], "set_params_by_id": {"m:high": {"top_k": 1}, "m:fast": {}}})
    assert c.resolve("m:high") is c.models["m"] and c.resolve("m:fast") is c.models["m"]
    assert c.resolve("m:low") is None


@pytest.mark.parametrize(("models", "key", "message"), [
    ({"a": {**P, "set_params_by_id": {"b": {"top_k": 1}}}, "b": P}, "models.b", "'b' is already used by 'a'"),
    ({"a": {**P, "set_params_by_id": {"x": {}}}, "b": {**P, "aliases": ["x"]}}, "models.b", "'x' is already used"),
    ({"a": {**P, "strip_params": ["model"]}}, "models.a.strip_params", "cannot be removed"),
    ({"a": {**P, "set_params": {"model?": "x"}}}, "models.a.set_params", "use use_model_name"),
    ({"a": {**P, "set_params_by_id": {"a:x": {"model": "y"}}}}, "models.a.set_params_by_id.a:x", "use_model_name"),
])
def test_rewriting_that_would_break_routing_is_refused_naming_the_key(models, key, message):
    with pytest.raises(ConfigError) as e:
        parse_config({"models": models}, "c.yaml")
    assert e.value.key == key and message in str(e.value)


def test_v1_models_shows_description_metadata_and_capabilities_over_the_gguf():
    plain = model_card(config(m=P).models["m"])
    assert plain["architecture"] == {"input_modalities": ["text"], "output_modalities": ["text"]}
    assert "description" not in plain and "capabilities" not in plain
    card = model_card(config(m={**P, "description": "Thinks hard", "metadata": {"family": "gpt-oss", "n": [1]},
                                "capabilities": {"in": ["text", "image"], "tools": True, "context": 32000}}
                             ).models["m"])
    assert card["description"] == "Thinks hard" and card["metadata"] == {"family": "gpt-oss", "n": [1]}
    assert card["architecture"] == {"input_modalities": ["text", "image"], "output_modalities": ["text"],
                                    "modality": "text+image->text"}
    assert card["capabilities"] == {"vision": True, "function_calling": True}
    assert card["supported_parameters"] == ["tools", "tool_choice"] and card["context_length"] == 32000


def test_virtual_ids_are_listed_with_their_models_description():
    spec = config(m={**P, "aliases": ["m:alias"], "description": "d",
                     "set_params_by_id": {"m": {}, "m:alias": {}, "m:high": {"top_k": 1}}}).models["m"]
    entries = with_virtual_ids({"id": "m", "aliases": ["m:alias"], "description": "d", "status": {"value": "loaded"}},
                               spec)
    assert entries == [{"id": "m", "aliases": ["m:alias"], "description": "d", "status": {"value": "loaded"}},
                       {"id": "m:high", "aliases": [], "description": "d", "status": {"value": "loaded"},
                        "virtual_of": "m"}]


def test_a_models_own_timeouts_stop_timeout_and_swap_progress_win():
    c = config({"connect_timeout": 4, "read_timeout": 100, "stop_timeout": 7, "notify_model_swap": True},
               own={**P, "timeouts": {"read": 30}, "stop_timeout": 2, "swap_progress": False}, other=P)
    own, other = c.models["own"], c.models["other"]
    assert c.timeouts(own) == (4.0, 30.0) and c.timeouts(other) == (4.0, 100.0)
    assert (c.stop_timeout(own), c.stop_timeout(other)) == (2.0, 7.0)
    assert (c.swap_progress(own), c.swap_progress(other)) == (False, True)


def test_swap_progress_follows_the_models_own_setting():
    c = config({"notify_model_swap": False}, on={**P, "swap_progress": True}, off=P)
    manager = SimpleNamespace(config=c, state=lambda name: State.STOPPED)
    request = SimpleNamespace(path="/v1/chat/completions")
    stream = b'{"stream": true}'
    assert wants_progress(manager, request, c.models["on"], stream)  # type: ignore[arg-type]
    assert not wants_progress(manager, request, c.models["off"], stream)  # type: ignore[arg-type]


@pytest.mark.timeout(10)
async def test_a_model_is_stopped_with_its_own_stop_timeout(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    c = parse_config({"router": {"stop_timeout": 9, "kv_persistence": False, "memory": {"ram": "off", "gpu": "off"}},
                      "spawn": {"command": ["/bin/sh", "$path", "$port"]},
                      "models": {"a": {**P, "stop_timeout": 0.5}, "b": P}})
    pool = UpstreamPool()
    factory = FakeFactory()
    manager = ModelManager(c, ChildClient(pool), 8082, child_factory=factory)
    try:
        for name in ("a", "b", "a"):  # a swap stops a, then b
            async with await manager.acquire(name):
                pass
        assert factory.of("a")[0].stop_timeouts == [0.5] and factory.of("b")[0].stop_timeouts == [9.0]
    finally:
        await manager.shutdown()
        await pool.close()
