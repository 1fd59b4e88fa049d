"""Imported folders stay live: `llama-router --import-dir D` serves D, and a
model copied into D later appears (folder watch, or POST /admin/rescan with
the watch off), is served by a real llama-server, is marked missing when its
file goes, and is never imported half-copied."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import requests
import yaml

from router.catalogue.parse import load_config
from tests.support.opskit import chat, wait_until
from tests.support.routerproc import RouterProcess, child_command, free_port
from tests.support.tinygguf import write_tiny_model

pytestmark = [pytest.mark.real, pytest.mark.timeout(180)]
ADMIN = "admin-token-for-tests"
WATCHING = "for new models"  # the router's log line when its folder watch starts: "watching D for new models"


def listed(url: str) -> dict[str, dict]:
    with urllib.request.urlopen(url + "/v1/models", timeout=30) as r:
        return {m["id"]: m for m in json.loads(r.read())["data"]}


def start(tmp_path: Path, llama_server: Path, folder: Path, *, watch: bool) -> RouterProcess:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "router": {"port": free_port(), "port_range": [53000, 53999], "admin_token": ADMIN,
                   "watch_folders": watch, "slot_save_path": str(tmp_path / "slots")},
        "spawn": {"command": child_command(llama_server)},
        "sources": {"hf_cache": False}}, sort_keys=False))
    return RouterProcess(cfg, tmp_path / "router.log", "--import-dir", str(folder)).wait_ready()


def rescan(url: str) -> dict:
    r = requests.post(url + "/admin/rescan", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "models"
    write_tiny_model(d / "first-tiny.gguf", name="first", seed=1)
    return d


def test_a_model_copied_into_a_watched_folder_appears_and_is_served(tmp_path, llama_server, folder):
    spare = write_tiny_model(tmp_path / "spare" / "late-tiny.gguf", name="late", seed=2)
    with start(tmp_path, llama_server, folder, watch=True) as r:
        assert set(listed(r.url)) == {"first-tiny"}
        assert load_config(r.config).sources.import_dirs == (str(folder),)  # remembered by the import
        wait_until(lambda: f"watching {folder} {WATCHING}" in r.log(), timeout=10, what="the folder watch")
        events = _collect_events(r.url)
        (folder / "sub").mkdir()
        shutil.copy(spare, folder / "sub" / "late-tiny.gguf")
        wait_until(lambda: "late-tiny" in listed(r.url), timeout=20, what="the copied model to appear")
        assert chat(r.url, "late-tiny").status_code == 200
        entry = load_config(r.config).models["late-tiny"]
        assert entry.state == "manual" and entry.path == str(folder / "sub" / "late-tiny.gguf")
        wait_until(lambda: ("late-tiny", "model_added") in events, timeout=5, what="a model_added event")
        # The file goes: the entry stays in the file but is hidden and answers 404 with the reason.
        (folder / "sub" / "late-tiny.gguf").unlink()
        wait_until(lambda: "late-tiny" not in listed(r.url), timeout=20, what="the deleted model to be hidden")
        gone = chat(r.url, "late-tiny")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_missing"
        assert "moved or deleted" in gone.json()["error"]["message"]
        assert "late-tiny" in load_config(r.config).models
        wait_until(lambda: ("late-tiny", "model_missing") in events, timeout=5, what="a model_missing event")
        # ...and comes back with the file.
        shutil.copy(spare, folder / "sub" / "late-tiny.gguf")
        wait_until(lambda: "late-tiny" in listed(r.url), timeout=20, what="the model to come back")
        assert chat(r.url, "late-tiny").status_code == 200


def test_with_the_watch_off_a_rescan_adds_new_files_and_reports_what_it_skipped(tmp_path, llama_server, folder):
    spare = write_tiny_model(tmp_path / "spare" / "later-tiny.gguf", name="later", seed=3)
    with start(tmp_path, llama_server, folder, watch=False) as r:
        shutil.copy(spare, folder / "later-tiny.gguf")
        settled = time.time() - 60  # copied a minute ago: a fresher file waits to settle (catalogue/sources.py)
        os.utime(folder / "later-tiny.gguf", (settled, settled))
        (folder / "broken.gguf").write_bytes(b"GGUF but not really")
        (folder / "download.gguf.part").write_bytes(spare.read_bytes()[:1000])
        # No watch: nothing happens by itself. The watch starts before the router answers
        # (router/server.py), so a router ready without saying it watches never will.
        assert WATCHING not in r.log()
        assert set(listed(r.url)) == {"first-tiny"}
        report = rescan(r.url)
        assert report["added"] == ["later-tiny"] and report["imported"] == ["later-tiny"]
        skipped = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
        assert "broken.gguf" in skipped and "download.gguf.part" not in skipped
        assert "later-tiny" in listed(r.url) and chat(r.url, "later-tiny").status_code == 200
        (folder / "later-tiny.gguf").unlink()
        report = rescan(r.url)
        assert report["missing"] == ["later-tiny"] and report["added"] == [] and report["removed"] == []
        assert chat(r.url, "later-tiny").status_code == 404
        assert "[later-tiny] missing" in r.log()


def test_a_half_copied_file_is_never_imported(tmp_path, llama_server, folder):
    spare = write_tiny_model(tmp_path / "spare" / "slow-tiny.gguf", name="slow", seed=4)
    data = spare.read_bytes()
    with start(tmp_path, llama_server, folder, watch=True) as r:
        seen: list[set[str]] = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                seen.append(set(listed(r.url)))
                time.sleep(0.1)

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            # A slow copy: a quarter of the file at a time, 1.5 s apart (longer than the settle time).
            with open(folder / "slow-tiny.gguf", "wb") as f:
                for i in range(4):
                    f.write(data[i * len(data) // 4:(i + 1) * len(data) // 4])
                    f.flush()
                    os.fsync(f.fileno())
                    if i < 3:
                        time.sleep(1.5)
            copied_at = len(seen)
            wait_until(lambda: "slow-tiny" in listed(r.url), timeout=20, what="the completed file to appear")
        finally:
            stop.set()
            poller.join()
        assert not any("slow-tiny" in s for s in seen[:copied_at]), "listed while still being copied"
        assert "skipped" in r.log() and "slow-tiny.gguf" in r.log()
        assert chat(r.url, "slow-tiny").status_code == 200


def _collect_events(url: str) -> list[tuple[str, str]]:
    """(model, event) of /models/sse, collected in the background for the test's life."""
    events: list[tuple[str, str]] = []
    subscribed = threading.Event()

    def read() -> None:
        try:
            with requests.get(url + "/models/sse", stream=True, timeout=(5, 120)) as s:
                subscribed.set()  # the router subscribes the stream before it sends the headers
                for line in s.iter_lines():
                    if line.startswith(b"data: "):
                        msg = json.loads(line[6:])
                        events.append((msg["model"], msg["event"]))
        except (requests.RequestException, ValueError):
            pass

    threading.Thread(target=read, daemon=True).start()
    assert subscribed.wait(10), "/models/sse did not answer"
    return events
