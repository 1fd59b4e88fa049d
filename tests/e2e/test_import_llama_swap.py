"""A llama-swap config.yaml, imported, serves its models: the converted catalogue
starts real llama-server children for two tiny models, behind the API key
llama-swap read from the environment, both loaded at once as their
`swap: false` group asks."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
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
    assert [line.split(": ")[0] for line in report] == ["models.tiny-b.cmdStop"], done.stdout
    assert f"{dest}: written from {src}" in done.stdout
    assert load_config(dest).router.models_max == 2
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
