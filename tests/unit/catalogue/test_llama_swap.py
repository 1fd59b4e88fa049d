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
from router.catalogue.llama_swap import MEMORY_PLACEMENT, convert_llama_swap, import_llama_swap
from router.catalogue.parse import load_config, parse_config
from router.catalogue.yamlio import read_yaml
from router.cli import main as cli
from router.core.scheduler import ModelView, plan_evictions

FIXTURE = Path(__file__).parent / "fixtures" / "llama-swap-config.yaml"
# llama-swap's own config.example.yaml (its source and commit are named in its first lines)
EXAMPLE = Path(__file__).parent / "fixtures" / "llama-swap-config.example.yaml"
ENV = {"MODELS_DIR": "/srv/models", "HF_TOKEN": "hf_secret_token", "API_KEY_1": "sk-from-the-environment",
       "OPENROUTER_API_KEY": "sk-or-from-the-environment"}
SERVER = "/opt/llama.cpp/build/bin/llama-server"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example's ${env.X}, none of them set (as on a machine that has not set them yet)."""
    for k in ("API_KEY_1", "API_KEY_2", "OPENROUTER_API_KEY"):
        monkeypatch.delenv(k, raising=False)


@pytest.fixture(scope="module")
def converted():
    return convert_llama_swap(read_yaml(FIXTURE.read_text()), str(FIXTURE))


@pytest.fixture(scope="module")
def example():
    return convert_llama_swap(read_yaml(EXAMPLE.read_text()), str(EXAMPLE))


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


def at(data: Any, dotted: str) -> Any:
    """A catalogue value by its dotted key (model names hold dots and colons: given whole)."""
    for part in _parts(dotted):
        data = data[part]
    return data


def _parts(dotted: str) -> list[str]:
    head, _, rest = dotted.partition(".")
    if head == "models":
        name, _, rest = rest.partition(".")
        return ["models", name, *(rest.split(".") if rest else [])]
    return [head, *(rest.split(".") if rest else [])]


def key_paths(data: Any, prefix: str = "", depth: int = 0) -> list[str]:
    """Every key of a llama-swap file, to the depth its own settings go (a setParams or metadata
    value, a group's members, are one key)."""
    if not isinstance(data, dict) or depth >= 4:
        return [prefix]
    return [p for k, v in data.items() for p in key_paths(v, f"{prefix}.{k}" if prefix else str(k), depth + 1)]


# --------------------------------------------------------------- llama-swap's own example, key by key

# What each key of llama-swap's config.example.yaml becomes: the catalogue key and the value it holds
# (None: its effect is in other values, e.g. a macro in the commands it builds).
CARRIED: dict[str, tuple[str | None, Any]] = {
    "healthCheckTimeout": ("router.health_timeout", 500),
    "logLevel": ("router.log_level", "info"),
    "metricsMaxInMemory": ("router.activity_size", 1000),
    "captureBuffer": ("router.capture_bytes", "15MiB"),
    "startPort": ("router.port_range", [10001, 11000]),
    "sendLoadingState": ("router.notify_model_swap", True),
    "includeAliasesInList": (None, False),  # false: each model listed once, as llama-router does
    "globalTTL": ("router.ttl", 0),
    "unloadTimeout": ("router.stop_timeout", 10),
    "macros.latest-llama": ("spawn.command", ["/path/to/llama-server/llama-server-ec9e0301", "--model", "$path",
                                              "--alias", "$name", "--host", "$host", "--port", "$port"]),
    "macros.default_ctx": (None, 4096),  # replaced by the model's own default_ctx below
    "macros.default_args": (None, "--ctx-size ${default_ctx}"),  # used by no model
    "macros.models_dir": (None, "${env.HOME}/models"),  # used by no model
    "apiKeys": ("router.api_keys", ["sk-hunter2", "sk-gyCPiKUcIfPlaM4OSMZekkprgijPx6+OsmQs8Rsg0xZ9qpy6gKWsIKqHOk+"
                                    "cgXVx", "${API_KEY_1}", "${API_KEY_2}"]),
    "models.gpt-oss-120b.macros.default_ctx": ("models.gpt-oss-120b.args", ["--ctx-size", "16384", "--temperature",
                                                                            "0.7"]),
    "models.gpt-oss-120b.macros.temp": ("models.gpt-oss-120b.metadata.temperature", 0.7),
    "models.gpt-oss-120b.cmd": ("models.gpt-oss-120b.path", "path/to/gpt-oss-120B.gguf"),
    "models.gpt-oss-120b.name": ("models.gpt-oss-120b.name", "gpt-oss 120B"),
    "models.gpt-oss-120b.description": ("models.gpt-oss-120b.description", "A thinking model from OpenAI"),
    "models.gpt-oss-120b.env": ("models.gpt-oss-120b.env", {"CUDA_VISIBLE_DEVICES": "0,1,2"}),
    "models.gpt-oss-120b.checkEndpoint": ("models.gpt-oss-120b.health_endpoint", "/custom-endpoint"),
    "models.gpt-oss-120b.ttl": ("models.gpt-oss-120b.ttl", 60),
    "models.gpt-oss-120b.unloadTimeout": ("models.gpt-oss-120b.stop_timeout", 10),
    "models.gpt-oss-120b.useModelName": ("models.gpt-oss-120b.use_model_name", "openai/gpt-oss-120B"),
    "models.gpt-oss-120b.filters.stripParams": ("models.gpt-oss-120b.strip_params", ["temperature", "top_k", "top_p"]),
    "models.gpt-oss-120b.filters.setParams": ("models.gpt-oss-120b.set_params", {"temperature": 0.7, "top_p": 0.9}),
    "models.gpt-oss-120b.filters.setParamsByID": ("models.gpt-oss-120b.set_params_by_id", {
        "gpt-oss-120b": {"chat_template_kwargs": {"reasoning_effort": "medium"}},
        "gpt-oss-120b:high": {"chat_template_kwargs": {"reasoning_effort": "high"}},
        "gpt-oss-120b:low": {"chat_template_kwargs": {"reasoning_effort": "low"}}}),
    "models.gpt-oss-120b.aliases": ("models.gpt-oss-120b.aliases", ["gpt-4o-mini"]),
    "models.gpt-oss-120b.metadata.temperature": ("models.gpt-oss-120b.metadata.temperature", 0.7),
    "models.gpt-oss-120b.metadata.a_list": ("models.gpt-oss-120b.metadata.a_list", [
        1, 1.23, "macros are OK in list and dictionary types: gpt-oss-120b"]),
    "models.gpt-oss-120b.metadata.an_obj": ("models.gpt-oss-120b.metadata.an_obj", {
        "a": "1", "b": 2, "c": [0.7, False, "model: gpt-oss-120b"]}),
    "models.gpt-oss-120b.concurrencyLimit": (None, 0),  # 0: the default, the child's own slots
    "models.gpt-oss-120b.sendLoadingState": ("models.gpt-oss-120b.swap_progress", False),
    "models.gpt-oss-120b.timeouts.connect": ("models.gpt-oss-120b.timeouts.connect", 30),
    "models.gpt-oss-120b.timeouts.responseHeader": ("models.gpt-oss-120b.timeouts.read", 60),
    "models.gpt-oss-120b.capabilities.in": ("models.gpt-oss-120b.capabilities.in", ["text", "audio", "image"]),
    "models.gpt-oss-120b.capabilities.out": ("models.gpt-oss-120b.capabilities.out", ["text", "audio", "image"]),
    "models.gpt-oss-120b.capabilities.tools": ("models.gpt-oss-120b.capabilities.tools", True),
    "models.gpt-oss-120b.capabilities.reranker": (None, False),  # false: the default
    "models.gpt-oss-120b.capabilities.context": ("models.gpt-oss-120b.capabilities.context", 32000),
    "models.docker-llama.proxy": (None, "http://127.0.0.1:${PORT}"),  # the router's port, as in cmd
    "models.docker-llama.cmdStop": ("models.docker-llama.stop_command", ["docker", "stop", "docker-llama"]),
    "hooks.on_startup.preload": ("router.preload", ["docker-llama"]),  # selector llama's first target
    "selectors.coding-model.strategy": ("selectors.coding-model.strategy", "warm"),
    "selectors.coding-model.targets": ("selectors.coding-model.targets", ["gpt-oss-120b"]),  # qwen-unlisted: none
    "selectors.coding-model.name": ("selectors.coding-model.name", "Coding Model"),
    "selectors.coding-model.description": ("selectors.coding-model.description", "Best currently loaded coding model"),
    "selectors.coding-model.metadata.purpose": ("selectors.coding-model.metadata.purpose", "coding"),
    "selectors.llm-plan.strategy": ("selectors.llm-plan.strategy", "pin"),
    "selectors.llm-plan.targets": ("selectors.llm-plan.targets", ["gpt-oss-120b"]),  # z-ai/glm-4.7: a peer's
    "selectors.llama.strategy": ("selectors.llama.strategy", "spillover"),
    "selectors.llama.targets": ("selectors.llama.targets", ["docker-llama"]),
    "selectors.llama.settings.spillover": ("selectors.llama.spillover", 4),
    "profiles.coding.description": ("profiles.coding.description", "Coding-focused model routing"),
    "profiles.coding.pins.llm-code": ("profiles.coding.pins.llm-code", "gpt-oss-120b"),
    "profiles.coding.pins.image-gen": ("profiles.coding.pins.image-gen", None),  # ~: turned off
    "routing.scheduler.use": (None, "fifo"),
    "routing.scheduler.settings.fifo": (None, ...),  # priorities of models not in this file: reported one by one
    "routing.router.use": (None, "group"),
    "routing.router.settings.groups": (None, ...),  # members that are no models: reported one by one
    "peers.llama-swap-peer.proxy": ("peers.llama-swap-peer.url", "http://192.168.1.23"),
    "peers.llama-swap-peer.models": ("peers.llama-swap-peer.models", ["model_a", "model_b", "embeddings/model_c"]),
    "peers.openrouter.proxy": ("peers.openrouter.url", "https://openrouter.ai/api"),
    "peers.openrouter.apiKey": ("peers.openrouter.api_key", "${OPENROUTER_API_KEY}"),
    "peers.openrouter.models": ("peers.openrouter.models", [
        "meta-llama/llama-3.1-8b-instruct", "qwen/qwen3-235b-a22b-2507", "deepseek/deepseek-v3.2", "z-ai/glm-4.7",
        "moonshotai/kimi-k2-0905", "minimax/minimax-m2.1"]),
    "peers.openrouter.timeouts.connect": ("peers.openrouter.timeouts.connect", 30),
    "peers.openrouter.timeouts.responseHeader": ("peers.openrouter.timeouts.read", 60),
    "peers.openrouter.filters.stripParams": ("peers.openrouter.strip_params", ["temperature", "top_p"]),
    "peers.openrouter.filters.setParams": ("peers.openrouter.set_params",
                                           {"provider": {"data_collection": "deny", "zdr": True}}),
}
# Every key of the example that is not carried, and why (each line's reason, or a part of it).
NOT_CARRIED = {
    "logTimeFormat": "the router's own time stamps",
    "logToStdout": "every model server's output, prefixed with the model's name",
    "ui": "shows no session IDs",
    "performance": "system statistics are not polled",
    "upstream": "always loads its model; no path is exempt (ignorePaths)",
    "profiles.coding.pins.llm-plan": "'qwen-unlisted' is not a model of the converted catalogue",
    "selectors.coding-model.targets[1]": "'qwen-unlisted' is not a model of the converted catalogue",
    "selectors.llm-plan.targets[1]": "'z-ai/glm-4.7' is a peer's model",
    "selectors.llama.targets[1]": "'modelA' is not a model of the converted catalogue",
    "selectors.llama.targets[2]": "'modelB' is not a model of the converted catalogue",
    "routing.scheduler.settings.fifo.priority.A": "'A' is not a model of the converted catalogue",
    "routing.scheduler.settings.fifo.priority.B": "'B' is not a model of the converted catalogue",
    "routing.scheduler.settings.fifo.priority.C": "'C' is not a model of the converted catalogue",
    "routing.scheduler.settings.fifo.priority.D": "'D' is not a model of the converted catalogue",
    "routing.router.settings.matrix": MEMORY_PLACEMENT,
    "hooks.on_startup.preload[0]": "'llama' is a selector: its first target, 'docker-llama', is preloaded",
    "models.gpt-oss-120b.proxy": "the router starts llama-server on a port it chooses (--port) and sends requests "
                                 "there, not to 8999",
    "models.gpt-oss-120b.metadata.port": "${PORT}: the port of the model's own server",
    "models.gpt-oss-120b.metadata.note": "${PORT}: the port of the model's own server",
    "models.gpt-oss-120b.compat": "relays no websocket",
    "models.gpt-oss-120b.timeouts.keepalive": "without TCP keep-alive probes",
    "models.gpt-oss-120b.timeouts.tlsHandshake": "no separate TLS handshake limit",
    "models.gpt-oss-120b.timeouts.idleConn": "closed after 2 s by the router's pool",
    "models.unlisted-model": "left out: proxy: http://localhost:${PORT} uses ${PORT} but cmd does not, so no server "
                             "would listen there (llama-swap refuses this entry too)",
    "models.docker-llama.cmd": "changed: runs through sh -c, ${PORT} passed as $1",
    "groups.group1.members[0]": "'llama' is not a model ID of this file",
    "groups.group1.members[1]": "'qwen-unlisted' is not a model ID of this file",
    "groups.group2.members[1]": "'modelA' is not a model ID of this file",
    "groups.group2.members[2]": "'modelB' is not a model ID of this file",
    "groups.group2.exclusive": "changed: its members join the models without a group",
    "groups.forever.members[0]": "'forever-modelA' is not a model ID of this file",
    "groups.forever.members[1]": "'forever-modelB' is not a model ID of this file",
    "groups.forever.members[2]": "'forever-modelc' is not a model ID of this file",
    "peers.openrouter.timeouts.keepalive": "without TCP keep-alive probes",
    "peers.openrouter.timeouts.tlsHandshake": "the handshake is part of connecting, which timeouts.connect bounds",
    "peers.openrouter.timeouts.idleConn": "closed after 2 s by the router's pool",
}


def test_the_example_imports_with_exit_0_and_reports_each_key_left_with_its_reason(tmp_path, no_env, capsys):
    dest = tmp_path / "config.yaml"
    assert cli(["--import-llama-swap", str(EXAMPLE), "--config", str(dest)]) == 0
    out, err = capsys.readouterr()
    lines = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert {line.partition(": ")[0] for line in lines} == set(NOT_CARRIED)
    for line in lines:
        key, _, why = line.partition(": ")
        assert NOT_CARRIED[key] in why, line
    # ${env.X} stays a reference: unset now, a warning; the secret is never in the file
    assert err.splitlines() == [f"warning: {k}: ${{{v}}} is not set now; the router reads it when it starts"
                                for k, v in (("router.api_keys[2]", "API_KEY_1"), ("router.api_keys[3]", "API_KEY_2"),
                                             ("peers.openrouter.api_key", "OPENROUTER_API_KEY"))]
    text = dest.read_text()
    assert "'${API_KEY_1}'" in text and "${OPENROUTER_API_KEY}" in text
    assert os.stat(dest).st_mode & 0o777 == 0o600  # it holds API keys


def test_the_imported_example_loads_once_its_environment_is_set(tmp_path, no_env, monkeypatch):
    dest = tmp_path / "config.yaml"
    import_llama_swap(EXAMPLE, dest)
    for k, v in {"API_KEY_1": "sk-key-one-from-env", "API_KEY_2": "sk-key-two-from-env",
                 "OPENROUTER_API_KEY": "sk-or-key"}.items():
        monkeypatch.setenv(k, v)
    config = load_config(dest)
    assert config.router.api_keys[2:] == ("sk-key-one-from-env", "sk-key-two-from-env")
    gpt = config.models["gpt-oss-120b"]
    assert config.resolve("gpt-oss-120b:high") is gpt and config.resolve("gpt-4o-mini") is gpt
    assert gpt.capabilities is not None and gpt.capabilities.inputs == ("text", "audio", "image")
    assert config.models["docker-llama"].stop_command == ("docker", "stop", "docker-llama")
    assert list(config.models) == ["gpt-oss-120b", "docker-llama"]  # unlisted-model is left out
    openrouter = config.peers["openrouter"]  # its filters and timeouts, as the relay reads them
    assert openrouter.strip_params == ("temperature", "top_p")
    assert openrouter.set_params == {"provider": {"data_collection": "deny", "zdr": True}}
    assert config.timeouts(openrouter) == (30.0, 60.0)
    assert config.timeouts(config.peers["llama-swap-peer"]) == (config.router.connect_timeout,
                                                               config.router.read_timeout)
    with pytest.raises(ConfigError, match="OPENROUTER_API_KEY"):  # still the router's rule at start
        monkeypatch.delenv("OPENROUTER_API_KEY")
        load_config(dest)


def test_every_key_of_the_example_is_carried_or_reported(example):
    keys = key_paths(read_yaml(EXAMPLE.read_text()))
    accounted = set(CARRIED) | {k.partition("[")[0] for k in NOT_CARRIED}

    def covered(path: str) -> bool:
        return any(path == k or path.startswith(k + ".") for k in accounted)

    assert [k for k in keys if not covered(k)] == []
    for llama_swap_key, (ours, value) in CARRIED.items():
        if ours is not None:
            assert at(example.catalogue, ours) == value, llama_swap_key


def test_the_example_groups_map_onto_the_pool(example):
    """group2 (exclusive: false) joins the models without a group: both run at once."""
    models = example.catalogue["models"]
    assert "group" not in models["docker-llama"] and "group" not in models["gpt-oss-120b"]
    assert example.catalogue["router"]["models_max"] == 2
    assert _evictions(example.catalogue, "docker-llama", ["gpt-oss-120b"]) == []


# --------------------------------------------------------------- a fuller config, key by key


def test_the_converted_fixture_is_a_valid_catalogue(converted, env):
    config = parse_config(converted.catalogue, "<converted>")
    assert list(config.models) == ["qwen-coder", "gemma-vision", "llama-hf", "docker-llama", "vllm-embed",
                                   "fixed-port", "remote", "unlisted-model"]
    assert config.models["qwen-coder"].path == "/srv/models/gguf/qwen2.5-coder-7b-q4_k_m.gguf"
    assert dict(config.models["qwen-coder"].env)["HF_TOKEN"] == "hf_secret_token"
    assert config.models["qwen-coder"].display_name == "Qwen 2.5 Coder 7B"
    assert config.router.api_keys == ("sk-hunter2-long-enough", "sk-from-the-environment")
    assert config.resolve("qwen-coder:fast") is config.models["qwen-coder"]  # a virtual id


def test_router_settings_come_from_the_global_keys(converted):
    assert converted.catalogue["router"] == {
        "health_timeout": 15,  # healthCheckTimeout 10, raised to llama-swap's own minimum
        "log_level": "debug",  # logLevel
        "activity_size": 500,  # metricsMaxInMemory
        "port_range": [10001, 11000],  # startPort
        "notify_model_swap": True,  # sendLoadingState
        "ttl": 300,  # globalTTL
        "stop_timeout": 20,  # unloadTimeout
        "api_keys": ["sk-hunter2-long-enough", "${API_KEY_1}"],  # ${env.X} stays a reference
        "preload": ["qwen-coder", "vllm-embed"],  # hooks.on_startup.preload (the first is an alias)
    }
    assert converted.catalogue["peers"] == {"openrouter": {
        "url": "https://openrouter.ai/api", "api_key": "${OPENROUTER_API_KEY}", "models": ["z-ai/glm-4.7"]}}


def test_a_llama_server_cmd_becomes_a_plain_model_with_its_macros_expanded(converted):
    assert converted.catalogue["spawn"] == {"command": [SERVER, "--model", "$path", "--alias", "$name",
                                                        "--host", "$host", "--port", "$port"]}
    assert converted.catalogue["models"]["qwen-coder"] == {
        "name": "Qwen 2.5 Coder 7B",  # the display name, which /v1/models shows
        "description": "A coding model",
        "path": "${MODELS_DIR}/gguf/qwen2.5-coder-7b-q4_k_m.gguf",
        "aliases": ["gpt-4o-mini"],
        "group": "coders",
        # the model's default_ctx replaces the global one inside default_args; --host/--alias are the router's
        "args": ["--ctx-size", "16384", "--temp", "0.7"],
        "env": {"CUDA_VISIBLE_DEVICES": "0,1", "HF_TOKEN": "${HF_TOKEN}"},
        "ttl": 60,
        "concurrency_limit": 4,
        "use_model_name": "Qwen/Qwen2.5-Coder-7B",  # useModelName
        "strip_params": ["temperature", "top_p"],  # filters.stripParams, a comma-separated string
        "set_params_by_id": {"qwen-coder:fast": {"temperature": 0.2}},  # ${MODEL_ID} in a key
        "swap_progress": False,  # its own sendLoadingState
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
        "spawn": {"command": ["llama-server", "--alias", "$name", "--host", "$host", "--port", "$port"]},
        "health_endpoint": "/v1/models",  # checkEndpoint
    }


def test_other_backends_become_spawn_commands_on_the_routers_port(converted):
    models = converted.catalogue["models"]
    assert models["vllm-embed"] == {"group": "forever", "spawn": {"command": [
        "vllm", "serve", "BAAI/bge-m3", "--port", "$port", "--served-model-name", "vllm-embed"]},
        "timeouts": {"connect": 30}, "stop_timeout": 30}
    assert models["unlisted-model"] == {"unlisted": True, "capabilities": {"tools": True}, "spawn": {"command": [
        "some-upstream-server", "--port", "$port"]}}
    assert models["docker-llama"]["spawn"]["command"] == [
        "sh", "-c", "exec docker run --name docker-llama --init --rm -p \"$1\":8080 -v /mnt/nvme/models:/models "
        "ghcr.io/ggml-org/llama.cpp:server --model /models/Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf", "sh", "$port"]
    assert models["docker-llama"]["stop_command"] == ["docker", "stop", "docker-llama"]  # cmdStop


def test_a_fixed_proxy_port_is_the_models_port_and_a_remote_proxy_its_url(converted):
    models = converted.catalogue["models"]
    assert models["fixed-port"] == {"port": 8999, "spawn": {"command": [
        "/usr/local/bin/my-server", "--listen", "127.0.0.1", "--port", "8999"]}}
    assert models["remote"] == {"url": "http://192.168.1.23:8080", "health_endpoint": "/health"}
    assert "run `ssh gpu-box ./serve.sh` yourself" in reported(converted)["models.remote.cmd"]


def test_every_key_not_carried_is_reported_with_its_reason(converted):
    report = reported(converted)
    assert set(report) == {
        "models.gemma vision", "models.gemma vision.cmd", "models.gemma vision.aliases[1]",
        "models.gemma vision.aliases[2]", "models.qwen-coder.metadata.port",
        "models.docker-llama.cmd", "models.docker-llama.checkEndpoint", "models.remote.cmd",
        "models.unlisted-model.frobnicate",
        "logTimeFormat", "includeAliasesInList", "apiKeys[1]",
        "groups.forever.members[1]", "groups.side-by-side.members[2]", "groups.side-by-side.exclusive",
        "groups.forever.persistent", "groups.side-by-side.swap",
    }
    assert report["models.gemma vision"].startswith("renamed to gemma-vision: ")
    assert "--api-key" in report["models.gemma vision.cmd"]
    assert report["models.gemma vision.aliases[1]"] == "not carried: 'gpt-4o-mini' is already a name or alias"
    assert report["models.docker-llama.cmd"].startswith("changed: runs through sh -c")
    assert "served at its url" in report["groups.side-by-side.members[2]"]
    assert report["models.unlisted-model.frobnicate"] == "not carried: unknown llama-swap key"
    assert "router.models_max (1)" in report["groups.side-by-side.swap"]
    assert all(v not in line for line in converted.report for v in ("sk-hunter2", "short", "secret-key"))


# --------------------------------------------------------------- one key at a time


def test_filters_become_the_models_request_rewriting():
    conv = convert("""\
        models:
          m:
            cmd: llama-server -m /m.gguf --port ${PORT}
            useModelName: served/name
            filters:
              stripParams: " top_k ,model, temperature,top_k"
              setParams: {temperature: 0.5, model: nope, chat_template_kwargs: {enable_thinking: false}}
              setParamsByID:
                "${MODEL_ID}": {top_p: 0.8}
                "${MODEL_ID}:think": {chat_template_kwargs: {enable_thinking: true}}
                "bad name": {top_p: 1}
        """)
    m = conv.catalogue["models"]["m"]
    assert m["use_model_name"] == "served/name"
    assert m["strip_params"] == ["temperature", "top_k"]  # trimmed, once each, never model (as llama-swap)
    assert m["set_params"] == {"temperature": 0.5, "chat_template_kwargs": {"enable_thinking": False}}
    assert m["set_params_by_id"] == {"m": {"top_p": 0.8},
                                     "m:think": {"chat_template_kwargs": {"enable_thinking": True}}}
    report = reported(conv)
    assert set(report) == {"models.m.filters.setParams.model", "models.m.filters.setParamsByID.bad name"}
    assert parse_config(conv.catalogue).resolve("m:think").name == "m"


def test_a_virtual_id_that_is_taken_is_reported():
    conv = convert("""\
        models:
          a: {cmd: "llama-server -m /a.gguf --port ${PORT}", aliases: [fast]}
          b:
            cmd: llama-server -m /b.gguf --port ${PORT}
            filters: {setParamsByID: {fast: {top_k: 1}, a: {top_k: 2}, "b:ok": {top_k: 3}}}
        """)
    assert conv.catalogue["models"]["b"]["set_params_by_id"] == {"b:ok": {"top_k": 3}}
    assert set(reported(conv)) == {"models.b.filters.setParamsByID.fast", "models.b.filters.setParamsByID.a"}


def test_per_model_settings_are_carried():
    conv = convert("""\
        models:
          m:
            cmd: srv --port ${PORT}
            description: "  Made for tests  "
            metadata: {family: test, sizes: [1, 2], nested: {port: "${PORT}", ok: 1}}
            capabilities: {in: [text, image], out: [text], tools: false, context: 0}
            timeouts: {connect: 0, responseHeader: 5, expectContinue: 1}
            unloadTimeout: 3
            sendLoadingState: true
            cmdStop: kill -TERM ${PID}
            checkEndpoint: /ready
        """)
    m = conv.catalogue["models"]["m"]
    assert m["description"] == "Made for tests"
    assert m["metadata"] == {"family": "test", "sizes": [1, 2]}  # nested holds ${PORT}: reported
    assert m["capabilities"] == {"in": ["text", "image"], "out": ["text"]}
    assert m["timeouts"] == {"read": 5} and m["stop_timeout"] == 3 and m["swap_progress"] is True
    assert m["stop_command"] == ["kill", "-TERM", "${PID}"] and m["health_endpoint"] == "/ready"
    assert set(reported(conv)) == {"models.m.metadata.nested.port", "models.m.timeouts.connect",
                                   "models.m.timeouts.expectContinue"}
    config = parse_config(conv.catalogue)
    assert config.stop_timeout(config.models["m"]) == 3 and config.timeouts(config.models["m"]) == (5.0, 5.0)


def test_a_peers_filters_and_timeouts_are_carried():
    conv = convert("""\
        models:
          m: {cmd: "llama-server -m /m.gguf --port ${PORT}"}
        peers:
          lab:
            proxy: http://10.0.0.2:8080
            models: [m1]
            filters:
              stripParams: "top_k, model, , top_k,temperature"
              setParams: {"top_p?": 0.9, model: other, provider: {zdr: true}}
              setParamsByID: {m1: {top_k: 1}}
            timeouts: {connect: 0, responseHeader: 7, expectContinue: 1}
        """)
    lab = conv.catalogue["peers"]["lab"]
    assert lab["strip_params"] == ["temperature", "top_k"]  # model never, as llama-swap
    assert lab["set_params"] == {"top_p?": 0.9, "provider": {"zdr": True}}
    assert lab["timeouts"] == {"read": 7}  # connect 0 (no limit): router.connect_timeout
    assert set(reported(conv)) == {"peers.lab.filters.setParams.model", "peers.lab.filters.setParamsByID",
                                   "peers.lab.timeouts.connect", "peers.lab.timeouts.expectContinue"}
    config = parse_config(conv.catalogue)
    assert config.peers["lab"].strip_params == ("temperature", "top_k")
    assert config.timeouts(config.peers["lab"]) == (config.router.connect_timeout, 7.0)


@pytest.mark.parametrize("peer, message", [
    ({"strip_params": ["top_k", "model"]}, "peers.lab.strip_params: `model` names the peer's model"),
    ({"set_params": {"model?": "x"}}, "peers.lab.set_params: `model` names the peer's model"),
    ({"set_params": ["top_k"]}, "peers.lab.set_params"),
    ({"timeouts": {"read": 0}}, "peers.lab.timeouts.read"),
])
def test_a_peers_rules_that_cannot_apply_are_refused(peer, message):
    with pytest.raises(ConfigError, match=message.replace("`", ".").replace("'", ".")):
        parse_config({"peers": {"lab": {"url": "http://10.0.0.2:8080", **peer}}})


def test_log_settings_and_the_capture_buffer_are_carried():
    conv = convert(tiny("a") + "logLevel: warn\ncaptureBuffer: 0\n")
    assert conv.catalogue["router"] == {"log_level": "warning", "capture_bytes": 0}
    assert parse_config(conv.catalogue).router.log_level == "warning"


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
    config = parse_config({"router": {"models_max": catalogue.get("router", {}).get("models_max", 1)},
                           "models": catalogue["models"]})  # the rest may need the environment
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


def test_groups_under_routing_are_read_and_fifo_priorities_become_model_priorities():
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
    assert conv.catalogue["models"]["a"]["priority"] == 10 and "priority" not in conv.catalogue["models"]["b"]
    assert not any(k.startswith("routing.scheduler") for k in reported(conv))
    assert parse_config(conv.catalogue).models["a"].priority == 10


def test_a_scheduler_other_than_fifo_is_reported():
    conv = convert(tiny("a", routing="""\
        scheduler:
          use: fair
        """))
    assert "llama-swap's only scheduler is fifo" in reported(conv)["routing.scheduler.use"]


def test_selectors_convert_with_spillover_flattened_and_load():
    conv = convert(tiny("a", "b", selectors="""\
        pool:
          strategy: spillover
          targets: [a, b, peer/x]
          settings: {spillover: 3}
          unlisted: true
        none-left:
          strategy: pin
          targets: [gone]
        """, hooks="""\
        on_startup: {preload: [pool]}
        """))
    assert conv.catalogue["selectors"] == {"pool": {"strategy": "spillover", "targets": ["a", "b"], "spillover": 3,
                                                    "unlisted": True}}
    assert "left out" in reported(conv)["selectors.none-left"]
    assert "a peer's model" in reported(conv)["selectors.pool.targets[2]"]
    assert conv.catalogue["router"]["preload"] == ["a"]
    config = parse_config(conv.catalogue)
    assert config.selectors["pool"].spillover == 3 and config.selectors["pool"].targets == ("a", "b")


def test_profiles_convert_with_their_pins_renamed_with_their_models_and_load():
    conv = convert(tiny("a", "b", "Odd Name", profiles="""\
        coding:
          description: code
          pins:
            chat: Odd Name
            fast: a-fast
            hot: a:hot
            either: pool
            cloud: remote/gpt-4o
            off: ~
            empty: ""
            gone: missing
        old: [a, b]
        nothing-left:
          pins: {x: missing}
        """, selectors="""\
        pool: {strategy: warm, targets: [a, b]}
        """, peers="""\
        remote: {proxy: "http://127.0.0.1:9", models: [gpt-4o]}
        """).replace(
        "-m /m/a.gguf",
        "-m /m/a.gguf\n    aliases: [a-fast]\n    filters: {setParamsByID: {'a:hot': {temperature: 1.5}}}"))
    odd = next(n for n in conv.catalogue["models"] if n not in ("a", "b"))
    assert conv.catalogue["profiles"] == {"coding": {"description": "code", "pins": {
        "chat": odd, "fast": "a-fast", "hot": "a:hot", "either": "pool", "cloud": "remote/gpt-4o", "off": None,
        "empty": None}}}
    report = reported(conv)
    assert "'missing' is not a model" in report["profiles.coding.pins.gone"]
    assert "older list syntax" in report["profiles.old"] and "left out" in report["profiles.nothing-left"]
    config = parse_config(conv.catalogue)
    assert config.profiles["coding"].pins["chat"] == odd and config.profiles["coding"].pins["off"] is None


def test_the_matrix_engine_is_reported():
    conv = convert(tiny("a", routing="""\
        router:
          use: matrix
          settings: {matrix: {sets: {all: "a"}}}
        """))
    report = reported(conv)
    assert MEMORY_PLACEMENT in report["routing.router.use"] and MEMORY_PLACEMENT in report[
        "routing.router.settings.matrix"]


def test_a_group_that_stops_no_other_joins_the_one_it_runs_beside():
    """llama-swap's exclusive: false: loading a member stops no model of another group."""
    conv = convert(tiny("a", "b", "side", groups="""\
        main: {members: [a, b]}
        extra: {exclusive: false, members: [side]}
        """))
    models = conv.catalogue["models"]
    assert models["side"]["group"] == models["a"]["group"] == "main" and not models["side"].get("pinned")
    assert conv.catalogue["router"] == {"models_max": 2}  # one of a/b, plus side
    assert _evictions(conv.catalogue, "side", ["a"]) == []  # side loads beside a
    assert _evictions(conv.catalogue, "b", ["a", "side"]) == ["a"]  # a and b still swap
    assert reported(conv)["groups.extra.exclusive"].startswith("changed: its members join group main")


def test_a_group_that_stops_no_other_beside_two_groups_stays_exclusive_and_says_why():
    conv = convert(tiny("a", "b", "side", groups="""\
        one: {members: [a]}
        two: {members: [b]}
        extra: {exclusive: false, members: [side]}
        """))
    assert conv.catalogue["models"]["side"]["group"] == "extra"
    assert "llama-router groups are exclusive" in reported(conv)["groups.extra.exclusive"]


# --------------------------------------------------------------- bad input


@pytest.mark.parametrize(("text", "key", "message"), [
    ("- just a list", "<top>", "expected a mapping"),
    ("healthCheckTimeout: 10", "models", "expected a mapping of model ID"),
    ("macros: {PORT: 1}\nmodels: {}", "macros.PORT", "not PID, PORT or MODEL_ID"),
    ("macros: {a: [1]}\nmodels: {}", "macros.a", "expected a string, number or boolean"),
    ("models: {a: {cmd: 'srv ${PORT}'}}\ngroups: {x: {members: [a]}, y: {members: [a]}}", "groups.y.members[0]",
     "already a member of group 'x'"),
    ("models: {a: {cmd: 'srv ${PORT}'}}\napiKeys: [short]", "apiKeys", "would serve without authentication"),
    ("models: {a: {cmd: 'srv ${PORT}'}}\nglobalTTL: -1", "globalTTL", "expected a value >= 0"),
    ("models: {a: {cmd: 'srv ${PORT}'}}\nlogLevel: loud", "logLevel", "expected debug, info, warn or error"),
])
def test_input_that_is_not_a_llama_swap_config_is_refused_naming_the_key(text, key, message):
    with pytest.raises(ConfigError) as e:
        convert_llama_swap(read_yaml(text), "swap.yaml")
    assert (e.value.source, e.value.key) == ("swap.yaml", key) and message in str(e.value)


@pytest.mark.parametrize(("entry", "message"), [
    ("{cmd: [llama-server]}", "cmd: expected the command line as a string"),
    ("{proxy: 'http://127.0.0.1:8080'}", "cmd: expected the command line"),
    ("{cmd: 'llama-server -m ${nope} --port ${PORT}'}", "cmd: unknown macro ${nope}"),
    ("{cmd: 'srv ${PORT}', env: [NOEQUALS]}", "env[0]: expected NAME=value"),
    ("{cmd: 'srv ${PORT}', env: ['P=${PORT}']}", "env[0]: ${PORT}: the port of the model's own server"),
    ("{cmd: srv, proxy: 'http://localhost:${PORT}/'}", "proxy: http://localhost:${PORT}/ uses ${PORT} but cmd"),
    ("{cmd: 'srv \"unclosed ${PORT}'}", "cmd: cannot split"),
    ("{cmd: 'srv ${PORT}', ttl: -2}", "ttl: expected -1"),
    ("{cmd: 'srv ${PORT}', capabilities: {in: [smell]}}", "capabilities.in: invalid modality 'smell'"),
    ("{cmd: 'srv ${PORT}', proxy: 'http://10.0.0.2:${PORT}'}", "proxy: http://10.0.0.2:${PORT}: ${PORT} is the "
     "port of the server cmd starts here"),
])
def test_an_entry_that_cannot_work_is_left_out_with_its_reason_and_the_rest_converts(entry, message):
    conv = convert_llama_swap(read_yaml(f"models:\n  bad: {entry}\n  good: {{cmd: 'srv --port ${{PORT}}'}}\n"))
    assert list(conv.catalogue["models"]) == ["good"]
    assert reported(conv)["models.bad"].startswith(f"left out: {message}")


# --------------------------------------------------------------- writing the file


def test_import_writes_a_catalogue_the_router_loads(tmp_path, env):
    dest = tmp_path / "conf" / "config.yaml"
    conv = import_llama_swap(FIXTURE, dest)
    text = dest.read_text()
    assert text.startswith(f"# llama-router catalogue converted from llama-swap's {FIXTURE}")
    assert "#   models.remote.cmd: not carried: " in text and "sk-from-the-environment" not in text
    assert os.stat(dest).st_mode & 0o777 == 0o600  # it holds API keys
    assert load_config(dest).models["gemma-vision"].mmproj == "/models/mmproj-gemma-3-4b-F16.gguf"
    assert read_yaml(text) == conv.catalogue and conv.warnings == ()


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


def test_an_unset_environment_variable_is_a_warning_and_stays_a_reference(tmp_path, env, monkeypatch):
    monkeypatch.delenv("API_KEY_1")
    dest = tmp_path / "config.yaml"
    conv = import_llama_swap(FIXTURE, dest)
    assert conv.warnings == ("router.api_keys[1]: ${API_KEY_1} is not set now; the router reads it when it starts",)
    assert read_yaml(dest.read_text())["router"]["api_keys"] == ["sk-hunter2-long-enough", "${API_KEY_1}"]
    monkeypatch.setenv("API_KEY_1", "sk-set-later-on")
    assert load_config(dest).router.api_keys[1] == "sk-set-later-on"


def test_a_source_that_is_not_yaml_names_the_file(tmp_path):
    src = tmp_path / "swap.yaml"
    src.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError) as e:
        import_llama_swap(src, tmp_path / "out.yaml")
    assert e.value.source == str(src) and "invalid YAML" in str(e.value)
