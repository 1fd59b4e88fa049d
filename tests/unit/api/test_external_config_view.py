"""GET /admin/config shows the keys of external models and peers as hidden, like every
other secret of the catalogue (router/api/admin_config.py)."""

from __future__ import annotations

import json

from router.api.admin_config import REDACTED, config_view
from router.catalogue.parse import parse_config


def test_external_and_peer_keys_are_hidden():
    config = parse_config({
        "models": {"remote": {"url": "https://api.example.com/v1", "api_key": "sk-remote-secret"},
                   "box": {"spawn": {"command": ["run-box"]}, "port": 8999,
                           "stop_command": ["box-ctl", "stop", "--token", "tok-stop-secret", "${MODEL_ID}"]}},
        "peers": {"or": {"url": "https://openrouter.ai/api/v1", "api_key": "sk-or-secret", "models": ["qwen/*"]},
                  "lab": {"url": "http://lab:8082"}}})
    view = config_view(config)
    text = json.dumps(view)  # a JSON reply: everything in it serializes
    assert "sk-remote-secret" not in text and "sk-or-secret" not in text and "tok-stop-secret" not in text
    assert view["models"]["remote"]["api_key"] == REDACTED and view["models"]["remote"]["url"]
    assert view["models"]["box"]["stop_command"] == ["box-ctl", "stop", "--token", REDACTED, "${MODEL_ID}"]
    assert view["peers"]["or"]["api_key"] == REDACTED and list(view["peers"]["or"]["models"]) == ["qwen/*"]
    assert view["peers"]["lab"]["api_key"] is None
