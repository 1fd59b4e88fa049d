"""Scoped API keys: how entries are read, which routes each role reaches, which
models a key sees, and its rate and concurrency limits (router/http/api_keys.py;
the role and model rule of a route are its declaration, http/access.py)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from aiohttp.test_utils import make_mocked_request

from router.app import create_app
from router.catalogue.config import ApiKey, ConfigError, ModelSpec, Rate
from router.catalogue.parse import parse_config
from router.http.access import Access, Models, access_for
from router.http.api_keys import (
    KeyLimits,
    TokenBucket,
    as_key,
    find_key,
    may_see,
    may_use,
    route_refusal,
)

SCHEMA = json.loads((Path(__file__).resolve().parents[3] / "router" / "catalogue" /
                     "catalogue.schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
TEAM = "team-key-0123456789"
MODELS = {"qwen-7b": {"path": "/q.gguf", "aliases": ["chat"]}, "gemma": {"path": "/g.gguf"},
          "llama": {"path": "/l.gguf", "aliases": ["qwen-like"]}}


def keys(*entries, models=MODELS):
    return parse_config({"router": {"api_keys": list(entries)}, "models": models}, "c.yaml")


# ----- reading router.api_keys -------------------------------------------------

def test_plain_and_scoped_entries_side_by_side():
    config = keys("plain-key-12345", {"key": TEAM, "models": ["qwen-*", "gemma"], "role": "read",
                                      "rate": "60/min", "concurrency": 4})
    plain, team = config.router.api_keys
    assert plain == "plain-key-12345"
    assert team == ApiKey(key=TEAM, models=("qwen-*", "gemma"), role="read", rate=Rate(60, 60.0), concurrency=4)
    assert as_key(plain) == ApiKey(key="plain-key-12345", role="inference")


def test_a_key_never_shows_in_repr(tmp_path):
    secret = tmp_path / "team.key"
    secret.write_text("file-secret-0123456789\nignored second line\n")
    config = parse_config({"router": {"api_keys": [{"key": TEAM}, {"key_file": "team.key"}]}},
                          str(tmp_path / "config.yaml"))
    assert config.router.api_keys[1].key == "file-secret-0123456789"
    assert config.router.api_keys[1].key_file == str(secret)
    for text in (repr(config), repr(config.router), repr(config.router.api_keys)):
        assert TEAM not in text and "file-secret" not in text


def test_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("TEAM_KEY", TEAM)
    assert keys({"key": "${TEAM_KEY}", "models": "qwen-*"}).router.api_keys[0].key == TEAM


@pytest.mark.parametrize(("entry", "where", "why"), [
    ({"models": ["x"]}, "router.api_keys[0].key", "either `key`"),
    ({"key": TEAM, "key_file": "/k"}, "router.api_keys[0].key", "either `key`"),
    ({"key": "short"}, "router.api_keys[0]", "at least 8 characters"),
    ({"key": TEAM, "role": "owner"}, "router.api_keys[0].role", "read, inference, admin"),
    ({"key": TEAM, "role": "admin", "models": ["a"]}, "router.api_keys[0].models", "admin key sees every model"),
    ({"key": TEAM, "rate": "60/fortnight"}, "router.api_keys[0].rate", "N/minute"),
    ({"key": TEAM, "rate": "0/s"}, "router.api_keys[0].rate", "N/minute"),
    ({"key": TEAM, "concurrency": -1}, "router.api_keys[0].concurrency", ">= 0"),
    ({"key": TEAM, "scope": "x"}, "router.api_keys[0].scope", "unknown key"),
    ({"key_file": "/no/such/file"}, "router.api_keys[0].key_file", "cannot read"),
    ([TEAM], "router.api_keys[0]", "expected a key"),
])
def test_bad_entries_name_their_key_and_are_refused_by_the_schema(entry, where, why):
    with pytest.raises(ConfigError) as e:
        keys(entry)
    assert e.value.key == where and why in str(e.value)
    assert TEAM not in str(e.value)
    if "key_file" not in entry:  # the schema cannot know whether a file exists
        assert not VALIDATOR.is_valid({"router": {"api_keys": [entry]}})


def test_one_key_with_two_scopes_is_refused_without_naming_it():
    with pytest.raises(ConfigError, match=r"router.api_keys\[1\]: the same key as router.api_keys\[0\]") as e:
        keys(TEAM, {"key": TEAM, "models": ["gemma"]})
    assert TEAM not in str(e.value)
    assert keys(TEAM, TEAM).router.api_keys == (TEAM, TEAM)  # plain duplicates stay accepted, as before


@pytest.mark.parametrize("entry", [
    {"key": TEAM}, {"key": "${KEY}", "models": "qwen-*"}, {"key_file": "k.txt", "role": "admin"},
    {"key": TEAM, "models": ["a", "b*"], "role": "read", "rate": "10 / Second", "concurrency": "2"},
    {"key": TEAM, "rate": "1/h", "models": None}, {"key": 1234567890},
])
def test_good_entries_pass_the_schema(entry, monkeypatch):
    monkeypatch.setenv("KEY", TEAM)
    assert VALIDATOR.is_valid({"router": {"api_keys": [entry], "tls_cert": None, "tls_key": None}})
    if "key_file" not in entry:
        keys(entry)


# ----- finding the key --------------------------------------------------------

def test_find_key_gives_the_entry_and_its_place():
    entries = ("plain-key-12345", ApiKey(key=TEAM, models=("gemma",)))
    assert find_key(TEAM, entries) == (1, entries[1])
    assert find_key("plain-key-12345", entries) == (0, ApiKey(key="plain-key-12345"))
    for wrong in (None, "", TEAM[:-1], TEAM + "x", "ünïcödé-key"):
        assert find_key(wrong, entries) is None
    assert find_key(TEAM, (TEAM, ApiKey(key=TEAM, role="admin")))[0] == 0  # the first one wins


# ----- roles ------------------------------------------------------------------

APP = create_app(parse_config({}, "<test>"))  # never started: its routes are resolved, not served


async def declaration(method: str, path: str, query: dict[str, str]) -> Access:
    """What the single-host app declares for this request (the route it resolves to)."""
    return access_for(await APP.router.resolve(make_mocked_request(method, path)), query)


async def required_role(method, path, query):
    return (await declaration(method, path, query)).role


async def refusal(role, method, path, query=None, models=()):
    access = await declaration(method, path, query or {})
    r = route_refusal(ApiKey(key=TEAM, role=role, models=models), access.role, access.models is Models.EVERY)
    return r and (r.status, r.code)


@pytest.mark.parametrize(("method", "path", "query", "role"), [
    ("GET", "/v1/models", {}, "read"), ("GET", "/models", {}, "read"), ("GET", "/models/sse", {}, "read"),
    ("GET", "/props", {}, "read"), ("GET", "/props", {"model": "gemma"}, "read"), ("GET", "/metrics", {}, "read"),
    ("GET", "/api/activity", {}, "read"), ("GET", "/dashboard/api/models", {}, "read"),
    ("HEAD", "/v1/models", {}, "read"),
    ("GET", "/models", {"reload": "1"}, "inference"), ("POST", "/v1/chat/completions", {}, "inference"),
    ("POST", "/models/load", {}, "inference"), ("GET", "/slots", {}, "inference"),
    ("GET", "/logs/gemma", {}, "inference"), ("GET", "/upstream/gemma/props", {}, "inference"),
    ("POST", "/v1/models", {}, "inference"),
    ("GET", "/admin/status", {}, "admin"), ("POST", "/admin", {}, "admin"), ("POST", "/administrator", {}, "inference"),
    ("GET", "/administrator", {}, "public"),  # the WebUI's catch-all: a page, public to GET and HEAD
])
async def test_the_least_role_of_each_route(method, path, query, role):
    assert await required_role(method, path, query) == role


async def test_roles_are_ordered():
    assert await refusal("read", "GET", "/v1/models") is None
    assert await refusal("read", "POST", "/v1/chat/completions") == (403, "insufficient_role")
    assert await refusal("read", "GET", "/admin/status") == (403, "insufficient_role")
    assert await refusal("inference", "POST", "/v1/chat/completions") is None
    assert await refusal("inference", "GET", "/metrics") is None
    assert await refusal("inference", "GET", "/admin/status") == (403, "insufficient_role")
    assert await refusal("admin", "GET", "/admin/status") is None
    assert await refusal("admin", "DELETE", "/models", {"model": "x"}) is None


async def test_a_key_limited_to_some_models_sees_no_view_of_all_and_changes_no_catalogue():
    limited = ("qwen-*",)
    for method, path, query in (("GET", "/metrics", {}), ("GET", "/api/activity", {}),
                                ("GET", "/api/activity/stream", {}), ("GET", "/dashboard/api/models", {}),
                                ("POST", "/models", {}), ("DELETE", "/models", {"model": "x"}),
                                ("POST", "/models/reload", {}), ("GET", "/v1/models", {"reload": "1"})):
        assert await refusal("inference", method, path, query, limited) == (403, "model_scope"), path
    for method, path, query in (("GET", "/v1/models", {}), ("GET", "/metrics", {"model": "qwen-7b"}),
                                ("POST", "/v1/chat/completions", {}), ("POST", "/models/unload", {}),
                                ("GET", "/models/sse", {}), ("GET", "/props", {})):
        assert await refusal("inference", method, path, query, limited) is None, path


# ----- models -----------------------------------------------------------------

def test_patterns_match_names_and_aliases():
    config = keys(TEAM)
    qwen, gemma, llama = (config.models[n] for n in ("qwen-7b", "gemma", "llama"))
    key = ApiKey(key=TEAM, models=("qwen-*",))
    assert may_use(key, qwen) and not may_use(key, gemma)
    assert may_use(key, llama), "an alias that matches opens the model under every name"
    assert may_use(ApiKey(key=TEAM, models=("chat",)), qwen)
    assert not may_use(ApiKey(key=TEAM, models=("QWEN-*",)), qwen), "names are case-sensitive"
    assert may_use(None, gemma) and may_use(ApiKey(key=TEAM), gemma)
    assert may_use(ApiKey(key=TEAM, models=("g?mma", "[a-f]*")), ModelSpec(name="gemma", path="/g.gguf"))


def test_events_about_names_outside_the_catalogue():
    config = keys(TEAM)
    key = ApiKey(key=TEAM, models=("qwen-*", "org/*"))
    assert may_see(key, "*", config) and may_see(key, "qwen-7b", config) and may_see(key, "chat", config)
    assert may_see(key, "org/repo:Q4_K_M", config)  # a download in progress
    assert not may_see(key, "gemma", config) and not may_see(key, "other/repo:Q8_0", config)
    assert may_see(None, "gemma", config)


# ----- limits -----------------------------------------------------------------

def test_token_bucket_allows_a_burst_then_refills_evenly():
    bucket = TokenBucket(3, 60.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(20.0)
    assert bucket.take(10.0) == pytest.approx(10.0)
    assert bucket.take(20.0) == 0.0
    assert bucket.take(1000.0) == 0.0 and bucket.tokens == pytest.approx(2.0), "never above the burst"


def test_rate_limit_answers_429_with_the_wait():
    limits, key = KeyLimits(), ApiKey(key=TEAM, rate=Rate(3, 60.0))
    for _ in range(3):
        assert limits.enter(key, 100.0) is None
        limits.leave(key)
    refused = limits.enter(key, 100.0)
    assert (refused.status, refused.code, refused.retry_after) == (429, "rate_limit_exceeded", 20)
    assert "3/min" in refused.message and TEAM not in refused.message
    assert limits.enter(key, 120.5) is None
    other = ApiKey(key="other-key-012345", rate=Rate(3, 60.0))
    assert limits.enter(other, 100.0) is None, "each key has its own bucket"


def test_a_changed_rate_starts_a_new_bucket_a_kept_one_keeps_its_state():
    limits = KeyLimits()
    assert limits.enter(ApiKey(key=TEAM, rate=Rate(1, 60.0)), 0.0) is None
    assert limits.enter(ApiKey(key=TEAM, rate=Rate(1, 60.0)), 1.0) is not None  # a reload with the same rate
    assert limits.enter(ApiKey(key=TEAM, rate=Rate(5, 60.0)), 1.0) is None


def test_concurrency_counts_requests_in_flight():
    limits, key = KeyLimits(), ApiKey(key=TEAM, concurrency=2)
    assert limits.enter(key, 0.0) is None and limits.enter(key, 0.0) is None
    refused = limits.enter(key, 0.0)
    assert (refused.status, refused.code, refused.retry_after) == (429, "concurrency_limit_exceeded", 1)
    assert limits.enter(key, 0.0, holds=False) is None, "an event stream does not hold a place"
    limits.leave(key)
    assert limits.in_flight(key) == 1 and limits.enter(key, 0.0) is None
    limits.leave(key)
    limits.leave(key)
    assert limits.in_flight(key) == 0


def test_a_request_refused_for_concurrency_spends_no_rate():
    limits, key = KeyLimits(), ApiKey(key=TEAM, concurrency=1, rate=Rate(2, 60.0))
    assert limits.enter(key, 0.0) is None
    assert limits.enter(key, 0.0).code == "concurrency_limit_exceeded"
    limits.leave(key)
    assert limits.enter(key, 0.0) is None, "the second token was still there"
