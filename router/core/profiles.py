"""Profiles: named sets of model-id pins, one of which is switched on at runtime
(llama-swap's `profiles`; the catalogue's `profiles:`, docs/api.md#profiles).

While a profile is active, a request for one of its pinned ids is served by the
pin's target, before aliases, selectors and fallbacks resolve it; a pin with no
target turns its id off (404). None is active at start-up. A reload keeps the
active profile while the catalogue still has one of that name (with its new
pins), and switches to none when it does not: llama-swap selects none on every
reload; keeping it spares the operator a second call after editing an
unrelated model. The functions here are pure; `ActiveProfile` is the one piece
of state, read by the HTTP layer before it resolves a request's model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from router.catalogue.config import Config, ProfileSpec
from router.core.events import EventBus

PROFILE_EVENT = "profile_changed"  # on the model events' bus, as model "*": {"active": name or None}


class UnknownProfile(KeyError):
    """A profile the catalogue does not have."""


class ActiveProfile:
    """The profile in force, or none (`spec is None`: the request path's one check)."""

    def __init__(self) -> None:
        self.spec: ProfileSpec | None = None

    @property
    def name(self) -> str | None:
        return None if self.spec is None else self.spec.name

    def select(self, config: Config, name: str | None, events: EventBus | None = None) -> bool:
        """Make `name` the active profile (None: none); True when that changed.
        UnknownProfile when the catalogue has no such profile (nothing changes)."""
        spec = None
        if name is not None:
            spec = config.profiles.get(name)
            if spec is None:
                raise UnknownProfile(name)
        return self._set(spec, events)

    def follow(self, config: Config, events: EventBus | None = None) -> bool:
        """After a reload: the same profile with its new pins, or none when it is gone."""
        if self.spec is None:
            return False
        return self._set(config.profiles.get(self.spec.name), events)

    def _set(self, spec: ProfileSpec | None, events: EventBus | None) -> bool:
        changed = self.name != (None if spec is None else spec.name)
        self.spec = spec
        if changed and events is not None:
            events.emit("*", PROFILE_EVENT, {"active": self.name})
        return changed


def pin(profile: ProfileSpec | None, name: str) -> str | None:
    """The id a request for `name` goes on with: the pin's target, `name` itself when the
    profile does not pin it (or no profile is active), None when the profile turns it off."""
    if profile is None or name not in profile.pins:
        return name
    return profile.pins[name]


def pin_upstream(pins: Mapping[str, str | None], path: str) -> tuple[str, str | None] | None:
    """The pin an /upstream/<path> request names, as llama-swap matches it: the longest pin
    that is the whole path or the path's start followed by '/' (a pin may hold '/', as a model
    name may). (pin, target), or None when no pin matches."""
    path = path.lstrip("/")
    found: tuple[str, str | None] | None = None
    for pinned, target in pins.items():
        if (path == pinned or path.startswith(pinned + "/")) and (found is None or len(pinned) > len(found[0])):
            found = (pinned, target)
    return found


class HoldsProfile(Protocol):
    """What holds an ActiveProfile beside its catalogue and events: one host's ModelManager,
    the cluster front's ClusterManager (the HTTP layer pins and switches through either)."""

    config: Config
    profile: ActiveProfile
    events: EventBus
