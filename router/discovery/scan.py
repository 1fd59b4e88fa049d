"""Find GGUF models on disk: a llama.cpp models dir, any folder tree, the HF cache.

Longer than 300 lines because the three scanners share one per-folder rule
set that must stay in one place.

All three scanners share one per-folder rule set (`_analyze_folder`): split
sets collapse to their first shard, projectors are attached rather than
listed, and anything unreadable lands in `ScanResult.skipped` with a reason
instead of raising - one bad download must not hide a whole library.

Paths are reported as found (absolute, symlinks NOT resolved): llama.cpp finds
the other shards of a split model by file name next to the first one, and the
HF cache stores blobs under hash names, so resolving links would break both.
"""

from __future__ import annotations

import os
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from router.discovery.gguf_meta import GGUFError, GGUFMeta, read_gguf_meta
from router.discovery.naming import (
    default_hf_cache_dir,
    hf_model_id,
    hf_model_name,
    model_stem,
    quant_label,
    safe_name,
    slugify,
    split_parts,
    unique_name,
)

__all__ = ["DiscoveredModel", "ScanResult", "projector_fits", "scan_hf_cache", "scan_import_dir", "scan_models_dir"]

Source = Literal["dir", "import", "hf"]

_PROJECTOR_RANK = {"BF16": 0, "F16": 1, "F32": 2}


@dataclass(frozen=True)
class DiscoveredModel:
    """One servable model: a file (first shard if split) plus its projector."""

    name: str
    path: Path
    mmproj: Path | None
    meta: GGUFMeta
    source: Source
    shards: tuple[Path, ...] = ()
    size_bytes: int = 0  # all shards, projector excluded
    repo_id: str | None = None
    aliases: tuple[str, ...] = ()  # other names it answers to (a cache model's former slug name)


@dataclass
class ScanResult:
    models: list[DiscoveredModel] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


# ---------------------------------------------------------- folder rules


@dataclass
class _Unit:
    path: Path
    shards: tuple[Path, ...]
    meta: GGUFMeta
    mmproj: Path | None
    size_bytes: int


def _is_gguf_name(name: str) -> bool:
    return name.lower().endswith(".gguf") and not name.startswith(".")


def _projector_rank(p: Path, meta: GGUFMeta) -> tuple[int, str]:
    ftype = meta.projector_ftype or quant_label(model_stem(p.name)) or ""
    return _PROJECTOR_RANK.get(ftype.upper().replace("FP", "F"), 3), p.name


def projector_fits(model: GGUFMeta, projector: GGUFMeta) -> bool:
    """False only when both sizes are known and differ (llama-server rejects that pair)."""
    return not (projector.projection_dim and model.embedding_length
                and projector.projection_dim != model.embedding_length)


def _pick_projector(model: GGUFMeta, projectors: list[tuple[Path, GGUFMeta]]) -> Path | None:
    """Best projector for `model`: BF16 > F16 > F32 > anything else.

    A projector whose projection dim differs from the model's embedding size
    is skipped - llama-server refuses that pair, so attaching it to every
    model of a mixed folder would make the others unloadable.
    """
    fitting = [(p, m) for p, m in projectors if projector_fits(model, m)]
    if not fitting:
        return None
    return min(fitting, key=lambda pm: _projector_rank(*pm))[0]


def _analyze_folder(
    files: Iterable[Path], skipped: list[tuple[Path, str]], attach_projectors: bool = True
) -> tuple[list[_Unit], list[tuple[Path, GGUFMeta]]]:
    """Models and projectors of one folder (all `files` share a directory)."""
    metas: dict[Path, GGUFMeta] = {}
    for f in sorted(files, key=lambda p: p.name):
        try:
            metas[f] = read_gguf_meta(f)
        except GGUFError as e:
            skipped.append((f, e.reason))

    projectors = [(p, m) for p, m in metas.items() if m.is_projector or "mmproj" in p.name.lower()]
    proj_paths = {p for p, _ in projectors}
    singles: list[Path] = []
    sets: dict[tuple[str, int], dict[int, Path]] = defaultdict(dict)
    for p, m in metas.items():
        if p in proj_paths:
            continue
        parts = split_parts(p.name)
        if parts:
            prefix, no, count = parts
            sets[(prefix, count)][no] = p
        elif m.split_no:
            skipped.append((p, f"shard {m.split_no + 1} of {m.split_count} of a split model, "
                               "named without the -0000N-of-0000M.gguf suffix llama.cpp needs"))
        elif m.is_split:
            skipped.append((p, f"first of {m.split_count} shards, but not named NAME-00001-of-"
                               f"{m.split_count:05d}.gguf, so llama.cpp cannot find the others"))
        else:
            singles.append(p)

    units = [_Unit(p, (p,), metas[p], None, metas[p].file_size) for p in singles]
    for (prefix, count), shards in sets.items():
        first_name = f"{prefix}-00001-of-{count:05d}.gguf"
        if 1 not in shards:
            for p in shards.values():
                skipped.append((p, f"split model {prefix!r}: first shard {first_name} is missing"))
            continue
        missing = [n for n in range(1, count + 1) if n not in shards]
        first = shards[1]
        if missing:
            listed = ", ".join(f"{n:05d}" for n in missing)
            skipped.append((first, f"split model {prefix!r}: missing or unreadable shard(s) {listed} of {count:05d}"))
            continue
        ordered = tuple(shards[n] for n in range(1, count + 1))
        units.append(_Unit(first, ordered, metas[first], None, sum(metas[p].file_size for p in ordered)))

    units.sort(key=lambda u: u.path.name)
    if attach_projectors:
        for u in units:
            u.mmproj = _pick_projector(u.meta, projectors)
    return units, sorted(projectors, key=lambda pm: pm[0].name)


def _model(name: str, u: _Unit, source: Source, repo_id: str | None = None) -> DiscoveredModel:
    return DiscoveredModel(name, u.path, u.mmproj, u.meta, source, u.shards, u.size_bytes, repo_id)


# ------------------------------------------------------------- scanners


def _list_dir(d: Path, skipped: list[tuple[Path, str]]) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(d) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as e:
        skipped.append((d, f"cannot list directory: {e.strerror or e}"))
        return []


def _classify(e: os.DirEntry[str], skipped: list[tuple[Path, str]]) -> Literal["dir", "gguf", None]:
    """What a directory entry is, following symlinks; odd .gguf entries are reported."""
    path = Path(e.path)
    try:
        if e.is_dir(follow_symlinks=True):
            return "dir"
        if not _is_gguf_name(e.name):
            return None
        if e.is_file(follow_symlinks=True):
            return "gguf"
        if e.is_symlink() and not path.exists():
            skipped.append((path, "broken symlink"))
        else:
            skipped.append((path, "not a regular file"))
    except OSError as err:
        skipped.append((path, f"cannot stat: {err.strerror or err}"))
    return None


def _absolute(d: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(os.path.expanduser(d)))


def scan_models_dir(dir: str | os.PathLike[str]) -> ScanResult:
    """llama.cpp `--models-dir` layout: `DIR/name.gguf` and `DIR/name/` are models.

    A sub-folder is exactly one model (its first shard if split) named after
    the folder; extra model files in it are reported, not guessed at. Top-level
    projectors are reported too: in this layout a multimodal model lives in its
    own folder, and a loose projector would fit only one of the flat files.
    Names keep their on-disk case, like llama-server's; only characters the
    catalogue cannot hold (spaces, ...) become `-`.
    """
    root = _absolute(dir)
    res = ScanResult()
    if not root.is_dir():
        res.skipped.append((root, "models dir does not exist or is not a directory"))
        return res
    top_files: list[Path] = []
    subdirs: list[Path] = []
    for e in _list_dir(root, res.skipped):
        kind = _classify(e, res.skipped)
        if kind == "dir":
            subdirs.append(Path(e.path))
        elif kind == "gguf":
            top_files.append(Path(e.path))

    units, loose = _analyze_folder(top_files, res.skipped, attach_projectors=False)
    found: list[tuple[str, _Unit]] = [(safe_name(model_stem(u.path.name)), u) for u in units]
    for f, _ in loose:
        res.skipped.append((f, "projector at the top level of a models dir; move it into a folder with its model"))

    for d in subdirs:
        files = [Path(e.path) for e in _list_dir(d, res.skipped) if _classify(e, res.skipped) == "gguf"]
        units, _ = _analyze_folder(files, res.skipped)
        if not units:
            res.skipped.append((d, "folder holds no usable model file"))
            continue
        for extra in units[1:]:
            res.skipped.append((extra.path, f"second model in folder {d.name!r}; only {units[0].path.name} is used"))
        found.append((safe_name(d.name), units[0]))

    taken: set[str] = set()
    for name, u in sorted(found, key=lambda nu: nu[0]):
        unique = unique_name(name, taken)
        taken.add(unique)
        res.models.append(_model(unique, u, "dir"))
    return res


def _walk(root: Path, skipped: list[tuple[Path, str]]) -> list[tuple[Path, list[Path]]]:
    """Breadth-first, name-sorted walk following symlinks, each real dir once."""
    out: list[tuple[Path, list[Path]]] = []
    seen: dict[str, Path] = {}
    queue: deque[Path] = deque([root])
    while queue:
        d = queue.popleft()
        real = os.path.realpath(d)
        if real in seen:
            skipped.append((d, f"directory already scanned as {seen[real]} (symlink loop or duplicate link)"))
            continue
        seen[real] = d
        files: list[Path] = []
        for e in _list_dir(d, skipped):
            kind = _classify(e, skipped)
            if kind == "dir":
                queue.append(Path(e.path))
            elif kind == "gguf":
                files.append(Path(e.path))
        if files:
            out.append((d, files))
    return out


def scan_import_dir(dir: str | os.PathLike[str]) -> ScanResult:
    """Every model anywhere under `dir`, named readably from its file name.

    Traversal is breadth-first and sorted, so on a name clash the shallower
    (then alphabetically first) file keeps the plain name; the next one is
    prefixed with its folder name, then numbered. The same file reached twice
    (via a symlink) is listed once.
    """
    root = _absolute(dir)
    res = ScanResult()
    if not root.is_dir():
        res.skipped.append((root, "import dir does not exist or is not a directory"))
        return res
    taken: set[str] = set()
    real_seen: dict[str, Path] = {}
    for folder, files in _walk(root, res.skipped):
        for u in _analyze_folder(files, res.skipped)[0]:
            real = os.path.realpath(u.path)
            if real in real_seen:
                res.skipped.append((u.path, f"same file as {real_seen[real]}"))
                continue
            real_seen[real] = u.path
            base = slugify(model_stem(u.path.name))
            name = unique_name(base, taken, alt=f"{slugify(folder.name)}-{base}")
            taken.add(name)
            res.models.append(_model(name, u, "import"))
    return res


def _may_exist(path: Path) -> bool:
    """False only where the path surely does not exist. Start-up and every rescan look at
    the HF cache; where there is none, huggingface_hub and httpx2 (about 3 MiB of a running
    router's resident memory) are never imported."""
    try:
        return path.exists()
    except OSError:  # unreadable: huggingface_hub's scan reports why
        return True


def scan_hf_cache(cache_dir: str | os.PathLike[str] | None = None) -> ScanResult:
    """GGUF models already downloaded into the Hugging Face hub cache.

    Uses `huggingface_hub.scan_cache_dir` so the cache layout stays HF's
    business. Per repo, the revision `main` points at is used (else the most
    recently modified one); folder rules apply per snapshot sub-folder.
    """
    cache = _absolute(cache_dir) if cache_dir is not None else default_hf_cache_dir()
    res = ScanResult()
    if not _may_exist(cache):  # huggingface_hub's CacheNotFound, without importing it
        return res
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache)
    except CacheNotFound:
        return res
    except (OSError, ValueError) as e:
        res.skipped.append((cache, f"cannot scan HF cache: {e}"))
        return res
    res.skipped.extend((cache, f"corrupted cache entry: {w}") for w in info.warnings)

    taken: set[str] = set()
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        rev = max(repo.revisions, key=lambda r: ("main" in r.refs, r.last_modified, r.commit_hash))
        by_dir: dict[Path, list[Path]] = defaultdict(list)
        for f in rev.files:
            rel = f.file_path.relative_to(rev.snapshot_path)
            if _is_gguf_name(f.file_path.name) and not any(part.startswith(".") for part in rel.parts):
                by_dir[f.file_path.parent].append(f.file_path)
        root_projectors: list[tuple[Path, GGUFMeta]] = []
        for d in sorted(by_dir):  # the snapshot root sorts first
            units, projectors = _analyze_folder(by_dir[d], res.skipped)
            if d == rev.snapshot_path:
                root_projectors = projectors
            for u in units:
                if u.mmproj is None and d != rev.snapshot_path:
                    # Repos keep split quants in sub-folders and one projector at the top.
                    u.mmproj = _pick_projector(u.meta, root_projectors)
                name = unique_name(hf_model_id(repo.repo_id, u.path.name), taken)
                slug = hf_model_name(repo.repo_id, u.path.name)
                aliases = (slug,) if slug not in taken and slug != name else ()
                taken.update((name, *aliases))
                res.models.append(replace(_model(name, u, "hf", repo.repo_id), aliases=aliases))
    return res
