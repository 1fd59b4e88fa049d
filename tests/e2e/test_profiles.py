"""Profiles with real llama-servers (llama-swap's `profiles`, issue #27): while profile P
is active, a request for the pinned id "chat" is served by the pin's target, and the reply
names that model; switched off, "chat" names no model again."""

from __future__ import annotations

import pytest
import requests

from tests.support.opskit import TIMEOUT, chat, tiny_catalogue
from tests.support.routerproc import RouterProcess, child_command, write_config

pytestmark = pytest.mark.real

ADMIN = {"Authorization": "Bearer admin-token-for-tests"}


def test_a_profile_pins_chat_to_a_model_until_it_is_switched_off(tmp_path, llama_server, tiny_dir):
    cfg = write_config(tmp_path / "config.yaml", tiny_catalogue(tiny_dir, "tiny-a", "tiny-b"),
                       router={"watch_config": False, "admin_token": ADMIN["Authorization"][7:]},
                       spawn={"command": child_command(llama_server)},
                       profiles={"P": {"description": "chat on b", "pins": {"chat": "tiny-b", "tiny-a": None}}})
    with RouterProcess(cfg, tmp_path / "router.log") as r:
        assert chat(r.url, "chat").status_code == 404, "no profile is active at start-up"
        switched = requests.put(r.url + "/api/profiles/active", json={"name": "P"}, headers=ADMIN, timeout=TIMEOUT)
        assert switched.status_code == 200 and switched.json() == {"active": "P"}

        served = chat(r.url, "chat")
        assert served.status_code == 200, served.text
        assert served.json()["model"] == "tiny-b"
        assert served.json()["choices"][0]["message"]["content"] is not None
        listed = {m["id"]: m for m in requests.get(r.url + "/v1/models", timeout=TIMEOUT).json()["data"]}
        assert listed["chat"]["pinned_to"] == "tiny-b" and listed["chat"]["status"]["value"] == "loaded"
        off = chat(r.url, "tiny-a")
        assert off.status_code == 404 and "profile 'P'" in off.json()["error"]["message"]

        switched = requests.put(r.url + "/admin/profiles/active", json={"name": None}, headers=ADMIN, timeout=TIMEOUT)
        assert switched.status_code == 200 and switched.json() == {"active": None}
        assert chat(r.url, "chat").status_code == 404
        assert chat(r.url, "tiny-a").json()["model"] == "tiny-a"
