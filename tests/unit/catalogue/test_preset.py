"""llama.cpp's `--models-preset` INI files, read as llama.cpp reads them
(common/preset.cpp, tools/server/server-models.cpp), and imported into a catalogue."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.catalogue.config import ConfigError
from router.catalogue.importer import CatalogueWriteError
from router.catalogue.parse import load_config, parse_config
from router.catalogue.preset import Preset, PresetModel, import_preset, preset_catalogue, read_preset
from router.catalogue.server_args import ServerArgs

HELP = Path(__file__).parent / "fixtures" / "llama-server-help.txt"


@pytest.fixture(scope="module")
def table() -> ServerArgs:
    return ServerArgs.from_help(HELP.read_text())


@pytest.fixture()
def ini(tmp_path):
    def write(text: str, name: str = "preset-test.ini") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path
    return write


def model(preset: Preset, name: str) -> PresetModel:
    return next(m for m in preset.models if m.name == name)


def test_global_section_is_the_defaults_and_other_sections_are_models(ini, table):
    preset = read_preset(ini("version = 1\n[*]\nc = 8192\nn-gpu-layers = 8\n\n[a]\nmodel = /m/a.gguf\n"), table)
    assert preset.defaults == ("--ctx-size", "8192", "--n-gpu-layers", "8")
    assert [m.name for m in preset.models] == ["a"]
    assert model(preset, "a").path == "/m/a.gguf" and model(preset, "a").args == ()
    assert preset.report == ()


def test_keys_by_long_name_short_name_and_env_name(ini, table):
    preset = read_preset(ini("[a]\nc = 1\nngl = 2\nLLAMA_ARG_CACHE_RAM = 0\nchat-template = chatml\n"), table)
    assert model(preset, "a").args == ("--chat-template", "chatml", "--ctx-size", "1", "--cache-ram", "0",
                                       "--n-gpu-layers", "2")  # llama.cpp's order: by the option's first name


def test_a_key_given_twice_keeps_its_last_value(ini, table):
    assert model(read_preset(ini("[a]\nc = 1\nc = 2\n"), table), "a").args == ("--ctx-size", "2")


def test_two_keys_for_one_option_the_one_sorting_last_wins(ini, table):
    # llama.cpp applies a section's keys from a std::map: "c" < "ctx-size", whatever the file order.
    for text in ("[a]\nctx-size = 2\nc = 1\n", "[a]\nc = 1\nctx-size = 2\n", "[a]\nLLAMA_ARG_CTX_SIZE = 3\nc = 2\n"):
        preset = read_preset(ini(text), table)
        assert model(preset, "a").args == ("--ctx-size", "2"), text
        assert len(preset.report) == 1 and "the same option" in preset.report[0]
    report = read_preset(ini("[a]\nLLAMA_API_KEY = k1\napi-key = k2\n"), table).report
    assert report[0] == "[a] LLAMA_API_KEY: overridden by api-key, the same option (llama.cpp keeps the key that " \
        "sorts last)"
    assert report[1].startswith("[a] api-key: set by the router")


@pytest.mark.parametrize(("line", "args"), [
    ("jinja = true", ("--jinja",)),
    ("jinja = false", ("--no-jinja",)),
    ("jinja = on", ("--jinja",)),
    ("jinja = disabled", ("--no-jinja",)),
    ("no-jinja = true", ("--no-jinja",)),
    ("no-jinja = 0", ("--jinja",)),
    ("LLAMA_ARG_JINJA = 1", ("--jinja",)),
    ("LLAMA_ARG_NO_JINJA = 1", ("--no-jinja",)),
    ("kvo = off", ("--no-kv-offload",)),
    ("nkvo = true", ("--no-kv-offload",)),
    ("no-mmproj = true", ("--no-mmproj-auto",)),
    ("metrics = true", ("--metrics",)),
    ("metrics = false", ()),  # a flag without a negation, set false: left out
])
def test_flags_take_booleans_and_no_negations(ini, table, line, args):
    assert model(read_preset(ini(f"[a]\n{line}\n"), table), "a").args == args


def test_a_bad_boolean_names_the_section_and_key(ini, table):
    with pytest.raises(ConfigError, match=r"\[a\] jinja: expected a boolean .* got 'yes please'") as e:
        read_preset(ini("[a]\njinja = yes please\n"), table)
    assert e.value.source.endswith("preset-test.ini") and e.value.key == "[a] jinja"


def test_an_unknown_key_names_the_section_and_key(ini, table):
    with pytest.raises(ConfigError, match=r"\[m\] ctx-sise: unknown key"):
        read_preset(ini("[*]\nc = 1\n[m]\nctx-sise = 4\n"), table)
    with pytest.raises(ConfigError, match=r"\[m\] ctx_size: unknown key"):
        read_preset(ini("[m]\nctx_size = 4\n"), table)


def test_comments_blank_lines_and_inline_comments(ini, table):
    preset = read_preset(ini("; a comment\n# another\n\n[a]   ; trailing\nc = 4096   ; four k\n"
                             "chat-template = chat#ml\nalias = x;y\n\t\n"), table)
    a = model(preset, "a")
    assert a.args == ("--chat-template", "chat", "--ctx-size", "4096")  # a value ends at ; or #
    assert a.aliases == ("x",)


def test_values_are_taken_literally(ini, table):
    assert model(read_preset(ini('[a]\nchat-template = "chatml"\n'), table), "a").args == (
        "--chat-template", '"chatml"')  # llama.cpp has no quoting


def test_a_line_llama_cpp_cannot_read_is_an_error(ini, table):
    with pytest.raises(ConfigError, match=r"line 3: expected `\[section\]`"):
        read_preset(ini("[a]\nc = 1\n  ngl = 3\n"), table)  # no indentation in llama.cpp's grammar
    with pytest.raises(ConfigError, match="line 1"):
        read_preset(ini("-c = 1\n"), table)


def test_load_on_startup_stop_timeout_and_dedup(ini, table):
    preset = read_preset(ini("[*]\nstop-timeout = 30\n[a]\nmodel = /a.gguf\nload-on-startup = true\n"
                             "stop-timeout = 5\ndedup-cache-models = 1\n[b]\nmodel = /b.gguf\n"), table)
    a, b = model(preset, "a"), model(preset, "b")
    assert (a.load_on_startup, a.stop_timeout, a.dedup_cache_models) == (True, 5.0, True)
    assert (b.load_on_startup, b.stop_timeout, b.dedup_cache_models) == (False, 30.0, False)  # [*] cascades
    assert preset.dedup_cache_models and preset.defaults == ()


def test_preset_only_keys_in_the_global_section_apply_to_every_model(ini, table):
    preset = read_preset(ini("[*]\nload-on-startup = on\ndedup-cache-models = true\n[a]\n[b]\n"
                             "load-on-startup = false\n"), table)
    assert [m.load_on_startup for m in preset.models] == [True, False]
    assert all(m.dedup_cache_models for m in preset.models) and preset.dedup_cache_models


def test_bad_preset_only_values(ini, table):
    with pytest.raises(ConfigError, match=r"\[a\] stop-timeout: expected a number of seconds"):
        read_preset(ini("[a]\nstop-timeout = soon\n"), table)
    with pytest.raises(ConfigError, match=r"\[\*\] load-on-startup: expected a boolean"):
        read_preset(ini("[*]\nload-on-startup = maybe\n[a]\n"), table)


def test_alias_is_a_comma_separated_list(ini, table):
    a = model(read_preset(ini("[a]\nmodel = /a.gguf\nalias = one, two ,,one\n"), table), "a")
    assert a.aliases == ("one", "two") and a.args == ()
    assert model(read_preset(ini("[a]\na = x\n"), table), "a").aliases == ("x",)


def test_model_and_projector_paths_are_absolute_from_the_working_directory(ini, table, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = model(read_preset(ini("[a]\nm = ./models/a.gguf\nmm = proj.gguf\n"), table), "a")
    assert a.path == str(tmp_path / "models" / "a.gguf") and a.mmproj == str(tmp_path / "proj.gguf")
    assert a.args == ()


@pytest.mark.parametrize("key", ["hf-repo", "hf", "hfr", "LLAMA_ARG_HF_REPO"])
def test_hf_repo_by_any_name(ini, table, key):
    a = model(read_preset(ini(f"[a]\n{key} = ggml-org/gemma-3-270m-GGUF:Q8_0\n"), table), "a")
    assert a.hf_repo == "ggml-org/gemma-3-270m-GGUF:Q8_0" and a.path is None and a.args == ()


def test_the_draft_models_repo_is_an_argument(ini, table):
    a = model(read_preset(ini("[a]\nhf = u/r\nhf-repo-draft = u/draft\nhff = r-Q8_0.gguf\n"), table), "a")
    assert a.hf_repo == "u/r" and a.args == ("--hf-repo-draft", "u/draft", "--hf-file", "r-Q8_0.gguf")


def test_a_section_that_names_no_model_is_kept_for_the_caller(ini, table):
    a = model(read_preset(ini("[ggml-org/gemma-3-270m-GGUF:Q8_0]\nc = 2048\n"), table),
              "ggml-org/gemma-3-270m-GGUF:Q8_0")
    assert a.path is None and a.hf_repo is None and a.args == ("--ctx-size", "2048")


def test_section_tags_are_canonicalised_as_llama_cpp_does(ini, table):
    preset = read_preset(ini("[u/r-GGUF:q8_0]\n[u/s-GGUF:UD-Q4_K_XL]\n[*]\n[plain]\n"), table)
    assert [m.name for m in preset.models] == ["u/r-GGUF:Q8_0", "u/s-GGUF:Q4_K_XL", "plain"]


def test_router_controlled_keys_are_dropped_with_a_report_line(ini, table):
    preset = read_preset(ini("[*]\nhost = 0.0.0.0\nc = 1\n[a]\nmodel = /a.gguf\nport = 9000\napi-key = sekrit123\n"
                             "models-max = 4\nlog-colors = on\nssl-key-file = /k\n"
                             "no-models-autoload = true\nlog-file = /tmp/a.log\n"), table)
    assert preset.defaults == ("--ctx-size", "1")
    assert model(preset, "a").args == ("--log-file", "/tmp/a.log")  # llama.cpp lets a preset set it
    lines = preset.report
    assert "[*] host: set by the router (children listen on 127.0.0.1)" in lines
    for key in ("port", "api-key", "models-max", "log-colors", "ssl-key-file", "no-models-autoload"):
        assert any(line.startswith(f"[a] {key}: set by the router") for line in lines), key
    assert not any("sekrit" in line for line in lines)


def test_model_keys_in_the_global_section_are_dropped(ini, table):
    preset = read_preset(ini("[*]\nmodel = /one.gguf\nalias = x\nc = 1\n[a]\n"), table)
    assert preset.defaults == ("--ctx-size", "1") and model(preset, "a").path is None
    assert "[*] model: names one model, not a default for every model; not used" in preset.report
    assert any(line.startswith("[*] alias:") for line in preset.report)


def test_two_value_options_cannot_be_preset(ini, table):
    with pytest.raises(ConfigError, match="control-vector-layer-range: takes two values"):
        read_preset(ini("[a]\ncontrol-vector-layer-range = 1 5\n"), table)


def test_keys_before_any_section_make_a_model_named_default(ini, table):
    preset = read_preset(ini("c = 1\n[a]\n"), table)
    assert [m.name for m in preset.models] == ["default", "a"]
    assert model(preset, "default").args == ("--ctx-size", "1")
    assert any(line.startswith("[default]:") for line in preset.report)
    assert [m.name for m in read_preset(ini("version = 1\n[a]\n"), table).models] == ["a"]


def test_a_section_given_again_starts_over(ini, table):
    preset = read_preset(ini("[a]\nc = 1\njinja = true\n[b]\n[a]\nngl = 2\n"), table)
    assert model(preset, "a").args == ("--n-gpu-layers", "2")
    assert any("[a]: the section appears again" in line for line in preset.report)


def test_crlf_line_endings(ini, table):
    assert model(read_preset(ini("[a]\r\nc = 1\r\n"), table), "a").args == ("--ctx-size", "1")


def test_an_unreadable_file_is_a_config_error(tmp_path, table):
    with pytest.raises(ConfigError, match="cannot read"):
        read_preset(tmp_path / "missing.ini", table)


# ------------------------------------------------------------------ the catalogue

EXAMPLE = """\
version = 1
[*]
c = 8192
n-gpu-layers = 8
stop-timeout = 15

[ggml-org/gemma-3-270m-GGUF:Q8_0]
chat-template = chatml
jinja = true
load-on-startup = true

[custom]
model = /models/custom-Q4_K_M.gguf
mmproj = /models/mmproj.gguf
alias = custom-alias, custom
c = 4096

[from-hf]
hf-repo = ggml-org/SmolLM2-135M-GGUF:Q8_0
stop-timeout = 3

[somewhere-else]
c = 1
"""


def test_the_catalogue_has_the_same_models(ini, table):
    catalogue = preset_catalogue(read_preset(ini(EXAMPLE), table))
    serve = ["--alias", "$name", "--host", "$host", "--port", "$port"]
    defaults = ["--ctx-size", "8192", "--n-gpu-layers", "8"]
    assert catalogue == {
        "router": {"stop_timeout": 15.0, "preload": ["ggml-org/gemma-3-270m-GGUF:Q8_0"]},
        "spawn": {"args": defaults},
        "models": {
            "ggml-org/gemma-3-270m-GGUF:Q8_0": {
                "spawn": {"command": ["llama-server", "-hf", "ggml-org/gemma-3-270m-GGUF:Q8_0", *serve],
                          "args": defaults},
                "args": ["--chat-template", "chatml", "--jinja"]},
            "custom": {"path": "/models/custom-Q4_K_M.gguf", "aliases": ["custom-alias"],
                       "mmproj": "/models/mmproj.gguf", "args": ["--ctx-size", "4096"]},
            "from-hf": {"spawn": {"command": ["llama-server", "-hf", "ggml-org/SmolLM2-135M-GGUF:Q8_0", *serve],
                                  "args": defaults}},
        },
    }
    config = parse_config(catalogue, "<preset>")
    assert config.spawn.args == tuple(defaults) and config.router.preload == ("ggml-org/gemma-3-270m-GGUF:Q8_0",)
    assert config.resolve("custom-alias").name == "custom"
    assert config.models["from-hf"].spawn.args == tuple(defaults)


def test_the_catalogue_says_what_it_could_not_carry_over(ini, table, tmp_path):
    _, report = import_preset(ini(EXAMPLE), tmp_path / "config.yaml", table)
    assert any(line.startswith("[somewhere-else]: not imported") for line in report)
    assert any(line.startswith("[ggml-org/gemma-3-270m-GGUF:Q8_0]: no `model` or `hf-repo`: served with `-hf")
               for line in report)
    assert "[from-hf] stop-timeout: the catalogue has one stop timeout for every model; router.stop_timeout " \
           "is the longest, 15" in report


def test_a_name_the_catalogue_cannot_hold_is_a_config_error(ini, table):
    with pytest.raises(ConfigError, match=r"\[my model\]: expected a model name"):
        preset_catalogue(read_preset(ini("[my model]\nmodel = /a.gguf\n"), table))
    with pytest.raises(ConfigError, match=r"\[b\]: name or alias 'a' is already used by \[a\]"):
        preset_catalogue(read_preset(ini("[a]\nmodel = /a.gguf\n[b]\nmodel = /b.gguf\nalias = a\n"), table))


def test_import_writes_a_catalogue_the_router_reads(ini, table, tmp_path):
    src, dest = ini(EXAMPLE), tmp_path / "out" / "config.yaml"
    catalogue, _ = import_preset(src, dest, table)
    text = dest.read_text()
    assert f"# Imported from llama.cpp model presets: {src}" in text
    assert "args: [--ctx-size, '8192', --n-gpu-layers, '8']" in text
    config = load_config(dest)
    assert set(config.models) == set(catalogue["models"]) and config.router.stop_timeout == 15.0
    assert not list(dest.parent.glob(".*.tmp"))  # the temporary file of the atomic write is gone


def test_import_refuses_a_catalogue_that_has_models(ini, table, tmp_path):
    dest = tmp_path / "config.yaml"
    dest.write_text("models:\n  mine:\n    path: /mine.gguf\n")
    with pytest.raises(CatalogueWriteError, match="already has 1 model"):
        import_preset(ini(EXAMPLE), dest, table)
    assert dest.read_text() == "models:\n  mine:\n    path: /mine.gguf\n"


def test_import_keeps_the_settings_of_a_catalogue_without_models(ini, table, tmp_path):
    dest = tmp_path / "config.yaml"
    dest.write_text("# my settings\nrouter:\n  port: 9000  # mine\nmodels: {}\n")
    import_preset(ini(EXAMPLE), dest, table)
    config = load_config(dest)
    assert config.router.port == 9000 and config.router.stop_timeout == 15.0 and "custom" in config.models
    assert "# mine" in dest.read_text()


def test_import_of_a_bad_preset_writes_nothing(ini, table, tmp_path):
    dest = tmp_path / "config.yaml"
    with pytest.raises(ConfigError):
        import_preset(ini("[a]\nbogus = 1\n"), dest, table)
    assert not dest.exists()
