"""Hugging Face downloads, run for real against a local Hub look-alike.

huggingface_hub's own code does every request (model_info, HEAD, GET,
Range resume) against `tests/support/fakehub.py`; only the endpoint and the
cache location differ from production.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub.utils import close_session

from router.discovery.huggingface import HFError, download_gguf, parse_hf_ref
from router.discovery.scan import scan_hf_cache
from tests.support.fakehub import FakeHub, dead_endpoint, talk_to_fake_hubs
from tests.support.ggufwriter import by_name, write_gguf, write_projector


def _bytes(tmp: Path, name: str, *, blocks: int = 1, shards: int = 1, projector: str | None = None,
           projection_dim: int = 64) -> list[bytes]:
    tmp.mkdir(parents=True, exist_ok=True)
    if projector:
        return [write_projector(tmp / name, projector, projection_dim=projection_dim).read_bytes()]
    return [p.read_bytes() for p in write_gguf(tmp / name, name=name, tensors=(("F32", blocks),), shards=shards)]


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A populated fake Hub; HF_ENDPOINT and HF_HOME point at it and a temp dir."""
    talk_to_fake_hubs(monkeypatch, unset=("LLAMA_CACHE",))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    src = tmp_path / "src"
    with FakeHub() as h:
        for q in ("Q4_K_M", "Q8_0", "F16"):
            h.add_file("acme/Tiny-GGUF", f"Tiny-{q}.gguf", _bytes(src, f"Tiny-{q}.gguf")[0])
        for ft in ("F32", "F16"):
            h.add_file("acme/Tiny-GGUF", f"mmproj-Tiny-{ft}.gguf", _bytes(src, f"p-{ft}.gguf", projector=ft)[0])
        h.add_file("acme/Tiny-GGUF", "README.md", b"# Tiny\n")
        h.add_file("acme/NoDefault-GGUF", "Big-Q8_0.gguf", _bytes(src, "big.gguf", blocks=64)[0])
        h.add_file("acme/NoDefault-GGUF", "Small-IQ2_XS.gguf", _bytes(src, "small.gguf", blocks=2)[0])
        for i, data in enumerate(_bytes(src, "Split-Q2_K.gguf", shards=3), start=1):
            h.add_file("acme/Split-GGUF", f"Q2_K/Split-Q2_K-{i:05d}-of-00003.gguf", data)
        h.add_file("acme/Split-GGUF", "mmproj-F16.gguf", _bytes(src, "sp.gguf", projector="F16")[0])
        h.add_file("acme/Split-GGUF", "other/mmproj-BF16.gguf", _bytes(src, "so.gguf", projector="BF16")[0])
        h.add_file("acme/Mismatch-GGUF", "M-Q4_K_M.gguf", _bytes(src, "mm.gguf")[0])
        h.add_file("acme/Mismatch-GGUF", "mmproj-F16.gguf", _bytes(src, "mp.gguf", projector="F16",
                                                                  projection_dim=4096)[0])
        h.add_file("acme/Text-Only", "README.md", b"no weights here\n")
        h.add_file("acme/Proj-Only-GGUF", "mmproj-F16.gguf", _bytes(src, "po.gguf", projector="F16")[0])
        monkeypatch.setenv("HF_ENDPOINT", h.endpoint)
        yield h
    close_session()



# -------------------------------------------------------------- references


@pytest.mark.parametrize("ref, expected", [
    ("acme/Tiny-GGUF", ("acme/Tiny-GGUF", None)),
    ("acme/Tiny-GGUF:q4_k_m", ("acme/Tiny-GGUF", "q4_k_m")),
    ("  unsloth/Kimi-K2-GGUF:UD-IQ1_S ", ("unsloth/Kimi-K2-GGUF", "UD-IQ1_S")),
    ("hf.co/acme/x.y_z:Q8_0", ("acme/x.y_z", "Q8_0")),
    ("https://huggingface.co/acme/m", ("acme/m", None)),
])
def test_parse_hf_ref_accepts_repo_and_optional_quant(ref, expected):
    assert parse_hf_ref(ref) == expected


@pytest.mark.parametrize("ref, reason", [
    ("", "empty"), ("justrepo", "exactly one '/'"), ("a/b/c", "exactly one '/'"), ("acme/:Q4", "may only hold"),
    ("acme/repo:", "the quant after ':'"), ("acme/re po", "may only hold"), ("acme/a--b", "'--'"),
    ("acme/repo:Q4 K", "the quant after ':'"),
])
def test_parse_hf_ref_rejects_bad_input_with_the_reason(ref, reason):
    with pytest.raises(ValueError) as ei:
        parse_hf_ref(ref)
    assert reason in str(ei.value) and "'user/repo:QUANT'" in str(ei.value)


# -------------------------------------------------------------- downloads


def test_download_by_quant_matches_case_insensitively_and_takes_the_best_projector(hub, tmp_path):
    m = download_gguf("acme/Tiny-GGUF:q8_0", progress=False)
    assert m.name == "acme/Tiny-GGUF:Q8_0" and m.source == "hf" and m.repo_id == "acme/Tiny-GGUF"
    assert m.aliases == ("acme-tiny-q8_0",)  # the name llama-router used before: old catalogues keep working
    assert m.path.name == "Tiny-Q8_0.gguf" and m.mmproj is not None and m.mmproj.name == "mmproj-Tiny-F16.gguf"
    cache = (tmp_path / "hf-home" / "hub").resolve()  # HF_HOME read at call time, not import time
    assert m.path.is_relative_to(cache / "models--acme--Tiny-GGUF" / "snapshots" / hub.commit("acme/Tiny-GGUF"))
    assert m.path.is_symlink()  # snapshot link, kept so split shards stay findable by name
    assert m.path.read_bytes() == hub.repos["acme/Tiny-GGUF"].files["Tiny-Q8_0.gguf"]
    assert m.meta.name == "Tiny-Q8_0.gguf" and m.meta.architecture == "llama"
    assert (cache / "models--acme--Tiny-GGUF" / "refs" / "main").read_text() == hub.commit("acme/Tiny-GGUF")


def test_default_quant_is_q4_k_m(hub):
    assert download_gguf("acme/Tiny-GGUF", progress=False).path.name == "Tiny-Q4_K_M.gguf"


def test_default_without_q4_k_m_is_the_smallest_model(hub):
    m = download_gguf("acme/NoDefault-GGUF", progress=False)
    assert m.path.name == "Small-IQ2_XS.gguf" and m.mmproj is None


def test_split_model_downloads_every_shard_pinned_to_one_commit(hub):
    m = download_gguf("acme/Split-GGUF:q2_k", progress=False)
    assert [p.name for p in m.shards] == [f"Split-Q2_K-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert m.path == m.shards[0] and all(p.parent == m.path.parent for p in m.shards)
    assert m.name == "acme/Split-GGUF:Q2_K" and m.meta.split_count == 3
    commit = hub.commit("acme/Split-GGUF")
    gets = [r.path for r in hub.requests if r.method == "GET" and "/resolve/" in r.path]
    assert len(gets) == 4 and "/resolve/main/" in gets[0] and all(f"/resolve/{commit}/" in g for g in gets[1:])
    # the repo-root projector, not the one in an unrelated sub-folder
    assert m.mmproj is not None and m.mmproj.parent == m.path.parent.parent and m.mmproj.name == "mmproj-F16.gguf"
    assert by_name(scan_hf_cache())["acme/Split-GGUF:Q2_K"].mmproj == m.mmproj


def test_projector_that_does_not_fit_the_model_is_not_attached(hub):
    m = download_gguf("acme/Mismatch-GGUF", progress=False)
    assert m.mmproj is None
    assert by_name(scan_hf_cache())["acme/Mismatch-GGUF:Q4_K_M"].mmproj is None


def test_unknown_quant_error_lists_the_available_ones(hub):
    with pytest.raises(HFError) as ei:
        download_gguf("acme/Tiny-GGUF:Q5_K_M", progress=False)
    assert str(ei.value) == "acme/Tiny-GGUF has no GGUF file for quant 'Q5_K_M'; available: F16, Q4_K_M, Q8_0"


def test_missing_repo_is_a_clear_error(hub):
    with pytest.raises(HFError, match=r"acme/Nope: repository not found on http://127\.0\.0\.1"):
        download_gguf("acme/Nope", progress=False)


@pytest.mark.parametrize("repo, fragment", [
    ("acme/Text-Only", "holds no GGUF model file"), ("acme/Proj-Only-GGUF", "(only projectors)"),
])
def test_repo_without_a_model_file_is_a_clear_error(hub, repo, fragment):
    with pytest.raises(HFError, match=repo) as ei:
        download_gguf(repo, progress=False)
    assert fragment in str(ei.value)


def test_bad_reference_raises_hferror(hub):
    with pytest.raises(HFError, match="invalid Hugging Face reference"):
        download_gguf("not-a-repo", progress=False)


def test_second_download_is_served_from_the_cache(hub):
    first = download_gguf("acme/Tiny-GGUF:Q8_0", progress=False)
    second = download_gguf("acme/Tiny-GGUF:Q8_0", progress=False)
    assert second == first
    assert len(hub.file_gets("Tiny-Q8_0.gguf")) == 1
    assert len(hub.file_gets("mmproj-Tiny-F16.gguf")) == 1


def test_downloaded_model_shows_up_in_scan_hf_cache(hub):
    m = download_gguf("acme/Tiny-GGUF:Q8_0", progress=False)
    found = by_name(scan_hf_cache())
    assert set(found) == {"acme/Tiny-GGUF:Q8_0"}
    assert (found["acme/Tiny-GGUF:Q8_0"].path, found["acme/Tiny-GGUF:Q8_0"].mmproj) == (m.path, m.mmproj)


def test_explicit_cache_dir_and_endpoint_win_over_the_environment(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", dead_endpoint())
    m = download_gguf("acme/Tiny-GGUF", cache_dir=tmp_path / "own-cache", endpoint=hub.endpoint, progress=False)
    assert m.path.is_relative_to((tmp_path / "own-cache").resolve())
    assert [x.name for x in scan_hf_cache(tmp_path / "own-cache").models] == ["acme/Tiny-GGUF:Q4_K_M"]


def test_interrupted_download_resumes_with_a_range_request(hub, tmp_path):
    # huggingface_hub writes in 10 MiB chunks and resumes from the last whole chunk,
    # so the file must be bigger than that for a resume to be visible.
    (data,) = _bytes(tmp_path / "src", "Large-Q8_0.gguf", blocks=(12 << 20) // 128)
    hub.add_file("acme/Large-GGUF", "Large-Q8_0.gguf", data)
    hub.cut_connection_once("acme/Large-GGUF", "Large-Q8_0.gguf", after_bytes=11 << 20)
    m = download_gguf("acme/Large-GGUF", progress=False)
    assert hashlib.sha256(m.path.read_bytes()).digest() == hashlib.sha256(data).digest()
    gets = hub.file_gets("Large-Q8_0.gguf")
    assert len(gets) == 2 and gets[1].headers.get("range") == f"bytes={10 << 20}-"


def test_unreachable_hub_falls_back_to_a_cached_model(hub, monkeypatch):
    cached = download_gguf("acme/Tiny-GGUF:Q8_0", progress=False)
    monkeypatch.setenv("HF_ENDPOINT", dead_endpoint())
    assert download_gguf("acme/Tiny-GGUF:q8_0", progress=False) == cached
    with pytest.raises(HFError, match=r"cannot reach the Hub .* no matching model is in the cache"):
        download_gguf("acme/Tiny-GGUF:F16", progress=False)


def test_offline_mode_uses_the_cache_too(hub, monkeypatch):
    cached = download_gguf("acme/Tiny-GGUF", progress=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert download_gguf("acme/Tiny-GGUF", progress=False) == cached
    assert len(hub.file_gets("Tiny-Q4_K_M.gguf")) == 1


def test_no_progress_bars_when_stderr_is_not_a_terminal(hub, capfd):
    download_gguf("acme/Tiny-GGUF", progress=True)
    err = capfd.readouterr().err
    assert "%|" not in err and "Tiny-Q4_K_M" not in err


def test_incomplete_split_set_on_the_hub_is_an_error(hub):
    del hub.repos["acme/Split-GGUF"].files["Q2_K/Split-Q2_K-00002-of-00003.gguf"]
    with pytest.raises(HFError, match=r"incomplete on the Hub \(missing shard\(s\) 00002\)"):
        download_gguf("acme/Split-GGUF", progress=False)
