"""The dashboard: its page, the per-model snapshot it shows, and the live log stream."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.http import call, wait_until
from tests.support.routerproc import RouterProcess, child_command, write_config

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def router(llama_server: Path, tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    d = tmp_path_factory.mktemp("dash")
    (d / "broken.gguf").write_bytes(b"not a gguf file at all")
    config = write_config(d / "config.yaml", {
        "tiny-a": {"path": str(tiny_dir / "tiny-a.gguf"), "group": "small"},
        "tiny-b": {"path": str(tiny_dir / "tiny-b.gguf"), "aliases": ["b"]},
        "broken": {"path": str(d / "broken.gguf")},
    }, router={"models_max": 2}, spawn={"command": child_command(llama_server)})
    with RouterProcess(config, d / "router.log") as r:
        yield r


def rows(router: RouterProcess) -> dict[str, dict]:
    status, body = call(router.url + "/dashboard/api/models")
    assert status == 200
    return {m["name"]: m for m in body["models"]}


def state_is(router: RouterProcess, model: str, state: str) -> bool:
    return rows(router)[model]["state"] == state


def test_dashboard_page_is_one_plain_html_page(router: RouterProcess) -> None:
    with urllib.request.urlopen(router.url + "/dashboard", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/html")
        page = r.read().decode()
    # What the page reads and calls: the snapshot, the log and state streams, load/unload.
    for needle in ("/dashboard/api/models", "/logs/stream/", "/models/sse", "/models/${action}",
                   "sessionStorage", "Authorization"):
        assert needle in page


def test_loaded_model_shows_its_process_port_and_memory(router: RouterProcess) -> None:
    assert call(router.url + "/models/load", {"model": "tiny-a"})[0] == 200
    wait_until(lambda: state_is(router, "tiny-a", "loaded"), 60, "tiny-a loaded")
    a, b = rows(router)["tiny-a"], rows(router)["tiny-b"]
    assert a["group"] == "small" and b["aliases"] == ["b"]
    child = psutil.Process(a["pid"])
    assert child.pid in {p.pid for p in router.children()}
    assert any(c.laddr.port == a["port"] for c in child.net_connections(kind="tcp") if c.status == "LISTEN")
    assert a["rss_bytes"] > 1024 * 1024
    assert a["inflight"] == 0 and a["loads"] >= 1 and a["last_error"] is None
    assert b["state"] == "unloaded" and b["pid"] is None and b["port"] is None and b["rss_bytes"] is None


def test_failed_load_shows_the_last_error(router: RouterProcess) -> None:
    call(router.url + "/models/load", {"model": "broken"})
    row = wait_until(lambda: (r := rows(router)["broken"])["failed"] and r, 60, "broken to fail")
    assert row["state"] == "unloaded"
    assert "broken" in row["last_error"]


def test_log_stream_replays_the_buffer_then_follows_a_new_child(router: RouterProcess) -> None:
    call(router.url + "/models/load", {"model": "tiny-b"})
    wait_until(lambda: state_is(router, "tiny-b", "loaded"), 60, "tiny-b loaded")
    with urllib.request.urlopen(router.url + "/logs/stream/b", timeout=30) as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"

        def next_event() -> dict:
            while True:
                line = stream.readline()
                assert line, "log stream ended"
                if line.startswith(b"data: "):
                    return json.loads(line[6:])

        while "listening" not in next_event().get("line", ""):
            pass
        call(router.url + "/models/unload", {"model": "tiny-b"})
        wait_until(lambda: state_is(router, "tiny-b", "unloaded"), 60, "tiny-b unloaded")
        call(router.url + "/models/load", {"model": "tiny-b"})
        events = []
        while "listening" not in (e := next_event()).get("line", ""):
            events.append(e)
        assert any("exit" in x.get("line", "") for x in events)  # the old child's last words came first
        assert all(x["model"] == "tiny-b" for x in events)


def test_log_stream_of_an_unknown_model_is_a_404(router: RouterProcess) -> None:
    status, body = call(router.url + "/logs/stream/nope")
    assert status == 404 and body["error"]["code"] == "model_not_found"


async def test_gpu_memory_is_read_per_process_from_nvidia_smi(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from router.ui.dashboard import VramProbe

    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\n"
                    "[ \"$1\" = --query-compute-apps=pid,used_memory ] || exit 2\n"
                    "printf '4242, 512\\n4243, 1024\\n4242, 256\\n'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert await VramProbe().by_pid() == {4242: 768 * 2**20, 4243: 1024 * 2**20}
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert await VramProbe().by_pid() is None  # no nvidia-smi: no GPU column, not zeros
