"""Which model an Ollama request names, and which model served it (issue #27): a
selector's target or a model's fallback serves under its own name, and the
reply's headers say why (http/fallback_headers.py), as api/inference.py's do."""

from __future__ import annotations

from dataclasses import dataclass

from router.catalogue.config import ModelSpec
from router.core.manager import Lease
from router.http.fallback_headers import served_headers


@dataclass(frozen=True)
class Named:
    """The model a request names. `spec`: the catalogue's entry (for a selector, the target its
    strategy picks on arrival); `asked`: the name to lease (a selector's id, else the model's);
    `requested`: the name as the client sent it, which the reply keeps when that model serves."""

    spec: ModelSpec
    asked: str
    requested: str


@dataclass(frozen=True)
class Served:
    """Who served a request: the name its reply gives (`model`), and the headers saying why
    another model than the one named did (http/fallback_headers.py)."""

    model: str
    headers: dict[str, str]


def served(held: Lease, named: Named) -> Served:
    """As api/inference.py names it: the model that served when a fallback or a selector did."""
    model = held.model if held.stands_in else named.requested
    return Served(model, served_headers(held.fell_from, held.fallback_reason, held.selector))


def selector_headers(selector: str | None) -> dict[str, str]:
    """The headers of a reply about a selector's target that no lease served (an unload)."""
    return served_headers(None, None, selector)
