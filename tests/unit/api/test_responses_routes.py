"""The stored-responses routes' answers to bad input and unknown ids, in OpenAI's
error shape, without a model server (api/responses.py); the store is made only
when something is kept."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from router.app import create_app
from router.catalogue.parse import parse_config

KEY, TOKEN = "key-of-me-0123456789", "admin-token-0123"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
async def client(tmp_path):
    config = parse_config({"router": {"api_keys": [KEY], "admin_token": TOKEN,
                                      "slot_save_path": str(tmp_path / "state" / "slots")},
                           "models": {"m": {"path": str(tmp_path / "m.gguf")}}}, "<test>")
    client = TestClient(TestServer(create_app(config)))
    await client.start_server()
    yield client
    await client.close()


@pytest.mark.parametrize(("body", "code"), [
    ({"previous_response_id": 5}, "invalid_value"), ({"store": "yes"}, "invalid_value"),
    ({"truncation": "some"}, "invalid_value"), ({"input": 42}, "invalid_input"),
    ({"previous_response_id": "resp_nope", "input": "hi"}, "previous_response_not_found"),
])
async def test_bad_requests_are_400_in_openais_shape(client, body, code):
    async with client.post("/v1/responses", json={"model": "m", **body}, headers=AUTH) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == code


async def test_unknown_ids_are_404_and_reads_make_no_file(client, tmp_path):
    for method, path in (("GET", "/v1/responses/resp_x"), ("DELETE", "/v1/responses/resp_x"),
                         ("GET", "/v1/responses/resp_x/input_items"), ("GET", "/responses/resp_x")):
        async with client.request(method, path, headers=AUTH) as resp:
            assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    async with client.get("/admin/responses", headers={"X-Admin-Token": TOKEN}) as resp:
        assert (await resp.json())["data"] == []
    async with client.delete("/admin/responses", headers={"X-Admin-Token": TOKEN}) as resp:
        assert resp.status == 400
    assert not (tmp_path / "state" / "responses.sqlite").exists()
