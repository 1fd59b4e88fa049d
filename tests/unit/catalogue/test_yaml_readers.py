"""Every catalogue llama-router writes reads the same in every YAML library.

The router reads YAML 1.2, where `no`, `on`, `1:20` are strings; PyYAML,
Ansible and Go's yaml.v2 read YAML 1.1, where they are a boolean and a
number. A user's script over the catalogue must see the names the router
sees, so every writer quotes what a 1.1 reader would take for something else.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from router.catalogue.importer import apply_rescan, rescan, set_router_key, write_catalogue
from router.catalogue.llama_swap import import_llama_swap
from router.catalogue.parse import load_config
from router.catalogue.preset import import_preset
from router.catalogue.server_args import ServerArgs
from router.catalogue.yamlio import read_yaml
from router.cli import main as cli
from router.discovery.scan import scan_import_dir
from tests.support.tinygguf import write_tiny_model

HELP = Path(__file__).parent / "fixtures" / "llama-server-help.txt"

# File stems a YAML 1.1 reader takes for something else when written plain, as --import-dir
# names them: booleans (y/n are Go yaml.v2's too), nulls, ints (octal, hex, sexagesimal),
# floats, a date. And two plain names, which stay plain.
TRICKY = ("no", "on", "off", "yes", "y", "n", "true", "null", "017", "0x1f", "1_000", "1e3", "2024-01-01")
PLAIN = ("gemma", "qwen-7b")


def same_in_both(text: str) -> dict[str, Any]:
    """What PyYAML (YAML 1.1) reads, after checking that it is what the router's reader
    (YAML 1.2) reads."""
    pyyaml = yaml.safe_load(text)
    assert pyyaml == read_yaml(text)
    return pyyaml


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    lib = tmp_path / "models"
    for i, stem in enumerate(TRICKY + PLAIN):
        write_tiny_model(lib / f"{stem}.gguf", name=stem, seed=i)
    return lib


def test_import_dir_names_read_the_same_in_pyyaml_as_in_the_router(tmp_path, folder):
    cfg = tmp_path / "config.yaml"
    assert cli(["--config", str(cfg), "--import-dir", str(folder), "--no-serve"]) == 0
    text = cfg.read_text()
    router_names = set(load_config(cfg).models)
    assert router_names == set(TRICKY + PLAIN)
    assert set(yaml.safe_load(text)["models"]) == router_names
    same_in_both(text)
    assert "\n  gemma:\n" in text and "\n  'no':\n" in text  # plain where plain is safe


def test_a_round_trip_keeps_comments_and_quotes_what_a_hand_wrote_plain(tmp_path):
    """A file a user (or an older llama-router) wrote with `no:` plain: the next import
    keeps every comment and leaves it readable by PyYAML too."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(textwrap.dedent("""\
        # my catalogue
        router:
          port: 9000   # not the default
        models:
          # kept by hand
          no:
            path: /srv/no.gguf
            args: [--flash-attn, on]   # llama-server's on, not True
        """))
    assert yaml.safe_load(cfg.read_text())["models"] == {False: {"path": "/srv/no.gguf",
                                                                   "args": ["--flash-attn", True]}}
    write_tiny_model(tmp_path / "more" / "off.gguf", name="off")
    assert cli(["--config", str(cfg), "--import-dir", str(tmp_path / "more"), "--no-serve"]) == 0
    text = cfg.read_text()
    for comment in ("# my catalogue", "# not the default", "# kept by hand", "# llama-server's on, not True"):
        assert comment in text
    models = same_in_both(text)["models"]
    assert models["no"] == {"path": "/srv/no.gguf", "args": ["--flash-attn", "on"]}
    assert set(models) == {"no", "off"}


def test_a_rescan_writes_new_auto_entries_the_same_way(tmp_path, folder):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("models: {}\n")
    apply_rescan(cfg, rescan({}, scan_import_dir(folder).models))
    assert set(same_in_both(cfg.read_text())["models"]) == set(TRICKY + PLAIN)


def test_router_keys_and_json_bodies_written_by_the_admin_api(tmp_path):
    cfg = tmp_path / "config.yaml"
    write_catalogue(cfg, {"router": {"startup_model": "on"},
                          "models": {"off": {"path": "/m/off.gguf", "aliases": ["yes", "1:20"]}}})
    set_router_key(cfg, "preload", ["no", "y"])
    data = same_in_both(cfg.read_text())
    assert data["router"] == {"startup_model": "on", "preload": ["no", "y"]}
    assert data["models"] == {"off": {"path": "/m/off.gguf", "aliases": ["yes", "1:20"]}}


def test_a_converted_llama_swap_config(tmp_path):
    src = tmp_path / "llama-swap.yaml"
    src.write_text(textwrap.dedent("""\
        models:
          "no":
            cmd: llama-server --port ${PORT} -m /m/no.gguf --flash-attn on
            aliases: ["off"]
          "1e3":
            cmd: llama-server --port ${PORT} -m /m/1e3.gguf
        """))
    cfg = tmp_path / "config.yaml"
    import_llama_swap(src, cfg)
    models = same_in_both(cfg.read_text())["models"]
    assert set(models) == {"no", "1e3"}
    assert models["no"]["aliases"] == ["off"] and models["no"]["args"] == ["--flash-attn", "on"]


def test_an_imported_llama_cpp_preset(tmp_path):
    src = tmp_path / "presets.ini"
    src.write_text("[no]\nmodel = /m/no.gguf\nflash-attn = on\n\n[2024-01-01]\nmodel = /m/d.gguf\n")
    cfg = tmp_path / "config.yaml"
    import_preset(src, cfg, ServerArgs.from_help(HELP.read_text()))
    models = same_in_both(cfg.read_text())["models"]
    assert set(models) == {"no", "2024-01-01"}
    assert "on" in models["no"]["args"]
