"""Deleting a model's files: only inside the allowed folders (symlinks followed),
every shard, a projector only when no other model uses it, and in the
Hugging Face cache the snapshot entry plus its blob unless another
revision still points at it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from router.catalogue.config import ModelSpec
from router.core.model_files import RemovalRefused, allowed_root, delete_files, model_files, plan_removal


def touch(path: Path, data: bytes = b"GGUF") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def cache_file(cache: Path, repo: str, commit: str, name: str, blob: str) -> Path:
    """`name` in the HF cache layout: a snapshot entry linking to a blob."""
    storage = cache / f"models--{repo.replace('/', '--')}"
    b = storage / "blobs" / blob
    if not b.exists():
        touch(b)
    entry = storage / "snapshots" / commit / name
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.symlink_to(os.path.relpath(b, entry.parent))
    return entry


def test_a_split_model_is_every_shard(tmp_path):
    shards = [touch(tmp_path / f"m-0000{n}-of-00003.gguf") for n in (1, 2, 3)]
    assert model_files(ModelSpec(name="m", path=str(shards[0]))) == shards
    assert model_files(ModelSpec(name="v", path="my-org/vllm-model")) == [], "a custom backend's id is no file"


def test_paths_are_judged_with_symlinks_resolved(tmp_path):
    root, outside = tmp_path / "lib", tmp_path / "elsewhere"
    inside = touch(root / "a.gguf")
    far = touch(outside / "far.gguf")
    (root / "link.gguf").symlink_to(far)
    (outside / "in.gguf").symlink_to(inside)
    assert allowed_root(inside, [root]) == root.resolve()
    assert allowed_root(root / "link.gguf", [root]) is None, "a link inside pointing outside"
    assert allowed_root(outside / "in.gguf", [root]) is None, "a link outside pointing inside"
    assert allowed_root(root / ".." / "elsewhere" / "far.gguf", [root]) is None
    assert allowed_root(root, [root]) is None, "the folder itself is no model file"


def test_a_model_file_outside_the_folders_refuses_the_whole_removal(tmp_path):
    root = tmp_path / "lib"
    first = touch(root / "m-00001-of-00002.gguf")
    (root / "m-00002-of-00002.gguf").symlink_to(touch(tmp_path / "elsewhere" / "m-00002-of-00002.gguf"))
    with pytest.raises(RemovalRefused) as e:
        plan_removal(ModelSpec(name="m", path=str(first)), [root], {})
    assert "m-00002-of-00002.gguf" in e.value.path
    with pytest.raises(RemovalRefused):
        plan_removal(ModelSpec(name="x", path=str(touch(root / "notes.txt"))), [root], {})


def test_a_shared_or_outside_projector_is_kept_and_said_so(tmp_path):
    root = tmp_path / "lib"
    model, proj = touch(root / "m.gguf"), touch(root / "mmproj.gguf")
    spec = ModelSpec(name="m", path=str(model), mmproj=str(proj))
    shared = plan_removal(spec, [root], {str(proj.resolve()): "other"})
    assert shared.files == (model,) and shared.kept == ((str(proj), "the projector is also used by model 'other'"),)
    assert plan_removal(spec, [root], {}).files == (model, proj)
    far = touch(tmp_path / "elsewhere" / "mmproj.gguf")
    outside = plan_removal(ModelSpec(name="m", path=str(model), mmproj=str(far)), [root], {})
    assert outside.files == (model,) and outside.kept[0][0] == str(far)


def test_folder_files_and_links_inside_the_folder_are_deleted(tmp_path):
    root = tmp_path / "lib"
    real = touch(root / "store" / "m.gguf")
    (root / "m.gguf").symlink_to(real)
    removal = plan_removal(ModelSpec(name="m", path=str(root / "m.gguf")), [root], {})
    deleted = delete_files(removal, tmp_path / "hf")
    assert sorted(deleted) == sorted([str(root.resolve() / "m.gguf"), str(real.resolve())])
    assert not os.path.lexists(root / "m.gguf") and not real.exists()


def test_in_the_hf_cache_a_blob_stays_while_another_revision_points_at_it(tmp_path):
    cache = tmp_path / "hub"
    old = cache_file(cache, "acme/x", "c1", "x-Q4_K_M.gguf", "blob-q4")
    new = cache_file(cache, "acme/x", "c2", "x-Q4_K_M.gguf", "blob-q4")
    q8 = cache_file(cache, "acme/x", "c2", "x-Q8_0.gguf", "blob-q8")
    storage = cache / "models--acme--x"
    touch(storage / "refs" / "main", b"c2")

    deleted = delete_files(plan_removal(ModelSpec(name="q4", path=str(new), state="auto"), [cache], {}), cache)
    assert deleted == [os.path.join(os.path.realpath(new.parent), new.name)] and not os.path.lexists(new)
    assert (storage / "blobs" / "blob-q4").exists(), "c1 still points at it"
    assert q8.exists() and old.exists()

    delete_files(plan_removal(ModelSpec(name="q4-old", path=str(old), state="auto"), [cache], {}), cache)
    assert not (storage / "blobs" / "blob-q4").exists() and not (storage / "snapshots" / "c1").exists()
    assert storage.exists(), "the Q8_0 quant is still there"

    delete_files(plan_removal(ModelSpec(name="q8", path=str(q8), state="auto"), [cache], {}), cache)
    assert not storage.exists(), "a repo with no file left goes whole"
    assert cache.exists()
