"""The llama.cpp WebUI is served at "/" without shadowing any API route."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from router.app import create_app
from router.catalogue.config import ConfigError
from router.catalogue.parse import parse_config


def fake_ui(root: Path) -> Path:
    """The shape of a WebUI build: index.html, hashed immutable assets, PWA files."""
    (root / "_app" / "immutable").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>llama.cpp</title>")
    (root / "_app" / "immutable" / "bundle.abc123.js").write_text("console.log('ui')")
    (root / "sw.js").write_text("self.skipWaiting()")
    (root / "health").write_text("a file named like an API route")
    return root


async def client_for(config_data: dict) -> TestClient:
    client = TestClient(TestServer(create_app(parse_config(config_data, "<test>"))))
    await client.start_server()
    return client


async def test_ui_and_its_assets_are_served_at_root(tmp_path: Path) -> None:
    ui = fake_ui(tmp_path / "ui")
    client = await client_for({"router": {"ui_path": str(ui)}})
    try:
        r = await client.get("/")
        assert r.status == 200 and "<title>llama.cpp</title>" in await r.text()
        assert r.headers["Cache-Control"] == "no-cache"
        r = await client.get("/_app/immutable/bundle.abc123.js")
        assert r.status == 200 and await r.text() == "console.log('ui')"
        assert "immutable" in r.headers["Cache-Control"]
        r = await client.get("/sw.js")
        assert r.status == 200 and r.headers["Cache-Control"] == "no-cache"
    finally:
        await client.close()


async def test_api_routes_win_over_ui_files(tmp_path: Path) -> None:
    client = await client_for({"router": {"ui_path": str(fake_ui(tmp_path / "ui"))}})
    try:
        r = await client.get("/health")
        assert (await r.json()) == {"status": "ok"}
        r = await client.get("/props")
        props = await r.json()
        assert props["role"] == "router" and props["cors_proxy_enabled"] is False
    finally:
        await client.close()


@pytest.mark.parametrize("path", ["/../secret.txt", "/%2e%2e/secret.txt", "/_app/../../secret.txt"])
async def test_files_outside_the_ui_folder_are_never_served(tmp_path: Path, path: str) -> None:
    (tmp_path / "secret.txt").write_text("TOP-SECRET-CONTENT")
    client = await client_for({"router": {"ui_path": str(fake_ui(tmp_path / "ui"))}})
    try:
        r = await client.get(URL(path, encoded=True))
        assert r.status == 404
        assert "TOP-SECRET-CONTENT" not in await r.text()
    finally:
        await client.close()


async def test_unknown_paths_get_a_json_404(tmp_path: Path) -> None:
    client = await client_for({"router": {"ui_path": str(fake_ui(tmp_path / "ui"))}})
    try:
        for method, path in (("GET", "/no/such/file.js"), ("POST", "/no-route")):
            r = await client.request(method, path)
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "not_found"
    finally:
        await client.close()


async def test_features_a_router_does_not_offer_are_refused_as_llama_server_does() -> None:
    client = await client_for({})
    try:
        for method, path in (("GET", "/tools"), ("POST", "/tools"), ("GET", "/cors-proxy")):
            r = await client.request(method, path)
            assert r.status == 403
            assert (await r.json())["error"]["type"] == "feature_disabled"
    finally:
        await client.close()


async def test_without_a_build_root_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    client = await client_for({})
    try:
        r = await client.get("/")
        assert r.status == 404
        text = await r.text()
        assert "llama-router --build-webui" in text and "ui_path" in text  # works without the repository
    finally:
        await client.close()


async def test_without_a_build_a_browser_gets_a_page_and_an_api_client_a_json_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    client = await client_for({})
    try:
        page = await client.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
        assert page.status == 404 and page.content_type == "text/html"
        assert "llama-router --build-webui" in await page.text()
        api = await client.get("/index.html", headers={"Accept": "application/json"})
        assert api.status == 404 and api.content_type == "application/json"
        err = (await api.json())["error"]
        assert "--build-webui" in err["message"] and err["code"] == "not_found" and err["type"]
    finally:
        await client.close()


async def test_the_cached_build_for_the_installed_version_is_found(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from router.ui import webui
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(webui, "llama_cpp_version", lambda: "1234.0.0")
    fake_ui(tmp_path / "llama-router" / "webui" / "1234.0.0")
    client = await client_for({})
    try:
        r = await client.get("/")
        assert r.status == 200 and "llama.cpp" in await r.text()
    finally:
        await client.close()


def test_ui_path_must_hold_a_built_ui(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"router": {"ui_path": str(tmp_path)}}, "cfg.yaml")
    assert "router.ui_path" in str(e.value) and "index.html" in str(e.value)


def test_relative_ui_path_is_read_from_the_config_folder(tmp_path: Path) -> None:
    fake_ui(tmp_path / "ui")
    config = parse_config({"router": {"ui_path": "ui"}}, str(tmp_path / "config.yaml"))
    assert config.router.ui_path == str((tmp_path / "ui").resolve())


async def test_only_the_pages_themselves_are_public(tmp_path: Path) -> None:
    """What an API-key check may let through without a key: pages, never API calls."""
    from aiohttp import web

    from router.http.access import is_public

    seen: dict[str, bool] = {}

    @web.middleware
    async def record(request: web.Request, handler):  # type: ignore[no-untyped-def]
        seen[f"{request.method} {request.path}"] = is_public(request)
        return await handler(request)

    app = create_app(parse_config({"router": {"ui_path": str(fake_ui(tmp_path / "ui"))}}, "<test>"))
    app.middlewares.append(record)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        for method, path in (("GET", "/"), ("GET", "/_app/immutable/bundle.abc123.js"), ("GET", "/dashboard"),
                             ("GET", "/models"), ("GET", "/props"), ("GET", "/dashboard/api/models"),
                             ("POST", "/models/load"), ("GET", "/logs/stream/x"), ("POST", "/v1/chat/completions")):
            await client.request(method, path)
    finally:
        await client.close()
    assert {k for k, v in seen.items() if v} == {"GET /", "GET /_app/immutable/bundle.abc123.js", "GET /dashboard"}
    assert len(seen) == 9
