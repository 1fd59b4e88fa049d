"""The admin API's edits of the catalogue file: one router key, one model entry,
or the whole file; comments and the rest kept, atomic."""

from __future__ import annotations

import pytest
import yaml

from router.catalogue.importer import CatalogueWriteError, remove_model_entry, set_router_key, write_catalogue

TEXT = """\
# my catalogue
router:
  port: 8082  # the port
models:
  a:   # model a
    path: /x/a.gguf
  b:
    path: /x/b.gguf  # bee
"""


def test_a_router_key_is_set_once_unless_replaced_and_removed_with_none(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(TEXT)
    assert set_router_key(f, "startup_model", "acme/x:Q4_K_M", replace=False) is True
    assert set_router_key(f, "startup_model", "other", replace=False) is False
    text = f.read_text()
    assert "# my catalogue" in text and "# the port" in text and "# bee" in text
    assert yaml.safe_load(text)["router"] == {"port": 8082, "startup_model": "acme/x:Q4_K_M"}
    assert set_router_key(f, "startup_model", "other") is True
    assert set_router_key(f, "startup_model", None) is True
    assert set_router_key(f, "startup_model", None) is False
    assert yaml.safe_load(f.read_text())["router"] == {"port": 8082}


def test_a_router_section_is_added_first_when_missing(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("# hi\nmodels: {}\n")
    assert set_router_key(f, "startup_model", "m") is True
    assert list(yaml.safe_load(f.read_text())) == ["router", "models"]
    f.write_text("router: [1]\n")
    with pytest.raises(CatalogueWriteError):
        set_router_key(f, "startup_model", "m")


def test_a_model_entry_is_removed_and_the_rest_kept(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(TEXT)
    assert remove_model_entry(f, "a") is True
    assert remove_model_entry(f, "a") is False
    text = f.read_text()
    assert "# my catalogue" in text and "# bee" in text
    assert list(yaml.safe_load(text)["models"]) == ["b"]


def test_the_whole_file_is_written_as_given_or_as_block_yaml(tmp_path):
    f = tmp_path / "c.yaml"
    write_catalogue(f, TEXT)
    assert f.read_text() == TEXT
    data = {"router": {"port": 1}, "models": {"x": {"path": "/p.gguf", "args": ["--temp", "1"]}}}
    write_catalogue(f, data)
    assert yaml.safe_load(f.read_text()) == data and "{" not in f.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["c.yaml"], "no temporary file left"
