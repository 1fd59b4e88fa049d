"""Model discovery over folder layouts people really have."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from router.discovery.naming import hf_model_id, hf_model_name, quant_label, slugify
from router.discovery.scan import ScanResult, scan_hf_cache, scan_import_dir, scan_models_dir
from tests.support.ggufwriter import by_name, write_gguf, write_projector
from tests.support.hfcache import cache_file as _cache_file


def _names(res: ScanResult, root: Path) -> dict[str, tuple[str, str | None]]:
    """name -> (model path, projector path), relative to root."""
    rel = lambda p: None if p is None else os.path.relpath(p, root)  # noqa: E731
    return {m.name: (rel(m.path), rel(m.mmproj)) for m in res.models}


def _skipped(res: ScanResult, root: Path) -> dict[str, str]:
    return {os.path.relpath(p, root): reason for p, reason in res.skipped}


def _model(path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_gguf(path, **kw)[0]


def _projector(path: Path, ftype: str, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_projector(path, ftype, **kw)


def _truncated(path: Path) -> Path:
    good = _model(path, tensors=(("F32", 64),))
    good.write_bytes(good.read_bytes()[:-200])
    return path


def _corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + b"\xff" * 64)
    return path


# ------------------------------------------------------------ naming rules


@pytest.mark.parametrize("stem, slug", [
    ("Qwen3-VL-32B-Instruct-Q4_K_M", "qwen3-vl-32b-instruct-q4_k_m"),
    ("My Fancy Model (v2)", "my-fancy-model-v2"),
    ("--weird__name!!", "weird__name"),
    ("日本語", "model"),
])
def test_slugify_makes_readable_catalogue_names(stem, slug):
    assert slugify(stem) == slug


@pytest.mark.parametrize("stem, label", [
    ("Qwen3-8B-Q4_K_M", "Q4_K_M"), ("gemma-3-270m-it-qat-q4_0", "q4_0"), ("Kimi-K2-UD-IQ1_S", "UD-IQ1_S"),
    ("model_Q8_0", "Q8_0"), ("mmproj-model-f16", "f16"), ("Qwen3-8B", None), ("Llama-3.1-8B-IQ4_XS", "IQ4_XS"),
])
def test_quant_label_is_found_in_file_stems(stem, label):
    assert quant_label(stem) == label


def test_hf_model_name_is_user_repo_quant_without_gguf_suffix():
    assert hf_model_name("unsloth/Qwen3-VL-32B-Instruct-GGUF", "Qwen3-VL-32B-Instruct-Q4_K_M.gguf") == \
        "unsloth-qwen3-vl-32b-instruct-q4_k_m"
    assert hf_model_name("acme/Big-GGUF", "Q8_0/Big-Q8_0-00001-of-00003.gguf") == "acme-big-q8_0"
    assert hf_model_name("acme/plain", "weights.gguf") == "acme-plain-weights"


def test_hf_model_id_is_llamacpp_user_repo_colon_tag():
    """The id llama.cpp's router gives a cache model (common/download.cpp: the last
    [-.]WORD of the file stem, upper-cased, shard suffix removed)."""
    assert hf_model_id("ggml-org/tinygemma3-GGUF", "tinygemma3-Q8_0.gguf") == "ggml-org/tinygemma3-GGUF:Q8_0"
    assert hf_model_id("acme/Big-GGUF", "Q8_0/Big-q8_0-00001-of-00003.gguf") == "acme/Big-GGUF:Q8_0"
    assert hf_model_id("acme/m", "gemma-3-270m-it.Q4_K_M.gguf") == "acme/m:Q4_K_M"
    assert hf_model_id("acme/plain", "weights.gguf") == "acme/plain"  # no tag: the repo alone


# ------------------------------------------------------ llama.cpp models dir


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    _model(root / "flat-Q4_K_M.gguf")
    _model(root / "My Model Q8.gguf")
    (root / "notes.gguf").write_text("not a model")
    _truncated(root / "broken.gguf")
    _projector(root / "mmproj-loose-F16.gguf", "F16")
    vision = root / "gemma-vision"
    _model(vision / "gemma-3-4b-Q4_K_M.gguf")
    for ft in ("F32", "BF16", "F16"):
        _projector(vision / f"mmproj-gemma-{ft}.gguf", ft)
    (vision / "README.md").write_text("hi")
    big = root / "kimi"
    big.mkdir()
    write_gguf(big / "Kimi-UD-IQ1_S.gguf", shards=3)
    _projector(root / "only-proj" / "mmproj-F16.gguf", "F16")
    _model(root / "nested" / "deeper" / "x.gguf")
    half = root / "half"
    half.mkdir()
    write_gguf(half / "h.gguf", shards=2)
    (half / "h-00001-of-00002.gguf").unlink()
    elsewhere = tmp_path / "elsewhere"
    _model(elsewhere / "realmodel" / "real-Q5_K_M.gguf")
    _model(elsewhere / "single.gguf")
    (root / "linked").symlink_to(elsewhere / "realmodel", target_is_directory=True)
    (root / "link-file.gguf").symlink_to(elsewhere / "single.gguf")
    (root / "dangling.gguf").symlink_to(tmp_path / "missing.gguf")
    _model(root / ".hidden.gguf")
    (root / "readme.txt").write_text("x")
    return root


def test_models_dir_catalogue_follows_llama_cpp_layout(models_dir):
    res = scan_models_dir(models_dir)
    assert _names(res, models_dir) == {
        "flat-Q4_K_M": ("flat-Q4_K_M.gguf", None),
        "My-Model-Q8": ("My Model Q8.gguf", None),
        "gemma-vision": ("gemma-vision/gemma-3-4b-Q4_K_M.gguf", "gemma-vision/mmproj-gemma-BF16.gguf"),
        "kimi": ("kimi/Kimi-UD-IQ1_S-00001-of-00003.gguf", None),
        "linked": ("linked/real-Q5_K_M.gguf", None),
        "link-file": ("link-file.gguf", None),
    }
    kimi = by_name(res)["kimi"]
    assert [p.name for p in kimi.shards] == [f"Kimi-UD-IQ1_S-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert kimi.size_bytes == sum(p.stat().st_size for p in kimi.shards)
    assert all(m.source == "dir" for m in res.models)


def test_models_dir_reports_what_it_could_not_use(models_dir):
    skipped = _skipped(scan_models_dir(models_dir), models_dir)
    assert "not a GGUF file" in skipped["notes.gguf"]
    assert "truncated" in skipped["broken.gguf"]
    assert "projector at the top level" in skipped["mmproj-loose-F16.gguf"]
    assert "no usable model" in skipped["only-proj"]
    assert "no usable model" in skipped["nested"]  # not recursive
    assert "first shard h-00001-of-00002.gguf is missing" in skipped["half/h-00002-of-00002.gguf"]
    assert skipped["dangling.gguf"] == "broken symlink"
    assert not any(".hidden" in k or "readme" in k for k in skipped)


def test_models_dir_keeps_symlink_paths_unresolved(models_dir):
    m = by_name(scan_models_dir(models_dir))["link-file"]
    assert m.path == models_dir / "link-file.gguf" and m.path.is_symlink()
    assert m.meta.path == m.path


def test_models_dir_second_model_in_a_folder_is_reported_not_guessed(tmp_path):
    _model(tmp_path / "pair" / "a-Q4_K_M.gguf")
    _model(tmp_path / "pair" / "b-Q8_0.gguf")
    res = scan_models_dir(tmp_path)
    assert _names(res, tmp_path) == {"pair": ("pair/a-Q4_K_M.gguf", None)}
    assert "only a-Q4_K_M.gguf is used" in _skipped(res, tmp_path)["pair/b-Q8_0.gguf"]


def test_missing_models_dir_is_reported_not_raised(tmp_path):
    res = scan_models_dir(tmp_path / "nope")
    assert res.models == [] and "does not exist" in res.skipped[0][1]


# ----------------------------------------------------------- recursive import


@pytest.fixture
def import_dir(tmp_path: Path) -> Path:
    root = tmp_path / "lib"
    _model(root / "Qwen3-VL-32B-Instruct-Q4_K_M.gguf", embedding_length=64)
    _model(root / "Other-Text-Q8_0.gguf", embedding_length=128)  # does not fit the projector
    _projector(root / "mmproj-Qwen3-VL-F16.gguf", "F16", projection_dim=64)
    _model(root / "x" / "Qwen3-VL-32B-Instruct-Q4_K_M.gguf")
    _model(root / "y" / "x" / "Qwen3-VL-32B-Instruct-Q4_K_M.gguf")
    root.joinpath("split").mkdir()
    write_gguf(root / "split" / "Big-Model.gguf", shards=2)
    root.joinpath("orphan").mkdir()
    write_gguf(root / "orphan" / "Orph.gguf", shards=3)
    (root / "orphan" / "Orph-00001-of-00003.gguf").unlink()
    _model(root / "With Spaces" / "My Fancy Model (v2).gguf")
    _corrupt(root / "bad" / "corrupt.gguf")
    _truncated(root / "bad" / "trunc.gguf")
    (root / "bad" / "fake.gguf").write_bytes(b"<html>404</html>")
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "alias.gguf").symlink_to(root / "Other-Text-Q8_0.gguf")
    _model(root / ".cache" / "huggingface" / "hidden.gguf")
    return root


def test_import_dir_names_every_model_readably_and_resolves_clashes(import_dir):
    res = scan_import_dir(import_dir)
    assert _names(res, import_dir) == {
        "qwen3-vl-32b-instruct-q4_k_m": ("Qwen3-VL-32B-Instruct-Q4_K_M.gguf", "mmproj-Qwen3-VL-F16.gguf"),
        "other-text-q8_0": ("Other-Text-Q8_0.gguf", None),
        "x-qwen3-vl-32b-instruct-q4_k_m": ("x/Qwen3-VL-32B-Instruct-Q4_K_M.gguf", None),
        "qwen3-vl-32b-instruct-q4_k_m-2": ("y/x/Qwen3-VL-32B-Instruct-Q4_K_M.gguf", None),
        "big-model": ("split/Big-Model-00001-of-00002.gguf", None),
        "my-fancy-model-v2": ("With Spaces/My Fancy Model (v2).gguf", None),
    }
    assert all(m.source == "import" for m in res.models)


def test_import_dir_reports_broken_files_orphan_shards_loops_and_duplicates(import_dir):
    skipped = _skipped(scan_import_dir(import_dir), import_dir)
    assert "first shard Orph-00001-of-00003.gguf is missing" in skipped["orphan/Orph-00002-of-00003.gguf"]
    assert "first shard" in skipped["orphan/Orph-00003-of-00003.gguf"]
    assert "truncated" in skipped["bad/trunc.gguf"]
    assert "not a GGUF file" in skipped["bad/fake.gguf"]
    assert "bad/corrupt.gguf" in skipped
    assert "symlink loop" in skipped["loop"]
    assert skipped["alias.gguf"].startswith("same file as")
    assert not any(k.startswith(".cache") for k in skipped)


def test_import_dir_scan_is_deterministic(import_dir):
    first = _names(scan_import_dir(import_dir), import_dir)
    assert _names(scan_import_dir(import_dir), import_dir) == first


def test_projector_choice_prefers_bf16_then_f16_then_f32(tmp_path):
    for present, expected in [(("F32", "F16", "BF16"), "BF16"), (("F32", "F16"), "F16"), (("F32",), "F32")]:
        d = tmp_path / "-".join(present)
        _model(d / "m-Q4_K_M.gguf")
        for ft in present:
            _projector(d / f"mmproj-{ft}.gguf", ft)
        (m,) = scan_import_dir(d).models
        assert m.mmproj is not None and m.mmproj.name == f"mmproj-{expected}.gguf"


def test_projector_precision_comes_from_metadata_before_the_file_name(tmp_path):
    _model(tmp_path / "m.gguf")
    _projector(tmp_path / "mmproj-a.gguf", "F32")
    _projector(tmp_path / "mmproj-b-says-f32.gguf", "BF16")  # name lies, tensors are BF16
    (m,) = scan_import_dir(tmp_path).models
    assert m.mmproj == tmp_path / "mmproj-b-says-f32.gguf"


def test_projector_detected_by_metadata_alone_is_never_a_model(tmp_path):
    _model(tmp_path / "vision-Q4_K_M.gguf")
    _projector(tmp_path / "encoder.gguf", "F16", style="clip")  # no "mmproj" in the name
    (m,) = scan_import_dir(tmp_path).models
    assert m.name == "vision-q4_k_m" and m.mmproj == tmp_path / "encoder.gguf"


def test_projectors_are_attached_to_every_fitting_model_of_their_folder_only(tmp_path):
    _model(tmp_path / "a" / "one.gguf")
    _model(tmp_path / "a" / "two.gguf")
    _projector(tmp_path / "a" / "mmproj-F16.gguf", "F16")
    _model(tmp_path / "b" / "three.gguf")
    res = scan_import_dir(tmp_path)
    assert {m.name: m.mmproj and m.mmproj.name for m in res.models} == {
        "one": "mmproj-F16.gguf", "two": "mmproj-F16.gguf", "three": None}


def test_shard_not_named_as_split_is_skipped_with_the_reason(tmp_path):
    paths = write_gguf(tmp_path / "s.gguf", shards=2)
    paths[0].rename(tmp_path / "renamed-first.gguf")
    paths[1].rename(tmp_path / "renamed-second.gguf")
    res = scan_import_dir(tmp_path)
    assert res.models == []
    skipped = _skipped(res, tmp_path)
    assert "cannot find the others" in skipped["renamed-first.gguf"]
    assert "shard 2 of 2" in skipped["renamed-second.gguf"]


def test_incomplete_split_set_is_skipped(tmp_path):
    write_gguf(tmp_path / "s.gguf", shards=3)
    (tmp_path / "s-00002-of-00003.gguf").unlink()
    res = scan_import_dir(tmp_path)
    assert res.models == []
    assert "missing or unreadable shard(s) 00002" in _skipped(res, tmp_path)["s-00001-of-00003.gguf"]


def test_scanning_a_large_library_is_fast(tmp_path):
    for i in range(60):
        _model(tmp_path / f"d{i % 6}" / f"model-{i}-Q4_K_M.gguf")
    start = time.perf_counter()
    res = scan_import_dir(tmp_path)
    assert len(res.models) == 60
    assert time.perf_counter() - start < 1.0


# ------------------------------------------------------------------ HF cache


def test_hf_cache_models_are_named_user_repo_quant_with_projectors_and_shards(tmp_path):
    src, cache = tmp_path / "src", tmp_path / "hub"
    src.mkdir()
    c1, c2 = "a" * 40, "b" * 40
    for q in ("Q4_K_M", "Q8_0"):
        _cache_file(cache, "acme/Vision-GGUF", c1, f"Vision-{q}.gguf", _model(src / f"v-{q}.gguf"))
    _cache_file(cache, "acme/Vision-GGUF", c1, "mmproj-F16.gguf", _projector(src / "p16.gguf", "F16"))
    _cache_file(cache, "acme/Vision-GGUF", c1, "mmproj-BF16.gguf", _projector(src / "pbf.gguf", "BF16"))
    for p in write_gguf(src / "Huge-Q2_K.gguf", shards=2):
        _cache_file(cache, "acme/Huge-GGUF", c2, f"Q2_K/{p.name}", p)
    _cache_file(cache, "acme/Huge-GGUF", c2, "README.md", src / "v-Q8_0.gguf")
    res = scan_hf_cache(cache)
    got = {m.name: (m.path.relative_to(cache).as_posix(), m.mmproj and m.mmproj.name, len(m.shards), m.repo_id)
           for m in res.models}
    vision, huge = f"models--acme--Vision-GGUF/snapshots/{c1}", f"models--acme--Huge-GGUF/snapshots/{c2}"
    assert got == {
        "acme/Vision-GGUF:Q4_K_M": (f"{vision}/Vision-Q4_K_M.gguf", "mmproj-BF16.gguf", 1, "acme/Vision-GGUF"),
        "acme/Vision-GGUF:Q8_0": (f"{vision}/Vision-Q8_0.gguf", "mmproj-BF16.gguf", 1, "acme/Vision-GGUF"),
        "acme/Huge-GGUF:Q2_K": (f"{huge}/Q2_K/Huge-Q2_K-00001-of-00002.gguf", None, 2, "acme/Huge-GGUF"),
    }
    assert all(m.source == "hf" for m in res.models) and res.skipped == []
    # The names llama-router gave them before llama.cpp's ids stay as aliases.
    assert {m.name: m.aliases for m in res.models} == {
        "acme/Vision-GGUF:Q4_K_M": ("acme-vision-q4_k_m",), "acme/Vision-GGUF:Q8_0": ("acme-vision-q8_0",),
        "acme/Huge-GGUF:Q2_K": ("acme-huge-q2_k",)}


def test_hf_cache_quant_in_a_sub_folder_uses_the_projector_at_the_snapshot_root(tmp_path):
    src, cache, c = tmp_path / "src", tmp_path / "hub", "f" * 40
    src.mkdir()
    for p in write_gguf(src / "V-Q8_0.gguf", shards=2):
        _cache_file(cache, "acme/V-GGUF", c, f"Q8_0/{p.name}", p)
    _cache_file(cache, "acme/V-GGUF", c, "mmproj-F32.gguf", _projector(src / "p32.gguf", "F32"))
    _cache_file(cache, "acme/V-GGUF", c, "mmproj-BF16.gguf", _projector(src / "pbf.gguf", "BF16"))
    (m,) = scan_hf_cache(cache).models
    assert m.path.name == "V-Q8_0-00001-of-00002.gguf" and m.mmproj is not None
    assert m.mmproj.name == "mmproj-BF16.gguf" and m.mmproj.parent == m.path.parent.parent


def test_hf_cache_uses_the_revision_main_points_to(tmp_path):
    src, cache = tmp_path / "src", tmp_path / "hub"
    old, new = "1" * 40, "2" * 40
    _cache_file(cache, "acme/M-GGUF", new, "M-Q4_K_M.gguf", _model(src / "new.gguf", name="new"))
    _cache_file(cache, "acme/M-GGUF", old, "M-Q4_K_M.gguf", _model(src / "old.gguf", name="old"), ref=None)
    (m,) = scan_hf_cache(cache).models
    assert m.meta.name == "new" and new in m.path.parts


def test_hf_cache_ignores_datasets_and_reports_broken_entries(tmp_path):
    src, cache = tmp_path / "src", tmp_path / "hub"
    link = _cache_file(cache, "acme/Broken-GGUF", "c" * 40, "B-Q4_K_M.gguf", _model(src / "b.gguf"))
    link.resolve().unlink()  # blob gone: broken symlink
    ds = cache / "datasets--acme--data" / "snapshots" / ("d" * 40)
    ds.mkdir(parents=True)
    _model(ds / "weights.gguf")
    res = scan_hf_cache(cache)
    assert res.models == []
    assert any("Blob missing" in reason for _, reason in res.skipped)


def test_hf_cache_that_does_not_exist_is_empty(tmp_path):
    assert scan_hf_cache(tmp_path / "none") == ScanResult()


def test_hf_cache_that_is_a_file_is_reported(tmp_path):
    (tmp_path / "hub").write_text("")
    res = scan_hf_cache(tmp_path / "hub")
    assert res.models == [] and [reason.split(":")[0] for _, reason in res.skipped] == ["cannot scan HF cache"]


def test_hf_cache_defaults_to_hf_home_read_at_call_time(tmp_path, monkeypatch):
    monkeypatch.delenv("LLAMA_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    _cache_file(tmp_path / "home" / "hub", "acme/T-GGUF", "e" * 40, "T-Q8_0.gguf", _model(tmp_path / "t.gguf"))
    assert [m.name for m in scan_hf_cache().models] == ["acme/T-GGUF:Q8_0"]


def test_hf_cache_is_llama_cache_first_as_in_llama_cpp(tmp_path, monkeypatch):
    """A llama.cpp user's $LLAMA_CACHE is the cache llama.cpp lists and loads from: llama-router's too."""
    monkeypatch.setenv("LLAMA_CACHE", str(tmp_path / "llama"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    _cache_file(tmp_path / "llama", "acme/T-GGUF", "e" * 40, "T-Q8_0.gguf", _model(tmp_path / "t.gguf"))
    _cache_file(tmp_path / "hf", "acme/U-GGUF", "f" * 40, "U-Q8_0.gguf", _model(tmp_path / "u.gguf"))
    assert [m.name for m in scan_hf_cache().models] == ["acme/T-GGUF:Q8_0"]
