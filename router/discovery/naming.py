"""Names for discovered models and facts read from file names: readable,
unique catalogue names, shard suffixes, quantisation labels, and where the
Hugging Face cache is."""

from __future__ import annotations

import os
import re
from pathlib import Path

_SHARD_RE = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
_QUANT_RE = re.compile(
    r"(?<![A-Za-z0-9])((?:UD-)?(?:I?Q[0-9](?:_[0-9])?(?:_K)?(?:_(?:XXS|XS|S|M|L|XL|NL))?"
    r"|TQ[12]_0|MXFP4(?:_MOE)?|BF16|F16|FP16|F32|FP32))(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_MAX_NAME = 120  # the catalogue allows 128; leave room for a "-NN" suffix


def slugify(text: str) -> str:
    """Lowercase, `[a-z0-9._-]` only, dashes collapsed: names safe in URLs and YAML keys."""
    return safe_name(text.lower())


def safe_name(text: str) -> str:
    """`text` made a valid catalogue name, case kept: other characters become `-`."""
    s = re.sub(r"[^A-Za-z0-9._-]", "-", text)
    s = re.sub(r"-{2,}", "-", s).strip("-._")[:_MAX_NAME].rstrip("-._")
    return s or "model"


def split_parts(filename: str) -> tuple[str, int, int] | None:
    """`x-00002-of-00003.gguf` -> ("x", 2, 3); None when not named like a shard."""
    m = _SHARD_RE.match(filename)
    if not m:
        return None
    return m["prefix"], int(m["no"]), int(m["count"])


def model_stem(filename: str) -> str:
    """File name without `.gguf` and without the shard suffix."""
    parts = split_parts(filename)
    if parts:
        return parts[0]
    return filename[:-5] if filename.lower().endswith(".gguf") else filename


def quant_label(stem: str) -> str | None:
    """The quantisation named in a file stem (last match wins), e.g. "Q4_K_M"."""
    found = _QUANT_RE.findall(stem)
    return found[-1] if found else None


_TAG_RE = re.compile(r"[-.]([A-Z0-9_]+)$", re.IGNORECASE)


def hf_model_id(repo_id: str, filename: str) -> str:
    """llama.cpp's id for a model of the Hugging Face cache, `user/repo:TAG`: the tag
    is the last `-`/`.`-separated word of the file name (shard suffix removed),
    upper-cased, as llama.cpp's router lists its cache (common/download.cpp)."""
    stem = model_stem(Path(filename).name)
    m = _TAG_RE.search(stem)
    return f"{repo_id}:{m.group(1).upper()}" if m else repo_id


def hf_model_name(repo_id: str, filename: str) -> str:
    """`user-repo-quant`, with a trailing `-GGUF` dropped from the repo name: the name
    llama-router gave cache models before it used llama.cpp's ids (kept as an alias)."""
    user, _, repo = repo_id.partition("/")
    repo = re.sub(r"[-_.]gguf$", "", repo, flags=re.IGNORECASE)
    stem = model_stem(Path(filename).name)
    tail = quant_label(stem) or stem
    return slugify(f"{user}-{repo}-{tail}")


def unique_name(name: str, taken: set[str], alt: str | None = None) -> str:
    """`name`, else `alt`, else `name-2`, `name-3`...: the first one not in `taken`."""
    if name not in taken:
        return name
    if alt and alt not in taken:
        return alt
    n = 2
    while f"{name}-{n}" in taken:
        n += 1
    return f"{name}-{n}"


def default_hf_cache_dir() -> Path:
    """The HF hub cache, from the environment at call time, looked up as llama.cpp
    does (common/hf-cache.cpp): $LLAMA_CACHE first, so a llama.cpp user's cache is
    the one llama-router lists and its children load from.

    huggingface_hub.constants freezes these at import; reading them again here
    lets tests and long-running processes change HF_HOME/HF_HUB_CACHE.
    """
    for var in ("LLAMA_CACHE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(os.path.expandvars(home)).expanduser() / "hub"
