"""The /admin API: status of children, load/unload, rescan, whitelisted load args."""

from __future__ import annotations

import psutil
import pytest
import requests
import yaml

from tests.support.opskit import TIMEOUT, chat, has_pair, model_state, tiny_catalogue, tiny_router, wait_until

TOKEN = "admin-secret-7f3a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.real


def admin(r, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, r.url + "/admin" + path, headers=AUTH, timeout=TIMEOUT, **kw)


def status_of(r, name: str) -> dict:
    return next(m for m in admin(r, "GET", "/status").json()["models"] if m["model"] == name)


def test_status_load_and_unload(tmp_path, llama_server, tiny_dir):
    models = tiny_catalogue(tiny_dir, "tiny-a", "tiny-b", group="g")
    with tiny_router(tmp_path, llama_server, models, admin_token=TOKEN, models_max=2) as r:
        before = status_of(r, "tiny-a")
        assert before["state"] == "unloaded" and before["pid"] is None
        resp = admin(r, "POST", "/models/tiny-a/load")
        assert resp.status_code == 200 and resp.json()["success"] is True
        wait_until(lambda: status_of(r, "tiny-a")["state"] == "loaded", what="tiny-a loaded")
        st = status_of(r, "tiny-a")
        assert st["pid"] in [p.pid for p in r.children()]
        assert st["port"] and st["uptime_s"] >= 0 and st["rss_bytes"] > 1_000_000
        assert st["in_flight"] == 0 and st["last_error"] is None and st["loads"] == 1
        assert status_of(r, "tiny-b")["state"] == "unloaded"

        resp = admin(r, "POST", "/models/tiny-a/unload")
        assert resp.status_code == 200
        wait_until(lambda: status_of(r, "tiny-a")["state"] == "unloaded", what="tiny-a unloaded")
        assert not psutil.pid_exists(st["pid"]) or psutil.Process(st["pid"]).status() == psutil.STATUS_ZOMBIE
        again = admin(r, "POST", "/models/tiny-a/unload")
        assert again.status_code == 400 and again.json()["error"]["code"] == "model_not_running"
        assert admin(r, "POST", "/models/nope/load").status_code == 404
        assert admin(r, "POST", "/models/..%2F..%2Fetc/load").status_code in (400, 404)


@pytest.mark.gemma
def test_in_flight_requests_are_counted(tmp_path, llama_server, gemma):
    """A streaming request shows as in flight while it runs, and not after the client leaves."""
    with tiny_router(tmp_path, llama_server, {"gemma": {"path": str(gemma)}}, admin_token=TOKEN) as r:
        body = {"model": "gemma", "stream": True, "max_tokens": 200, "ignore_eos": True,
                "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}]}
        with requests.post(r.url + "/v1/chat/completions", json=body, stream=True, timeout=TIMEOUT) as s:
            assert s.status_code == 200
            lines = s.iter_lines(chunk_size=1)  # kept: a dropped generator closes the connection
            assert next(lines).startswith(b"data: ")
            assert status_of(r, "gemma")["in_flight"] == 1
        wait_until(lambda: status_of(r, "gemma")["in_flight"] == 0, what="request released")


def test_rescan_reports_added_removed_and_kept(tmp_path, llama_server, tiny_dir):
    models = tiny_catalogue(tiny_dir, "tiny-a", "tiny-b")
    with tiny_router(tmp_path, llama_server, models, admin_token=TOKEN) as r:
        assert chat(r.url, "tiny-a").status_code == 200
        pid = status_of(r, "tiny-a")["pid"]
        data = yaml.safe_load(r.config.read_text())
        del data["models"]["tiny-b"]
        data["models"]["tiny-c"] = {"path": str(tiny_dir / "tiny-c.gguf")}
        r.config.write_text(yaml.safe_dump(data))
        resp = admin(r, "POST", "/rescan")
        assert resp.status_code == 200, resp.text
        out = resp.json()
        assert out["added"] == ["tiny-c"] and out["removed"] == ["tiny-b"] and out["kept"] == ["tiny-a"]
        assert status_of(r, "tiny-a")["pid"] == pid, "an unchanged running model keeps running"
        assert chat(r.url, "tiny-c").status_code == 200
        assert chat(r.url, "tiny-b").status_code == 404


def test_load_args_only_when_whitelisted(tmp_path, llama_server, tiny_dir):
    models = tiny_catalogue(tiny_dir, "tiny-a", "tiny-b", group="g", tiny_b={"allow_args": ["--temp", "--top-k"]})
    with tiny_router(tmp_path, llama_server, models, admin_token=TOKEN, models_max=2) as r:
        refused = admin(r, "POST", "/models/tiny-a/load", json={"args": ["--temp", "0.5"]})
        assert refused.status_code == 400 and "not allowed" in refused.json()["error"]["message"]
        refused = admin(r, "POST", "/models/tiny-b/load", json={"args": ["--temp", "0.5", "--port", "1"]})
        assert refused.status_code == 400 and "--port" in refused.json()["error"]["message"]
        assert r.children() == [], "a refused load starts nothing"

        ok = requests.post(r.url + "/models/load", json={"model": "tiny-b", "args": ["--top-k", "7"]},
                           timeout=TIMEOUT)
        assert ok.status_code == 200, ok.text
        wait_until(lambda: model_state(r.url, "tiny-b") == "loaded", what="tiny-b loaded")
        argv = status_of(r, "tiny-b")["argv"]
        assert has_pair(argv, "--top-k", "7")
        assert has_pair(psutil.Process(status_of(r, "tiny-b")["pid"]).cmdline(), "--top-k", "7")
        busy = admin(r, "POST", "/models/tiny-b/load", json={"args": ["--temp", "0.1"]})
        assert busy.status_code == 409
