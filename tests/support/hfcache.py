"""Files laid out in a Hugging Face cache the way huggingface_hub lays them out."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_file(cache: Path, repo_id: str, commit: str, rfile: str, src: Path, ref: str | None = "main") -> Path:
    """Lay a file out exactly like huggingface_hub does: blob + relative snapshot symlink + ref."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    data = src.read_bytes()
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    link = repo / "snapshots" / commit / rfile
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return link
