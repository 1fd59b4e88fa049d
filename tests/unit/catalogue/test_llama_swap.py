"""llama-swap's config.yaml converted to a llama-router catalogue (`--import-llama-swap`):
what is carried, how, and a report line for everything that is not."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from router.catalogue.config import NAME_RE, ConfigError
from router.catalogue.importer import CatalogueWriteError
from router.catalogue.llama_swap import convert_llama_swap, import_llama_swap
from router.catalogue.parse import load_config, parse_config
from router.catalogue.yamlio import read_yaml
from router.core.scheduler import ModelView, plan_evictions

FIXTURE = Path(__file__).parent / "fixtures" / "llama-swap-config.yaml"
ENV = {"MODELS_DIR": "/srv/models", "HF_TOKEN": "hf_secret_token", "API_KEY_1": "sk-from-the-environment"}
SERVER = "/opt/llama.cpp/build/bin/llama-server"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)


@pytest.fixture(scope="module")
def converted():
    return convert_llama_swap(read_yaml(FIXTURE.read_text()), str(FIXTURE))


def convert(yaml_text: str) -> Any:
    return convert_llama_swap(read_yaml(textwrap.dedent(yaml_text)))


def reported(conversion: Any) -> dict[str, str]:
    """Report lines by key: "models.x.cmdStop" -> "not carried: ..."."""
    out = {}
    for line in conversion.report:
        key, _, why = line.partition(": ")
        assert key not in out, f"two report lines for {key}"
        out[key] = why
    return out


def tiny(*names: str, **extra: str) -> str:
    """A llama-swap models: section of plain llama-server models."""
    lines = ["models:"]
    for n in names:
        lines += [f"  {n}:", f"    cmd: llama-server --port ${{PORT}} -m /m/{n}.gguf"]
    return "\n".join(lines) + "\n" + "".join(f"{k}:\n{textwrap.indent(textwrap.dedent(v), '  ')}"
                                             for k, v in extra.items())


# --------------------------------------------------------------- the fixture, key by key


def test_the_converted_fixture_is_a_valid_catalogue(converted, env):
    config = parse_config(converted.catalogue, "<converted>")
    assert list(config.models) == ["qwen-coder", "gemma-vision", "llama-hf", "docker-llama", "vllm-embed",
                                   "fixed-port", "unlisted-model"]  # "remote" is left out
    assert config.models["qwen-coder"].path == "/srv/models/gguf/qwen2.5-coder-7b-q4_k_m.gguf"
    assert dict(config.models["qwen-coder"].env)["HF_TOKEN"] == "hf_secret_token"
    assert config.models["qwen-coder"].display_name == "Qwen 2.5 Coder 7B"
    assert config.router.api_keys == ("sk-hunter2-long-enough", "sk-from-the-environment")


def test_router_settings_come_from_the_global_keys(converted):
    assert converted.catalogue["router"] == {
        "health_timeout": 15,  # healthCheckTimeout 10, raised to llama-swap's own minimum
        "activity_size": 500,  # metricsMaxInMemory
        "port_range": [10001, 11000],  # startPort
        "notify_model_swap": True,  # sendLoadingState
        "ttl": 300,  # globalTTL
        "stop_timeout": 20,  # unloadTimeout
        "api_keys": ["sk-hunter2-long-enough", "${API_KEY_1}"],  # ${env.X} stays a reference
        "preload": ["qwen-coder", "vllm-embed"],  # hooks.on_startup.preload (the first is an alias)
    }


def test_a_llama_server_cmd_becomes_a_plain_model_with_its_macros_expanded(converted):
    assert converted.catalogue["spawn"] == {"command": [SERVER, "--model", "$path", "--alias", "$name",
                                                        "--host", "$host", "--port", "$port"]}
    assert converted.catalogue["models"]["qwen-coder"] == {
        "name": "Qwen 2.5 Coder 7B",  # the display name, which /v1/models shows
        "path": "${MODELS_DIR}/gguf/qwen2.5-coder-7b-q4_k_m.gguf",
        "aliases": ["gpt-4o-mini"],
        "group": "coders",
        # the model's default_ctx replaces the global one inside default_args; --host/--alias are the router's
        "args": ["--ctx-size", "16384", "--temp", "0.7"],
        "env": {"CUDA_VISIBLE_DEVICES": "0,1", "HF_TOKEN": "${HF_TOKEN}"},
        "ttl": 60,
        "concurrency_limit": 4,
    }


def test_an_invalid_name_is_renamed_and_mmproj_and_ttl_zero_are_kept(converted):
    assert converted.catalogue["models"]["gemma-vision"] == {
        "path": "/models/gemma-3-4b-it-Q4_K_M.gguf",
        "mmproj": "/models/mmproj-gemma-3-4b-F16.gguf",
        "aliases": ["gemma"],
        "group": "coders",
        "args": ["-ngl", "99"],  # --api-key dropped
        "ttl": 0,  # never unload, whatever the global TTL
        "unlisted": True,
    }


def test_a_hugging_face_model_keeps_its_own_command(converted):
    assert converted.catalogue["models"]["llama-hf"] == {
        "group": "side-by-side",
        "args": ["-hf", "ggml-org/gemma-3-1b-it-GGUF:Q4_K_M", "--jinja"],
        "spawn": {"command": ["llama-server", "--alias", "$name", "--host", "$host", "--port", "$port"],
                  "health_endpoint": "/v1/models"},
    }


def test_other_backends_become_spawn_commands_on_the_routers_port(converted):
    models = converted.catalogue["models"]
    assert models["vllm-embed"] == {"group": "forever", "spawn": {"command": [
        "vllm", "serve", "BAAI/bge-m3", "--port", "$port", "--served-model-name", "vllm-embed"]}}
    assert models["fixed-port"] == {"spawn": {"command": [
        "/usr/local/bin/my-server", "--listen", "127.0.0.1", "--port", "$port"]}}
    assert models["unlisted-model"] == {"unlisted": True, "spawn": {"command": [
        "some-upstream-server", "--port", "$port"]}}
    assert models["docker-llama"]["spawn"]["command"] == [
        "sh", "-c", "exec docker run --name docker-llama --init --rm -p \"$1\":8080 -v /mnt/nvme/models:/models "
        "ghcr.io/ggml-org/llama.cpp:server --model /models/Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf", "sh", "$port"]


def test_every_key_not_carried_is_reported_with_its_reason(converted):
    report = reported(converted)
    assert set(report) == {
        "models.gemma vision", "models.gemma vision.cmd", "models.gemma vision.aliases[1]",
        "models.gemma vision.aliases[2]",
        *(f"models.qwen-coder.{k}" for k in ("description", "useModelName", "filters", "metadata",
                                              "sendLoadingState")),
        "models.docker-llama.cmd", "models.docker-llama.checkEndpoint", "models.docker-llama.cmdStop",
        "models.vllm-embed.unloadTimeout", "models.vllm-embed.timeouts",
        "models.fixed-port.cmd", "models.remote.proxy",
        "models.unlisted-model.capabilities", "models.unlisted-model.frobnicate",
        "logLevel", "logTimeFormat", "includeAliasesInList", "apiKeys[1]",
        "peers.openrouter", "groups.forever.members[1]", "groups.side-by-side.exclusive",
        "groups.forever.persistent", "groups.forever.exclusive", "groups.side-by-side.swap",
    }
    assert report["models.gemma vision"].startswith("renamed to gemma-vision: ")
    assert "--api-key" in report["models.gemma vision.cmd"]
    assert report["models.gemma vision.aliases[1]"] == "not carried: 'gpt-4o-mini' is already a name or alias"
    assert "setParamsByID names (qwen-coder:fast)" in report["models.qwen-coder.filters"]
    assert report["models.docker-llama.cmd"].startswith("changed: runs through sh -c")
    assert report["models.fixed-port.cmd"] == "changed: 8999 became $port, the port the router chooses"
    assert "left out" in report["models.remote.proxy"]
    assert report["models.unlisted-model.frobnicate"] == "not carried: unknown llama-swap key"
    assert "--log-level" in report["logLevel"]
    assert "router.models_max (1)" in report["groups.side-by-side.swap"]
    assert all(v not in line for line in converted.report for v in ("sk-hunter2", "short", "secret-key"))


# --------------------------------------------------------------- commands and macros


def test_a_port_inside_an_argument_reaches_the_program_through_sh(tmp_path):
    conv = convert("""\
        models:
          echo:
            cmd: /bin/echo -p ${PORT}:8080 "it's $HOME" --url=http://127.0.0.1:${PORT}/v1
        """)
    command = conv.catalogue["models"]["echo"]["spawn"]["command"]
    argv = [("5555" if a == "$port" else a) for a in command]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert out == "-p 5555:8080 it's $HOME --url=http://127.0.0.1:5555/v1\n"


def test_macro_values_print_as_llama_swap_prints_them():
    conv = convert("""\
        macros:
          flag: true
          ratio: 0.5
          whole: 2.0
          id-tag: "${MODEL_ID}-x"
        models:
          m:
            cmd: llama-server -m /m.gguf --port ${PORT} --a ${flag} --b ${ratio} --c ${whole} --d ${id-tag}
            ttl: ${whole_ttl}
            macros:
              whole_ttl: 30
        """)
    model = conv.catalogue["models"]["m"]
    assert model["args"] == ["--a", "true", "--b", "0.5", "--c", "2", "--d", "m-x"]
    assert model["ttl"] == 30  # a whole-value macro keeps its type


def test_comment_lines_and_backslash_continuations_leave_the_command():
    conv = convert("""\
        models:
          m:
            cmd: |
              # --ctx-size ${not_a_macro}
              llama-server \\
                -m /m.gguf --port ${PORT} \\
                --jinja
        """)
    assert conv.catalogue["models"]["m"] == {"path": "/m.gguf", "args": ["--jinja"]}


def test_a_model_name_with_a_slash_follows_the_catalogue_name_rule():
    conv = convert("""\
        models:
          Qwen/Qwen3-8B:
            cmd: llama-server -m /m.gguf --port ${PORT}
        """)
    name = "Qwen/Qwen3-8B" if NAME_RE.match("Qwen/Qwen3-8B") else "Qwen-Qwen3-8B"
    assert list(conv.catalogue["models"]) == [name]
    assert ("models.Qwen/Qwen3-8B" in reported(conv)) == (name != "Qwen/Qwen3-8B")


# --------------------------------------------------------------- groups


def _evictions(catalogue: dict, target: str, running: list[str]) -> list[str] | None:
    """What the router's own eviction policy stops to load `target` with `running` loaded."""
    config = parse_config(catalogue)
    view = [ModelView(n, config.models[n].group_key, i, False, pinned=config.models[n].pinned)
            for i, n in enumerate(running)]
    return plan_evictions(target, config.models[target].group_key, view, config.router.models_max)


def test_ungrouped_models_swap_one_at_a_time_as_in_llama_swap():
    conv = convert(tiny("a", "b"))
    assert "models_max" not in conv.catalogue.get("router", {})
    assert _evictions(conv.catalogue, "b", ["a"]) == ["a"]


def test_a_swap_false_group_runs_its_members_together():
    conv = convert(tiny("a", "b", "c", groups="""\
        all:
          swap: false
          members: [a, b, c]
        """))
    assert conv.catalogue["router"] == {"models_max": 3}
    assert {m["group"] for m in conv.catalogue["models"].values()} == {"all"}
    assert _evictions(conv.catalogue, "c", ["a", "b"]) == []
    assert conv.report == ()


def test_a_persistent_group_is_pinned_beside_the_group_it_runs_with():
    conv = convert(tiny("a", "b", "embed", "rerank", groups="""\
        forever:
          persistent: true
          swap: false
          exclusive: false
          members: [embed, rerank]
        """))
    models = conv.catalogue["models"]
    assert models["embed"] == {"path": "/m/embed.gguf", "pinned": True}
    assert models["rerank"]["pinned"] and "group" not in models["a"]
    assert conv.catalogue["router"] == {"models_max": 3}  # one of a/b, plus both pinned ones
    assert _evictions(conv.catalogue, "b", ["embed", "rerank", "a"]) == ["a"]
    assert conv.report == ()


def test_a_persistent_group_beside_two_others_is_not_pinned_and_says_why():
    conv = convert(tiny("a", "b", "embed", groups="""\
        one: {members: [a]}
        two: {members: [b]}
        forever: {persistent: true, members: [embed]}
        """))
    assert not any(m.get("pinned") for m in conv.catalogue["models"].values())
    assert "would refuse every load outside it" in reported(conv)["groups.forever.persistent"]
    assert _evictions(conv.catalogue, "a", ["embed"]) == ["embed"]


def test_groups_under_routing_are_read_and_the_scheduler_is_reported():
    conv = convert(tiny("a", "b", routing="""\
        router:
          use: group
          settings:
            groups:
              pair: {swap: false, members: [a, b]}
        scheduler:
          use: fifo
          settings: {fifo: {priority: {a: 10}}}
        """))
    assert conv.catalogue["models"]["a"]["group"] == "pair" and conv.catalogue["router"] == {"models_max": 2}
    assert "without priorities" in reported(conv)["routing.scheduler"]


def test_the_matrix_engine_is_reported():
    conv = convert(tiny("a", routing="""\
        router:
          use: matrix
          settings: {matrix: {sets: {all: "a"}}}
        """))
    assert "no matrix engine" in reported(conv)["routing.router"]


# --------------------------------------------------------------- bad input


@pytest.mark.parametrize(("text", "key", "message"), [
    ("- just a list", "<top>", "expected a mapping"),
    ("healthCheckTimeout: 10", "models", "expected a mapping of model ID"),
    ("models: {m: {cmd: [llama-server]}}", "models.m.cmd", "expected the command line as a string"),
    ("models: {m: {proxy: 'http://127.0.0.1:8080'}}", "models.m.cmd", "expected the command line"),
    ("models: {m: {cmd: 'llama-server -m ${nope} --port ${PORT}'}}", "models.m.cmd", "unknown macro ${nope}"),
    ("macros: {b: '${a}', a: x}\nmodels: {m: {cmd: 'srv ${b} ${PORT}'}}", "models.m.cmd", "unknown macro ${a}"),
    ("macros: {PORT: 1}\nmodels: {}", "macros.PORT", "not PID, PORT or MODEL_ID"),
    ("macros: {a: [1]}\nmodels: {}", "macros.a", "expected a string, number or boolean"),
    ("models: {m: {cmd: 'srv ${PORT}', env: [NOEQUALS]}}", "models.m.env[0]", "expected NAME=value"),
    ("models: {m: {cmd: 'srv ${PORT}', env: ['P=${PORT}']}}", "models.m.env[0]", "only its command line"),
    ("models: {m: {cmd: srv, proxy: 'http://localhost:${PORT}/'}}", "models.m.proxy", "uses ${PORT} but cmd"),
    ("models: {m: {cmd: 'srv \"unclosed ${PORT}'}}", "models.m.cmd", "cannot split"),
    ("models: {a: {cmd: 'srv ${PORT}'}}\ngroups: {x: {members: [a]}, y: {members: [a]}}", "groups.y.members[0]",
     "already a member of group 'x'"),
    ("models: {a: {cmd: 'srv ${PORT}'}}\napiKeys: [short]", "apiKeys", "would serve without authentication"),
    ("models: {a: {cmd: 'srv ${PORT}', ttl: -2}}", "models.a.ttl", "expected -1"),
    ("models: {a: {cmd: 'srv ${PORT}'}}\nglobalTTL: -1", "globalTTL", "expected a value >= 0"),
])
def test_input_that_is_not_a_llama_swap_config_is_refused_naming_the_key(text, key, message):
    with pytest.raises(ConfigError) as e:
        convert_llama_swap(read_yaml(text), "swap.yaml")
    assert (e.value.source, e.value.key) == ("swap.yaml", key) and message in str(e.value)


# --------------------------------------------------------------- writing the file


def test_import_writes_a_catalogue_the_router_loads(tmp_path, env):
    dest = tmp_path / "conf" / "config.yaml"
    conv = import_llama_swap(FIXTURE, dest)
    text = dest.read_text()
    assert text.startswith(f"# llama-router catalogue converted from llama-swap's {FIXTURE}")
    assert "#   models.remote.proxy: not carried: " in text and "sk-from-the-environment" not in text
    assert os.stat(dest).st_mode & 0o777 == 0o600  # it holds API keys
    assert load_config(dest).models["gemma-vision"].mmproj == "/models/mmproj-gemma-3-4b-F16.gguf"
    assert read_yaml(text) == conv.catalogue


def test_import_keeps_the_settings_of_a_catalogue_without_models(tmp_path, env):
    dest = tmp_path / "config.yaml"
    dest.write_text("router: {port: 9000, ttl: 5}\nsources: {hf_cache: false}\nmodels: {}\n")
    import_llama_swap(FIXTURE, dest)
    config = load_config(dest)
    assert (config.router.port, config.router.ttl, config.sources.hf_cache) == (9000, 300, False)


def test_import_never_overwrites_a_catalogue_with_models(tmp_path, env):
    dest = tmp_path / "config.yaml"
    dest.write_text("models: {mine: {path: /m.gguf}}\n")
    with pytest.raises(CatalogueWriteError, match="already has models"):
        import_llama_swap(FIXTURE, dest)
    assert dest.read_text() == "models: {mine: {path: /m.gguf}}\n"


def test_an_unset_environment_variable_fails_the_check_and_writes_nothing(tmp_path, env, monkeypatch):
    monkeypatch.delenv("API_KEY_1")
    dest = tmp_path / "config.yaml"
    with pytest.raises(ConfigError) as e:
        import_llama_swap(FIXTURE, dest)
    assert (e.value.source, e.value.key) == (str(dest), "router.api_keys[1]")
    assert list(tmp_path.iterdir()) == []


def test_a_source_that_is_not_yaml_names_the_file(tmp_path):
    src = tmp_path / "swap.yaml"
    src.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError) as e:
        import_llama_swap(src, tmp_path / "out.yaml")
    assert e.value.source == str(src) and "invalid YAML" in str(e.value)
