"""GET /admin/config's view of the catalogue: every setting, no secret."""

from __future__ import annotations

import json

from router.api.admin_config import REDACTED, config_view, redact_args
from router.catalogue.parse import parse_config


def test_secret_flags_lose_their_values_and_nothing_else_does():
    argv = ["llama-server", "--api-key", "k1", "--hf-token=t1", "--top-k", "40", "--keep", "5", "--ctx-size", "512"]
    assert redact_args(argv) == ["llama-server", "--api-key", REDACTED, f"--hf-token={REDACTED}", "--top-k", "40",
                                 "--keep", "5", "--ctx-size", "512"]


def test_the_view_holds_every_setting_and_no_secret():
    config = parse_config({
        "router": {"admin_token": "admin-token-123", "api_keys": ["key-aaaaaaaa", "key-bbbbbbbb"], "port": 9000},
        "spawn": {"command": ["llama-server", "--model", "$path", "--port", "$port", "--api-key", "child-secret"]},
        "models": {"m": {"path": "/m.gguf", "env": {"HF_TOKEN": "hf_xyz", "MY_PASSWORD": "pw", "COLOR": "blue"},
                         "args": ["--temp", "0.5"], "aliases": ["mm"]}},
    }, "cfg.yaml")
    text = json.dumps(config_view(config))
    view = json.loads(text)  # as the client reads it
    for secret in ("admin-token-123", "key-aaaaaaaa", "key-bbbbbbbb", "child-secret", "hf_xyz", "\"pw\""):
        assert secret not in text
    assert view["source"] == "cfg.yaml" and view["router"]["port"] == 9000
    assert view["router"]["admin_token"] == REDACTED and view["router"]["api_keys"] == [REDACTED, REDACTED]
    assert view["models"]["m"]["env"] == {"HF_TOKEN": REDACTED, "MY_PASSWORD": REDACTED, "COLOR": "blue"}
    assert view["models"]["m"]["args"] == ["--temp", "0.5"] and view["models"]["m"]["aliases"] == ["mm"]
    assert {"router", "spawn", "sources", "models", "missing"} <= set(view)


def test_no_secret_set_shows_as_none():
    view = config_view(parse_config({}, "<x>"))
    assert view["router"]["admin_token"] is None and view["router"]["api_keys"] == []


def test_a_models_view_names_its_settings_as_the_file_does():
    """`name` is the display name's key in the file (the model's own name is the entry's key)."""
    config = parse_config({"models": {"m": {"path": "/m.gguf", "name": "My M", "max_tokens_default": 64}}}, "c.yaml")
    view = config_view(config)["models"]["m"]
    assert view["name"] == "My M" and view["max_tokens_default"] == 64 and "display_name" not in view
