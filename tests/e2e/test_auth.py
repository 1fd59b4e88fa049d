"""API keys for the public API and the admin token, against a real router."""

from __future__ import annotations

import pytest
import requests

from router.catalogue.config import ConfigError
from router.catalogue.parse import parse_config
from router.http.access import exposure_warning, matches
from tests.support.opskit import TIMEOUT, chat, tiny_catalogue, tiny_router

ADMIN = "admin-secret-7f3a"
KEY = "key-0123456789abcdef"
OTHER_KEY = "key-fedcba9876543210"

pytestmark = pytest.mark.real


def _is_openai_error(r: requests.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"] and "code" in err
    return err


def test_admin_is_disabled_without_a_token(tmp_path, llama_server, tiny_dir):
    with tiny_router(tmp_path, llama_server, tiny_catalogue(tiny_dir, "tiny-a")) as r:
        for method, path in (("GET", "/admin/status"), ("POST", "/admin/reload"),
                             ("POST", "/admin/models/tiny-a/load")):
            resp = requests.request(method, r.url + path, headers={"Authorization": f"Bearer {ADMIN}"},
                                    timeout=TIMEOUT)
            assert "admin disabled" in _is_openai_error(resp, 403)["message"]
        assert r.children() == [], "a disabled admin API must not load anything"


def test_admin_token_right_wrong_and_missing(tmp_path, llama_server, tiny_dir):
    models = tiny_catalogue(tiny_dir, "tiny-a")
    with tiny_router(tmp_path, llama_server, models, admin_token="${OPS_ADMIN_TOKEN}",
                     env={"OPS_ADMIN_TOKEN": ADMIN}) as r:
        url = r.url + "/admin/status"
        assert requests.get(url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=TIMEOUT).status_code == 200
        assert requests.get(url, headers={"X-Admin-Token": ADMIN}, timeout=TIMEOUT).status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong-token-123"}, {"X-Admin-Token": ADMIN[:-1]},
                        {"Authorization": ADMIN}, {"X-Admin-Token": ADMIN + "x"}):
            _is_openai_error(requests.get(url, headers=headers, timeout=TIMEOUT), 401)
        # The public API stays open (no api_keys), and the token is never written to the log.
        assert chat(r.url, "tiny-a").status_code == 200
        assert ADMIN not in r.log()


def test_admin_token_from_the_command_line(tmp_path, llama_server, tiny_dir):
    with tiny_router(tmp_path, llama_server, tiny_catalogue(tiny_dir, "tiny-a"), "--admin-token", ADMIN) as r:
        assert requests.get(r.url + "/admin/status", headers={"X-Admin-Token": ADMIN},
                            timeout=TIMEOUT).status_code == 200
        _is_openai_error(requests.get(r.url + "/admin/status", timeout=TIMEOUT), 401)


def test_api_keys_guard_every_route_but_health(tmp_path, llama_server, tiny_dir):
    models = tiny_catalogue(tiny_dir, "tiny-a")
    with tiny_router(tmp_path, llama_server, models, api_keys=[KEY, OTHER_KEY], admin_token=ADMIN) as r:
        assert requests.get(r.url + "/health", timeout=TIMEOUT).status_code == 200
        for page in ("/", "/dashboard"):  # pages load without a key, then ask the user for one
            assert requests.get(r.url + page, timeout=TIMEOUT).status_code in (200, 404)  # 404: UI not built
        for path in ("/v1/models", "/models", "/props", "/logs/tiny-a", "/models/sse", "/dashboard/api/models",
                     "/logs/stream/tiny-a"):
            err = _is_openai_error(requests.get(r.url + path, timeout=TIMEOUT), 401)
            assert err["type"] == "authentication_error"
            _is_openai_error(requests.get(r.url + path, headers={"Authorization": "Bearer nope-nope-nope"},
                                          timeout=TIMEOUT), 401)
        _is_openai_error(chat(r.url, "tiny-a"), 401)
        _is_openai_error(chat(r.url, "tiny-a", headers={"x-api-key": KEY + "0"}), 401)
        assert r.children() == [], "an unauthenticated request must not start a model"
        assert chat(r.url, "tiny-a", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert chat(r.url, "tiny-a", headers={"x-api-key": OTHER_KEY}).status_code == 200
        # /admin takes the admin token, not an API key.
        _is_openai_error(requests.get(r.url + "/admin/status", headers={"Authorization": f"Bearer {KEY}"},
                                      timeout=TIMEOUT), 401)
        assert requests.get(r.url + "/admin/status", headers={"X-Admin-Token": ADMIN},
                            timeout=TIMEOUT).status_code == 200
        log = r.log()
        assert KEY not in log and OTHER_KEY not in log and "rejected request" in log


def test_secret_comparison_and_validation():
    assert matches("abc-secret", ("other-one", "abc-secret"))
    assert not matches("abc-secre", ("abc-secret",))
    assert not matches(None, ("abc-secret",)) and not matches("", ("",))
    assert not matches("ünïcödé-key", ("abc-secret",))  # non-ASCII input must not raise
    with pytest.raises(ConfigError, match=r"router\.admin_token: expected a secret of at least 8"):
        parse_config({"router": {"admin_token": "short"}}, "c.yaml")
    with pytest.raises(ConfigError, match=r"router.api_keys\[1\]"):
        parse_config({"router": {"api_keys": ["long-enough-key", "has space in it"]}}, "c.yaml")
    # A secret never shows in the settings' repr (which may end up in a log).
    settings = parse_config({"router": {"admin_token": ADMIN, "api_keys": [KEY]}}, "c.yaml").router
    assert ADMIN not in repr(settings) and KEY not in repr(settings)


def test_warning_when_listening_beyond_loopback_without_keys():
    assert exposure_warning("127.0.0.1", ()) is None
    assert exposure_warning("0.0.0.0", (KEY,)) is None
    assert "without router.api_keys" in exposure_warning("0.0.0.0", ())
    assert "without router.api_keys" in exposure_warning("192.168.1.5", ())
