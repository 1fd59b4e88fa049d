"""Hot reload of the catalogue: on file change, SIGHUP and /admin/reload."""

from __future__ import annotations

import signal

import pytest
import requests
import yaml

from router.catalogue.config import ModelSpec
from router.catalogue.keys import file_keys
from tests.support.opskit import TIMEOUT, chat, has_pair, tiny_catalogue, tiny_router, wait_until

TOKEN = "admin-secret-7f3a"
AUTH = {"X-Admin-Token": TOKEN}

pytestmark = pytest.mark.real


def pids(r) -> dict[str, int]:
    models = requests.get(r.url + "/admin/status", headers=AUTH, timeout=TIMEOUT).json()["models"]
    return {m["model"]: m["pid"] for m in models if m["pid"]}


def listed(r) -> set[str]:
    return {m["id"] for m in requests.get(r.url + "/v1/models", timeout=TIMEOUT).json()["data"]}


def edit(r, change) -> None:
    data = yaml.safe_load(r.config.read_text())
    change(data)
    tmp = r.config.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data))
    tmp.replace(r.config)  # the way editors save: a new file renamed over the old


def test_file_change_applies_without_dropping_running_models(tmp_path, llama_server, tiny_dir):
    models = tiny_catalogue(tiny_dir, "tiny-a", "tiny-b", group="g")
    with tiny_router(tmp_path, llama_server, models, admin_token=TOKEN, models_max=2, watch_config=True) as r:
        assert chat(r.url, "tiny-a").status_code == 200 and chat(r.url, "tiny-b").status_code == 200
        before = pids(r)

        def change(data):
            data["models"]["tiny-a"]["aliases"] = ["first"]          # not a launch setting: keeps running
            data["models"]["tiny-b"]["args"] = ["--top-k", "5"]     # launch setting: restarts when idle
            data["models"]["tiny-c"] = {"path": str(tiny_dir / "tiny-c.gguf"), "group": "g"}

        edit(r, change)
        wait_until(lambda: "tiny-c" in listed(r), what="the new model to appear")
        wait_until(lambda: pids(r).get("tiny-b") not in (None, before["tiny-b"]), what="tiny-b restarted")
        after = pids(r)
        assert after["tiny-a"] == before["tiny-a"]
        cmd = requests.get(r.url + "/admin/status", headers=AUTH, timeout=TIMEOUT).json()["models"]
        assert has_pair(next(m for m in cmd if m["model"] == "tiny-b")["argv"], "--top-k", "5")
        assert chat(r.url, "first").status_code == 200  # the new alias routes to the kept child
        assert pids(r)["tiny-a"] == before["tiny-a"]
        assert "reload (file changed): added ['tiny-c']" in r.log()


def test_invalid_file_keeps_the_running_catalogue(tmp_path, llama_server, tiny_dir):
    models = tiny_catalogue(tiny_dir, "tiny-a")
    with tiny_router(tmp_path, llama_server, models, admin_token=TOKEN, watch_config=True) as r:
        assert chat(r.url, "tiny-a").status_code == 200
        pid = pids(r)["tiny-a"]
        good = r.config.read_text()
        r.config.write_text(good + "  bogus: [unclosed\n")
        wait_until(lambda: "reload (file changed) failed" in r.log(), what="the reload error in the log")
        assert "invalid YAML" in r.log() and f"{r.config}: line" in r.log()
        assert chat(r.url, "tiny-a").status_code == 200 and pids(r)["tiny-a"] == pid

        r.config.write_text(good.replace("models:", "models:\n  tiny-x:\n    paht: /nowhere\n", 1))
        resp = requests.post(r.url + "/admin/reload", headers=AUTH, timeout=TIMEOUT)
        assert resp.status_code == 400
        expected = ", ".join(sorted(file_keys(ModelSpec)))  # every key a model may have, in the file's spelling
        assert "path" in expected.split(", ") and "paht" not in expected
        assert resp.json()["error"] == f"{r.config}: models.tiny-x.paht: unknown key (expected one of: {expected})"
        assert listed(r) == {"tiny-a"} and chat(r.url, "tiny-a").status_code == 200


def test_removed_file_keeps_the_running_catalogue(tmp_path, llama_server, tiny_dir):
    models = tiny_catalogue(tiny_dir, "tiny-a")
    with tiny_router(tmp_path, llama_server, models, admin_token=TOKEN, watch_config=True) as r:
        assert chat(r.url, "tiny-a").status_code == 200
        text = r.config.read_text()
        r.config.unlink()
        wait_until(lambda: "cannot read" in r.log(), what="the missing-file error in the log")
        assert chat(r.url, "tiny-a").status_code == 200 and listed(r) == {"tiny-a"}
        # The file comes back with a change: the watcher picks it up again.
        data = yaml.safe_load(text)
        data["models"]["tiny-b"] = {"path": str(tiny_dir / "tiny-b.gguf")}
        r.config.write_text(yaml.safe_dump(data))
        wait_until(lambda: "tiny-b" in listed(r), what="the restored file to apply")


def test_sighup_reloads_and_a_removed_model_stops(tmp_path, llama_server, tiny_dir):
    models = tiny_catalogue(tiny_dir, "tiny-a", "tiny-b", group="g")
    with tiny_router(tmp_path, llama_server, models, admin_token=TOKEN, models_max=2) as r:
        assert chat(r.url, "tiny-a").status_code == 200 and chat(r.url, "tiny-b").status_code == 200
        old_b = pids(r)["tiny-b"]
        edit(r, lambda data: data["models"].pop("tiny-b"))
        r.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "tiny-b" not in listed(r), what="tiny-b removed")
        wait_until(lambda: "tiny-b" not in pids(r), what="tiny-b stopped")
        assert old_b not in [p.pid for p in r.children()]
        assert chat(r.url, "tiny-b").status_code == 404 and chat(r.url, "tiny-a").status_code == 200
        assert r.proc.poll() is None


@pytest.mark.gemma
def test_changed_model_restarts_only_after_its_request_in_flight(tmp_path, llama_server, gemma):
    with tiny_router(tmp_path, llama_server, {"gemma": {"path": str(gemma)}}, admin_token=TOKEN) as r:
        body = {"model": "gemma", "stream": True, "max_tokens": 12, "ignore_eos": True,
                "messages": [{"role": "user", "content": "Tell me a story."}]}
        with requests.post(r.url + "/v1/chat/completions", json=body, stream=True, timeout=TIMEOUT) as s:
            lines = s.iter_lines()
            assert next(lines).startswith(b"data: ")
            old = pids(r)["gemma"]
            edit(r, lambda data: data["models"]["gemma"].update(args=["--top-k", "3"]))
            resp = requests.post(r.url + "/admin/reload", headers=AUTH, timeout=TIMEOUT).json()
            assert resp["changed"] == ["gemma"] and resp["restarting"] == ["gemma"]
            assert pids(r)["gemma"] == old, "a busy model is not restarted under its request"
            rest = [line for line in lines if line]
        assert rest[-1] == b"data: [DONE]" and len(rest) >= 12
        wait_until(lambda: pids(r).get("gemma") not in (None, old), timeout=60, what="gemma restarted")
        assert chat(r.url, "gemma").status_code == 200
