"""What llama.cpp's router tests get from the conftest next to them (the
`unit/conftest.py` the runner writes): the models they name, and a Hub.

The suite's own session fixture, `load_server_presets`, downloads every
preset's model from huggingface.co. A fixture of the same name in a nearer
conftest replaces it: this one lays the models the router tests name out
in a fresh Hugging Face cache ($LLAMA_CACHE, which both routers read) and
starts a local Hub stand-in ($HF_ENDPOINT) for the tests that use the Hub
(download, delete, remote preset). KNOWN_GAPS marks what llama-router does not do yet.
The suite's files stay as llama.cpp ships them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fakehub import FakeHub
from tests.support.tinygguf import write_tiny_model

__all__ = ["load_server_presets", "pytest_collection_modifyitems"]

GEMMA_ENV = "LLAMA_ROUTER_SUITE_GEMMA"  # the runner's path to the real Gemma 3 270M GGUF
AGAINST_ENV = "LLAMA_ROUTER_SUITE_AGAINST"  # the router under test: llama-router or llama.cpp
# What llama-router does not do yet, as the tests' outcome: strict, so a test that starts passing
# fails the run until its line here goes.
KNOWN_GAPS: dict[str, str] = {}
COMMIT = "0" * 39 + "1"

# Repo id -> the snapshot's one file. The quant tag in the file name gives the model id
# (`ggml-org/tinygemma3-GGUF:Q8_0`) in both routers, as for the real repos.
GEMMA_STANDIN = {"ggml-org/tinygemma3-GGUF": "tinygemma3-Q8_0.gguf"}
TINY_STANDINS = {
    "ggml-org/test-model-stories260K": "stories260K-F32.gguf",
    "ggml-org/test-model-stories260K-infill": "stories260K-infill-F32.gguf",
}
# On the Hub stand-in only: what test_router_download_model fetches, and the remote preset.
DOWNLOAD_REPO, DOWNLOAD_FILE = "ggml-org/test-model-router-download", "test-model-router-download-F16.gguf"
PRESET_REPO = "ggml-org/test-preset-ci"
PRESET_INI = """[tinygemma3-preset]
hf-repo = ggml-org/tinygemma3-GGUF:Q8_0

[stories260K-test]
hf-repo = ggml-org/test-model-stories260K:F32
"""


def link_into_cache(cache: Path, repo_id: str, rfile: str, src: Path) -> Path:
    """`src` as the file `rfile` of `repo_id` in an HF cache: a blob named by its sha256
    (a link to `src`, so a 250 MB model is not copied each run), the snapshot's relative
    link to it and `refs/main`, as huggingface_hub and llama.cpp write them."""
    digest = hashlib.sha256()
    with open(src, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    blob = repo / "blobs" / digest.hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.symlink_to(src.resolve())
    link = repo / "snapshots" / COMMIT / rfile
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return link


@pytest.fixture(scope="session", autouse=True)
def load_server_presets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Replaces the suite's download of every preset's model (see the module's docstring)."""
    gemma = Path(os.environ[GEMMA_ENV])
    files = tmp_path_factory.mktemp("models")
    cache = tmp_path_factory.mktemp("llama-cache")
    for repo_id, rfile in GEMMA_STANDIN.items():
        link_into_cache(cache, repo_id, rfile, gemma)
    for seed, (repo_id, rfile) in enumerate(TINY_STANDINS.items()):
        link_into_cache(cache, repo_id, rfile, write_tiny_model(files / rfile, name=Path(rfile).stem, seed=seed))
    with FakeHub() as hub:
        hub.add_file(DOWNLOAD_REPO, DOWNLOAD_FILE, write_tiny_model(files / DOWNLOAD_FILE, seed=7).read_bytes())
        hub.add_file(PRESET_REPO, "preset.ini", PRESET_INI.encode())
        saved = {k: os.environ.get(k) for k in ("LLAMA_CACHE", "HF_ENDPOINT")}
        os.environ.update(LLAMA_CACHE=str(cache), HF_ENDPOINT=hub.endpoint)  # read by ServerProcess.start
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get(AGAINST_ENV, "llama-router") != "llama-router":
        return
    for item in items:
        reason = KNOWN_GAPS.get(getattr(item, "originalname", item.name))
        if reason:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
