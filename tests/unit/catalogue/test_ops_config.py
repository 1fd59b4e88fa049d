"""The operations keys of the catalogue, and what a reload counts as a change."""

from __future__ import annotations

import pytest

from router.catalogue.config import ConfigError
from router.catalogue.parse import parse_config
from router.core.reload import diff


def cfg(router=None, spawn=None, **models):
    data = {"router": router or {}, "models": models or {"a": {"path": "/m/a.gguf"}}}
    if spawn:
        data["spawn"] = spawn
    return parse_config(data, "c.yaml")


@pytest.mark.parametrize("router, key, expected", [
    ({"notify_model_swap": "yes"}, "router.notify_model_swap", "expected true or false"),
    ({"ttl": -1}, "router.ttl", "expected a value >= 0"),
    ({"drain_timeout": "soon"}, "router.drain_timeout", "expected a number"),
    ({"api_keys": "short"}, "router.api_keys[0]", "at least 8 characters"),
    ({"watch_config": 1}, "router.watch_config", "expected true or false"),
])
def test_bad_router_settings_name_the_key(router, key, expected):
    with pytest.raises(ConfigError) as e:
        cfg(router)
    assert e.value.key == key and expected in str(e.value)


@pytest.mark.parametrize("flag", ["--model", "--port", "-m", "--api-key", "temp", "--te mp", "--x;rm"])
def test_allow_args_refuses_reserved_or_odd_flags(flag):
    with pytest.raises(ConfigError) as e:
        cfg(a={"path": "/m/a.gguf", "allow_args": ["--temp", flag]})
    assert e.value.key == "models.a.allow_args[1]"


def test_defaults_and_values():
    c = cfg({"ttl": 300, "startup_model": "alias-a", "api_keys": ["k" * 8]},
            a={"path": "/m/a.gguf", "aliases": ["alias-a"], "ttl": 0, "allow_args": ["--temp"]})
    assert c.router.ttl == 300 and c.router.startup_model == "alias-a" and c.router.api_keys == ("k" * 8,)
    assert c.models["a"].ttl == 0 and c.models["a"].allow_args == ("--temp",)
    d = cfg()
    assert d.router.admin_token is None and d.router.api_keys == () and d.router.ttl == 0
    assert d.router.notify_model_swap is False and d.router.watch_config is True


def test_reload_diff_tells_launch_changes_from_others():
    old = cfg(a={"path": "/m/a.gguf"}, b={"path": "/m/b.gguf"}, c={"path": "/m/c.gguf"})
    new = cfg({"models_max": 2},
              a={"path": "/m/a.gguf", "aliases": ["x"], "ttl": 5},  # not a launch setting
              b={"path": "/m/b.gguf", "args": ["--top-k", "5"]},    # launch setting
              d={"path": "/m/d.gguf"})
    res = diff(old, new)
    assert (res.added, res.removed, res.changed, res.kept) == (["d"], ["c"], ["b"], ["a"])
    # A new global spawn command changes every model that uses it.
    res = diff(old, cfg(spawn={"command": ["llama-server", "--model", "$path", "--port", "$port", "-fa"]},
                        a={"path": "/m/a.gguf"}, b={"path": "/m/b.gguf"}, c={"path": "/m/c.gguf"}))
    assert res.changed == ["a", "b", "c"]
    assert diff(old, cfg({"port": 9999}, a={"path": "/m/a.gguf"}, b={"path": "/m/b.gguf"},
                         c={"path": "/m/c.gguf"})).needs_restart == ["port"]
