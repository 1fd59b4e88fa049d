"""Building a child's command line: whole-argument placeholders, no shell."""

from __future__ import annotations

import os

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


def test_llama_server_comes_from_path_or_the_installed_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    c = parse_config({"models": {"m": {"path": "x"}}})
    try:
        plan = build_launch(c, c.models["m"], 1)
    except SpawnError as e:
        assert "llama-server not found" in str(e)
    else:
        assert os.access(plan.argv[0], os.X_OK) and plan.native
