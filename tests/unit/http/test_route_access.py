"""Who may call each route, declared where the route is (router/http/access.py):
every route of the single-host app and of the cluster front has a declaration, a
route without one fails the start-up, and each kind of key gets from every route
of a real router what docs/api.md ("API keys and roles") says.

The router serves two models whose files do not exist: a request the keys let
through reaches its handler and ends there (404 model_missing, 400...), so no
child is started and nothing is changed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from router.api import media
from router.api.inference import POST_ROUTES
from router.app import create_app
from router.catalogue.config import Config
from router.catalogue.parse import parse_config
from router.http.access import (
    ADMIN,
    INFERENCE,
    PUBLIC,
    Models,
    access_for,
    admin_app,
    check_routes,
    declare,
    declared,
    require_admin,
    require_auth,
)
from router.http.app_keys import MANAGER

TEAM, READER, OPS, TOKEN = "team-key-0123456789", "read-key-0123456789", "ops-key-0123456789", "admin-token-0123"
OWN, OTHER = "qwen", "gemma"  # the team key's model, and one it may not use
KINDS = {  # each kind of caller, and what it sends
    "no key": {},
    "scoped": {"Authorization": f"Bearer {TEAM}"},
    "read": {"x-api-key": READER},
    "admin key": {"Authorization": f"Bearer {OPS}"},
    "admin token": {"X-Admin-Token": TOKEN},
}


def catalogue(tmp_path: Path, **router: Any) -> Config:
    keys = [{"key": TEAM, "models": [OWN]}, {"key": READER, "role": "read"}, {"key": OPS, "role": "admin"}]
    return parse_config({"router": {"api_keys": keys, "admin_token": TOKEN, **router},
                         "models": {m: {"path": str(tmp_path / f"{m}.gguf")} for m in (OWN, OTHER)}}, "<test>")


def routes(app: web.Application) -> Iterator[tuple[web.Application, web.AbstractRoute]]:
    """Every route of `app` and of its sub-applications, with the application it is in."""
    for resource in app.router.resources():
        if isinstance(resource, web.PrefixedSubAppResource):
            yield from routes(resource.get_info()["app"])
        else:
            yield from ((app, route) for route in resource)


def create_cluster_app(config: Config, secret: str) -> web.Application:
    """The cluster front's application; Ray is an optional extra (`.[cluster]`), so without
    it (the minimum-versions venv) the front's cases skip and the single host's still run."""
    pytest.importorskip("ray")
    from router.cluster.app import create_cluster_app as create

    return create(config, secret)


# ----- every route is declared ------------------------------------------------

@pytest.mark.parametrize("front", [False, True], ids=["single host", "cluster front"])
def test_every_route_is_declared_and_admin_is_its_own_application(tmp_path, front):
    config = catalogue(tmp_path)
    app = create_cluster_app(config, "s" * 32) if front else create_app(config)
    assert require_auth in app.middlewares
    seen = set()
    for owner, route in routes(app):
        where = f"{route.method} {route.resource.canonical if route.resource else '?'}"
        access = declared(route)
        assert access is not None, f"{where} has no declaration"
        # /admin, and llama-swap's admin paths (its UI API's profiles) in an admin application of their own
        under_admin = where.split(" ")[1].startswith(("/admin/", "/api/profiles"))
        assert (owner is not app) == under_admin == (access.role == ADMIN), where
        if under_admin:
            assert require_admin in owner.middlewares, where
        seen.add(where)
    assert {"GET /admin/status", "POST /admin/reload", "GET /health", "POST /v1/chat/completions",
            "GET /metrics"} <= seen
    assert check_routes(app) == []


async def test_a_route_without_a_declaration_fails_the_start_up(tmp_path):
    app = create_app(catalogue(tmp_path))

    async def forgotten(request: web.Request) -> web.Response:
        return web.json_response({"models": "all of them"})

    app.router.add_get("/v1/everything", forgotten)
    server = TestServer(app)
    with pytest.raises(RuntimeError, match=r"GET /v1/everything \(.*forgotten\) has no access declaration"):
        await server.start_server()
    await server.close()
    assert MANAGER not in app, "the check runs before anything starts"


def test_admin_routes_live_in_the_admin_application_only(tmp_path):
    app = create_cluster_app(catalogue(tmp_path), "s" * 32)
    open_admin, stray = admin_app(), admin_app()

    @declare(PUBLIC, Models.NONE)
    async def page(request: web.Request) -> web.Response:
        return web.Response()

    @declare(ADMIN, Models.EVERY)
    async def status(request: web.Request) -> web.Response:
        return web.Response()

    open_admin.router.add_get("/page", page)
    app.add_subapp("/ops", open_admin)
    app.router.add_get("/status-of-everything", status)
    stray.router.add_get("/x", page)
    wrong = check_routes(app)
    assert any("GET /ops/page" in w and "declared public inside /admin" in w for w in wrong), wrong
    assert any("GET /status-of-everything" in w and "outside the /admin sub-application" in w for w in wrong), wrong
    bare = web.Application()
    bare.router.add_get("/page", page)
    assert check_routes(bare) == ["the application has no require_auth middleware"]


def test_a_static_route_is_declared_on_its_resource_with_its_head_route(tmp_path):
    app = web.Application(middlewares=[require_auth])
    app.router.add_static("/files", tmp_path)
    assert check_routes(app) == [f"{m} /files (StaticResource._handle) has no access declaration "
                                 "(router.http.access.declare)" for m in ("GET", "HEAD")]
    app = web.Application(middlewares=[require_auth])
    declare(PUBLIC, Models.NONE)(app.router.add_static("/files", tmp_path))
    assert check_routes(app) == []


async def test_the_cluster_front_declares_its_routes_as_one_host_does(tmp_path):
    config = catalogue(tmp_path)
    single, front = create_app(config), create_cluster_app(config, "s" * 32)
    differ = []
    for _, route in routes(front):
        path = route.resource.canonical if route.resource else ""
        if path == "/cluster" or route.method == "HEAD":
            continue
        for query in ({}, {"model": OWN}, {"reload": "1"}):
            request = make_mocked_request(route.method, path.replace("{model}", OWN).replace("{name}", OWN))
            mine = access_for(await front.router.resolve(request), query)
            theirs = access_for(await single.router.resolve(request), query)
            if (mine.role, mine.models, mine.holds) != (theirs.role, theirs.models, theirs.holds):
                differ.append(f"{route.method} {path} {query}: {mine} != {theirs}")
    assert not differ
    served = {f"{r.method} {r.resource.canonical}" for _, r in routes(front) if r.resource}
    assert {"GET /admin/profiles", "PUT /admin/profiles/active", "GET /api/profiles",
            "PUT /api/profiles/active"} <= served, "the front switches its own profile"
    assert {"GET /admin/requests", "DELETE /admin/requests/{id}"} <= served, "the front lists and cancels its own"
    cluster = access_for(await front.router.resolve(make_mocked_request("GET", "/cluster")), {})
    assert (cluster.role, cluster.models) == (INFERENCE, Models.EVERY), "every host's models: not for a scoped key"


# ----- what each kind of key gets from each route ------------------------------

# What each class of route answers each kind of caller: ok (its handler answered), 401, 403
# (insufficient_role or model_scope), or, for a route that names a model, "ok/404": the
# team key's own model is served, another is 404 model_not_found as if it did not exist.
CLASSES = {
    #              no key  scoped    read      admin key admin token
    "public":     ("ok",   "ok",     "ok",     "ok",     "ok"),
    "read":       ("401",  "ok",     "ok",     "ok",     "401"),
    "read named": ("401",  "ok/404", "ok",     "ok",     "401"),
    "read every": ("401",  "403",    "ok",     "ok",     "401"),
    "inference":  ("401",  "ok",     "403",    "ok",     "401"),
    "named":      ("401",  "ok/404", "403",    "ok",     "401"),
    "every":      ("401",  "403",    "403",    "ok",     "401"),
    "admin":      ("401",  "401",    "401",    "ok",     "ok"),
}
M = "{m}"  # where a route names the model
ROWS: list[tuple[str, str, str]] = [
    ("GET", "/health", "public"), ("GET", "/v1/health", "public"), ("GET", "/openapi.json", "public"),
    ("GET", "/dashboard", "public"), ("GET", "/dashboard/", "public"), ("GET", "/", "public"),
    ("HEAD", "/index.html", "public"),
    ("POST", "/no/such/route", "inference"), ("GET", "/tools", "inference"), ("POST", "/tools", "inference"),
    ("GET", "/cors-proxy", "inference"), ("POST", "/cors-proxy", "inference"),
    ("GET", "/v1/stream?conv_id=c1", "inference"), ("DELETE", "/v1/stream?conv_id=c1", "inference"),
    ("POST", "/v1/streams/lookup", "inference"),
    ("GET", "/v1/models", "read"), ("GET", "/models", "read"), ("HEAD", "/v1/models", "read"),
    ("GET", "/models/sse", "read"), ("GET", "/props", "read"),
    ("GET", f"/props?model={M}", "read named"), ("GET", f"/metrics?model={M}", "read named"),
    ("GET", "/metrics", "read every"), ("GET", "/api/activity", "read every"),
    ("GET", "/api/activity/stream", "read every"), ("GET", "/dashboard/api/models", "read every"),
    *(("POST", path, "named") for path in POST_ROUTES), ("POST", "/slots/0", "named"),
    ("POST", "/models/load", "named"), ("POST", "/models/unload", "named"),
    ("GET", f"/slots?model={M}", "named"), ("GET", f"/lora-adapters?model={M}", "named"),
    ("GET", f"/upstream/{M}/props", "named"), ("POST", f"/upstream/{M}/tokenize", "named"),
    ("GET", f"/logs/{M}", "named"), ("GET", f"/logs/stream/{M}", "named"),
    ("GET", "/models?reload=1", "every"), ("GET", "/v1/models?reload=1", "every"), ("POST", "/models", "every"),
    ("DELETE", "/models", "every"), ("POST", "/models/reload", "every"),
    ("GET", "/api/version", "public"), ("GET", "/api/tags", "read"), ("GET", "/api/ps", "read"),  # Ollama's API
    ("POST", "/api/show", "read named"), ("POST", "/api/chat", "named"), ("POST", "/api/generate", "named"),
    ("POST", "/api/embed", "named"), ("POST", "/api/embeddings", "named"), ("POST", "/api/pull", "every"),
    ("DELETE", "/api/delete", "every"), ("POST", "/api/copy", "every"), ("POST", "/api/create", "inference"),
    ("POST", "/api/push", "inference"), ("POST", "/api/blobs/sha256:00", "inference"),
    ("GET", "/admin/status", "admin"), ("POST", "/admin/reload", "admin"), ("POST", "/admin/rescan", "admin"),
    ("POST", f"/admin/models/{M}/load", "admin"), ("POST", f"/admin/models/{M}/unload", "admin"),
    ("DELETE", f"/admin/models/{M}", "admin"), ("POST", "/admin/download", "admin"),
    ("GET", "/admin/downloads", "admin"), ("GET", "/admin/download/events", "admin"),
    ("GET", "/admin/config", "admin"), ("PUT", "/admin/config", "admin"),
    ("GET", "/admin/captures", "admin"), ("GET", "/admin/captures/1", "admin"),
    ("GET", "/admin/requests", "admin"), ("DELETE", "/admin/requests/r1", "admin"),
    ("GET", "/admin/profiles", "admin"), ("PUT", "/admin/profiles/active", "admin"),
    ("GET", "/api/profiles", "admin"), ("PUT", "/api/profiles/active", "admin"),  # llama-swap's paths
    *((m, f"{p}/resp_0{tail}", "inference") for p in ("/v1/responses", "/responses")  # stored responses
      for m, tail in (("GET", ""), ("DELETE", ""), ("GET", "/input_items"))),
    ("GET", "/admin/responses", "admin"), ("DELETE", "/admin/responses?key=none", "admin"),
    *(("POST", path, "named")
      for path in (*media.JSON_ROUTES, *media.FORM_ROUTES, *media.VERSIONLESS, *media.AUDIOAPI)),
    *(("GET", f"{path}?model={M}", "named") for path in media.GET_ROUTES),
    ("GET", "/admin", "admin"), ("GET", "/admin/no/such/route", "admin"), ("GET", "/admin/reload", "admin"),
]


def request_of(method: str, path: str, cls: str, model: str) -> tuple[str, dict[str, Any]]:
    """The URL and the body of one request: the model named where the route names one."""
    url = path.replace(M, model)
    if method in ("GET", "HEAD", "DELETE") or cls == "admin":
        return url, {}
    if path == "/v1/audio/transcriptions":
        form = aiohttp.FormData()
        form.add_field("model", model)
        form.add_field("file", b"RIFF", filename="a.wav")
        return url, {"data": form}
    return url, {"json": {"model": model, "messages": []} if "named" in cls else {}}


def verdict(status: int, code: Any, message: str) -> str:
    """What an answer says of the keys; Ollama's errors are `{"error": message}`, without a code."""
    if status == 401:
        return "401"
    if status == 403 and (code in ("insufficient_role", "model_scope") or message.startswith("this API key")):
        return "403"
    if status == 404 and (code == "model_not_found" or re.fullmatch(r"model '[^']*' not found", message)):
        return "404"
    assert status < 500, f"a handler failed ({status} {code} {message})"
    return "ok"


async def answer(client: TestClient, method: str, url: str, headers: dict[str, str], **body: Any) -> str:
    async with client.request(method, url, headers=headers, **body) as resp:
        data = await resp.json() if resp.content_type == "application/json" else None
        err = data.get("error") if isinstance(data, dict) else None
        code, message = (err.get("code"), err.get("message", "")) if isinstance(err, dict) else (None, str(err or ""))
        if resp.status == 401:
            assert "WWW-Authenticate" in resp.headers
        return verdict(resp.status, code, message)  # an event stream is left at its headers


@pytest.fixture
async def client(tmp_path):
    client = TestClient(TestServer(create_app(catalogue(tmp_path))))
    await client.start_server()
    yield client
    await client.close()


async def test_every_route_answers_each_kind_of_key_as_documented(client):
    got, expected = {}, {}
    for method, path, cls in ROWS:
        models = (OWN, OTHER) if M in path or "named" in cls else (OWN,)
        for kind, column in zip(KINDS, CLASSES[cls], strict=True):
            for model, want in zip(models, column.split("/") if "/" in column else [column] * 2, strict=False):
                url, body = request_of(method, path, cls, model)
                cell = f"{kind:11} {method} {url}"
                expected[cell] = want
                got[cell] = await answer(client, method, url, KINDS[kind], **body)
    wrong = sorted(f"{cell}: {got[cell]} (expected {expected[cell]})" for cell in got if got[cell] != expected[cell])
    assert not wrong, "\n".join(wrong)


async def test_the_table_covers_every_route(client):
    app = client.server.app
    hit = set()
    for method, path, _ in ROWS:
        info = await app.router.resolve(make_mocked_request(method, path.replace(M, OWN)))
        hit.add(id(info.route))
    missed = [f"{r.method} {r.resource.canonical}" for _, r in routes(app)
              if id(r) not in hit and r.method != "HEAD" and r.resource is not None]
    assert not missed, f"routes the table does not try: {missed}"


async def test_unknown_admin_paths_answer_as_before_behind_the_same_check(client):
    token = KINDS["admin token"]
    resp = await client.get("/admin/reload", headers=token)
    assert (resp.status, resp.headers["Allow"]) == (405, "POST")
    assert (await resp.json())["error"] == {"message": "GET is not allowed on /admin/reload",
                                            "type": "invalid_request_error", "code": "method_not_allowed"}
    resp = await client.get("/admin", headers=token)
    assert resp.status == 404 and (await resp.json())["error"]["message"] == "no route for GET /admin"
    resp = await client.get("/admin/reload")
    assert resp.status == 401 and resp.headers["WWW-Authenticate"] == 'Bearer realm="llama-router admin"'
    assert (await resp.json())["error"]["code"] == "invalid_admin_token"
    resp = await client.get("/v1/models", headers=token)
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="llama-router"', "the admin token is not an API key"


async def test_admin_is_disabled_without_a_token_or_an_admin_key(tmp_path):
    config = parse_config({"router": {"api_keys": [TEAM]}, "models": {}}, "<test>")
    async with TestClient(TestServer(create_app(config))) as client:
        for path in ("/admin/status", "/admin/no/such/route", "/admin"):
            resp = await client.get(path, headers={"Authorization": f"Bearer {TEAM}"})
            err = (await resp.json())["error"]
            assert (resp.status, err["code"]) == (403, "admin_disabled") and "admin disabled" in err["message"], path


async def test_an_event_stream_holds_none_of_its_keys_concurrency(tmp_path):
    config = parse_config({"router": {"api_keys": [{"key": TEAM, "concurrency": 1}], "admin_token": TOKEN},
                           "models": {OWN: {"path": str(tmp_path / "q.gguf")}}}, "<test>")
    headers = {"Authorization": f"Bearer {TEAM}"}
    async with TestClient(TestServer(create_app(config))) as client:
        streams = [await client.get(path, headers=headers) for path in
                   ("/models/sse", "/api/activity/stream", f"/logs/stream/{OWN}")]
        assert [s.status for s in streams] == [200, 200, 200]
        resp = await client.get("/v1/models", headers=headers)
        assert resp.status == 200, await resp.text()
        for s in streams:
            s.close()
