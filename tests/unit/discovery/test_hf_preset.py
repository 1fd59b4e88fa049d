"""llama.cpp's remote preset (`-hf user/repo` naming a repo that holds a preset.ini),
resolved for real by huggingface_hub against `tests/support/fakehub.py`."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub.utils import close_session

from router.catalogue.config import ConfigError
from router.catalogue.router_mode import remote_preset
from router.discovery.hf_preset import fetch_preset
from router.discovery.huggingface import HFError
from tests.support.fakehub import FakeHub, dead_endpoint, talk_to_fake_hubs

PRESET = b"[tiny-preset]\nhf-repo = acme/Tiny-GGUF:Q8_0\n"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A Hub with a preset repo and a model repo; the cache is $LLAMA_CACHE, as llama.cpp's."""
    talk_to_fake_hubs(monkeypatch, unset=("LLAMA_ARG_OFFLINE",))
    monkeypatch.setenv("LLAMA_CACHE", str(tmp_path / "llama-cache"))
    with FakeHub() as h:
        h.add_file("acme/presets", "preset.ini", PRESET)
        h.add_file("acme/presets", "README.md", b"# presets\n")
        h.add_file("acme/Tiny-GGUF", "Tiny-Q8_0.gguf", b"GGUF not really")
        h.add_file("acme/Nested", "sub/preset.ini", PRESET)  # not at the root: not a preset repo
        monkeypatch.setenv("HF_ENDPOINT", h.endpoint)
        yield h
    close_session()



def test_a_preset_repo_gives_its_preset_ini_fetched_into_llama_cache(hub, tmp_path):
    path = fetch_preset("acme/presets:Q4_K_M")  # a quant is ignored, as llama.cpp ignores it
    assert path is not None and path.read_bytes() == PRESET
    assert path.is_relative_to(tmp_path / "llama-cache" / "models--acme--presets" / "snapshots")
    assert [r.path for r in hub.requests if "/resolve/" in r.path and r.method == "GET"] \
        == ["/acme/presets/resolve/main/preset.ini"]  # the preset only, not the README


@pytest.mark.parametrize("repo", ["acme/Tiny-GGUF", "acme/Nested"])
def test_a_repo_without_a_preset_ini_at_its_root_is_a_model_repo(hub, repo):
    assert fetch_preset(repo) is None
    assert not hub.file_gets("")  # nothing fetched


def test_offline_the_cached_preset_is_used_without_asking_the_hub(hub):
    cached = fetch_preset("acme/presets")
    hub.requests.clear()
    assert fetch_preset("acme/presets", offline=True) == cached
    assert hub.requests == []


def test_offline_a_repo_not_in_the_cache_is_a_clear_error(hub):
    with pytest.raises(HFError, match=r"^acme/presets: offline .* not in the cache at .*llama-cache"):
        fetch_preset("acme/presets", offline=True)
    assert hub.requests == []


def test_offline_a_cached_model_repo_keeps_its_meaning(hub, tmp_path):
    snapshot = tmp_path / "llama-cache" / "models--acme--Tiny-GGUF" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "Tiny-Q8_0.gguf").write_bytes(b"GGUF")
    assert fetch_preset("acme/Tiny-GGUF", offline=True) is None


def test_an_unreachable_hub_falls_back_to_the_cache(hub, monkeypatch):
    cached = fetch_preset("acme/presets")
    monkeypatch.setenv("HF_ENDPOINT", dead_endpoint())
    assert fetch_preset("acme/presets") == cached
    with pytest.raises(HFError, match=r"^acme/other: cannot reach the Hub at .* not in the cache"):
        fetch_preset("acme/other")


def test_a_repo_the_hub_does_not_know_is_a_clear_error(hub):
    with pytest.raises(HFError, match=r"^acme/missing: repository not found on http://127\.0\.0\.1"):
        fetch_preset("acme/missing")


# ------------------------------------------------------------- the command line


def test_remote_preset_becomes_the_models_preset_and_model_repos_stay_models(hub):
    models, preset = remote_preset(["acme/Tiny-GGUF:Q8_0", "acme/presets"], None, ())
    assert models == ["acme/Tiny-GGUF:Q8_0"]
    assert preset is not None and Path(preset).read_bytes() == PRESET


def test_offline_on_the_command_line_or_in_the_environment_uses_the_cache_only(hub, monkeypatch):
    with pytest.raises(ConfigError, match=r"<command line>: -hf: acme/presets: offline"):
        remote_preset(["acme/presets"], None, ("-c", "512", "--offline"))
    monkeypatch.setenv("LLAMA_ARG_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"acme/presets: offline"):
        remote_preset(["acme/presets"], None, ())
    assert hub.requests == []


def test_one_models_preset_only(hub, tmp_path):
    with pytest.raises(ConfigError, match=r"acme/presets holds a preset.ini, and --models-preset m.ini is "):
        remote_preset(["acme/presets"], "m.ini", ())
    hub.add_file("acme/more-presets", "preset.ini", PRESET)
    with pytest.raises(ConfigError, match=r"and -hf acme/presets is already the models preset"):
        remote_preset(["acme/presets", "acme/more-presets"], None, ())
