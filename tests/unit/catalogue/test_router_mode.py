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


def _cache_entries(tmp_path, *files: tuple[str, str]) -> dict[str, ModelSpec]:
    """Models of a Hugging Face cache as the scan names them (`user/repo:TAG`), files laid out
    under `models--user--repo/snapshots/<commit>/`."""
    models = {}
    for repo, rfile in files:
        path = tmp_path / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / ("c" * 40) / rfile
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"GGUF")
        name = f"{repo}:{rfile.rsplit('-', 1)[-1].removesuffix('.gguf').upper()}"
        models[name] = ModelSpec(name=name, path=str(path), state="auto")
    return models


def _listed(config: Config) -> set[str]:
    return {n for n, s in config.models.items() if not s.unlisted}


def test_dedup_cache_models_hides_the_cache_entries_behind_hf_repo_and_spec_draft_hf(tmp_path, table):
    """llama.cpp's test_router_dedup_cache_models: a section with `dedup-cache-models` (its
    own or `[*]`'s) hides the cache models its `hf-repo` and `spec-draft-hf` resolve to (a
    repo without a quant resolves as llama.cpp does), serves the section from that file,
    leaves other cache models listed; without the flag nothing is hidden."""
    from router.catalogue.preset import read_preset
    from router.catalogue.router_mode import apply_preset

    served = Config(models=_cache_entries(tmp_path, ("ggml-org/stories", "stories-F32.gguf"),
                                          ("ggml-org/stories-infill", "stories-infill-F32.gguf"),
                                          ("ggml-org/tinygemma3-GGUF", "tinygemma3-Q8_0.gguf")))
    section = ("[model-dedup]\nhf-repo = ggml-org/stories\n"
               "spec-draft-hf = ggml-org/stories-infill\n")
    behind = {"ggml-org/stories:F32", "ggml-org/stories-infill:F32"}
    everything = {"model-dedup", "ggml-org/tinygemma3-GGUF:Q8_0", *behind}
    ini = tmp_path / "p.ini"
    for text, hidden in ((section + "dedup-cache-models = 1\n", behind), (section, set()),
                         ("[*]\ndedup-cache-models = 1\n\n" + section, behind)):
        ini.write_text(text)
        config = apply_preset(served, read_preset(ini, table), str(ini), table)
        assert _listed(config) == everything - hidden, text
        assert config.resolve("ggml-org/stories:F32") is not None  # hidden from the list, still usable by id
        assert config.models["model-dedup"].path == served.models["ggml-org/stories:F32"].path
        assert config.models["model-dedup"].spawn is None  # served from the cache, not downloaded again


@pytest.mark.parametrize("files, ref, chosen", [
    (["m-F16.gguf", "m-Q8_0.gguf", "m-Q4_K_M.gguf"], "acme/m", "m-Q4_K_M.gguf"),  # Q4_K_M first
    (["m-F16.gguf", "m-Q8_0.gguf"], "acme/m", "m-Q8_0.gguf"),  # then Q8_0
    (["m-F16.gguf", "m-BF16.gguf"], "acme/m", "m-BF16.gguf"),  # then the first file
    (["m-F16.gguf", "m-Q8_0.gguf"], "acme/m:f16", "m-F16.gguf"),  # a tag, any case
    (["m-F16.gguf"], "acme/m:Q2_K", None),  # a tag the cache lacks: nothing
])
def test_a_repo_reference_resolves_to_the_cache_file_llamacpp_picks(tmp_path, table, files, ref, chosen):
    from router.catalogue.preset import read_preset
    from router.catalogue.router_mode import apply_preset

    served = Config(models=_cache_entries(tmp_path, *(("acme/m", f) for f in files)))
    ini = tmp_path / "p.ini"
    ini.write_text(f"[x]\nhf-repo = {ref}\ndedup-cache-models = on\n")
    config = apply_preset(served, read_preset(ini, table), str(ini), table)
    hidden = {n for n, s in config.models.items() if s.unlisted}
    if chosen is None:
        assert hidden == set() and config.models["x"].spawn is not None  # llama-server downloads it
    else:
        assert config.models["x"].path.endswith("/" + chosen)
        assert hidden == {n for n, s in served.models.items() if s.path.endswith("/" + chosen)}
