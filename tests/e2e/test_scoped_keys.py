"""Scoped API keys against a real router: models a key may use, roles, rate and
concurrency limits, keys read from a file, and no key ever in the log."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.opskit import TIMEOUT, SSEReader, chat, tiny_catalogue, wait_until
from tests.support.routerproc import RouterProcess, child_command, write_config

TEAM = "team-key-7d1c0b5e9a"  # tiny-a* only, from ${TEAM_KEY}
READ = "read-key-3f9e21c4d8"
ADMIN_KEY = "admin-key-5a7b9c1d3e"
RATED = "rated-key-8e6f4a2b0c"  # 3 requests a minute
SERIAL = "serial-key-1b3d5f7a9c"  # one request in flight
FROM_FILE = "file-key-9c8b7a6d5e4f"  # from key_file
CLI_KEY = "cli-key-0a1b2c3d4e5f"  # --api-key: a plain key, as before
ADMIN_TOKEN = "admin-token-2e4f6a8c0b"
EVERY_SECRET = (TEAM, READ, ADMIN_KEY, RATED, SERIAL, FROM_FILE, CLI_KEY, ADMIN_TOKEN)
SLOW_LOAD_S = 3

pytestmark = pytest.mark.real


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def listed(r: RouterProcess, key: str, path: str = "/v1/models") -> list[str]:
    resp = requests.get(r.url + path, headers=bearer(key), timeout=TIMEOUT)
    assert resp.status_code == 200, resp.text
    return sorted(m["id"] for m in resp.json()["data"])


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory, llama_server: Path, tiny_dir: Path) -> Iterator[RouterProcess]:
    tmp = tmp_path_factory.mktemp("scoped")
    (tmp / "secrets").mkdir()
    (tmp / "secrets" / "ci.key").write_text(FROM_FILE + "\n")
    models = tiny_catalogue(tiny_dir, "tiny-a", "tiny-b", "tiny-c")
    # tiny-c takes SLOW_LOAD_S to start: a request for it stays in flight that long.
    slow = ["sh", "-c", f'sleep {SLOW_LOAD_S}; exec "$0" "$@"', *child_command(llama_server)]
    models["tiny-c"]["spawn"] = {"command": slow}
    api_keys = [
        {"key": "${TEAM_KEY}", "models": ["tiny-a*"]},
        {"key": READ, "role": "read"},
        {"key": ADMIN_KEY, "role": "admin"},
        {"key": RATED, "rate": "3/min"},
        {"key": SERIAL, "concurrency": 1},
        {"key_file": "secrets/ci.key", "models": "tiny-b"},
    ]
    cfg = write_config(tmp / "config.yaml", models, spawn={"command": child_command(llama_server)},
                       router={"watch_config": False, "api_keys": api_keys, "admin_token": ADMIN_TOKEN})
    assert FROM_FILE not in cfg.read_text() and TEAM not in cfg.read_text()
    with RouterProcess(cfg, tmp / "router.log", "--log-format", "json", "--api-key", CLI_KEY,
                       env={"TEAM_KEY": TEAM}) as r:
        yield r


def test_a_team_key_sees_and_uses_only_its_models(router):
    r = router
    assert listed(r, TEAM) == ["tiny-a"]
    assert listed(r, TEAM, "/models") == ["tiny-a"]
    assert listed(r, CLI_KEY) == ["tiny-a", "tiny-b", "tiny-c"], "a plain key sees every model"
    resp = chat(r.url, "tiny-a", headers=bearer(TEAM))
    assert resp.status_code == 200, resp.text
    assert resp.json()["model"] == "tiny-a"


def test_a_model_out_of_scope_is_404_like_a_model_that_does_not_exist(router):
    r = router
    hidden = chat(r.url, "tiny-b", headers=bearer(TEAM))
    unknown = chat(r.url, "tiny-z", headers=bearer(TEAM))
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.json() == {"error": {**unknown.json()["error"], "message": "model 'tiny-b' not found"}}
    assert unknown.json()["error"]["code"] == "model_not_found"
    assert set(hidden.headers) - {"Date", "X-Request-Id"} == set(unknown.headers) - {"Date", "X-Request-Id"}
    for method, path, body in (("POST", "/models/load", {"model": "tiny-b"}),
                               ("POST", "/models/unload", {"model": "tiny-b"}),
                               ("GET", "/logs/tiny-b", None), ("GET", "/props?model=tiny-b", None),
                               ("GET", "/upstream/tiny-b/health", None)):
        resp = requests.request(method, r.url + path, json=body, headers=bearer(TEAM), timeout=TIMEOUT)
        assert (resp.status_code, resp.json()["error"]["code"]) == (404, "model_not_found"), path
    # The views of every model are not for it, nor are changes to the catalogue.
    for method, path in (("GET", "/api/activity"), ("GET", "/dashboard/api/models"), ("GET", "/metrics"),
                         ("POST", "/models/reload")):
        resp = requests.request(method, r.url + path, headers=bearer(TEAM), timeout=TIMEOUT)
        assert (resp.status_code, resp.json()["error"]["code"]) == (403, "model_scope"), path


def test_model_events_are_filtered_by_the_key(router):
    r = router
    with SSEReader(r.url + "/models/sse", headers=bearer(TEAM)) as team_events, \
            SSEReader(r.url + "/models/sse", headers=bearer(CLI_KEY)) as all_events:
        assert requests.post(r.url + "/models/load", json={"model": "tiny-b"}, headers=bearer(CLI_KEY),
                             timeout=TIMEOUT).status_code == 200
        all_events.wait_for(lambda e: e["model"] == "tiny-b" and e["data"].get("status") == "loaded", 30)
        assert chat(r.url, "tiny-a", headers=bearer(TEAM)).status_code == 200
        seen = team_events.wait_for(lambda e: e["model"] != "tiny-a" or e["data"].get("status") == "loaded", 30)
        assert seen["model"] == "tiny-a", f"the team key saw an event about {seen['model']}"


def test_a_read_key_lists_and_looks_but_never_infers(router):
    r = router
    assert listed(r, READ) == ["tiny-a", "tiny-b", "tiny-c"]
    for path in ("/props", "/metrics", "/api/activity", "/dashboard/api/models"):
        assert requests.get(r.url + path, headers=bearer(READ), timeout=TIMEOUT).status_code == 200, path
    resp = chat(r.url, "tiny-a", headers=bearer(READ))
    err = resp.json()["error"]
    assert (resp.status_code, err["type"], err["code"]) == (403, "permission_error", "insufficient_role")
    for method, path in (("POST", "/models/load"), ("GET", "/logs/tiny-a"), ("GET", "/admin/status")):
        resp = requests.request(method, r.url + path, json={"model": "tiny-a"}, headers=bearer(READ),
                                timeout=TIMEOUT)
        assert resp.status_code in (401, 403), path
    # Looking at a model's /props never loads it.
    resp = requests.get(r.url + "/props?model=tiny-c", headers=bearer(READ), timeout=TIMEOUT)
    assert (resp.status_code, resp.json()["error"]["code"]) == (400, "model_not_loaded")


def test_an_admin_key_reaches_admin_and_other_keys_do_not(router):
    r = router
    status = requests.get(r.url + "/admin/status", headers=bearer(ADMIN_KEY), timeout=TIMEOUT)
    assert status.status_code == 200 and {m["model"] for m in status.json()["models"]} >= {"tiny-a", "tiny-b"}
    assert requests.get(r.url + "/admin/status", headers={"x-api-key": ADMIN_KEY},
                        timeout=TIMEOUT).status_code == 200
    assert requests.get(r.url + "/admin/status", headers={"X-Admin-Token": ADMIN_TOKEN},
                        timeout=TIMEOUT).status_code == 200, "the admin token keeps working"
    for key in (TEAM, CLI_KEY):
        assert requests.get(r.url + "/admin/status", headers=bearer(key), timeout=TIMEOUT).status_code == 401
    assert chat(r.url, "tiny-b", headers=bearer(ADMIN_KEY)).status_code == 200


def test_rate_limit_answers_429_with_retry_after(router):
    r = router
    for _ in range(3):
        assert requests.get(r.url + "/v1/models", headers=bearer(RATED), timeout=TIMEOUT).status_code == 200
    resp = chat(r.url, "tiny-a", headers={"x-api-key": RATED})
    assert resp.status_code == 429
    assert resp.json() == {"error": {"message": resp.json()["error"]["message"], "type": "rate_limit_error",
                                     "code": "rate_limit_exceeded"}}
    assert 1 <= int(resp.headers["Retry-After"]) <= 20
    assert chat(r.url, "tiny-a", headers=bearer(CLI_KEY)).status_code == 200, "other keys are not limited"


def test_concurrency_one_refuses_a_second_request_in_flight(router):
    r = router
    first: dict[str, requests.Response] = {}
    slow = threading.Thread(target=lambda: first.update(resp=chat(r.url, "tiny-c", headers=bearer(SERIAL))))
    slow.start()
    try:
        wait_until(lambda: any(m["model"] == "tiny-c" and m["state"] == "loading" for m in requests.get(
            r.url + "/admin/status", headers=bearer(ADMIN_KEY), timeout=TIMEOUT).json()["models"]),
            what="tiny-c loading")
        second = chat(r.url, "tiny-c", headers=bearer(SERIAL))
        assert second.status_code == 429
        assert second.json()["error"]["code"] == "concurrency_limit_exceeded"
        assert second.json()["error"]["type"] == "rate_limit_error" and second.headers["Retry-After"] == "1"
    finally:
        slow.join(60)
    assert first["resp"].status_code == 200, first["resp"].text
    assert chat(r.url, "tiny-c", headers=bearer(SERIAL)).status_code == 200, "the place is free again"


def test_a_key_from_a_file_works(router):
    r = router
    assert listed(r, FROM_FILE) == ["tiny-b"]
    assert chat(r.url, "tiny-b", headers=bearer(FROM_FILE)).status_code == 200
    assert chat(r.url, "tiny-b", headers=bearer(FROM_FILE[:-1])).status_code == 401


def test_no_key_is_ever_logged(router):
    r = router
    requests.get(r.url + "/v1/models", headers=bearer("wrong-key-0000000000"), timeout=TIMEOUT)
    log = r.log()
    assert "refused" in log and "rejected request" in log, "refusals are logged, by the key's place"
    for secret in EVERY_SECRET:
        assert secret not in log, f"a key is in the router log: {secret[:8]}..."
