"""Deleting a model's files, and only inside the folders the router may delete in.

Two callers: `DELETE /models` (llama.cpp's API: models of the Hugging Face
cache only) and `DELETE /admin/models/{name}?files=true` (the cache and the
catalogue's model folders). Every path is resolved (symlinks followed) and
must lie inside one of the allowed roots (resolved too) before anything is
deleted: one model file outside refuses the whole removal. Only `.gguf`
files are ever deleted.

In the Hugging Face cache a file is a snapshot entry (a symlink) pointing at
a blob. The entry goes, and the blob too unless another entry of the repo
still points at it (another revision), as llama.cpp's
`common_download_remove` does; emptied snapshot folders go, and a repo left
with no file at all is removed whole.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.catalogue.config import Config, ModelSpec
from router.catalogue.importer import CatalogueWriteError, remove_model_entry, set_router_key
from router.core.manager import ModelManager
from router.core.refusal import Refused
from router.core.reload import Reloader, reload_models
from router.core.scheduler import State
from router.discovery.naming import default_hf_cache_dir, split_parts

STOP_WAIT_S = 60.0  # requests in flight may finish before the files go


class RemovalRefused(Exception):
    """A file the removal would touch lies outside the allowed folders (or is no model file)."""

    def __init__(self, path: str, why: str):
        self.path, self.why = path, why
        super().__init__(f"{path}: {why}")


@dataclass(frozen=True)
class FileRemoval:
    """What deleting a model's files means, checked; `delete_files` carries it out."""

    files: tuple[Path, ...]  # as catalogued (snapshot entries in the HF cache), model shards first
    kept: tuple[tuple[str, str], ...] = ()  # (path, why) of files left in place: a shared projector


def _real(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(path))


def _within(path: Path, root: Path) -> bool:
    return path != root and path.is_relative_to(root)


def allowed_root(path: str | os.PathLike[str], roots: Iterable[Path]) -> Path | None:
    """The root (resolved) that holds `path` once every symlink is followed; None when none does.

    The entry itself (its folder resolved, its name kept) must be inside the same root:
    a link inside a root pointing outside, or outside pointing in, is refused.
    """
    entry = _real(Path(path).parent) / Path(path).name
    target = _real(path)
    for root in (_real(r) for r in roots):
        if _within(entry, root) and _within(target, root):
            return root
    return None


def model_files(spec: ModelSpec) -> list[Path]:
    """The model's own files: its GGUF and, for a split model, the other shards next to it."""
    if not spec.model_file:
        return []
    first = Path(spec.model_file)
    parts = split_parts(first.name)
    if parts is None:
        return [first]
    prefix, _, count = parts
    shards = [first.with_name(f"{prefix}-{n:05d}-of-{count:05d}.gguf") for n in range(1, count + 1)]
    return [first, *(s for s in shards if s != first and os.path.lexists(s))]


def plan_removal(spec: ModelSpec, roots: Iterable[Path], in_use: Mapping[str, str]) -> FileRemoval:
    """The files deleting `spec` removes; RemovalRefused when one of its model files is
    outside `roots`. `in_use` maps the resolved files of the other models to their names:
    a projector another model uses, or one outside `roots`, is kept and reported."""
    roots = [_real(r) for r in roots]
    files = model_files(spec)
    if not files:
        raise RemovalRefused(spec.path or spec.name, "the model has no GGUF file to delete")
    for f in files:
        if not f.name.lower().endswith(".gguf"):
            raise RemovalRefused(str(f), "not a GGUF file")
        if allowed_root(f, roots) is None:
            raise RemovalRefused(str(f), "outside the folders the router may delete in (the Hugging Face "
                                         "cache, sources.dirs, sources.import_dirs)")
    kept: list[tuple[str, str]] = []
    if spec.mmproj:
        mmproj = Path(spec.mmproj)
        user = in_use.get(str(_real(mmproj)))
        if user is not None:
            kept.append((str(mmproj), f"the projector is also used by model '{user}'"))
        elif not mmproj.name.lower().endswith(".gguf") or allowed_root(mmproj, roots) is None:
            kept.append((str(mmproj), "outside the folders the router may delete in"))
        elif os.path.lexists(mmproj):
            files.append(mmproj)
    return FileRemoval(files=tuple(files), kept=tuple(kept))


def delete_files(removal: FileRemoval, hf_cache: Path) -> list[str]:
    """Delete what `plan_removal` allowed; the paths deleted (HF blobs included)."""
    cache = _real(hf_cache)
    deleted: list[str] = []
    repos: set[Path] = set()
    for f in removal.files:
        repo = _hf_repo(f, cache)
        if repo is not None:
            deleted += _delete_cache_entry(f, repo)
            repos.add(repo)
            continue
        real = _real(f)
        for p in dict.fromkeys((_real(f.parent) / f.name, real)):
            if os.path.lexists(p):
                p.unlink()
                deleted.append(str(p))
    for repo in repos:
        _prune_repo(repo)
    return deleted


def _hf_repo(path: Path, cache: Path) -> Path | None:
    """`<cache>/models--user--repo` when `path` is a snapshot entry of the cache."""
    entry = _real(path.parent) / path.name
    try:
        rel = entry.relative_to(cache)
    except ValueError:
        return None
    if len(rel.parts) >= 4 and rel.parts[0].startswith("models--") and rel.parts[1] == "snapshots":
        return cache / rel.parts[0]
    return None


def _delete_cache_entry(path: Path, repo: Path) -> list[str]:
    entry = _real(path.parent) / path.name
    blob = _real(entry) if entry.is_symlink() else None
    deleted = []
    if os.path.lexists(entry):
        entry.unlink()
        deleted.append(str(entry))
    if blob is not None and _within(blob, repo / "blobs") and blob.exists():
        still = any(_real(p) == blob for p in (repo / "snapshots").rglob("*") if p.is_symlink())
        if not still:
            blob.unlink()
            deleted.append(str(blob))
    return deleted


def _prune_repo(repo: Path) -> None:
    """Drop emptied snapshot folders; a repo with no file left at all goes whole."""
    snapshots = repo / "snapshots"
    if snapshots.is_dir():
        for d in sorted((p for p in snapshots.rglob("*") if p.is_dir() and not p.is_symlink()),
                        key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()
            except OSError:
                pass  # not empty
    left = [p for sub in ("snapshots", "blobs") if (repo / sub).is_dir() for p in (repo / sub).rglob("*")
            if not p.is_dir() or p.is_symlink()]
    if not left:
        shutil.rmtree(repo, ignore_errors=True)


def cache_removal(config: Config, spec: ModelSpec) -> FileRemoval:
    """DELETE /models's rule, llama.cpp's: only a model found in the Hugging Face cache
    (not an entry of the catalogue file, even one whose file is in the cache) can go."""
    cache = default_hf_cache_dir()
    if spec.state != "auto" or not spec.model_file or allowed_root(spec.model_file, [cache]) is None:
        raise Refused("invalid", f"model '{spec.name}' is not removable: only models found in the Hugging Face cache "
                        "can be deleted, not entries of the catalogue file (see DELETE /admin/models/{name})",
                        code="model_not_removable")
    try:
        return plan_removal(spec, [cache], files_in_use(config, spec.name))
    except RemovalRefused as e:
        raise Refused("forbidden", f"model '{spec.name}' is not removable: {e}", code="path_not_allowed") from None


def prune_hf_repo(repo_id: str, cache: Path | None = None) -> None:
    """Tidy what a cancelled download left of a repo: empty folders, a repo with no file."""
    repo = (cache or default_hf_cache_dir()) / f"models--{repo_id.replace('/', '--')}"
    if repo.is_dir() and not repo.is_symlink():
        _prune_repo(repo)


def files_in_use(config: Config, but: str) -> dict[str, str]:
    """Resolved model and projector files of every model but `but`, with the model's name."""
    out: dict[str, str] = {}
    for spec in config.models.values():
        if spec.name != but:
            for f in (spec.path, spec.mmproj):
                if f:
                    out.setdefault(os.path.realpath(f), spec.name)
    return out


async def remove_model(manager: ModelManager, reloader: Reloader, spec: ModelSpec, removal: FileRemoval | None,
                       *, drop_entry: bool = False) -> dict[str, Any]:
    """Unload the model (waiting for its requests), then drop its entry from the
    catalogue file (`drop_entry`) and `router.startup_model` when it names the model
    (else no reload would take the catalogue any more), delete the files of
    `removal`, tell event clients (`model_remove`) and reload. The answer of both
    DELETE routes. Once the model has stopped, a client that leaves does not stop
    the rest half-way."""
    if manager.state(spec.name) is not State.STOPPED:
        manager.unload(spec.name)
        wait = STOP_WAIT_S + manager.config.router.stop_timeout
        if not await manager.wait_state(spec.name, {State.STOPPED}, wait):
            raise Refused("conflict", f"model '{spec.name}' is still busy after {wait:.0f} s; nothing was deleted",
                            code="model_busy")
    return await asyncio.shield(_remove(manager, reloader, spec, removal, drop_entry))


async def _remove(manager: ModelManager, reloader: Reloader, spec: ModelSpec, removal: FileRemoval | None,
                  drop_entry: bool) -> dict[str, Any]:
    entry_removed = False
    path, startup = reloader.path, manager.config.router.startup_model
    try:
        if path is not None and drop_entry:
            entry_removed = await asyncio.to_thread(remove_model_entry, path, spec.name)
        if path is not None and startup is not None and startup in (spec.name, *spec.aliases):
            await asyncio.to_thread(set_router_key, path, "startup_model", None)
    except CatalogueWriteError as e:
        raise Refused("failed", f"cannot remove '{spec.name}' from the catalogue: {e}",
                      code="catalogue_write") from None
    deleted: list[str] = []
    if removal is not None:
        try:
            deleted = await asyncio.to_thread(delete_files, removal, default_hf_cache_dir())
        except OSError as e:
            raise Refused("failed", f"deleting the files of '{spec.name}' failed: {e}", code="delete_failed") from None
    manager.events.emit(spec.name, "model_remove", {"deleted": deleted})
    res = await reload_models(reloader, f"removed {spec.name}")
    return {"success": True, "model": spec.name, "entry_removed": entry_removed, "deleted": deleted,
            "kept": [{"path": p, "reason": why} for p, why in (removal.kept if removal else ())],
            "reload": res.to_json()}
