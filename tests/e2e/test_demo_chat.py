"""The demo's Gemma answers a chat question like an assistant.

Starts one real llama-server child with exactly the arguments demo/config.yaml
gives model `gemma` (read from that file, so the test follows the demo), and
asks it a question through /v1/chat/completions. Without the demo's chat
template llama-server falls back to ChatML and the model's reply is transcript
garbage such as "<|im_end|><|im_start|>user...".
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.real, pytest.mark.gemma]

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "demo" / "config.yaml"
MODEL = "gemma"
HOST = "127.0.0.1"
GARBAGE = ("<|im_", "<start_of_turn>", "<end_of_turn>")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def expand_env(arg: str) -> str:
    """${VAR} as the router expands it in the config's strings."""
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: os.environ[m.group(1)], arg)


def demo_argv(llama_server: Path, model_path: Path, port: int) -> list[str]:
    """The demo's command line for MODEL: spawn.command with its placeholders
    filled in (whole arguments, as the router does), then the model's args."""
    config = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    spec = config["models"][MODEL]
    spawn = spec.get("spawn") or config["spawn"]
    assert Path(expand_env(spec["path"])).name == model_path.name, \
        "the demo and the `gemma` fixture should use the same model file"
    values = {"$path": str(model_path), "$name": MODEL, "$host": HOST, "$port": str(port)}
    argv = [values.get(arg, expand_env(str(arg))) for arg in spawn["command"]]
    argv += [expand_env(str(arg)) for arg in spec.get("args", [])]
    assert Path(argv[0]).name == "llama-server"
    argv[0] = str(llama_server)
    return argv


def wait_healthy(proc: subprocess.Popen, url: str, log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"llama-server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    pytest.fail(f"llama-server was not healthy in time:\n{log.read_text()[-4000:]}")


def chat(url: str, question: str) -> dict:
    body = {"model": MODEL, "temperature": 0, "max_tokens": 16,
            "messages": [{"role": "user", "content": question}]}
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


@pytest.mark.timeout(120)
def test_demo_gemma_answers_a_question(llama_server, gemma, tmp_path):
    port = free_port()
    url = f"http://{HOST}:{port}"
    log = tmp_path / "llama-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(demo_argv(llama_server, gemma, port), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(proc, url, log, time.monotonic() + 60)
        reply = chat(url, "What is the capital of France? Answer in one word.")
        choice = reply["choices"][0]
        text = choice["message"]["content"]
        print(f"reply: {text!r} (finish_reason={choice['finish_reason']})")
        assert not any(g in text for g in GARBAGE), f"chat-format garbage in the reply: {text!r}"
        assert "Paris" in text, f"no 'Paris' in the reply: {text!r}"
        assert choice["finish_reason"] == "stop", f"the reply did not end by itself: {text!r}"
    finally:
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
