"""The router's idle memory: start-up imports only what serving needs.

Hugging Face's client (with httpx2 and anyio), numpy (gguf's package
`__init__`), the multipart parser and the file watcher cost megabytes of
resident memory in every router, and only downloads, HF-cache scans of a
cache that exists, audio uploads and the catalogue watch use them; each is
imported where it is first used. A fresh interpreter is the only place where
"not imported yet" can be seen (this test process imports them all), so the
start-up path runs in a subprocess: parse the command line, read the
catalogue and look at its sources (a models folder with a real GGUF file, an
HF cache that does not exist), build the application.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.tinygguf import write_tiny_model

ROOT = Path(__file__).resolve().parents[2]
LAZY = ("huggingface_hub", "httpx2", "anyio", "numpy", "gguf", "python_multipart", "watchfiles")
NEVER = ("ray", "hypothesis", "jsonschema", "yaml", "pytest")  # not a dependency of serving on one host

START_UP = """
import json, sys
from router import cli
from router.app import create_app
from router.server import serve  # noqa: F401  (what cli.main serves with)

config = cli.load_catalogue(cli.parse_args(["--config", sys.argv[1], "--models-dir", sys.argv[2]]))
assert list(config.models) == ["tiny"], list(config.models)
create_app(config)
print(json.dumps(sorted(sys.modules)))
"""


def start_up_modules(tmp_path: Path) -> set[str]:
    models = tmp_path / "models"
    models.mkdir()
    write_tiny_model(models / "tiny.gguf", name="tiny")
    config = tmp_path / "router.yaml"
    config.write_text("router:\n  port: 8082\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "LLAMA_CACHE"))}
    env.update(HF_HUB_CACHE=str(tmp_path / "no-hf-cache"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-c", START_UP, str(config), str(models)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_start_up_imports_neither_heavy_nor_test_only_packages(tmp_path):
    loaded = start_up_modules(tmp_path)
    assert "router.app" in loaded and "router.discovery.gguf_meta" in loaded  # the path really ran
    top = {name.split(".")[0] for name in loaded}
    assert top.isdisjoint(LAZY), f"imported at start-up: {sorted(top & set(LAZY))}"
    assert top.isdisjoint(NEVER), f"imported at start-up: {sorted(top & set(NEVER))}"
