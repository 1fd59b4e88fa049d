"""Profiles for the operator (core/profiles.py): GET /admin/profiles lists the catalogue's
profiles and the active one, PUT /admin/profiles/active switches (`{"name": null}`: none);
llama-swap's GET /api/profiles and PUT /api/profiles/active answer the same, behind the
same admin check. While a profile is active, /v1/models lists its pins (`profile_entries`).
The cluster front serves the same routes over its own ActiveProfile (`add_profile_routes`' `holder`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from router.core.profiles import HoldsProfile, UnknownProfile
from router.http.access import ADMIN, Models, admin_app, declare
from router.http.api_keys import may_see, may_use
from router.http.app_keys import MANAGER
from router.http.errors import HTTPError, short
from router.http.request import parse_json_object, read_body

LLAMA_SWAP_PREFIX = "/api/profiles"  # llama-swap's UI API: its own /admin-like sub-application
# Who holds the active profile, where it is not the ModelManager (the cluster front's ClusterManager).
PROFILE_HOLDER: web.AppKey[HoldsProfile] = web.AppKey("profile_holder")


def _holder(request: web.Request) -> HoldsProfile:
    holder = request.config_dict.get(PROFILE_HOLDER)
    return holder if holder is not None else request.config_dict[MANAGER]


def listing(manager: HoldsProfile) -> dict[str, Any]:
    profiles = sorted(manager.config.profiles.values(), key=lambda p: p.name)
    return {"active": manager.profile.name,
            "profiles": [{"id": p.name, "description": p.description or "", "pins": dict(p.pins)} for p in profiles]}


@declare(ADMIN, Models.EVERY)
async def handle_profiles(request: web.Request) -> web.Response:
    return web.json_response(listing(_holder(request)))


@declare(ADMIN, Models.EVERY)
async def handle_active(request: web.Request) -> web.Response:
    """`{"name": "coding"}` switches to that profile, `{"name": null}` to none."""
    manager = _holder(request)
    data = parse_json_object(await read_body(request, manager.config.router))
    if "name" not in data:
        raise HTTPError(400, "'name' is required: a profile's name, or null for none", code="invalid_profile")
    name = data["name"]
    if name is not None and not isinstance(name, str):
        raise HTTPError(400, "'name' must be a profile's name (a string) or null", code="invalid_profile")
    try:
        manager.profile.select(manager.config, name or None, manager.events)
    except UnknownProfile:
        raise HTTPError(404, f"profile '{short(str(name))}' not found", "invalid_request_error",
                        "profile_not_found") from None
    return web.json_response({"active": manager.profile.name})


def profile_entries(manager: HoldsProfile, key: Any, listed: list[dict[str, Any]], now: int) -> list[dict[str, Any]]:
    """/v1/models' entries for the active profile's pins that name no listed model (llama-swap
    lists them too): each as the entry of the model it goes to, under the pin's id, with
    `profile` and `pinned_to`. A pin turned off hides nothing; a pin whose target the API key
    may not use is not listed."""
    profile = manager.profile.spec
    if profile is None:
        return []
    config = manager.config
    by_id = {e["id"]: e for e in listed}
    out = []
    for pin, target in profile.pins.items():
        if target is None or pin in by_id or config.resolve(pin) is not None or pin in config.selectors:
            continue
        spec = config.resolve(target)
        if not (may_use(key, spec) if spec is not None else may_see(key, target, config)):
            continue
        base = by_id.get(target) or (by_id.get(spec.name) if spec is not None else None)
        entry = {k: v for k, v in base.items() if k != "virtual_of"} if base is not None else {
            "object": "model", "owned_by": "llama-router", "created": now, "tags": []}
        out.append({**entry, "id": pin, "aliases": [], "profile": profile.name, "pinned_to": target})
    return out


def add_profile_routes(admin: web.Application, app: web.Application, holder: HoldsProfile | None = None) -> None:
    """/admin/profiles on the /admin sub-application, and llama-swap's paths on their own
    admin sub-application (the same admin check). `holder`: who holds the active profile
    (default: the app's ModelManager)."""
    if holder is not None:
        app[PROFILE_HOLDER] = holder
    admin.router.add_get("/profiles", handle_profiles)
    admin.router.add_put("/profiles/active", handle_active)
    swap = admin_app()
    swap.router.add_get("", handle_profiles)
    swap.router.add_put("/active", handle_active)
    app.add_subapp(LLAMA_SWAP_PREFIX, swap)
