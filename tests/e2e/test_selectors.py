"""Selectors with real llama-servers (issue #27, llama-swap's `selectors`): a virtual model
id served by one of its targets, chosen per request; the reply names the model that
served it and X-Selector the selector."""

from __future__ import annotations

import pytest
import requests

from tests.support.opskit import TIMEOUT, chat, model_state, tiny_catalogue
from tests.support.routerproc import RouterProcess, child_command, write_config

pytestmark = pytest.mark.real


def test_a_warm_selector_serves_from_the_loaded_target_and_cold_starts_the_first(tmp_path, llama_server, tiny_dir):
    models = tiny_catalogue(tiny_dir, "tiny-a", "tiny-b")  # no group: one runs at a time
    selectors = {"coding": {"strategy": "warm", "targets": ["tiny-a", "tiny-b"], "name": "Coding",
                            "metadata": {"purpose": "code"}}}
    cfg = write_config(tmp_path / "config.yaml", models, router={"watch_config": False},
                       spawn={"command": child_command(llama_server)}, selectors=selectors)
    with RouterProcess(cfg, tmp_path / "router.log") as r:
        # Nothing loaded: the first target is loaded for it.
        cold = chat(r.url, "coding")
        assert cold.status_code == 200, cold.text
        assert cold.json()["model"] == "tiny-a" and cold.headers["X-Selector"] == "coding"
        assert "X-Fallback-From" not in cold.headers
        # tiny-b loaded (tiny-a stopped for it): the selector is served by tiny-b, without loading tiny-a.
        assert chat(r.url, "tiny-b").status_code == 200
        assert model_state(r.url, "tiny-a") == "unloaded"
        warm = chat(r.url, "coding")
        assert warm.status_code == 200, warm.text
        assert warm.json()["model"] == "tiny-b" and warm.headers["X-Selector"] == "coding"
        assert model_state(r.url, "tiny-a") == "unloaded" and model_state(r.url, "tiny-b") == "loaded"
        # Listed as a model, with what it is.
        listed = requests.get(r.url + "/v1/models", timeout=TIMEOUT).json()["data"]
        entry = next(m for m in listed if m["id"] == "coding")
        assert entry["name"] == "Coding" and entry["status"]["value"] == "loaded"
        assert entry["metadata"] == {"purpose": "code", "type": "selector", "strategy": "warm",
                                     "targets": ["tiny-a", "tiny-b"]}
