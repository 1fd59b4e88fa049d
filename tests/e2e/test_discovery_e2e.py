"""Model discovery through the real command line and a real router:
--import-dir, --models-dir, -hf from a local stand-in Hub, and rescans."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import openai
import pytest
import yaml

from router.catalogue.parse import load_config, parse_config
from router.catalogue.sources import discover
from tests.support.fakehub import FakeHub
from tests.support.routerproc import ROOT, RouterProcess, child_command, free_port
from tests.support.tinygguf import write_not_gguf, write_tiny_model, write_tiny_projector

pytestmark = pytest.mark.real


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def base_config(path: Path, llama_server: Path, **extra) -> Path:
    """A catalogue with a comment and one hand-written entry, as a user would have."""
    data = {"router": {"port": free_port(), "port_range": [52000, 52999]},
            "spawn": {"command": child_command(llama_server)}, **extra}
    path.write_text("# my router\n" + yaml.safe_dump(data, sort_keys=False))
    return path


def models(url: str) -> dict[str, dict]:
    with urllib.request.urlopen(url + "/v1/models", timeout=30) as r:
        return {m["id"]: m for m in json.loads(r.read())["data"]}


def chat(url: str, model: str) -> str:
    c = openai.OpenAI(base_url=url + "/v1", api_key="x", timeout=60, max_retries=0)
    reply = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    return reply.choices[0].message.content


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A user's model folder: nested folders, a projector, a name with spaces, a broken file."""
    lib = tmp_path / "my models"
    write_tiny_model(lib / "Qwen Tiny" / "Qwen-Tiny-Q4_K_M.gguf", name="qwen tiny", seed=1)
    write_tiny_model(lib / "vision" / "Vis-Tiny-F16.gguf", name="vis", seed=2)
    write_tiny_projector(lib / "vision" / "mmproj-F16.gguf")
    write_tiny_model(lib / "flat-tiny.gguf", name="flat", seed=3)
    write_not_gguf(lib / "notes.gguf")
    return lib


def test_import_dir_writes_the_catalogue_and_the_run_command_serves_it(tmp_path, llama_server, library):
    cfg = base_config(tmp_path / "config.yaml", llama_server)
    r = cli("-c", str(cfg), "--import-dir", str(library), "--no-serve")
    assert r.returncode == 0, r.stderr
    assert "3 model(s) added" in r.stdout and "notes.gguf" in r.stderr  # the broken file is reported
    text = cfg.read_text()
    assert text.startswith("# my router")  # the user's comment survives
    catalogue = load_config(cfg)
    assert set(catalogue.models) == {"qwen-tiny-q4_k_m", "vis-tiny-f16", "flat-tiny"}
    assert all(m.state == "manual" for m in catalogue.models.values())
    assert catalogue.models["vis-tiny-f16"].mmproj.endswith("mmproj-F16.gguf")
    again = cli("-c", str(cfg), "--import-dir", str(library), "--no-serve")
    assert "0 model(s) added" in again.stdout and cfg.read_text() == text  # idempotent
    with RouterProcess(cfg, tmp_path / "router.log") as router:
        assert chat(router.url, "qwen-tiny-q4_k_m")
        assert chat(router.url, "flat-tiny")


def test_models_dir_serves_a_folder_with_what_the_gguf_says(tmp_path, llama_server):
    d = tmp_path / "models"
    write_tiny_model(d / "alpha.gguf", name="alpha", seed=1, n_ctx_train=1024)
    write_tiny_model(d / "seeing" / "seeing-F16.gguf", name="seeing", seed=2)
    write_tiny_projector(d / "seeing" / "mmproj-seeing-F16.gguf")
    cfg = base_config(tmp_path / "config.yaml", llama_server)
    with RouterProcess(cfg, tmp_path / "router.log", "--models-dir", str(d)) as router:
        listed = models(router.url)
        assert set(listed) == {"alpha", "seeing"}
        meta = listed["alpha"]["meta"]
        assert meta["n_ctx_train"] == 1024 and meta["architecture"] == "llama" and meta["n_params"] > 0
        assert listed["alpha"]["state"] == "auto"
        assert "image" in listed["seeing"]["architecture"]["input_modalities"]
        assert "image" not in listed["alpha"]["architecture"]["input_modalities"]
        assert chat(router.url, "alpha")


def test_rescan_adds_new_files_drops_vanished_auto_entries_and_keeps_manual_ones(tmp_path):
    d = tmp_path / "models"
    write_tiny_model(d / "one.gguf", name="one", seed=1)
    write_tiny_model(d / "two.gguf", name="two", seed=2)
    mine = write_tiny_model(tmp_path / "mine.gguf", name="mine", seed=3)
    config = parse_config({"sources": {"dirs": [str(d)], "hf_cache": False},
                           "models": {"mine": {"path": str(mine), "args": ["--temp", "0"]},
                                      "two": {"path": str(d / "two.gguf"), "state": "auto",
                                              "aliases": ["deux"]}}})
    config, plan = discover(config)
    assert set(config.models) == {"mine", "one", "two"} and list(plan.added) == ["one"]
    (d / "one.gguf").unlink()
    write_tiny_model(d / "three.gguf", name="three", seed=4)
    mine.unlink()  # manual entries are never removed, even when the file is gone
    config, plan = discover(config)
    assert set(config.models) == {"mine", "two", "three"}
    assert plan.removed == ["one"] and list(plan.added) == ["three"]
    assert config.models["two"].aliases == ("deux",)  # custom settings of a kept entry survive
    assert config.models["mine"].args == ("--temp", "0")


def test_downloaded_model_is_served_by_a_real_llama_server(tmp_path, llama_server):
    src = write_tiny_model(tmp_path / "src" / "Tiny-Q4_K_M.gguf", name="hub tiny", seed=5)
    hf_home = tmp_path / "hf-home"
    with FakeHub() as hub:
        hub.add_file("acme/Tiny-GGUF", "Tiny-Q4_K_M.gguf", src.read_bytes())
        hub.add_file("acme/Tiny-GGUF", "README.md", b"# tiny\n")
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "0",
               "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        cfg = base_config(tmp_path / "config.yaml", llama_server)
        r = cli("-c", str(cfg), "-hf", "acme/Tiny-GGUF:q4_k_m", "--no-serve", env=env)
        assert r.returncode == 0, r.stderr
        bad = cli("-c", str(cfg), "-hf", "acme/Tiny-GGUF:Q8_0", "--no-serve", env=env)
        assert bad.returncode == 1 and "Q4_K_M" in bad.stderr  # the error lists what exists
    (name,) = load_config(cfg).models
    assert str(hf_home) in load_config(cfg).models[name].path
    with RouterProcess(cfg, tmp_path / "router.log", env={"HF_HOME": str(hf_home)}) as router:
        assert chat(router.url, name)
