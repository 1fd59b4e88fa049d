"""Saved KV-cache files: what makes a file fit a child, safe names, the disk
budget, and the arguments spawn adds for persistence. No processes."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from router.backend.launch import build_launch, ensure_slot_save_dir
from router.backend.slotfiles import enforce_budget, fingerprint, model_files, model_prefix, slot_file_name
from router.catalogue.config import ConfigError
from router.catalogue.parse import parse_config
from router.catalogue.sources import gguf_meta
from tests.support.tinygguf import write_tiny_model

ENV = {"PATH": "/usr/bin"}


def argv(model: Path, *extra: str, port: str = "50001") -> list[str]:
    return ["/bin/llama-server", "--model", str(model), "--host", "127.0.0.1", "--port", port,
            "--alias", "m", "--ctx-size", "4096", "-np", "1", *extra]


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + bytes(64))
    return path


def test_fingerprint_ignores_what_does_not_shape_the_cache(model):
    base = fingerprint(argv(model), ENV, "b1")
    assert fingerprint(argv(model, port="50999"), ENV, "b1") == base
    assert fingerprint(argv(model, "--temp", "1.2", "--threads", "2", "--api-key", "secret"), ENV, "b1") == base
    assert fingerprint(argv(model, "--slot-save-path", "/elsewhere"), {**ENV, "LLAMA_ARG_PORT": "1"}, "b1") == base


@pytest.mark.parametrize("change", [
    ("--ctx-size", "8192"), ("-ctk", "q8_0"), ("--cache-type-v", "q4_0"), ("-np", "4"),
    ("--swa-full",), ("--rope-freq-base", "20000"),
])
def test_fingerprint_changes_with_context_arguments(model, change):
    assert fingerprint(argv(model, *change), ENV, "b1") != fingerprint(argv(model), ENV, "b1")


def test_fingerprint_changes_with_the_model_file_the_build_and_llama_env(model):
    base = fingerprint(argv(model), ENV, "b1")
    assert fingerprint(argv(model), ENV, "b2") != base
    assert fingerprint(argv(model), {**ENV, "LLAMA_ARG_CTX_SIZE": "8192"}, "b1") != base
    st = model.stat()
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert fingerprint(argv(model), ENV, "b1") != base
    model.write_bytes(b"GGUF" + bytes(65))
    assert fingerprint(argv(model), ENV, "b1") != base


@pytest.mark.parametrize("name", ["a:b", "a_b", "../../etc/passwd", "名前/モデル", "x" * 300, ".hidden", "a b\n"])
def test_file_names_are_safe_for_any_model_name(tmp_path, name):
    fname = slot_file_name(name, "0123456789abcdef", 3)
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[0-9a-f]{16}\.slot3\.bin", fname)
    assert len(fname) < 128
    (tmp_path / fname).write_bytes(b"x")
    assert [f.slot for f in model_files(tmp_path, name)] == [3]


def test_similar_names_never_share_files():
    assert model_prefix("a:b") != model_prefix("a_b") != model_prefix("a-b")


def test_disk_budget_deletes_the_oldest_files_first_and_only_ours(tmp_path):
    names = [slot_file_name(f"m{i}", "0" * 16, 0) for i in range(4)]
    for age, name in enumerate(names):  # names[0] is the newest, names[3] the oldest
        p = tmp_path / name
        p.write_bytes(bytes(1000))
        os.utime(p, (1_000_000 - age * 10, 1_000_000 - age * 10))
    mine = tmp_path / "saved-by-hand.bin"
    mine.write_bytes(bytes(5000))
    removed = enforce_budget(tmp_path, 2500)
    assert sorted(p.name for p in removed) == sorted(names[2:])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*names[:2], mine.name])


def test_kv_settings_are_read_and_checked():
    r = parse_config({"router": {"kv_persistence": False, "slot_save_path": "~/kv",
                                 "slot_save_max_bytes": 1000, "slot_save_timeout": 5}}).router
    assert (r.kv_persistence, r.slot_save_max_bytes, r.slot_save_timeout) == (False, 1000, 5.0)
    assert r.slot_save_path == os.path.expanduser("~/kv")
    assert parse_config({}).router.kv_persistence is None  # auto: on for llama-server
    with pytest.raises(ConfigError, match=r"router\.kv_persistence: expected true or false"):
        parse_config({"router": {"kv_persistence": "yes"}})
    with pytest.raises(ConfigError, match=r"router\.slot_save_max_bytes: expected an integer"):
        parse_config({"router": {"slot_save_max_bytes": 1.5}})


@pytest.fixture
def fake_llama_server(tmp_path) -> Path:
    """An executable named llama-server: spawn treats it as one; it is never run."""
    path = tmp_path / "bin" / "llama-server"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def launch(tmp_path, program, model_path, router=None, args=()):
    c = parse_config({"router": {"slot_save_path": str(tmp_path / "slots"), **(router or {})},
                      "spawn": {"command": [str(program), "--model", "$path", "--port", "$port"]},
                      "models": {"m": {"path": str(model_path), "args": list(args)}}})
    ensure_slot_save_dir(c)  # what KV persistence does when the router starts
    return build_launch(c, c.models["m"], 50001, meta_of=gguf_meta).argv


def test_llama_server_children_get_a_slot_folder_and_swa_full_when_the_model_needs_it(
        tmp_path, fake_llama_server, caplog):
    swa = write_tiny_model(tmp_path / "swa.gguf", sliding_window=512)
    plain = write_tiny_model(tmp_path / "plain.gguf")
    with caplog.at_level("INFO", logger="router.spawn"):
        a = launch(tmp_path, fake_llama_server, swa)
    # what the router adds after the user's arguments: the KV flags, then --metrics (GET /metrics)
    assert a[-4:] == ("--slot-save-path", str(tmp_path / "slots"), "--swa-full", "--metrics")
    assert (tmp_path / "slots").is_dir()
    assert "adding --swa-full" in caplog.text and "sliding-window" in caplog.text
    b = launch(tmp_path, fake_llama_server, plain)
    assert b[-3:] == ("--slot-save-path", str(tmp_path / "slots"), "--metrics") and "--swa-full" not in b


def test_the_users_own_slot_arguments_win_and_off_means_off(tmp_path, fake_llama_server):
    swa = write_tiny_model(tmp_path / "swa.gguf", sliding_window=512)
    own = launch(tmp_path, fake_llama_server, swa, args=["--slot-save-path", "/mine", "--swa-full"])
    assert own.count("--slot-save-path") == 1 and own.count("--swa-full") == 1
    off = launch(tmp_path, fake_llama_server, swa, router={"kv_persistence": False})
    assert "--slot-save-path" not in off and "--swa-full" not in off
    other = launch(tmp_path, "/bin/echo", swa)  # not llama-server: it has no slots
    assert "--slot-save-path" not in other
