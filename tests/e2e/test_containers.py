"""Servers that outlive the command that starts them (containers): a fixed `port`,
a `stop_command`, a per-model `health_endpoint`. Docker is not here, so a
stand-in plays it (tests/support/detached_server.py): its `start` runs a real
llama-server detached from itself, as `docker run` leaves a container
running, and its `stop NAME` stops it, as `docker stop` does. The router must
never lose track of that server: stopping runs the command and then finds the
port free and no server process left."""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.opskit import TIMEOUT, chat, model_state, wait_until
from tests.support.routerproc import RouterProcess, free_port, write_config

pytestmark = pytest.mark.real

STAND_IN = [sys.executable, "-m", "tests.support.detached_server"]


def port_free(port: int) -> bool:
    """Nothing accepts connections on the port."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


def server_gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its reaper has exited too)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def box(llama_server: Path, tiny_dir: Path, state: Path, port: int, *, attached: bool = False) -> dict:
    """A model whose "container" serves tiny-a on a fixed port."""
    server = [str(llama_server), "--model", str(tiny_dir / "tiny-a.gguf"), "--host", "127.0.0.1", "--port", "$port",
              "--ctx-size", "512", "-np", "1"]
    return {"spawn": {"command": [*STAND_IN, "start", "--name", "$name", "--dir", str(state),
                                  *(["--attached"] if attached else []), "--", *server]},
            "port": port, "health_endpoint": "/health",
            "stop_command": [*STAND_IN, "stop", "--name", "${MODEL_ID}", "--dir", str(state)]}


def pid_of(state: Path, name: str) -> int:
    return int((state / f"{name}.pid").read_text())


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    """Where the stand-in keeps its servers' pid files; a server a failed test left behind is killed."""
    directory = tmp_path / "containers"
    yield directory
    for pid_file in directory.glob("*.pid"):
        pid = int(pid_file.read_text())
        if not server_gone(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("attached", [False, True], ids=["detached", "attached"])
def test_a_container_is_stopped_by_its_stop_command_and_its_port_is_free(tmp_path, llama_server, tiny_dir, state,
                                                                          attached):
    port = free_port()
    cfg = write_config(tmp_path / "config.yaml", {"box": box(llama_server, tiny_dir, state, port, attached=attached)},
                       router={"watch_config": False, "stop_timeout": 10})
    with RouterProcess(cfg, tmp_path / "router.log") as r:
        reply = chat(r.url, "box")
        assert reply.status_code == 200, reply.text
        pid = pid_of(state, "box")
        assert not port_free(port) and not server_gone(pid)
        if not attached:  # the server is no process of the router's: only its port tells it runs
            assert pid not in {p.pid for p in r.children()}
        assert model_state(r.url, "box") == "loaded"

        resp = requests.post(r.url + "/models/unload", json={"model": "box"}, timeout=TIMEOUT)
        assert resp.status_code == 200, resp.text
        wait_until(lambda: model_state(r.url, "box") == "unloaded", 30, "box unloaded")
        assert port_free(port), "the server still listens after its stop_command"
        wait_until(lambda: server_gone(pid), 10, "the server process gone")
        log = r.log()
        assert "[box] the stop command" in log and "exited with code 0" in log
        assert f"[box] port {port} is free" in log

        # Started again on the same port, then stopped by the router's own shutdown.
        assert chat(r.url, "box").status_code == 200
        pid = pid_of(state, "box")
    assert port_free(port) and server_gone(pid), "the server outlived the router"


def test_a_container_that_dies_is_noticed_and_started_again(tmp_path, llama_server, tiny_dir, state):
    port = free_port()
    cfg = write_config(tmp_path / "config.yaml", {"box": box(llama_server, tiny_dir, state, port)},
                       router={"watch_config": False})
    with RouterProcess(cfg, tmp_path / "router.log") as r:
        assert chat(r.url, "box").status_code == 200
        os.kill(pid_of(state, "box"), signal.SIGKILL)  # the container dies on its own
        wait_until(lambda: model_state(r.url, "box") == "unloaded", 15, "the router to notice")
        assert "[box] the server on port" in r.log()
        assert chat(r.url, "box").status_code == 200  # a new one, on the same port
        assert not port_free(port)


def test_a_fixed_port_already_taken_fails_the_load_and_says_so(tmp_path, llama_server, tiny_dir, state):
    port = free_port()
    cfg = write_config(tmp_path / "config.yaml", {"box": box(llama_server, tiny_dir, state, port)},
                       router={"watch_config": False})
    with socket.socket() as squatter, RouterProcess(cfg, tmp_path / "router.log") as r:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        resp = chat(r.url, "box")
        assert resp.status_code == 503, resp.text
        assert f"port {port} is already in use" in resp.json()["error"]["message"]
        assert not (state / "box.pid").exists()  # nothing was started
