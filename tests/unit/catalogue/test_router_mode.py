"""llama.cpp's router-mode command line: what is llama-router's, what goes to
every child, what is refused (router/catalogue/router_mode.py, router/cli.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.catalogue.config import Config, ConfigError, ModelSpec
from router.catalogue.router_mode import read_api_keys, split_command_line
from router.catalogue.server_args import ServerArgs
from router.cli import build_parser, load_from_args

HELP = Path(__file__).parent / "fixtures" / "llama-server-help.txt"


@pytest.fixture(scope="module")
def table() -> ServerArgs:
    return ServerArgs.from_help(HELP.read_text())


def split(argv, table):
    parser = build_parser()
    own = {o for a in parser._actions for o in a.option_strings}
    takes = {o for a in parser._actions if a.nargs != 0 for o in a.option_strings}
    return split_command_line(argv, own, takes, table)


def test_llama_server_arguments_go_to_every_child_in_order(table):
    mine, child = split(["--models-dir", "/m", "-ngl", "99", "-c", "8192", "--jinja", "--port=9000",
                         "--temp", "-0.5", "--no-models-autoload"], table)
    assert mine == ["--models-dir", "/m", "--port=9000", "--no-models-autoload"]
    assert child == ["-ngl", "99", "-c", "8192", "--jinja", "--temp", "-0.5"]


def test_dash_c_is_context_size_unless_it_names_a_catalogue_file(tmp_path, table):
    cfg = tmp_path / "router.yaml"
    cfg.write_text("models: {}\n")
    assert split(["-c", str(cfg)], table) == (["--config", str(cfg)], [])
    assert split(["-c", "4096"], table) == ([], ["-c", "4096"])
    with pytest.raises(ConfigError, match="context size and expects a number"):
        split(["-c", str(tmp_path / "missing.yaml")], table)


@pytest.mark.parametrize("argv, message", [
    (["-m", "x.gguf"], "names one model"),
    (["--model", "x.gguf"], "names one model"),
    (["--alias", "x"], "names one model"),
    (["--mmproj", "p.gguf"], "names one model"),
    (["--bogus-flag"], "neither a llama-router option nor a llama-server argument"),
    (["stray"], "unexpected argument"),
    (["-ngl"], "expects a value"),
])
def test_what_a_router_cannot_take_is_refused_by_name(argv, message, table):
    with pytest.raises(ConfigError, match=message):
        split(argv, table)


def test_without_llama_servers_table_a_value_follows_its_flag():
    assert split(["-ngl", "99", "--jinja", "--port", "1"], None) == (["--port", "1"], ["-ngl", "99", "--jinja"])


def test_api_keys_from_a_comma_list_repeats_and_a_file(tmp_path):
    f = tmp_path / "keys"
    f.write_text("# team keys\nkey-from-file-1\n\n  key-from-file-2  \n")
    assert read_api_keys(["k-one-1234,k-two-1234", "k-one-1234"], str(f)) == (
        "k-one-1234", "k-two-1234", "key-from-file-1", "key-from-file-2")
    with pytest.raises(ConfigError, match="cannot read"):
        read_api_keys([], str(tmp_path / "nope"))


def test_router_mode_flags_set_the_catalogue(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("router:\n  api_keys: [file-key-123]\nmodels:\n  m: {path: /x.gguf}\n")
    args = build_parser().parse_args(["--config", str(cfg), "--api-key", "cli-key-123", "--no-models-autoload",
                                      "--sleep-idle-seconds", "300"])
    args.child_args = ("-ngl", "99")
    c = load_from_args(args)
    assert c.router.api_keys == ("file-key-123", "cli-key-123")
    assert c.router.models_autoload is False and c.router.ttl == 300
    assert c.cli_args == ("-ngl", "99")
    args = build_parser().parse_args(["--config", str(cfg), "--api-key", "short"])
    with pytest.raises(ConfigError, match="at least 8"):
        load_from_args(args)


def test_child_arguments_layer_defaults_model_command_line(table, monkeypatch):
    """The launch plan: spawn defaults (a preset's [*]) < the model's args < the command
    line, option by option under any of its names (llama.cpp's precedence)."""
    from router.backend import launch

    monkeypatch.setattr("router.catalogue.server_args.server_args", lambda binary="": table)
    config = Config(cli_args=("--temp", "0.9", "-ngl", "12"))
    spec = ModelSpec(name="m", path="/m.gguf", args=("--ctx-size", "640", "--temp", "0.1"))
    argv = launch.child_args(config, ("-c", "768", "-n", "7"), spec.args, "/bin/llama-server")
    assert argv == ["--ctx-size", "640", "-n", "7", "--temp", "0.9", "-ngl", "12"]
    assert launch.child_args(config, ("-c", "768"), spec.args, None) == ["-c", "768", "--ctx-size", "640",
                                                                         "--temp", "0.1"]


def test_a_preset_over_the_served_catalogue(tmp_path, table):
    """llama.cpp's rules: a section named like a model adds arguments to it; a section
    with `hf-repo` of a cached model serves that file (and, with dedup-cache-models,
    hides the cache entry); load-on-startup becomes preload; [*] becomes spawn.args."""
    from router.catalogue.preset import read_preset
    from router.catalogue.router_mode import apply_preset

    cached = tmp_path / "Tiny-Q8_0.gguf"
    cached.write_bytes(b"GGUF")
    served = Config(models={
        "acme/Tiny-GGUF:Q8_0": ModelSpec(name="acme/Tiny-GGUF:Q8_0", path=str(cached), state="auto",
                                         aliases=("acme-tiny-q8_0",)),
        "mine": ModelSpec(name="mine", path="/m.gguf", args=("-c", "512", "--jinja")),
    })
    ini = tmp_path / "p.ini"
    ini.write_text("""[*]
c = 4096

[mine]
ctx-size = 1024
load-on-startup = true

[tiny-chat]
hf-repo = acme/Tiny-GGUF:Q8_0
dedup-cache-models = true
alias = tc
n-gpu-layers = 3

[from-the-hub]
hf-repo = other/Remote-GGUF:Q4_K_M
""")
    config = apply_preset(served, read_preset(ini, table), str(ini), table)
    mine = config.models["mine"]
    assert mine.args == ("--ctx-size", "1024", "--jinja") and mine.state == "manual"
    chat = config.models["tiny-chat"]
    assert chat.path == str(cached) and chat.aliases == ("tc",) and "--n-gpu-layers" in chat.args
    assert config.models["acme/Tiny-GGUF:Q8_0"].unlisted  # deduplicated: hidden, still routable
    hub = config.models["from-the-hub"]
    assert hub.path is None and hub.spawn is not None and "other/Remote-GGUF:Q4_K_M" in hub.spawn.command
    assert config.router.preload == ("mine",)
    assert config.spawn.args == ("--ctx-size", "4096")
    bad = tmp_path / "bad.ini"
    bad.write_text("[nowhere]\nc = 10\n")
    with pytest.raises(ConfigError, match=r"\[nowhere\].*is not a model the router knows"):
        apply_preset(served, read_preset(bad, table), str(bad), table)
