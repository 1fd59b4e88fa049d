"""The admin API's catalogue management against a real router: downloads
(the first becomes the start-up model), deleting models and their files only
inside the model folders, and the catalogue itself (GET/PUT /admin/config)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
import yaml

from router.catalogue.config import ConfigError
from router.catalogue.parse import parse_config
from router.catalogue.yamlio import read_yaml
from tests.e2e.test_model_management import REPO, hub_env
from tests.support.fakehub import FakeHub
from tests.support.opskit import TIMEOUT, SSEReader, chat
from tests.support.routerproc import RouterProcess, child_command, free_port
from tests.support.tinygguf import write_tiny_model

pytestmark = pytest.mark.real

TOKEN = "admin-secret-7f3a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def admin(r: RouterProcess, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, r.url + "/admin" + path, headers={**AUTH, **kw.pop("headers", {})},
                            timeout=TIMEOUT, **kw)


def listed(r: RouterProcess, headers: dict[str, str] | None = None) -> set[str]:
    resp = requests.get(r.url + "/v1/models", headers=headers, timeout=TIMEOUT)
    assert resp.status_code == 200, resp.text
    return {m["id"] for m in resp.json()["data"]}


def catalogue(path: Path, llama_server: Path, body: str, **router) -> Path:
    """A catalogue as a person writes it: comments first, then YAML."""
    settings = {"port": free_port(), "port_range": [53000, 53999], "watch_config": False, "admin_token": TOKEN,
                "slot_save_path": str(path.parent / "slots"), **router}
    head = yaml.safe_dump({"router": settings, "spawn": {"command": child_command(llama_server)}}, sort_keys=False)
    path.write_text("# my router: keep this comment\n" + head + body)
    return path


def test_admin_download_becomes_the_startup_model_and_delete_with_files_removes_it(tmp_path, llama_server):
    hf_home = tmp_path / "hf-home"
    q4 = write_tiny_model(tmp_path / "src" / "Tiny-Q4_K_M.gguf", name="q4", seed=1)
    q8 = write_tiny_model(tmp_path / "src" / "Tiny-Q8_0.gguf", name="q8", seed=2)
    cfg = catalogue(tmp_path / "config.yaml", llama_server, "models: {}\n")
    with FakeHub() as hub:
        hub.add_file(REPO, q4.name, q4.read_bytes())
        hub.add_file(REPO, q8.name, q8.read_bytes())
        with RouterProcess(cfg, tmp_path / "router.log", env=hub_env(hub, hf_home)) as r, \
                SSEReader(r.url + "/admin/download/events", headers=AUTH) as sse:
            assert requests.post(r.url + "/admin/download", json={"repo": REPO}, timeout=TIMEOUT).status_code == 401
            resp = admin(r, "POST", "/download", json={"repo": REPO, "quant": "Q4_K_M"})
            assert resp.status_code == 200 and resp.json()["model"] == f"{REPO}:Q4_K_M", resp.text
            first = sse.wait_for(lambda e: e["event"] == "download_finished", timeout=20)["data"]["id"]
            assert first in listed(r)
            text = cfg.read_text()
            assert text.startswith("# my router: keep this comment\n")
            assert yaml.safe_load(text)["router"]["startup_model"] == first

            resp = admin(r, "POST", "/download", json={"model": f"{REPO}:Q8_0"})
            assert resp.status_code == 200, resp.text
            second = sse.wait_for(lambda e: e["event"] == "download_finished", timeout=20)["data"]["id"]
            assert second != first and {first, second} <= listed(r)
            assert yaml.safe_load(cfg.read_text())["router"]["startup_model"] == first, "only the first one"
            assert admin(r, "GET", "/downloads").json() == {"downloads": []}
            bad = admin(r, "POST", "/download", json={"repo": REPO, "model": f"{REPO}:Q8_0"})
            assert bad.status_code == 400

            # A model found in the HF cache is not in the file: only deleting its files removes it.
            path = "/models/" + quote(first, safe="")
            refused = admin(r, "DELETE", path)
            assert refused.status_code == 409 and refused.json()["error"]["code"] == "model_discovered"
            assert chat(r.url, first).status_code == 200
            done = admin(r, "DELETE", path + "?files=true")
            assert done.status_code == 200, done.text
            out = done.json()
            assert out["success"] is True and out["entry_removed"] is False and out["reload"]["ok"] is True
            assert any(p.endswith("Tiny-Q4_K_M.gguf") for p in out["deleted"])
            sse.wait_for(lambda e: e["event"] == "model_remove" and e["model"] == first)
            assert first not in listed(r) and second in listed(r)
            assert [p.name for p in hf_home.rglob("*.gguf")] == ["Tiny-Q8_0.gguf"], "the other quant stays"
            assert "startup_model" not in yaml.safe_load(cfg.read_text())["router"], "it named a deleted model"
            assert cfg.read_text().startswith("# my router: keep this comment\n")
            # A name with '/' works unencoded too.
            assert admin(r, "DELETE", f"/models/{second}?files=true").status_code == 200
            assert not list(hf_home.rglob("*.gguf"))


def test_admin_delete_touches_files_only_inside_the_model_folders(tmp_path, llama_server):
    lib, found, outside = tmp_path / "lib", tmp_path / "found", tmp_path / "elsewhere"
    kept = write_tiny_model(lib / "kept.gguf", name="kept", seed=1)
    doomed = write_tiny_model(lib / "doomed.gguf", name="doomed", seed=2)
    disc = write_tiny_model(found / "disc.gguf", name="disc", seed=3)
    far = write_tiny_model(outside / "far.gguf", name="far", seed=4)
    target = write_tiny_model(outside / "target.gguf", name="target", seed=5)
    (lib / "link.gguf").symlink_to(target)
    body = yaml.safe_dump({
        "sources": {"import_dirs": [str(lib)], "dirs": [str(found)], "hf_cache": False},
        "models": {"kept": {"path": str(kept)}, "doomed": {"path": str(doomed)}, "far": {"path": str(far)},
                   "linked": {"path": str(lib / "link.gguf")}},
    }, sort_keys=False)
    cfg = catalogue(tmp_path / "config.yaml", llama_server, "# the models\n" + body)
    with RouterProcess(cfg, tmp_path / "router.log", env={"HF_HOME": str(tmp_path / "hf-home")}) as r:
        assert {"kept", "doomed", "far", "linked", "disc"} <= listed(r)
        before = cfg.read_text()

        # Outside the folders, or a link inside pointing outside: refused, nothing deleted.
        for name in ("far", "linked"):
            refused = admin(r, "DELETE", f"/models/{name}?files=true")
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "path_not_allowed", name
        assert far.exists() and target.exists() and (lib / "link.gguf").is_symlink()
        assert cfg.read_text() == before

        # Without files: a manual entry outside the folders leaves the file only; one inside an
        # import folder would be imported again (409); a discovered one is not in the file (409).
        out = admin(r, "DELETE", "/models/far").json()
        assert out["entry_removed"] is True and out["deleted"] == [] and far.exists()
        assert "far" not in listed(r) and "far" not in yaml.safe_load(cfg.read_text())["models"]
        busy = admin(r, "DELETE", "/models/kept")
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "model_in_source"
        assert admin(r, "DELETE", "/models/disc").json()["error"]["code"] == "model_discovered"

        # With files, inside the folders: a running model is unloaded first, then its files go.
        assert chat(r.url, "doomed").status_code == 200
        out = admin(r, "DELETE", "/models/doomed?files=true").json()
        assert out["entry_removed"] is True and out["deleted"] == [str(doomed)]
        assert not doomed.exists() and "doomed" not in listed(r)
        out = admin(r, "DELETE", "/models/disc?files=true").json()
        assert out["deleted"] == [str(disc)] and "disc" not in listed(r)
        assert kept.exists() and target.exists()
        text = cfg.read_text()
        assert text.startswith("# my router: keep this comment\n") and "# the models" in text
        assert set(yaml.safe_load(text)["models"]) == {"kept", "linked"}
        assert admin(r, "DELETE", "/models/nope").status_code == 404
        off = admin(r, "POST", "/download", json={"model": f"{REPO}:Q4_K_M"})
        assert off.status_code == 409 and off.json()["error"]["code"] == "hf_cache_disabled"


def test_config_is_shown_without_secrets_and_replaced_only_when_valid(tmp_path, llama_server, tiny_dir):
    body = yaml.safe_dump({"models": {"tiny-a": {"path": str(tiny_dir / "tiny-a.gguf"),
                                                 "env": {"HF_TOKEN": "hf_sEcReT_42", "COLOR": "blue"}}}})
    cfg = catalogue(tmp_path / "config.yaml", llama_server, body, api_keys=["key-1234567890"])
    key = {"Authorization": "Bearer key-1234567890"}
    with RouterProcess(cfg, tmp_path / "router.log", env={"HF_HOME": str(tmp_path / "hf-home")}) as r:
        shown = admin(r, "GET", "/config")
        assert shown.status_code == 200
        for secret in (TOKEN, "key-1234567890", "hf_sEcReT_42"):
            assert secret not in shown.text
        view = shown.json()
        assert view["source"] == str(cfg) and view["router"]["api_keys"] == ["<redacted>"]
        assert view["models"]["tiny-a"]["env"] == {"HF_TOKEN": "<redacted>", "COLOR": "blue"}

        before = cfg.read_text()
        invalid = before + "  tiny-b:\n    pathh: /x.gguf\n"
        with pytest.raises(ConfigError) as expected:
            parse_config(read_yaml(invalid), str(cfg))
        yaml_type = {"Content-Type": "application/yaml"}
        resp = admin(r, "PUT", "/config", data=invalid, headers=yaml_type)
        assert resp.status_code == 400 and resp.json()["error"]["message"] == str(expected.value)
        for text in ("models: [a\n", "", before.replace(TOKEN, "<redacted>"),
                     before.replace("models:", "router2: {}\nmodels:")):
            assert admin(r, "PUT", "/config", data=text, headers=yaml_type).status_code == 400, text
        startup_nowhere = before.replace("router:\n", "router:\n  startup_model: nowhere\n")
        refused = admin(r, "PUT", "/config", data=startup_nowhere, headers=yaml_type)
        assert refused.status_code == 400 and "startup_model" in refused.json()["error"]["message"]
        assert admin(r, "PUT", "/config", data=before, headers={"Content-Type": "image/png"}).status_code == 415
        assert cfg.read_text() == before, "a refused catalogue leaves the file as it was"

        new = before + f"  tiny-b:  # added over the admin API\n    path: {tiny_dir / 'tiny-b.gguf'}\n"
        resp = admin(r, "PUT", "/config", data=new, headers=yaml_type)
        assert resp.status_code == 200 and resp.json()["added"] == ["tiny-b"], resp.text
        assert cfg.read_text() == new, "YAML is written as sent, comments and all"
        assert "tiny-b" in listed(r, key) and chat(r.url, "tiny-b", headers=key).status_code == 200

        data = yaml.safe_load(new)
        data["models"]["tiny-c"] = {"path": str(tiny_dir / "tiny-c.gguf")}
        resp = admin(r, "PUT", "/config", data=json.dumps(data), headers={"Content-Type": "application/json"})
        assert resp.status_code == 200 and resp.json()["added"] == ["tiny-c"], resp.text
        assert yaml.safe_load(cfg.read_text()) == data and "tiny-c" in listed(r, key)
