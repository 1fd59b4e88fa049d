"""The catalogue's `profiles:` (llama-swap's): what a pin may name, and the errors that name
the file, the key and what was expected (router/catalogue/parse.py)."""

from __future__ import annotations

import pytest

from router.catalogue.config import ConfigError
from router.catalogue.parse import parse_config

MODELS = {"a": {"path": "/m/a.gguf", "aliases": ["a-fast"], "set_params_by_id": {"a:hot": {"temperature": 1.5}}},
          "b": {"path": "/m/b.gguf"}}
PEERS = {"remote": {"url": "http://127.0.0.1:9", "models": ["gpt-*"]}}


def catalogue(profiles, **more):
    return parse_config({"models": MODELS, "peers": PEERS, "profiles": profiles, **more}, "/etc/config.yaml")


def test_a_pin_may_name_a_model_an_alias_a_virtual_id_a_peer_model_or_nothing():
    pins = {"chat": "b", "fast": "a-fast", "hot": "a:hot", "cloud": "remote/gpt-4o", "bare": "gpt-4o",
            "a": "b", "gone": None, "gone-too": ""}
    profile = catalogue({"coding": {"description": "for code", "pins": pins}}).profiles["coding"]
    assert profile.name == "coding" and profile.description == "for code"
    assert profile.pins == {**pins, "gone-too": None}, "an empty target turns the id off, as null"
    assert catalogue({}).profiles == {} and parse_config({}, "<t>").profiles == {}


def test_a_pin_may_name_a_selector():
    config = catalogue({"p": {"pins": {"chat": "either"}}},
                       selectors={"either": {"strategy": "warm", "targets": ["a", "b"]}})
    assert config.profiles["p"].pins == {"chat": "either"}


@pytest.mark.parametrize(("profiles", "key", "says"), [
    ({"p": {"pins": {"chat": "nope"}}}, "profiles.p.pins.chat", "'nope' is not a model"),
    ({"p": {"pins": {"first": "b", "second": "first"}}}, "profiles.p.pins.second", "pins do not chain"),
    ({"p": {"pins": {"cloud": "elsewhere/gpt-4o"}}}, "profiles.p.pins.cloud", "is not a model"),
    ({"p": {"pins": {"cloud": "remote/llama"}}}, "profiles.p.pins.cloud", "is not a model"),  # not its models
    ({"p": {"pins": {}}}, "profiles.p.pins", "at least one"),
    ({"p": {"description": "no pins"}}, "profiles.p.pins", "at least one"),
    ({"p": ["a", "b"]}, "profiles.p", "older list"),
    ({"p": {"pins": {"chat": ["b"]}}}, "profiles.p.pins.chat", "expected a model name or null, got a list"),
    ({"p": {"pins": {"bad name": "b"}}}, "profiles.p.pins.bad name", "expected a model id"),
    ({"bad name": {"pins": {"chat": "b"}}}, "profiles.bad name", "expected a profile name"),
    ({"p": {"pins": {"chat": "b"}, "active": True}}, "profiles.p.active", "unknown key"),
    (["p"], "profiles", "expected a mapping of name: profile"),
])
def test_a_wrong_profile_is_an_error_naming_its_key(profiles, key, says):
    with pytest.raises(ConfigError) as e:
        catalogue(profiles)
    assert e.value.source == "/etc/config.yaml" and e.value.key == key
    assert says in str(e.value)
