"""The reply headers that say another model served a request (docs/scheduling.md):
`X-Fallback-From` (the model asked for) and `X-Fallback-Reason` (why it could
not serve, router/core/fallback.py), and `X-Selector` (the selector the request
named). One place builds them, for one host's leases and the cluster front's."""

from __future__ import annotations


def served_headers(fell_from: str | None, reason: str | None, selector: str | None = None) -> dict[str, str]:
    """The headers of a reply served by a fallback of `fell_from` (None: by the model asked for)."""
    headers = {} if selector is None else {"X-Selector": selector}
    if fell_from is not None:
        headers.update({"X-Fallback-From": fell_from, "X-Fallback-Reason": reason or ""})
    return headers
