"""Fetch a GGUF model from the Hugging Face Hub into the standard HF cache.

`user/repo[:QUANT]` is resolved against the repo's file list the way
llama.cpp's `-hf` does (quant matched case-insensitively, Q4_K_M by
default), then every shard and the best projector are fetched with
`hf_hub_download`, so the files land in the ordinary HF cache where
`scan_hf_cache` (and other HF tools) find them again.

huggingface_hub reads HF_ENDPOINT and HF_HOME once, at import; the endpoint
and cache dir are therefore re-read from the environment on every call and
passed explicitly. Longer than 300 lines because choosing the files and
turning each Hub failure into a clear message belong to one download.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from router.discovery.gguf_meta import GGUFError, GGUFMeta, read_gguf_meta
from router.discovery.hf_progress import ProgressCallback, fetch_file
from router.discovery.naming import (
    default_hf_cache_dir,
    hf_model_id,
    hf_model_name,
    model_stem,
    quant_label,
    split_parts,
)
from router.discovery.scan import DiscoveredModel, projector_fits, scan_hf_cache

__all__ = ["DEFAULT_QUANT", "HFError", "download_gguf", "parse_hf_ref"]

DEFAULT_QUANT = "Q4_K_M"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_QUANT_ARG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_URL_PREFIXES = ("hf://", "https://huggingface.co/", "http://huggingface.co/", "huggingface.co/", "hf.co/")
_PROJECTOR_RANK = {"BF16": 0, "F16": 1, "F32": 2}


class HFError(RuntimeError):
    """A model could not be fetched; the message says which and why."""


def parse_hf_ref(ref: str) -> tuple[str, str | None]:
    """`user/repo[:QUANT]` -> (repo_id, quant or None)."""
    if not isinstance(ref, str) or not ref.strip():
        raise ValueError("empty Hugging Face reference: expected 'user/repo' or 'user/repo:QUANT'")
    s = ref.strip()
    for prefix in _URL_PREFIXES:
        if s.lower().startswith(prefix):
            s = s[len(prefix):]
            break
    repo, sep, quant = s.partition(":")
    problem = None
    parts = repo.split("/")
    if len(parts) != 2:
        problem = "expected exactly one '/' between user and repo"
    elif not all(_NAME_RE.fullmatch(p) for p in parts):
        problem = "user and repo may only hold letters, digits, '.', '_' and '-' (96 characters at most)"
    elif any("--" in p or ".." in p for p in parts) or repo.endswith(".git"):
        problem = "'--', '..' and a trailing '.git' are not allowed in repo ids"
    elif sep and not _QUANT_ARG_RE.fullmatch(quant):
        problem = "the quant after ':' must be a name like Q4_K_M"
    if problem:
        raise ValueError(f"invalid Hugging Face reference {ref!r}: {problem}; expected 'user/repo' or "
                         "'user/repo:QUANT', e.g. 'ggml-org/gemma-3-270m-GGUF:Q8_0'")
    return repo, (quant or None)


@dataclass(frozen=True)
class _Candidate:
    files: tuple[str, ...]  # repo paths, first shard first
    label: str | None
    stem: str
    size: int | None
    missing: tuple[int, ...] = ()

    @property
    def shown(self) -> str:
        return self.label or self.stem


def hub_target(ref: str, endpoint: str | None, cache_dir: str | os.PathLike[str] | None,
               ) -> tuple[str, str | None, str, Path]:
    """What a `user/repo[:QUANT]` reference asks of which Hub, into which cache: the repo,
    the quant, the endpoint (the argument, else HF_ENDPOINT, else huggingface_hub's) and
    the cache (the argument, else discovery/naming's default); a bad reference is an HFError."""
    from huggingface_hub import constants

    try:
        repo_id, quant = parse_hf_ref(ref)
    except ValueError as e:
        raise HFError(str(e)) from None
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    cache = Path(os.path.abspath(os.path.expanduser(cache_dir))) if cache_dir is not None else default_hf_cache_dir()
    return repo_id, quant, endpoint, cache


def _candidates(siblings: list[tuple[str, int | None]]) -> tuple[list[_Candidate], list[str]]:
    """Model file sets and projector files among a repo's files."""
    projectors: list[str] = []
    sets: dict[tuple[str, str, int], dict[int, tuple[str, int | None]]] = {}
    out: list[_Candidate] = []
    for rfile, size in siblings:
        p = PurePosixPath(rfile)
        if not p.name.lower().endswith(".gguf") or any(part.startswith(".") for part in p.parts):
            continue
        if "mmproj" in p.name.lower():
            projectors.append(rfile)
            continue
        parts = split_parts(p.name)
        if parts:
            sets.setdefault((str(p.parent), parts[0], parts[2]), {})[parts[1]] = (rfile, size)
        else:
            stem = model_stem(p.name)
            out.append(_Candidate((rfile,), quant_label(stem), stem, size))
    for (_, prefix, count), shards in sets.items():
        files = tuple(shards[n][0] for n in sorted(shards))
        sizes = [s for _, s in shards.values() if s is not None]
        total = sum(sizes) if len(sizes) == len(shards) else None
        missing = tuple(n for n in range(1, count + 1) if n not in shards)
        out.append(_Candidate(files, quant_label(prefix), prefix, total, missing))
    out.sort(key=lambda c: (c.files[0].count("/"), c.files[0]))
    return out, sorted(projectors)


def _matches(c: _Candidate, quant: str) -> bool:
    q = quant.upper()
    label = (c.label or "").upper()
    if label and (label == q or label.removeprefix("UD-") == q.removeprefix("UD-")):
        return True
    return re.search(rf"(?<![A-Z0-9_]){re.escape(q)}(?![A-Z0-9_])", c.stem.upper()) is not None


def _choose(cands: list[_Candidate], quant: str | None, repo_id: str) -> _Candidate:
    """Requested quant; else Q4_K_M; else the smallest model (first by name on ties)."""
    if quant is not None:
        exact = [c for c in cands if (c.label or "").upper() == quant.upper()]
        hits = exact or [c for c in cands if _matches(c, quant)]
        if not hits:
            available = ", ".join(sorted({c.shown for c in cands}, key=str.upper))
            raise HFError(f"{repo_id} has no GGUF file for quant {quant!r}; available: {available}")
        return hits[0]
    default = [c for c in cands if (c.label or "").upper() == DEFAULT_QUANT]
    if default:
        return default[0]
    return min(cands, key=lambda c: (c.size is None, c.size or 0, c.files[0]))


def _best_projector(projectors: list[str], model_file: str) -> str | None:
    """The model's own folder first, else the repo root; then BF16 > F16 > F32 > others by name.

    Same rule as `scan_hf_cache`, so a download and a later scan agree.
    """
    folder = PurePosixPath(model_file).parent
    here = [f for f in projectors if PurePosixPath(f).parent == folder]
    pool = here or [f for f in projectors if PurePosixPath(f).parent == PurePosixPath(".")]
    if not pool:
        return None

    def rank(f: str) -> tuple[int, str]:
        label = (quant_label(model_stem(PurePosixPath(f).name)) or "").upper().replace("FP", "F")
        return _PROJECTOR_RANK.get(label, 3), f

    return min(pool, key=rank)


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[None]:
    """HF's own progress switch; bars only when asked for and stderr is a terminal."""
    isatty = getattr(sys.stderr, "isatty", None)
    if enabled and isatty is not None and isatty():
        yield
        return
    from huggingface_hub.utils import disable_progress_bars

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # HF_HUB_DISABLE_PROGRESS_BARS=0 wins; that is fine
        ctx = disable_progress_bars("huggingface_hub.http_get")
    with ctx:
        yield


def _from_cache(repo_id: str, quant: str | None, cache: Path) -> DiscoveredModel | None:
    cached = [m for m in scan_hf_cache(cache).models if m.repo_id == repo_id]
    if not cached:
        return None
    by_file = {m.path.name: m for m in cached}
    cands = [_Candidate((m.path.name,), quant_label(model_stem(m.path.name)), model_stem(m.path.name), m.size_bytes)
             for m in cached]
    try:
        return by_file[_choose(cands, quant, repo_id).files[0]]
    except HFError:
        return None


def _projector_fits(model: GGUFMeta, mmproj: Path) -> bool:
    try:
        return projector_fits(model, read_gguf_meta(mmproj))
    except GGUFError:
        return False


def _snapshot_commit(path: str, storage: Path) -> str | None:
    try:
        return Path(path).relative_to(storage / "snapshots").parts[0]
    except (ValueError, IndexError):
        return None


def download_gguf(
    ref: str,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    *,
    endpoint: str | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    progress_cb: ProgressCallback | None = None,
) -> DiscoveredModel:
    """Download `ref` (all shards, best projector) into the HF cache and describe it.

    Files already in the cache are not fetched again (one HEAD checks the
    revision). When the Hub cannot be reached, a matching model already in
    the cache is returned instead. `progress_cb`: see discovery/hf_progress.py.
    """
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hfe

    repo_id, quant, endpoint, cache = hub_target(ref, endpoint, cache_dir)
    revision = revision or "main"

    def unreachable(e: BaseException) -> DiscoveredModel:
        cached = _from_cache(repo_id, quant, cache)
        if cached is not None:
            return cached
        raise HFError(f"{ref}: cannot reach the Hub at {endpoint} ({type(e).__name__}: {e}) "
                      f"and no matching model is in the cache at {cache}") from None

    api = HfApi(endpoint=endpoint, token=token)
    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
    except hfe.GatedRepoError:
        raise HFError(f"{repo_id} is gated: accept its terms on the Hub, then log in or pass a token") from None
    except hfe.RepositoryNotFoundError:
        raise HFError(f"{repo_id}: repository not found on {endpoint} "
                      "(or it is private and no valid token was given)") from None
    except hfe.RevisionNotFoundError:
        raise HFError(f"{repo_id}: revision {revision!r} not found") from None
    except hfe.HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        if status is not None and status >= 500:
            return unreachable(e)
        raise HFError(f"{repo_id}: the Hub answered HTTP {status}: {e}") from None
    except (ConnectionError, OSError, httpx2.TransportError) as e:  # offline mode is a ConnectionError
        return unreachable(e)

    siblings = [(s.rfilename, s.size) for s in (info.siblings or [])]
    cands, projectors = _candidates(siblings)
    if not cands:
        raise HFError(f"{repo_id} holds no GGUF model file" + (" (only projectors)" if projectors else ""))
    chosen = _choose(cands, quant, repo_id)
    if chosen.missing:
        listed = ", ".join(f"{n:05d}" for n in chosen.missing)
        raise HFError(f"{repo_id}: split model {chosen.stem!r} is incomplete on the Hub (missing shard(s) {listed})")
    mmproj_file = _best_projector(projectors, chosen.files[0])

    storage = cache.resolve() / f"models--{repo_id.replace('/', '--')}"  # hf_hub_download resolves too
    paths: list[str] = []
    try:
        with _progress(progress):
            # The first file resolves the branch (and records refs/<branch>);
            # the rest are pinned to that commit so a split set stays consistent.
            rev = revision
            for f in (*chosen.files, *([mmproj_file] if mmproj_file else [])):
                paths.append(fetch_file(repo_id, f, rev, cache, endpoint, token, progress_cb))
                rev = _snapshot_commit(paths[0], storage) or info.sha or revision
    except hfe.LocalEntryNotFoundError as e:
        raise HFError(f"{repo_id}: lost the connection to {endpoint} during download ({e})") from None
    except hfe.RemoteEntryNotFoundError as e:
        raise HFError(f"{repo_id}: file vanished from the Hub during download ({e}); try again") from None
    except hfe.HfHubHTTPError as e:
        raise HFError(f"{repo_id}: download failed: {e}") from None
    except (OSError, httpx2.TransportError) as e:
        raise HFError(f"{repo_id}: download failed: {type(e).__name__}: {e}") from None

    model_paths = [Path(p) for p in paths[: len(chosen.files)]]
    mmproj = Path(paths[-1]) if mmproj_file else None
    try:
        meta = read_gguf_meta(model_paths[0])
    except GGUFError as e:
        raise HFError(f"{repo_id}: downloaded {chosen.files[0]} is not usable: {e.reason}") from None
    if mmproj is not None and not _projector_fits(meta, mmproj):
        mmproj = None  # kept in the cache, but llama-server would refuse the pair
    size = sum(p.stat().st_size for p in model_paths)
    return DiscoveredModel(
        name=hf_model_id(repo_id, chosen.files[0]),
        aliases=(hf_model_name(repo_id, chosen.files[0]),),
        path=model_paths[0],
        mmproj=mmproj,
        meta=meta,
        source="hf",
        shards=tuple(model_paths),
        size_bytes=size,
        repo_id=repo_id,
    )
