"""Writing discovered models into the YAML catalogue, and rescan planning."""

from __future__ import annotations

import copy
import os
import textwrap
from pathlib import Path

import pytest
import yaml

from router.catalogue.importer import (
    HEADER,
    CatalogueWriteError,
    apply_rescan,
    import_models,
    rescan,
)
from router.catalogue.parse import load_config
from router.discovery.scan import DiscoveredModel, scan_import_dir
from tests.support.ggufwriter import write_gguf, write_projector


@pytest.fixture
def library(tmp_path: Path) -> Path:
    lib = tmp_path / "lib"
    (lib / "vision").mkdir(parents=True)
    write_gguf(lib / "Alpha-Q4_K_M.gguf")
    write_gguf(lib / "vision" / "Beta-Q8_0.gguf")
    write_projector(lib / "vision" / "mmproj-F16.gguf", "F16")
    return lib


def _found(lib: Path) -> list[DiscoveredModel]:
    return scan_import_dir(lib).models


EXISTING = textwrap.dedent("""\
    # My catalogue -- hand written
    router:
      port: 9000   # not the default

    models:
      # the one I use most
      mine:
        path: /srv/models/mine.gguf
        aliases:
          - fav
        args: ["-c", "8192"]
    """)


def test_import_creates_the_file_with_a_header_and_parent_dirs(tmp_path, library):
    cfg = tmp_path / "conf" / "deep" / "config.yaml"
    report = import_models(cfg, _found(library))
    assert report.added == ["alpha-q4_k_m", "beta-q8_0"] and report.existing == []
    text = cfg.read_text()
    assert text.startswith(HEADER)
    models = yaml.safe_load(text)["models"]
    assert models["alpha-q4_k_m"] == {"path": str(library / "Alpha-Q4_K_M.gguf"), "state": "manual"}
    assert models["beta-q8_0"] == {"path": str(library / "vision" / "Beta-Q8_0.gguf"),
                                   "mmproj": str(library / "vision" / "mmproj-F16.gguf"), "state": "manual"}
    # and the router's own loader accepts what was written
    spec = load_config(cfg).models["beta-q8_0"]
    assert spec.mmproj == str(library / "vision" / "mmproj-F16.gguf") and spec.state == "manual"


def test_import_preserves_comments_order_and_existing_entries(tmp_path, library):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(EXISTING)
    import_models(cfg, _found(library))
    text = cfg.read_text()
    assert text.startswith(EXISTING), text  # byte-for-byte, new entries only appended
    data = yaml.safe_load(text)
    assert list(data["models"]) == ["mine", "alpha-q4_k_m", "beta-q8_0"]
    assert data["router"] == {"port": 9000}


def test_import_keeps_comments_when_models_is_not_the_last_section(tmp_path, library):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("models:\n  # keep me\n  mine: {path: /m.gguf}\n\n# trailing section\nrouter:\n  port: 1234\n")
    import_models(cfg, _found(library))
    text = cfg.read_text()
    assert "# keep me" in text and "# trailing section" in text and "mine: {path: /m.gguf}" in text
    assert list(yaml.safe_load(text)) == ["models", "router"]


def test_import_is_idempotent_and_does_not_rewrite_an_unchanged_file(tmp_path, library):
    cfg = tmp_path / "config.yaml"
    import_models(cfg, _found(library))
    before = cfg.read_bytes()
    mtime = cfg.stat().st_mtime_ns
    report = import_models(cfg, _found(library))
    assert report.added == [] and report.existing == ["alpha-q4_k_m", "beta-q8_0"]
    assert cfg.read_bytes() == before and cfg.stat().st_mtime_ns == mtime


def test_import_recognises_a_file_already_listed_under_another_name_or_via_a_symlink(tmp_path, library):
    link_dir = tmp_path / "via-link"
    link_dir.symlink_to(library, target_is_directory=True)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"models:\n  my-alpha:\n    path: {library / 'Alpha-Q4_K_M.gguf'}\n")
    report = import_models(cfg, _found(link_dir))
    assert report.existing == ["alpha-q4_k_m"] and report.added == ["beta-q8_0"]
    written = yaml.safe_load(cfg.read_text())["models"]["beta-q8_0"]["path"]
    assert written == str(link_dir / "vision" / "Beta-Q8_0.gguf")  # symlink path kept, not resolved


def test_import_renames_a_different_file_whose_name_or_alias_is_taken(tmp_path, library):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("models:\n  alpha-q4_k_m:\n    path: /elsewhere/a.gguf\n"
                   "  other:\n    path: /elsewhere/o.gguf\n    aliases: [beta-q8_0]\n")
    report = import_models(cfg, _found(library))
    assert report.added == ["alpha-q4_k_m-2", "beta-q8_0-2"]
    assert report.renamed == {"alpha-q4_k_m": "alpha-q4_k_m-2", "beta-q8_0": "beta-q8_0-2"}
    load_config(cfg)  # no name/alias clash for the loader
    assert import_models(cfg, _found(library)).added == []


def test_import_into_a_comment_only_file_keeps_the_comments(tmp_path, library):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("# just a comment\n# and another\n")
    import_models(cfg, _found(library))
    text = cfg.read_text()
    assert text.startswith("# just a comment\n# and another\n")
    assert set(yaml.safe_load(text)["models"]) == {"alpha-q4_k_m", "beta-q8_0"}


def test_import_into_an_inline_empty_models_map_writes_block_style(tmp_path, library):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("models: {}\n")
    import_models(cfg, _found(library))
    assert "\n  alpha-q4_k_m:\n    path: " in cfg.read_text()


@pytest.mark.parametrize("content, reason", [
    ("models: [unclosed\n", "invalid YAML"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("models: [a, b]\n", "`models:` must be a mapping"),
])
def test_import_refuses_to_touch_a_file_it_cannot_understand(tmp_path, library, content, reason):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(content)
    with pytest.raises(CatalogueWriteError) as ei:
        import_models(cfg, _found(library))
    assert reason in str(ei.value) and str(cfg) in str(ei.value)
    assert cfg.read_text() == content


def test_import_writes_atomically_and_keeps_the_file_mode(tmp_path, library):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("models:\n")
    os.chmod(cfg, 0o600)
    import_models(cfg, _found(library))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "lib"]  # no temp files left
    assert cfg.stat().st_mode & 0o777 == 0o600


def test_import_keeps_the_sequence_indentation_of_the_file(tmp_path, library):
    cfg = tmp_path / "config.yaml"
    original = "models:\n  mine:\n    path: /m.gguf\n    args:\n    - -c\n    - '4096'\n"
    cfg.write_text(original)
    import_models(cfg, _found(library))
    assert cfg.read_text().startswith(original)


# ------------------------------------------------------------------- rescan


def _catalogue(library: Path) -> dict[str, dict]:
    return {
        "hand": {"path": "/gone/hand.gguf", "state": "manual", "args": ["-c", "4096"]},
        "legacy": {"path": "/gone/legacy.gguf"},  # no state: treated as manual
        "old-auto": {"path": "/gone/old.gguf", "state": "auto"},
        "alpha": {"path": str(library / "Alpha-Q4_K_M.gguf"), "state": "auto",
                  "aliases": ["a"], "group": "small", "args": ["--temp", "0.2"]},
    }


def test_rescan_adds_new_files_as_auto_and_removes_vanished_auto_entries(library):
    cat = _catalogue(library)
    plan = rescan(cat, _found(library))
    assert plan.removed == ["old-auto"]
    assert plan.kept == ["hand", "legacy", "alpha"]
    assert plan.added == {"beta-q8_0": {"path": str(library / "vision" / "Beta-Q8_0.gguf"),
                                        "mmproj": str(library / "vision" / "mmproj-F16.gguf"), "state": "auto"}}


def test_rescan_never_touches_manual_entries_or_its_inputs(library):
    cat = _catalogue(library)
    snapshot = copy.deepcopy(cat)
    found = _found(library)
    plan = rescan(cat, [])
    assert "hand" in plan.kept and "legacy" in plan.kept
    assert set(plan.removed) == {"old-auto", "alpha"}
    rescan(cat, found)
    assert cat == snapshot


def test_rescan_new_names_avoid_kept_names_and_aliases_but_may_reuse_removed_ones(library):
    found = _found(library)
    cat = {"beta-q8_0": {"path": "/gone/b.gguf", "state": "auto"},
           "x": {"path": "/keep/x.gguf", "aliases": ["alpha-q4_k_m"]}}
    plan = rescan(cat, found)
    assert plan.removed == ["beta-q8_0"]
    assert set(plan.added) == {"alpha-q4_k_m-2", "beta-q8_0"}


def test_rescan_of_an_unchanged_library_changes_nothing(tmp_path, library):
    cfg = tmp_path / "config.yaml"
    import_models(cfg, _found(library), state="auto")
    models = yaml.safe_load(cfg.read_text())["models"]
    plan = rescan(models, _found(library))
    assert not plan.changed and plan.kept == ["alpha-q4_k_m", "beta-q8_0"]


def test_apply_rescan_rewrites_only_the_planned_entries(tmp_path, library):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        # catalogue
        models:
          hand:   # mine
            path: /gone/hand.gguf
          old-auto:
            path: /gone/old.gguf
            state: auto
          alpha:
            path: {library / 'Alpha-Q4_K_M.gguf'}
            state: auto
            aliases: [a]   # short name
            group: small
        """))
    plan = rescan(yaml.safe_load(cfg.read_text())["models"], _found(library))
    apply_rescan(cfg, plan)
    text = cfg.read_text()
    models = yaml.safe_load(text)["models"]
    assert list(models) == ["hand", "alpha", "beta-q8_0"]
    assert models["alpha"]["aliases"] == ["a"] and models["alpha"]["group"] == "small"
    assert "# mine" in text and "# short name" in text and text.startswith("# catalogue\n")
    assert models["beta-q8_0"]["state"] == "auto"
    load_config(cfg)


@pytest.mark.parametrize("stem", ["no", "on", "off", "yes", "null", "1e3", "0x10"])
def test_a_model_named_like_a_yaml_1_1_keyword_is_read_back_by_its_name(tmp_path, stem):
    """The writer (ruamel.yaml, YAML 1.2) leaves `no` unquoted; a YAML 1.1 reader
    took it for `False` and the router refused `models.False`."""
    lib = tmp_path / "lib"
    lib.mkdir()
    write_gguf(lib / f"{stem}.gguf")
    cfg = tmp_path / "config.yaml"
    assert import_models(cfg, _found(lib)).added == [stem]
    config = load_config(cfg)
    assert list(config.models) == [stem]
    assert config.models[stem].path == str(lib / f"{stem}.gguf")


def test_only_a_gguf_path_can_go_missing(tmp_path):
    """A custom backend's path may be a model id, not a file: it is never marked missing."""
    from router.catalogue.parse import parse_config
    from router.catalogue.sources import discover

    config = parse_config({"sources": {"hf_cache": False}, "models": {
        "gone": {"path": str(tmp_path / "gone.gguf")},
        "vllm": {"path": "meta-llama/Llama-3-70B", "spawn": {"command": ["vllm", "serve", "$path"]}}}})
    served, _ = discover(config)
    assert served.missing == {"gone"}
