"""The catalogue keys of models the router does not start (`url`, `api_key`), of
servers that outlive their command (`port`, `stop_command`, `health_endpoint`),
of `peers` and of `router.capture_bytes`: what they accept and how they fail."""

from __future__ import annotations

import pytest

from router.catalogue.config import ConfigError
from router.catalogue.parse import parse_config


def model(**entry):
    return {"models": {"m": entry}}


def test_a_url_model_needs_no_path_and_reads_its_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("REMOTE_KEY", "sk-remote-1")
    spec = parse_config(model(url="https://api.example.com/v1", api_key="${REMOTE_KEY}")).models["m"]
    assert (spec.url, spec.api_key, spec.path) == ("https://api.example.com/v1", "sk-remote-1", None)
    assert "sk-remote-1" not in repr(spec)


@pytest.mark.parametrize(("entry", "message"), [
    ({"url": "http://h:1", "path": "/m.gguf"}, "models.m.url: a model served at its url is never started"),
    ({"url": "ftp://h/v1"}, "models.m.url: expected an http:// or https:// URL"),
    ({"url": "http://h:1/v1?x=1"}, "with a host and no query"),
    ({"url": "http://h:port"}, "models.m.url: expected an http:// or https:// URL"),
    ({"group": "g"}, "models.m.path: expected the path of a GGUF file"),
    ({"path": "/m.gguf", "port": 0}, "models.m.port: expected a port number 1-65535"),
    ({"path": "/m.gguf", "stop_command": "docker stop 'unclosed"}, "models.m.stop_command: expected a command"),
    ({"path": "/m.gguf", "stop_command": ["docker", ["x"]]}, "models.m.stop_command[1]: expected a string"),
])
def test_bad_entries_name_the_key(entry, message):
    with pytest.raises(ConfigError) as e:
        parse_config(model(**entry), "c.yaml")
    assert message in str(e.value)


def test_stop_command_keeps_its_placeholders_and_reads_the_environment(monkeypatch):
    monkeypatch.setenv("RUNTIME", "podman")
    spec = parse_config(model(path="/m.gguf", stop_command="${RUNTIME} stop --time 5 llama-${MODEL_ID}")).models["m"]
    assert spec.stop_command == ("podman", "stop", "--time", "5", "llama-${MODEL_ID}")
    listed = parse_config(model(path="/m.gguf", stop_command=["kill", "-TERM", "${PID}", "${PORT}"])).models["m"]
    assert listed.stop_command == ("kill", "-TERM", "${PID}", "${PORT}")


def test_an_unset_variable_in_stop_command_is_an_error():
    with pytest.raises(ConfigError) as e:
        parse_config(model(path="/m.gguf", stop_command="${NO_SUCH_RUNTIME_VAR} stop x"), "c.yaml")
    assert "${NO_SUCH_RUNTIME_VAR} is not set" in str(e.value)


def test_peers(monkeypatch):
    monkeypatch.setenv("OR_KEY", "sk-or-1")
    peers = parse_config({"peers": {"or": {"url": "https://openrouter.ai/api/v1", "api_key": "${OR_KEY}",
                                           "models": "qwen/*"}}}).peers
    assert peers["or"].api_key == "sk-or-1" and peers["or"].models == ("qwen/*",)
    for bad, message in [({"a/b": {"url": "http://h:1"}}, "peers.a/b: expected a peer name"),
                         ({"p": {"models": ["x"]}}, "peers.p.url: expected an http:// or https:// URL of the peer"),
                         ({"p": {"url": "http://h:1", "models": [""]}}, "peers.p.models: expected model names"),
                         ({"p": {"url": "http://h:1", "proxy": "x"}}, "peers.p.proxy: unknown key")]:
        with pytest.raises(ConfigError) as e:
            parse_config({"peers": bad}, "c.yaml")
        assert message in str(e.value)


def test_capture_bytes_is_a_size_and_off_by_default():
    assert parse_config({}).router.capture_bytes == 0
    assert parse_config({"router": {"capture_bytes": "8MiB"}}).router.capture_bytes == 8 * 1024 * 1024
