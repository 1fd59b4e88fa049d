"""Profiles over HTTP (api/profiles.py, http/request.py): the admin API at /admin/profiles and
llama-swap's /api/profiles, what a pin does to a request's model, and /v1/models' pin entries.

The catalogue's models have no file, so a request that reaches a model ends in its 404
model_missing, which names the model the request went to; nothing is started."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from router.app import create_app
from router.catalogue.parse import parse_config
from router.http.app_keys import MANAGER

TOKEN = "admin-token-0123"
ADMIN = {"X-Admin-Token": TOKEN}
PROFILES = {
    "coding": {"description": "code models", "pins": {"chat": "b", "a": "b", "quick": "a-fast", "off": None,
                                                       "b-off": "", "sel": "pool"}},
    "plain": {"pins": {"chat": "a"}},
}


@pytest.fixture
async def client(tmp_path):
    config = parse_config({"router": {"admin_token": TOKEN},
                           "models": {"a": {"path": str(tmp_path / "a.gguf"), "aliases": ["a-fast"]},
                                      "b": {"path": str(tmp_path / "b.gguf"), "unlisted": True}},
                           "selectors": {"pool": {"strategy": "pin", "targets": ["b"], "unlisted": True}},
                           "profiles": PROFILES}, "<test>")
    client = TestClient(TestServer(create_app(config)))
    await client.start_server()
    yield client
    await client.close()


async def switch(client: TestClient, body, base: str = "/admin/profiles") -> tuple[int, dict]:
    async with client.put(f"{base}/active", json=body, headers=ADMIN) as resp:
        return resp.status, await resp.json()


async def served_by(client: TestClient, model: str) -> str:
    """Which model a chat request for `model` went to ("-" when it was not found)."""
    async with client.post("/v1/chat/completions", json={"model": model, "messages": []}) as resp:
        assert resp.status == 404, await resp.text()
        error = (await resp.json())["error"]
    if error["code"] == "model_not_found":
        return "-"
    assert error["code"] == "model_missing", error
    return error["message"].split("'")[1]


@pytest.mark.parametrize("base", ["/admin/profiles", "/api/profiles"])
async def test_the_profiles_are_listed_and_switched_at_both_paths(client, base):
    async with client.get(base, headers=ADMIN) as resp:
        assert resp.status == 200
        assert await resp.json() == {"active": None, "profiles": [
            {"id": "coding", "description": "code models",
             "pins": {"chat": "b", "a": "b", "quick": "a-fast", "off": None, "b-off": None, "sel": "pool"}},
            {"id": "plain", "description": "", "pins": {"chat": "a"}}]}
    assert await switch(client, {"name": "coding"}, base) == (200, {"active": "coding"})
    async with client.get(base, headers=ADMIN) as resp:
        assert (await resp.json())["active"] == "coding"
    status, body = await switch(client, {"name": "missing"}, base)
    assert status == 404 and body["error"]["code"] == "profile_not_found"
    assert body["error"]["type"] == "invalid_request_error"
    async with client.get(base, headers=ADMIN) as resp:
        assert (await resp.json())["active"] == "coding", "an unknown profile changes nothing"
    assert await switch(client, {"name": None}, base) == (200, {"active": None})
    async with client.get(base) as resp:
        assert resp.status == 401, "the admin check guards both paths"


@pytest.mark.parametrize("body", [{}, {"name": 3}, {"name": ["coding"]}, [], "coding", None])
async def test_a_bad_switch_is_a_400_in_openais_shape(client, body):
    await switch(client, {"name": "coding"})
    status, reply = await switch(client, body)
    assert status == 400 and set(reply["error"]) >= {"message", "type", "code"}
    async with client.put("/admin/profiles/active", data=b"{not json", headers=ADMIN) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_json"
    async with client.get("/admin/profiles", headers=ADMIN) as resp:
        assert (await resp.json())["active"] == "coding"


async def test_a_pin_sends_the_request_to_its_target_until_the_profile_is_switched_off(client):
    assert [await served_by(client, m) for m in ("chat", "a", "quick", "off", "b")] == ["-", "a", "-", "-", "b"]
    await switch(client, {"name": "coding"})
    assert [await served_by(client, m) for m in ("chat", "a", "quick", "b", "a-fast")] == ["b", "b", "a", "b", "a"]
    assert await served_by(client, "sel") == "b", "a pin comes before the selector it names"
    async with client.post("/v1/chat/completions", json={"model": "off", "messages": []}) as resp:
        assert resp.status == 404
        error = (await resp.json())["error"]
        assert error["code"] == "model_not_found" and "profile 'coding'" in error["message"]
    await switch(client, {"name": "plain"})
    assert [await served_by(client, m) for m in ("chat", "a", "off")] == ["a", "a", "-"]
    await switch(client, {"name": None})
    assert await served_by(client, "chat") == "-"


async def test_pins_apply_to_upstream_and_ollama_requests(client):
    await switch(client, {"name": "coding"})
    async with client.get("/upstream/chat/props") as resp:
        assert resp.status == 404 and "'b' is missing" in (await resp.json())["error"]["message"]
    async with client.get("/upstream/off/props") as resp:
        assert resp.status == 404 and "profile 'coding'" in (await resp.json())["error"]["message"]
    async with client.post("/api/chat", json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]}) as r:
        assert r.status == 404 and "'b' is missing" in str(await r.json())


async def test_v1_models_lists_the_pins_of_the_active_profile_that_name_no_model(client):
    async def listed() -> dict[str, dict]:
        async with client.get("/v1/models") as resp:
            return {e["id"]: e for e in (await resp.json())["data"]}

    assert set(await listed()) == {"a"}
    await switch(client, {"name": "coding"})
    models = await listed()
    assert set(models) == {"a", "chat", "quick", "sel"}, "a null pin hides nothing; a model's name is listed once"
    assert models["sel"]["pinned_to"] == "pool" and models["sel"]["object"] == "model"
    assert (models["chat"]["profile"], models["chat"]["pinned_to"]) == ("coding", "b")
    assert models["quick"]["pinned_to"] == "a-fast" and models["quick"]["status"] == models["a"]["status"]
    assert models["a"].get("profile") is None
    await switch(client, {"name": None})
    assert set(await listed()) == {"a"}


async def test_a_new_catalogue_keeps_the_active_profile_while_it_has_it(client, tmp_path):
    manager = client.server.app[MANAGER]
    await switch(client, {"name": "coding"})
    models = {"a": {"path": str(tmp_path / "a.gguf")}, "b": {"path": str(tmp_path / "b.gguf")}}
    manager.set_config(parse_config({"router": {"admin_token": TOKEN}, "models": models,
                                     "profiles": {"coding": {"pins": {"chat": "a"}}}}, "<test>"))
    async with client.get("/admin/profiles", headers=ADMIN) as resp:
        assert (await resp.json())["active"] == "coding"
    assert await served_by(client, "chat") == "a", "with the pins the catalogue has now"
    manager.set_config(parse_config({"router": {"admin_token": TOKEN}, "models": models}, "<test>"))
    async with client.get("/admin/profiles", headers=ADMIN) as resp:
        assert await resp.json() == {"active": None, "profiles": []}
    assert await served_by(client, "chat") == "-"
