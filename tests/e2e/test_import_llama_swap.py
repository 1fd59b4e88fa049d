"""A llama-swap config.yaml, imported, serves its models: the converted catalogue
starts real llama-server children for two tiny models, behind the API key
llama-swap read from the environment, both loaded at once as their
`swap: false` group asks. llama-swap's own config.example.yaml, its model
files and servers swapped for tiny ones, serves two of its models too."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests
import yaml

from router.catalogue.parse import load_config
from tests.support.opskit import chat, model_state
from tests.support.routerproc import ROOT, RouterProcess, free_port
from tests.support.tinygguf import write_tiny_model

pytestmark = [pytest.mark.real, pytest.mark.timeout(180)]
KEY = "sk-llama-swap-e2e-key"


def test_an_imported_llama_swap_config_serves_both_models(tmp_path: Path, llama_server: Path, monkeypatch):
    models = tmp_path / "models"
    write_tiny_model(models / "tiny-a.gguf", name="tiny-a", seed=1)
    write_tiny_model(models / "tiny-b.gguf", name="tiny-b", seed=2)
    src = tmp_path / "llama-swap.yaml"
    src.write_text(textwrap.dedent(f"""\
        healthCheckTimeout: 60
        apiKeys: ["${{env.SWAP_E2E_KEY}}"]
        macros:
          server: "{shlex.quote(str(llama_server))} --port ${{PORT}} --host 127.0.0.1"
          small: "--ctx-size 512 -np 1"
          dir: {shlex.quote(str(models))}
        models:
          tiny-a:
            cmd: ${{server}} -m ${{dir}}/tiny-a.gguf ${{small}}
            aliases: [first]
          tiny-b:
            cmd: |
              # the second model, written over several lines
              ${{server}}
              --model ${{dir}}/tiny-b.gguf
              ${{small}}
            cmdStop: kill ${{PID}}
        groups:
          both:
            swap: false
            members: [tiny-a, tiny-b]
        """))
    # The test's own port and KV folder; the import keeps a model-less file's settings.
    dest = tmp_path / "config.yaml"
    dest.write_text(yaml.safe_dump({
        "router": {"port": free_port(), "port_range": [54000, 54999], "slot_save_path": str(tmp_path / "slots")},
        "sources": {"hf_cache": False}}))
    monkeypatch.setenv("SWAP_E2E_KEY", KEY)
    env = {**os.environ, "SWAP_E2E_KEY": KEY}

    done = subprocess.run([sys.executable, "-m", "router", "--import-llama-swap", str(src), "--config", str(dest)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)

    assert done.returncode == 0, done.stderr
    report = [line.strip() for line in done.stdout.splitlines() if line.startswith("  ")]
    assert report == [], done.stdout  # every key carried, cmdStop as stop_command
    assert f"{dest}: written from {src}" in done.stdout
    assert load_config(dest).router.models_max == 2
    assert load_config(dest).models["tiny-b"].stop_command == ("kill", "${PID}")
    again = subprocess.run([sys.executable, "-m", "router", "--import-llama-swap", str(src), "--config", str(dest)],
                           cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert again.returncode == 2 and "already" in again.stderr  # a catalogue with models is never overwritten
    auth = {"Authorization": f"Bearer {KEY}"}
    with RouterProcess(dest, tmp_path / "router.log", env={"SWAP_E2E_KEY": KEY}) as router:
        assert chat(router.url, "first").status_code == 401  # apiKeys came along
        for name in ("first", "tiny-b"):
            reply = chat(router.url, name, headers=auth)
            assert reply.status_code == 200, reply.text
            assert reply.json()["choices"][0]["message"]["content"]
        # swap: false: the second load did not stop the first
        assert model_state(router.url, "tiny-a", auth) == model_state(router.url, "tiny-b", auth) == "loaded"


EXAMPLE = ROOT / "tests" / "unit" / "catalogue" / "fixtures" / "llama-swap-config.example.yaml"
EXAMPLE_KEYS = {"API_KEY_1": "sk-example-key-one", "API_KEY_2": "sk-example-key-two"}


def test_llama_swaps_own_example_serves_two_of_its_models(tmp_path: Path, llama_server: Path):
    """The example as it is, but for what this machine lacks: its llama-server and model file
    (gpt-oss-120b), docker (docker-llama runs a llama-server directly, stopped by its PID) and
    the peers (no traffic leaves the loopback)."""
    write_tiny_model(tmp_path / "tiny-a.gguf", name="tiny-a", seed=1)
    write_tiny_model(tmp_path / "tiny-b.gguf", name="tiny-b", seed=2)
    data = yaml.safe_load(EXAMPLE.read_text())
    data["macros"]["latest-llama"] = f"{shlex.quote(str(llama_server))} --port ${{PORT}}"
    gpt = data["models"]["gpt-oss-120b"]
    gpt["cmd"] = gpt["cmd"].replace("path/to/gpt-oss-120B.gguf", str(tmp_path / "tiny-a.gguf"))
    docker = data["models"]["docker-llama"]
    docker["cmd"] = f"{shlex.quote(str(llama_server))} --port ${{PORT}} -m {tmp_path / 'tiny-b.gguf'} -c 512"
    docker["cmdStop"] = "kill ${PID}"
    del data["peers"]
    src = tmp_path / "llama-swap.yaml"
    src.write_text(yaml.safe_dump(data, sort_keys=False))
    dest = tmp_path / "config.yaml"
    dest.write_text(yaml.safe_dump({"router": {"port": free_port(), "slot_save_path": str(tmp_path / "slots")},
                                    "sources": {"hf_cache": False}}))

    done = subprocess.run([sys.executable, "-m", "router", "--import-llama-swap", str(src), "--config", str(dest)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k not in EXAMPLE_KEYS})
    assert done.returncode == 0, done.stderr
    assert "warning: router.api_keys[2]: ${API_KEY_1} is not set now" in done.stderr

    auth = {"Authorization": "Bearer sk-hunter2"}  # the example's first key
    with RouterProcess(dest, tmp_path / "router.log", env=EXAMPLE_KEYS) as router:
        for name in ("gpt-oss-120b:high", "docker-llama"):
            reply = chat(router.url, name, headers=auth)
            assert reply.status_code == 200, reply.text
            assert reply.json()["model"] == name
        # the example's filters reached the child: temperature and top_p set, top_k stripped
        got = requests.post(router.url + "/completion", headers=auth, timeout=60, json={
            "model": "gpt-4o-mini", "prompt": "hi", "n_predict": 1, "temperature": 1.5, "top_k": 3}).json()
        assert {k: round(got["generation_settings"][k], 3) for k in ("temperature", "top_p", "top_k")} == {
            "temperature": 0.7, "top_p": 0.9, "top_k": 40}
        # exclusive: false: docker-llama's load did not stop gpt-oss-120b
        assert model_state(router.url, "gpt-oss-120b", auth) == model_state(router.url, "docker-llama", auth) \
            == "loaded"
