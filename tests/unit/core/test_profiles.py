"""The profile in force and its pins (router/core/profiles.py): pure pin resolution, llama-swap's
longest-prefix match on /upstream paths, and what a switch and a reload do to the active profile."""

from __future__ import annotations

import pytest

from router.catalogue.parse import parse_config
from router.core.events import EventBus
from router.core.profiles import PROFILE_EVENT, ActiveProfile, UnknownProfile, pin, pin_upstream


def catalogue(**profiles):
    return parse_config({"models": {"a": {"path": "/m/a.gguf", "aliases": ["a-fast"]}, "b": {"path": "/m/b.gguf"}},
                         "profiles": profiles}, "<test>")


CODING = {"description": "for code", "pins": {"chat": "b", "a": "b", "fast": "a-fast", "off": None}}


def test_a_pin_names_its_target_an_unpinned_id_itself_and_a_null_pin_none():
    profile = catalogue(coding=CODING).profiles["coding"]
    assert pin(profile, "chat") == "b"
    assert pin(profile, "a") == "b", "a pin may shadow a model's own name"
    assert pin(profile, "fast") == "a-fast", "an alias target is resolved later, as any alias"
    assert pin(profile, "off") is None
    assert pin(profile, "b") == "b" and pin(None, "chat") == "chat"


@pytest.mark.parametrize(("path", "pins", "want"), [
    ("public/v1/chat/completions", {"public": "real"}, ("public", "real")),
    ("author/public/v1/chat/completions", {"author": "short", "author/public": "real"}, ("author/public", "real")),
    ("disabled/props", {"disabled": None}, ("disabled", None)),
    ("real/v1/chat/completions", {"public": "real"}, None),
    ("publicity/props", {"public": "real"}, None),  # a pin is a whole segment, never a prefix of one
    ("public", {"public": "real"}, ("public", "real")),
])
def test_upstream_paths_take_the_longest_pin_that_starts_them(path, pins, want):
    assert pin_upstream(pins, path) == want


def test_none_is_active_at_first_and_a_switch_to_an_unknown_profile_changes_nothing():
    config, events = catalogue(coding=CODING), EventBus()
    seen = events.subscribe()
    active = ActiveProfile()
    assert active.spec is None and active.name is None
    assert active.select(config, "coding", events) is True
    assert active.name == "coding" and active.spec is config.profiles["coding"]
    assert seen.get_nowait()["data"] == {"active": "coding"} and seen.empty()
    with pytest.raises(UnknownProfile):
        active.select(config, "missing", events)
    assert active.name == "coding" and seen.empty()
    assert active.select(config, "coding", events) is False, "the same profile again: no change, no event"
    assert active.select(config, None, events) is True and active.spec is None
    last = seen.get_nowait()
    assert (last["model"], last["event"], last["data"]) == ("*", PROFILE_EVENT, {"active": None})


def test_a_reload_keeps_the_active_profile_with_its_new_pins_and_drops_a_removed_one():
    active = ActiveProfile()
    active.select(catalogue(coding=CODING), "coding")
    edited = catalogue(coding={"pins": {"chat": "a"}}, other={"pins": {"x": "b"}})
    assert active.follow(edited) is False
    assert active.name == "coding" and pin(active.spec, "chat") == "a"
    assert active.follow(catalogue(other={"pins": {"x": "b"}})) is True
    assert active.spec is None
    assert active.follow(catalogue(coding=CODING)) is False and active.spec is None, "not switched on again"
