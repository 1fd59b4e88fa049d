"""llama.cpp's model management against a real router: POST /models downloads
from a local stand-in Hub (progress in GET /models and on /models/sse),
DELETE /models removes a model of the Hugging Face cache, /models/unload
cancels a download, and ?reload=1 / POST /models/reload re-read the sources."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
import yaml

from tests.support.fakehub import FakeHub, _Handler
from tests.support.opskit import TIMEOUT, SSEReader, chat, tiny_catalogue, wait_until
from tests.support.routerproc import RouterProcess, child_command, write_config
from tests.support.tinygguf import write_tiny_model

pytestmark = pytest.mark.real

REPO = "acme/Tiny-GGUF"
REF = f"{REPO}:Q4_K_M"


class SlowHub(FakeHub):
    """The stand-in Hub, sending each GGUF file in pieces over `seconds`, so a
    download can be watched (and cancelled) while it runs."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def __enter__(self) -> SlowHub:
        from http.server import ThreadingHTTPServer
        from threading import Thread

        hub = self

        class Handler(_Handler):
            fake = hub

            def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                if self.command != "GET" or not self.path.endswith(".gguf") or len(body) < 1024:
                    return super()._send(status, body, headers)
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                step = math.ceil(len(body) / 20)
                try:
                    for i in range(0, len(body), step):
                        self.wfile.write(body[i:i + step])
                        self.wfile.flush()
                        time.sleep(hub.seconds / 20)
                except OSError:
                    pass  # the client gave up

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self


def hub_env(hub: FakeHub, hf_home: Path) -> dict[str, str]:
    return {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"),
            "HF_HUB_OFFLINE": "0", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def start_router(tmp_path: Path, llama_server: Path, hub: FakeHub, models: dict[str, Any] | None = None,
                 **router: Any) -> RouterProcess:
    cfg = write_config(tmp_path / "config.yaml", models or {}, router={"watch_config": False, **router},
                       spawn={"command": child_command(llama_server)})
    return RouterProcess(cfg, tmp_path / "router.log", env=hub_env(hub, tmp_path / "hf-home"))


def listed(url: str, reload: bool = False) -> dict[str, dict]:
    r = requests.get(url + "/models" + ("?reload=1" if reload else ""), timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return {m["id"]: m for m in r.json()["data"]}


def event(sse: SSEReader, model: str, name: str, timeout: float = 20) -> dict:
    return sse.wait_for(lambda e: e["model"] == model and e["event"] == name, timeout=timeout)


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    return write_tiny_model(tmp_path / "src" / "Tiny-Q4_K_M.gguf", name="hub tiny", seed=5)


def test_a_download_shows_progress_then_serves_and_delete_removes_it(tmp_path, llama_server, tiny_gguf):
    size = tiny_gguf.stat().st_size
    hf_home = tmp_path / "hf-home"
    with SlowHub(seconds=2.0) as hub:
        hub.add_file(REPO, "Tiny-Q4_K_M.gguf", tiny_gguf.read_bytes())
        hub.add_file(REPO, "README.md", b"# tiny\n")
        with start_router(tmp_path, llama_server, hub) as r, SSEReader(r.url + "/models/sse") as sse:
            resp = requests.post(r.url + "/models", json={"model": REF}, timeout=TIMEOUT)
            assert resp.status_code == 200 and resp.json() == {"success": True}

            # While it runs: listed as downloading, with per-URL progress, and told on the event stream.
            status = listed(r.url)[REF]["status"]
            assert status["value"] == "downloading"
            progress = event(sse, REF, "download_progress")["data"]["progress"]
            (url, first), = progress.items()
            assert url.endswith("/acme/Tiny-GGUF/resolve/main/Tiny-Q4_K_M.gguf") and first["total"] == size
            assert listed(r.url)[REF]["status"]["progress"][url]["total"] == size

            done = event(sse, REF, "download_finished")["data"]
            name = done["id"]
            assert name and Path(done["path"]).name == "Tiny-Q4_K_M.gguf"
            models = listed(r.url)
            assert REF not in models or models[REF]["status"]["value"] != "downloading"
            assert models[name]["status"]["value"] == "unloaded"
            assert list(hf_home.rglob("*.gguf")), "the model is in the HF cache"

            reply = chat(r.url, name)
            assert reply.status_code == 200, reply.text
            assert listed(r.url)[name]["status"]["value"] == "loaded"

            # DELETE unloads it, deletes its files from the cache, tells the clients, forgets it.
            gone = requests.delete(r.url + "/models", params={"model": name}, timeout=TIMEOUT)
            assert gone.status_code == 200 and gone.json() == {"success": True}, gone.text
            event(sse, name, "model_remove")
            assert name not in listed(r.url)
            assert not [p for p in hf_home.rglob("*.gguf")], "model file gone"
            assert not [p for p in hf_home.rglob("blobs/*") if p.is_file()], "its blob gone"
            assert chat(r.url, name).status_code == 404
            again = requests.delete(r.url + "/models", params={"model": name}, timeout=TIMEOUT)
            assert again.status_code == 404


def test_refusals_and_cancelling_a_download(tmp_path, llama_server, tiny_dir, tiny_gguf):
    hf_home = tmp_path / "hf-home"
    with SlowHub(seconds=3.0) as hub:
        hub.add_file(REPO, "Tiny-Q4_K_M.gguf", tiny_gguf.read_bytes())
        with start_router(tmp_path, llama_server, hub, tiny_catalogue(tiny_dir, "tiny-a")) as r, \
                SSEReader(r.url + "/models/sse") as sse:
            for body in ({}, {"model": ""}, {"model": "no-slash"}, {"model": "a/b/c:Q4_K_M"}, {"model": 7}):
                bad = requests.post(r.url + "/models", json=body, timeout=TIMEOUT)
                assert bad.status_code == 400, body
                assert bad.json()["error"]["type"] == "invalid_request_error"

            assert requests.post(r.url + "/models", json={"model": REF}, timeout=TIMEOUT).status_code == 200
            twice = requests.post(r.url + "/models", json={"model": REF.lower()}, timeout=TIMEOUT)
            assert twice.status_code == 400 and "already exists" in twice.json()["error"]["message"]

            # llama.cpp: unloading a model that downloads cancels the download.
            cancel = requests.post(r.url + "/models/unload", json={"model": REF}, timeout=TIMEOUT)
            assert cancel.status_code == 200 and cancel.json() == {"success": True}
            failed = event(sse, REF, "download_failed")
            assert failed["data"]["reason"] == "cancelled"
            assert REF not in listed(r.url)
            assert not list(hf_home.rglob("*.gguf"))

            # The WebUI cancels with DELETE /models?model=.
            assert requests.post(r.url + "/models", json={"model": REF}, timeout=TIMEOUT).status_code == 200
            deleted = requests.delete(r.url + "/models", params={"model": REF}, timeout=TIMEOUT)
            assert deleted.status_code == 200, deleted.text
            assert event(sse, REF, "download_failed")["data"]["reason"] == "cancelled"
            event(sse, REF, "model_remove")
            assert REF not in listed(r.url) and not list(hf_home.rglob("*.gguf"))

            # A download that fails says why; nothing is listed.
            missing = "acme/Nothing-GGUF:Q4_K_M"
            assert requests.post(r.url + "/models", json={"model": missing}, timeout=TIMEOUT).status_code == 200
            assert "not found" in event(sse, missing, "download_failed")["data"]["reason"]
            wrong = f"{REPO}:Q8_0"
            assert requests.post(r.url + "/models", json={"model": wrong}, timeout=TIMEOUT).status_code == 200
            assert "available: Q4_K_M" in event(sse, wrong, "download_failed")["data"]["reason"]
            assert missing not in listed(r.url) and wrong not in listed(r.url)

            # Only models of the HF cache can be deleted here; a catalogue entry and its file stay.
            manual = requests.delete(r.url + "/models", params={"model": "tiny-a"}, timeout=TIMEOUT)
            assert manual.status_code == 400 and manual.json()["error"]["code"] == "model_not_removable"
            assert (tiny_dir / "tiny-a.gguf").exists() and "tiny-a" in listed(r.url)
            assert requests.delete(r.url + "/models", params={"model": "nope"}, timeout=TIMEOUT).status_code == 404
            assert requests.delete(r.url + "/models", timeout=TIMEOUT).status_code == 400
            assert requests.delete(r.url + "/models?model=" + quote("../etc"), timeout=TIMEOUT).status_code == 400


def test_reload_picks_up_the_catalogue_and_tells_event_clients(tmp_path, llama_server, tiny_dir):
    with FakeHub() as hub, start_router(tmp_path, llama_server, hub, tiny_catalogue(tiny_dir, "tiny-a")) as r, \
            SSEReader(r.url + "/models/sse") as sse:
        data = yaml.safe_load(r.config.read_text())
        data["models"]["tiny-b"] = {"path": str(tiny_dir / "tiny-b.gguf")}
        r.config.write_text(yaml.safe_dump(data))
        assert "tiny-b" not in listed(r.url), "watch_config is off: nothing changes by itself"
        assert "tiny-b" in listed(r.url, reload=True)
        event(sse, "*", "models_reload")

        data["models"]["tiny-c"] = {"path": str(tiny_dir / "tiny-c.gguf")}
        r.config.write_text(yaml.safe_dump(data))
        resp = requests.post(r.url + "/models/reload", timeout=TIMEOUT)
        assert resp.status_code == 200, resp.text
        assert resp.json()["success"] is True and resp.json()["added"] == ["tiny-c"]
        event(sse, "*", "models_reload")

        r.config.write_text("models: [not, a, mapping]\n")
        broken = requests.post(r.url + "/models/reload", timeout=TIMEOUT)
        assert broken.status_code == 400 and "models" in broken.json()["error"]["message"]
        assert {"tiny-a", "tiny-b", "tiny-c"} <= set(listed(r.url, reload=True)), "the running catalogue stays"
        wait_until(lambda: chat(r.url, "tiny-c").status_code == 200, what="tiny-c served")
