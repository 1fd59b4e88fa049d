"""The catalogue: defaults, validation errors that say where and what, CLI overrides."""

from __future__ import annotations

import pytest

from router.catalogue.config import ConfigError
from router.catalogue.parse import load_config, parse_config
from router.cli import build_parser, load_from_args


def write(tmp_path, text):
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return p


def test_full_example_loads_with_every_key(tmp_path, monkeypatch):
    monkeypatch.setenv("GPU", "1")
    p = write(tmp_path, """
router: {host: 127.0.0.1, port: 9000, models_max: 2, port_range: [52000, 52010],
         health_timeout: 30, stop_timeout: 3, connect_timeout: 2, read_timeout: 60}
spawn: {command: [llama-server, -m, $path, --port, $port], health_endpoint: /health}
models:
  qwen-small:
    path: ~/models/qwen.gguf
    aliases: [qwen]
    group: light
    args: [--ctx-size, 8192]
    env: {CUDA_VISIBLE_DEVICES: "${GPU}"}
    spawn: {command: [vllm, serve, $path, --port, $port], health_endpoint: /v1/models}
""")
    c = load_config(p)
    assert c.router.port == 9000 and c.router.models_max == 2 and c.router.port_range == (52000, 52010)
    m = c.models["qwen-small"]
    assert m.path.endswith("models/qwen.gguf") and not m.path.startswith("~")
    assert m.args == ("--ctx-size", "8192")
    assert dict(m.env) == {"CUDA_VISIBLE_DEVICES": "1"}
    assert c.spawn_for(m).command[0] == "vllm"
    assert c.resolve("qwen") is m


def test_defaults_bind_loopback_on_8082_with_one_model_at_a_time():
    c = parse_config({})
    assert (c.router.host, c.router.port, c.router.models_max) == ("127.0.0.1", 8082, 1)


@pytest.mark.parametrize("text, key, expected", [
    ("router: {port: eighty}", "router.port", "expected an integer"),
    ("router: {models_max: -1}", "router.models_max", ">= 0"),
    ("router: {port_range: [10, 5]}", "router.port_range", "[first, last]"),
    ("router: {prot: 1}", "router.prot", "unknown key"),
    ("models: {a: {}}", "models.a.path", "path of a GGUF file"),
    ("models: {a: {path: x, args: {k: v}}}", "models.a.args", "list of strings"),
    ("models: {'a/../b': {path: x}}", "models.a/../b", "model name"),
    ("models: {a: {path: x, aliases: [b]}, b: {path: y}}", "models.b", "already used"),
    ("models: {a: {path: x, state: maybe}}", "models.a.state", "'manual' or 'auto'"),
    ("spawn: {command: []}", "spawn.command", "non-empty list"),
    ("spawn: {health_endpoint: health}", "spawn.health_endpoint", "starting with '/'"),
    ("models: {a: {path: '${NOPE_NOT_SET}'}}", "models.a.path", "NOPE_NOT_SET"),
    ("models: [a, b]", "models", "expected a mapping"),
    ("router: {port: 1\n  bad", "line", "invalid YAML"),
    ("cluster: {placement: random}", "cluster.placement", "memory, round_robin"),
    ("cluster: {replicas: 0}", "cluster.replicas", ">= 1"),
    ("cluster: {front_grace: 0}", "cluster.front_grace", ">= 1"),
    ("cluster: {start_wait: -1}", "cluster.start_wait", ">= 0"),
    ("cluster: {replica: 2}", "cluster.replica", "unknown key"),
])
def test_invalid_catalogue_names_file_key_and_expectation(tmp_path, text, key, expected):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and key in msg and expected in msg


def test_the_cluster_section_is_read_with_its_defaults():
    assert parse_config({}).cluster.placement == "memory" and parse_config({}).cluster.replicas == 1
    assert parse_config({}).cluster.start_wait == 30.0
    c = parse_config({"cluster": {"placement": "round_robin", "replicas": 3, "queue_threshold": 2,
                                  "front_grace": 5, "start_wait": 0}}).cluster
    assert (c.placement, c.replicas, c.queue_threshold, c.front_grace, c.start_wait) == ("round_robin", 3, 2, 5.0, 0.0)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_command_line_overrides_the_file(tmp_path):
    p = write(tmp_path, "router: {port: 9000, models_max: 3, host: 127.0.0.1}")
    args = build_parser().parse_args(["--config", str(p), "--port", "9100", "--models-max", "0"])
    c = load_from_args(args)
    assert (c.router.port, c.router.models_max, c.router.host) == (9100, 0, "127.0.0.1")


def test_default_config_comes_from_the_user_config_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "llama-router").mkdir()
    (tmp_path / "llama-router" / "config.yaml").write_text("router: {port: 9321}")
    c = load_from_args(build_parser().parse_args([]))
    assert c.router.port == 9321


def test_example_catalogue_is_valid():
    from pathlib import Path
    c = load_config(Path(__file__).resolve().parents[3] / "config.example.yaml")
    assert "qwen-small" in c.models and c.resolve("qwen").name == "qwen-small"


def test_demo_catalogue_is_valid():
    from pathlib import Path
    c = load_config(Path(__file__).resolve().parents[3] / "demo" / "config.yaml")
    assert set(c.models) == {"gemma", "gemma-creative"}
