"""Models the router does not start, against real servers: a catalogue entry with
a `url` (a llama-server the test starts, behind an API key) and a peer (a second
llama-router, over https), listed, routed, streamed, health-checked, and never
loaded, unloaded or evicted by this router."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import trustme

from tests.support.opskit import TIMEOUT, chat, tiny_catalogue, wait_until
from tests.support.routerproc import RouterProcess, child_command, free_port, write_config

pytestmark = pytest.mark.real

SERVER_KEY = "external-server-key-5e1f"  # the external llama-server's --api-key, from ${EXT_KEY}
ROUTER_KEY = "router-client-key-8a2c"  # what clients of this router send
PEER_KEY = "peer-router-key-3b7d9f"  # the peer's router.api_keys, from ${PEER_KEY}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def models(r: RouterProcess) -> dict[str, dict]:
    resp = requests.get(r.url + "/v1/models", headers=bearer(ROUTER_KEY), timeout=TIMEOUT)
    assert resp.status_code == 200, resp.text
    return {m["id"]: m for m in resp.json()["data"]}


def stream_chat(url: str, model: str, headers: dict[str, str]) -> list[dict]:
    """The events of a streamed chat, as they came."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}
    with requests.post(url + "/v1/chat/completions", json=body, headers=headers, stream=True,
                       timeout=TIMEOUT) as resp:
        assert resp.status_code == 200, resp.text
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        lines = [ln for ln in resp.iter_lines() if ln.startswith(b"data: ")]
    assert lines[-1] == b"data: [DONE]"
    return [json.loads(ln[6:]) for ln in lines[:-1]]


@pytest.fixture
def external_server(tmp_path: Path, llama_server: Path, tiny_dir: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A llama-server started by the test (not by any router), behind an API key."""
    port = free_port()
    argv = [a.replace("$path", str(tiny_dir / "tiny-c.gguf")).replace("$name", "tiny-c-remote")
            .replace("$host", "127.0.0.1").replace("$port", str(port))
            for a in child_command(llama_server)] + ["--api-key", SERVER_KEY]
    with open(tmp_path / "external.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url + "/health"), 60, "the external llama-server")
        yield url, proc
    finally:
        proc.kill()
        proc.wait(10)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def test_a_url_model_is_served_by_its_running_server_and_never_managed(tmp_path, llama_server, tiny_dir,
                                                                       external_server):
    url, server = external_server
    catalogue = {**tiny_catalogue(tiny_dir, "tiny-a"),
                 "remote": {"url": url + "/v1", "api_key": "${EXT_KEY}", "aliases": ["remote-alias"]}}
    cfg = write_config(tmp_path / "config.yaml", catalogue, spawn={"command": child_command(llama_server)},
                       router={"watch_config": False, "models_max": 1, "api_keys": [ROUTER_KEY]})
    assert SERVER_KEY not in cfg.read_text()
    with RouterProcess(cfg, tmp_path / "router.log", env={"EXT_KEY": SERVER_KEY}) as r:
        # Listed as external, its health checked (GET /v1/models on the server, with the server's key).
        entry = wait_until(lambda: (m := models(r).get("remote")) and m["status"].get("healthy") and m,
                           30, "the external model healthy in /v1/models")
        assert entry["status"]["value"] == "external" and entry["status"]["error"] is None
        assert entry["aliases"] == ["remote-alias"]

        # The one local model loads; requests for the external one never evict it (no memory, no group).
        assert chat(r.url, "tiny-a", bearer(ROUTER_KEY)).status_code == 200
        reply = chat(r.url, "remote", bearer(ROUTER_KEY))
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] is not None
        assert chat(r.url, "remote-alias", bearer(ROUTER_KEY)).status_code == 200
        events = stream_chat(r.url, "remote", bearer(ROUTER_KEY))
        assert any(e["choices"] and e["choices"][0]["delta"].get("content") for e in events)
        # Ollama's API reaches it the same way: the server's key on the request, under its /v1 root.
        ollama = requests.post(r.url + "/api/chat", headers=bearer(ROUTER_KEY), timeout=TIMEOUT,
                               json={"model": "remote", "messages": [{"role": "user", "content": "hi"}],
                                     "stream": False, "options": {"num_predict": 4}})
        assert ollama.status_code == 200, ollama.text
        assert ollama.json()["done"] is True and ollama.json()["eval_count"] > 0
        listed = models(r)
        assert listed["tiny-a"]["status"]["value"] == "loaded"
        assert listed["remote"]["status"]["value"] == "external"
        status = requests.get(r.url + "/admin/status", headers=bearer(ROUTER_KEY), timeout=TIMEOUT)
        assert status.status_code in (401, 403)  # (an inference key is no admin)

        # Asking to load it only checks its server; nothing is started for it.
        children = {p.pid for p in r.children()}
        resp = requests.post(r.url + "/models/load", json={"model": "remote"}, headers=bearer(ROUTER_KEY),
                             timeout=TIMEOUT)
        assert resp.status_code == 200, resp.text
        assert {p.pid for p in r.children()} == children
        unload = requests.post(r.url + "/models/unload", json={"model": "remote"}, headers=bearer(ROUTER_KEY),
                               timeout=TIMEOUT)
        assert unload.status_code == 400 and unload.json()["error"]["code"] == "model_external"
        assert server.poll() is None

        # The server goes away: the next check says so, and a request gets a 502 that names it.
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        requests.post(r.url + "/models/load", json={"model": "remote"}, headers=bearer(ROUTER_KEY), timeout=TIMEOUT)
        down = wait_until(lambda: models(r)["remote"]["status"]["healthy"] is False and models(r)["remote"],
                          30, "the external model unhealthy")
        assert "127.0.0.1" in down["status"]["error"]
        failed = chat(r.url, "remote", bearer(ROUTER_KEY))
        assert failed.status_code == 502, failed.text
        assert failed.json()["error"]["type"] == "upstream_error"
        assert url.removeprefix("http://") in failed.json()["error"]["message"]
    log = (tmp_path / "router.log").read_text()
    assert SERVER_KEY not in log and ROUTER_KEY not in log


def test_the_server_gets_its_own_key_never_the_clients(tmp_path, llama_server, tiny_dir, external_server):
    """Without the server's key (api_key unset) the server refuses the router: the client's key is not sent."""
    url, _ = external_server
    catalogue = {"remote": {"url": url}, "keyed": {"url": url, "api_key": SERVER_KEY}}
    cfg = write_config(tmp_path / "config.yaml", catalogue, router={"watch_config": False, "api_keys": [SERVER_KEY]})
    with RouterProcess(cfg, tmp_path / "router.log") as r:
        refused = chat(r.url, "remote", bearer(SERVER_KEY))
        assert refused.status_code == 401, refused.text  # llama-server's own refusal, passed through
        assert chat(r.url, "keyed", bearer(SERVER_KEY)).status_code == 200


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = {"ca": d / "ca.pem", "cert": d / "peer.pem", "key": d / "peer.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    files["cert"].write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(files["key"]))
    return files


def test_a_peer_routers_models_are_merged_and_relayed_over_https(tmp_path, llama_server, tiny_dir, pki):
    (tmp_path / "peer").mkdir()
    peer_cfg = write_config(tmp_path / "peer" / "config.yaml", tiny_catalogue(tiny_dir, "tiny-a", "tiny-b"),
                            spawn={"command": child_command(llama_server)},
                            router={"watch_config": False, "api_keys": [PEER_KEY], "tls_cert": str(pki["cert"]),
                                    "tls_key": str(pki["key"])})
    peer = RouterProcess(peer_cfg, tmp_path / "peer.log")
    peer_url = f"https://127.0.0.1:{peer.port}"
    try:
        wait_until(lambda: _answers_https(peer_url, pki["ca"]), 30, "the peer router over https")
        cfg = write_config(tmp_path / "config.yaml", tiny_catalogue(tiny_dir, "tiny-c"),
                           spawn={"command": child_command(llama_server)},
                           router={"watch_config": False, "api_keys": [ROUTER_KEY]},
                           peers={"lab": {"url": peer_url + "/v1", "api_key": "${PEER_KEY}",
                                          "models": ["tiny-a", "ghost"]}})
        # The peer's certificate is trusted the way every https client of the machine is told to.
        env = {"PEER_KEY": PEER_KEY, "SSL_CERT_FILE": str(pki["ca"])}
        with RouterProcess(cfg, tmp_path / "router.log", env=env) as r:
            listed = wait_until(lambda: (m := models(r)) and m.get("lab/tiny-a", {}).get("status", {}).get(
                "reachable") and m, 30, "the peer's models listed")
            entry = listed["lab/tiny-a"]
            assert entry["status"] == {"value": "external", "peer": "lab", "reachable": True, "error": None}
            assert entry["aliases"] == ["tiny-a"] and entry["name"] == "lab: tiny-a"
            assert "lab/tiny-b" not in listed  # not in the peer's filter list
            assert "lab/ghost" in listed  # a plain name is served even when the peer does not list it
            assert "tiny-c" in listed  # this router's own

            for name in ("lab/tiny-a", "tiny-a"):
                reply = chat(r.url, name, bearer(ROUTER_KEY))
                assert reply.status_code == 200, reply.text
                assert reply.json()["model"] == name  # the name the client asked for
            events = stream_chat(r.url, "lab/tiny-a", bearer(ROUTER_KEY))
            assert events and all(e["model"] == "lab/tiny-a" for e in events)
            assert "lab/tiny-a" not in {m for m, v in models(r).items() if v["status"]["value"] == "loaded"}
            peer_models = requests.get(peer_url + "/v1/models", headers=bearer(PEER_KEY), verify=str(pki["ca"]),
                                       timeout=TIMEOUT).json()["data"]
            assert next(m for m in peer_models if m["id"] == "tiny-a")["status"]["value"] == "loaded"

            # The peer's own error, with its status, naming the peer.
            ghost = chat(r.url, "lab/ghost", bearer(ROUTER_KEY))
            assert ghost.status_code == 404, ghost.text
            assert ghost.json()["error"]["message"].startswith("peer 'lab': ")
            assert ghost.json()["error"]["code"] == "model_not_found"

            # A peer that went away: its models stay listed, marked; a request says which peer failed.
            assert peer.stop() == 0
            gone = chat(r.url, "lab/tiny-a", bearer(ROUTER_KEY))
            assert gone.status_code == 502, gone.text
            assert gone.json()["error"]["message"].startswith("peer 'lab': upstream model server failed")
    finally:
        if peer.proc.poll() is None:
            peer.stop()
    log = (tmp_path / "router.log").read_text()
    assert PEER_KEY not in log and ROUTER_KEY not in log


def _answers_https(url: str, ca: Path) -> bool:
    try:
        return requests.get(url + "/health", verify=str(ca), timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def test_a_peer_nobody_can_reach_is_marked_and_named(tmp_path):
    port = free_port()  # nothing listens there
    cfg = write_config(tmp_path / "config.yaml", {}, router={"watch_config": False},
                       peers={"far": {"url": f"http://127.0.0.1:{port}", "models": ["m1"]}})
    with RouterProcess(cfg, tmp_path / "router.log") as r:
        entry = wait_until(lambda: (m := requests.get(r.url + "/v1/models", timeout=TIMEOUT).json()["data"])
                           and m[0]["status"]["reachable"] is False and m[0], 30, "the peer marked unreachable")
        assert entry["id"] == "far/m1" and str(port) in entry["status"]["error"]
        resp = chat(r.url, "m1")
        assert resp.status_code == 502 and resp.json()["error"]["message"].startswith("peer 'far': ")


class RecordingPeer:
    """A STAND-IN peer (an OpenAI-compatible endpoint) that records the exact bytes of every
    request body it receives; its model `slow` answers nothing until the test ends. Only for
    what a real server cannot tell: which bytes reached it, and a stall on cue."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.release = threading.Event()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, data: dict) -> None:
                raw = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                self._reply({"object": "list", "data": [{"id": m, "object": "model"} for m in ("m1", "slow")]})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                peer.bodies.append(raw)
                model = json.loads(raw).get("model")
                if model == "slow":
                    peer.release.wait(30)
                self._reply({"object": "chat.completion", "model": model, "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RecordingPeer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_a_peers_filters_rewrite_the_body_it_receives_and_its_read_timeout_bounds_a_stall(tmp_path):
    with RecordingPeer() as peer:
        cfg = write_config(tmp_path / "config.yaml", {}, router={"watch_config": False, "read_timeout": 120},
                           peers={"lab": {"url": peer.url, "models": ["m1", "slow"],
                                          "strip_params": ["temperature"],
                                          "set_params": {"top_k?": 40, "provider": {"zdr": True}},
                                          "timeouts": {"read": 1}},
                                  "plain": {"url": peer.url + "/v1", "models": ["other"]}})
        with RouterProcess(cfg, tmp_path / "router.log") as r:
            wait_until(lambda: {"lab/m1", "lab/slow", "plain/other"} <= set(models(r)), 30, "the peers' models")

            # lab's rules: temperature removed, provider set over the client's, top_k only where none
            sent = {"model": "lab/m1", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.1,
                    "provider": {"zdr": False, "order": ["x"]}, "max_tokens": 4}
            resp = requests.post(r.url + "/v1/chat/completions", json=sent, timeout=TIMEOUT)
            assert resp.status_code == 200, resp.text
            assert json.loads(peer.bodies[-1]) == {"model": "m1", "messages": sent["messages"], "max_tokens": 4,
                                                   "provider": {"zdr": True}, "top_k": 40}
            resp = requests.post(r.url + "/v1/chat/completions", timeout=TIMEOUT,
                                 json={"model": "lab/m1", "messages": sent["messages"], "top_k": 5})
            assert resp.status_code == 200, resp.text
            assert json.loads(peer.bodies[-1])["top_k"] == 5  # a default never overrides the client's

            # A peer without rules, asked by its model's own id: the client's bytes, unchanged.
            raw = b'{"model":  "other", "messages": [{"role":"user","content":"hi"}],"temperature":0.1}'
            resp = requests.post(r.url + "/v1/chat/completions", data=raw, timeout=TIMEOUT,
                                 headers={"Content-Type": "application/json"})
            assert resp.status_code == 200, resp.text
            assert peer.bodies[-1] == raw

            # lab's model stalls: its 1 s read timeout answers 502 naming the peer, not router.read_timeout.
            started = time.monotonic()
            stalled = chat(r.url, "lab/slow")
            took = time.monotonic() - started
            assert stalled.status_code == 502, stalled.text
            assert stalled.json()["error"]["message"].startswith("peer 'lab': ")
            assert took < 10, took
