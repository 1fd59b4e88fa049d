"""A Hugging Face repo that holds a `preset.ini`: llama.cpp's remote preset.

`llama-server -hf user/repo` lists the repo's files (from the Hub; from the
cache when offline or when the Hub lists nothing, common/download.cpp,
`common_download_get_hf_plan`). When `preset.ini` is at the repo's root it
fetches that file only and runs as a router with it as its
`--models-preset` (common/arg.cpp); any other repo is one model to serve.
`fetch_preset` makes the same decision and leaves the file in the ordinary
Hugging Face cache ($LLAMA_CACHE first, as llama.cpp looks it up), where an
offline start finds it again.
"""

from __future__ import annotations

import os
from pathlib import Path

from router.discovery.hf_progress import fetch_file
from router.discovery.huggingface import HFError, hub_target

__all__ = ["PRESET_FILE", "fetch_preset"]

PRESET_FILE = "preset.ini"
_REVISION = "main"


def fetch_preset(ref: str, *, offline: bool = False, cache_dir: str | os.PathLike[str] | None = None,
                 endpoint: str | None = None, token: str | bool | None = None) -> Path | None:
    """The `preset.ini` of the repo `ref` names, in the cache; None when the repo holds
    none (a model repo: `-hf` keeps its meaning). A quant after `:` is ignored, as
    llama.cpp ignores it for a preset repo.

    Offline, or when the Hub cannot be reached, the cache answers: its preset.ini,
    else None for a repo the cache holds without one; a repo the cache does not hold
    at all is an HFError, as is a repo the Hub does not know."""
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hfe

    repo_id, _, endpoint, cache = hub_target(ref, endpoint, cache_dir)

    def from_cache(why: str) -> Path | None:
        held, preset = _cached(cache, repo_id)
        if not held:
            raise HFError(f"{repo_id}: {why}, and the repo is not in the cache at {cache}")
        return preset

    if offline:
        return from_cache("offline (--offline or LLAMA_ARG_OFFLINE)")
    try:
        info = HfApi(endpoint=endpoint, token=token).model_info(repo_id, revision=_REVISION)
        files = {s.rfilename for s in info.siblings or ()}
        if PRESET_FILE not in files:
            return None
        return Path(fetch_file(repo_id, PRESET_FILE, _REVISION, cache, endpoint, token))
    except hfe.GatedRepoError:
        raise HFError(f"{repo_id} is gated: accept its terms on the Hub, then log in or pass a token") from None
    except hfe.RepositoryNotFoundError:
        raise HFError(f"{repo_id}: repository not found on {endpoint} "
                      "(or it is private and no valid token was given)") from None
    except hfe.HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        if status is not None and status >= 500:
            return from_cache(f"the Hub at {endpoint} answered HTTP {status}")
        raise HFError(f"{repo_id}: the Hub answered HTTP {status}: {e}") from None
    except (ConnectionError, OSError, httpx2.TransportError) as e:  # HF_HUB_OFFLINE is a ConnectionError
        return from_cache(f"cannot reach the Hub at {endpoint} ({type(e).__name__})")


def _cached(cache: Path, repo_id: str) -> tuple[bool, Path | None]:
    """(whether the cache holds the repo, its preset.ini): the snapshot `refs/main`
    names (llama.cpp's get_cached_ref), else the newest one."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    try:
        snapshots = sorted((p for p in (repo / "snapshots").iterdir() if p.is_dir()),
                           key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return False, None
    try:
        commit = (repo / "refs" / _REVISION).read_text().strip()
    except OSError:
        commit = ""
    chosen = next((p for p in snapshots if p.name == commit), snapshots[0] if snapshots else None)
    if chosen is None:
        return False, None
    preset = chosen / PRESET_FILE
    return True, (preset if preset.is_file() else None)
