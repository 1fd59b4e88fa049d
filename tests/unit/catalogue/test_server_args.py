"""llama-server's argument table, read from its `--help` (the fixture is the real
binary's output), and command lines merged with llama.cpp's router precedence."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from router.catalogue import server_args as sa
from router.catalogue.server_args import ServerArgs, ServerArgsError, ServerOption, server_args

HELP = (Path(__file__).parent / "fixtures" / "llama-server-help.txt").read_text()


@pytest.fixture(scope="module")
def table() -> ServerArgs:
    return ServerArgs.from_help(HELP)


def opt(table: ServerArgs, name: str) -> ServerOption:
    found = table.option(name)
    assert found is not None, name
    return found


# ------------------------------------------------------------------ reading the help


def test_every_option_of_the_help_is_read(table):
    headers = [line for line in HELP.splitlines() if line.startswith("-") and not line.startswith("-----")]
    assert len(table) == len(headers) > 200
    assert all(o.names and all(n.startswith("-") and " " not in n for n in o.names) for o in table.options)


def test_short_and_long_names_value_and_env(table):
    ctx = opt(table, "--ctx-size")
    assert ctx.names == ("-c", "--ctx-size")
    assert ctx.key == "--ctx-size"
    assert ctx.takes_value and ctx.arity == 1
    assert ctx.env == "LLAMA_ARG_CTX_SIZE"
    assert ctx.negations == ()
    ngl = opt(table, "-ngl")
    assert ngl.names == ("-ngl", "--gpu-layers", "--n-gpu-layers") and ngl.key == "--n-gpu-layers"
    assert opt(table, "-hf").names == ("-hf", "-hfr", "--hf-repo")


def test_env_names_that_are_not_llama_arg(table):
    assert opt(table, "--api-key").env == "LLAMA_API_KEY"
    assert opt(table, "-mmdev").env == "MTMD_BACKEND_DEVICE"
    assert opt(table, "--lora").env is None


def test_value_hints_with_spaces_and_brackets_still_take_a_value(table):
    assert opt(table, "-ot").takes_value  # <tensor name pattern>=<buffer type>,...
    assert opt(table, "-fa").takes_value  # [on|off|auto]
    assert opt(table, "--spec-type").takes_value
    assert opt(table, "--control-vector-layer-range").arity == 2  # START END


def test_flags_and_their_negations(table):
    assert opt(table, "--jinja") == ServerOption(("--jinja",), False, "LLAMA_ARG_JINJA", ("--no-jinja",))
    kvo = opt(table, "--kv-offload")
    assert (kvo.names, kvo.negations) == (("-kvo", "--kv-offload"), ("-nkvo", "--no-kv-offload"))
    assert opt(table, "--repack").negations == ("-nr", "--no-repack")
    assert opt(table, "--mmproj-auto").negations == ("--no-mmproj", "--no-mmproj-auto")
    ui = opt(table, "--ui")
    assert (ui.names, ui.negations) == (("--ui", "--webui"), ("--no-ui", "--no-webui"))
    assert opt(table, "-ag").negations == ("-no-ag", "--no-agent")
    assert opt(table, "--metrics").negations == ()
    assert not opt(table, "--jinja").takes_value and opt(table, "--jinja").arity == 0


def test_a_flag_named_no_something_without_a_twin_is_a_flag_of_its_own(table):
    host = opt(table, "--no-host")
    assert host.names == ("--no-host",) and host.negations == () and host.key == "--no-host"


def test_an_older_build_with_mmap_and_no_mmap():
    old = ServerArgs.from_help(
        "----- common params -----\n\n"
        "-c,    --ctx-size N                     size of the prompt context\n"
        "                                        (env: LLAMA_ARG_CTX_SIZE)\n"
        "--mmap, --no-mmap                       whether to memory-map model (default: enabled)\n"
        "                                        (env: LLAMA_ARG_MMAP)\n"
        "-dio,  --direct-io, -ndio, --no-direct-io\n"
        "                                        use DirectIO if available\n"
        "                                        (env: LLAMA_ARG_DIO)\n")
    mmap = old.option("no-mmap")
    assert mmap == ServerOption(("--mmap",), False, "LLAMA_ARG_MMAP", ("--no-mmap",))
    assert old.option("LLAMA_ARG_NO_MMAP") is mmap and mmap.negates("no-mmap") and mmap.negates("LLAMA_ARG_NO_MMAP")
    dio = old.option("-ndio")
    assert dio is not None and dio.names == ("-dio", "--direct-io") and dio.env == "LLAMA_ARG_DIO"


def test_every_spelling_resolves_to_the_option(table):
    ctx = opt(table, "--ctx-size")
    for name in ("-c", "--ctx-size", "ctx-size", "c", "LLAMA_ARG_CTX_SIZE", "--ctx_size"):
        assert table.option(name) is ctx, name
    jinja = opt(table, "--jinja")
    for name in ("jinja", "no-jinja", "--no-jinja", "LLAMA_ARG_JINJA", "LLAMA_ARG_NO_JINJA"):
        assert table.option(name) is jinja, name
    assert table.option("--no-such-thing") is None
    assert table.option("ctx_size") is None  # preset keys are exact in llama.cpp


def test_negates_tells_a_negation_spelling(table):
    kvo = opt(table, "-kvo")
    assert kvo.negates("-nkvo") and kvo.negates("nkvo") and kvo.negates("no-kv-offload")
    assert kvo.negates("LLAMA_ARG_NO_KV_OFFLOAD")
    assert not kvo.negates("kv-offload") and not kvo.negates("LLAMA_ARG_KV_OFFLOAD")


def test_repeatable_options_are_the_ones_whose_values_accumulate(table):
    repeatable = {o.key for o in table.options if o.repeatable}
    assert {"--lora", "--lora-scaled", "--override-kv", "--control-vector", "--control-vector-scaled",
            "--override-tensor", "--reverse-prompt", "--logit-bias", "--alias", "--api-key"} <= repeatable
    assert not {"--ctx-size", "--model", "--host", "--jinja", "--chat-template"} & repeatable


# ------------------------------------------------------------------ split and merge


def test_split_cuts_argv_into_options_and_values(table):
    parts = table.split(["-c", "4096", "--jinja", "--weird", "x", "--other", "--temp", "-1",
                         "--control-vector-layer-range", "1", "5", "--lonely", "-7", "stray"])
    assert [(o.key if o else None, toks) for o, toks in parts] == [
        ("--ctx-size", ["-c", "4096"]),
        ("--jinja", ["--jinja"]),
        (None, ["--weird", "x"]),
        (None, ["--other"]),
        ("--temperature", ["--temp", "-1"]),
        ("--control-vector-layer-range", ["--control-vector-layer-range", "1", "5"]),
        (None, ["--lonely", "-7"]),
        (None, ["stray"]),
    ]


def test_a_known_option_takes_its_value_even_when_it_looks_like_a_flag(table):
    assert table.split(["--chat-template-kwargs", "-x", "--jinja"])[0][1] == ["--chat-template-kwargs", "-x"]


def test_later_layers_win_option_by_option(table):
    star = ["-c", "8192", "-ngl", "8", "--temp", "0.5"]
    model = ["--ctx-size", "4096", "--jinja"]
    cli = ["--n-gpu-layers", "99"]
    assert table.merge(star, model, cli) == ["--ctx-size", "4096", "--n-gpu-layers", "99", "--temp", "0.5", "--jinja"]


def test_a_flag_and_its_negation_are_one_option(table):
    assert table.merge(["--jinja", "-c", "1"], ["--no-jinja"]) == ["--no-jinja", "-c", "1"]
    assert table.merge(["-nkvo"], ["--kv-offload"]) == ["--kv-offload"]
    assert table.merge(["--no-mmproj"], ["--mmproj-auto"], []) == ["--mmproj-auto"]


def test_a_repeated_option_within_one_layer_keeps_its_last_value(table):
    assert table.merge(["-c", "1", "--jinja", "--ctx-size", "2"]) == ["--ctx-size", "2", "--jinja"]


def test_repeatable_options_keep_every_occurrence_of_the_winning_layer(table):
    star = ["--lora", "a.gguf", "-c", "1", "--lora", "b.gguf"]
    assert table.merge(star) == ["--lora", "a.gguf", "--lora", "b.gguf", "-c", "1"]
    assert table.merge(star, ["-c", "2"]) == ["--lora", "a.gguf", "--lora", "b.gguf", "-c", "2"]
    assert table.merge(star, ["--lora", "c.gguf"]) == ["--lora", "c.gguf", "-c", "1"]
    kv = ["--override-kv", "a=int:1", "--override-kv", "b=int:2"]
    assert table.merge([], kv) == kv


def test_unknown_flags_and_stray_values_are_kept(table):
    merged = table.merge(["--future-flag", "1", "stray"], ["--future-flag", "2", "--new-switch"])
    assert merged == ["--future-flag", "2", "stray", "--new-switch"]


def test_merge_of_nothing_is_nothing(table):
    assert table.merge() == [] and table.merge([], []) == []


# ------------------------------------------------------------------ reading the binary


class FakeRun:
    """Stands in for subprocess.run: unit tests start no process."""

    def __init__(self, stdout: str = HELP, returncode: int = 0, stderr: str = "", error: Exception | None = None):
        self.stdout, self.returncode, self.stderr, self.error = stdout, returncode, stderr, error
        self.calls: list[tuple[list[str], float]] = []

    def __call__(self, argv, **kw):
        self.calls.append((argv, kw["timeout"]))
        if self.error is not None:
            raise self.error
        return subprocess.CompletedProcess(argv, self.returncode, self.stdout, self.stderr)


@pytest.fixture()
def binary(tmp_path: Path) -> Path:
    sa._read_table.cache_clear()
    path = tmp_path / "llama-server"
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    yield path
    sa._read_table.cache_clear()


def test_the_help_is_read_once_per_binary_file(binary, monkeypatch):
    run = FakeRun()
    monkeypatch.setattr(sa.subprocess, "run", run)
    first = server_args(str(binary))
    assert server_args(str(binary)) is first
    assert run.calls == [([str(binary), "--help"], 10.0)]
    assert first.option("-c") is not None
    binary.write_text("#!/bin/sh\n# rebuilt\n")  # a new size (and mtime): read again
    assert server_args(str(binary)) is not first
    assert len(run.calls) == 2


def test_a_bare_name_is_looked_up_on_path(binary, monkeypatch):
    monkeypatch.setattr(sa.subprocess, "run", FakeRun())
    monkeypatch.setenv("PATH", str(binary.parent))
    assert server_args("llama-server").option("--jinja") is not None


@pytest.mark.parametrize(("run", "expected"), [
    (FakeRun(returncode=1, stderr="boom\nerror: bad things\n"), "exited with code 1: error: bad things"),
    (FakeRun(error=subprocess.TimeoutExpired(["x"], 10)), "no answer within 10 s"),
    (FakeRun(error=PermissionError(13, "Permission denied")), "cannot run: Permission denied"),
    (FakeRun(stdout="usage: something else\n"), "no llama-server argument table"),
])
def test_a_binary_that_cannot_answer_is_a_clear_error(binary, monkeypatch, run, expected):
    monkeypatch.setattr(sa.subprocess, "run", run)
    with pytest.raises(ServerArgsError, match=expected) as e:
        server_args(str(binary))
    assert str(binary) in str(e.value)


def test_a_missing_binary_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServerArgsError, match="not found on PATH"):
        server_args("llama-server")
    with pytest.raises(ServerArgsError, match="No such file"):
        server_args(str(tmp_path / "nowhere" / "llama-server"))
