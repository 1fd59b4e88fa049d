"""Requests for a peer's models (router/core/peers.py), relayed to the peer, and
the peers' models in this router's model list.

The relay is the one the children have (router/http/proxy.py over the pool,
TLS for an https peer): the body goes as it came but for its `model`, which
becomes the peer's own id (a JSON body, or `?model=` of a GET; a multipart
body goes unchanged, so it must name the peer's id itself) after the peer's
`strip_params` and `set_params` (a JSON body is written anew once where the
peer has rules or its id differs; else its bytes go as they came), within the
peer's own `timeouts` (else router.connect_timeout/read_timeout), the peer's key
goes instead of the client's, the reply streams back as it comes with the
name the client asked for, and a peer's error reaches the client with its
status, its message prefixed by the peer's name.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from router.core.peers import PeerModel, Peers, headers
from router.http.api_keys import may_see
from router.http.app_keys import API_KEY, MANAGER, UPSTREAM
from router.http.errors import error_body
from router.http.proxy import ModelRewriter, forward
from router.http.rewrite import apply_params
from router.upstream.endpoint import api_base

PEERS = web.AppKey("peers", Peers)


def peers_of(request: web.Request) -> Peers | None:
    """The router's peers, following its catalogue (asked on every request: kept cheap)."""
    app = request.app  # the main application, where the routes that ask are
    peers = app.get(PEERS)
    if peers is not None:
        peers.sync(app[MANAGER].config)
    return peers


async def peer_route(request: web.Request, name: Any) -> PeerModel | None:
    """The peer model a request names, if it is one (and the request's key may use it);
    None for the catalogue's models and unknown names (the caller answers those)."""
    peers = peers_of(request)
    if peers is None or not peers.specs or not isinstance(name, str) or not name:
        return None
    config = request.app[MANAGER].config
    route = peers.resolve(name, config)
    if route is None and config.resolve(name) is None and peers.stale(name):
        await peers.read_now(name.split("/", 1)[0])  # a model the peer has added since its list was read
        route = peers.resolve(name, config)
    key = request.get(API_KEY)
    if route is None or not (may_see(key, route.fqn, config) or may_see(key, name, config)):
        return None
    return route


async def relay_to_peer(request: web.Request, route: PeerModel, requested: str, body: bytes,
                        data: dict[str, Any] | None, stats: dict[str, Any]) -> web.StreamResponse:
    peers = request.app[PEERS]
    spec = peers.specs[route.peer]
    if data is not None and (data.get("model") != route.model or spec.strip_params or spec.set_params):
        apply_params(data, spec.strip_params, spec.set_params)  # the peer's filters (never `model`)
        data["model"] = route.model
        body = json.dumps(data).encode()
    if request.query.get("model") not in (None, route.model):
        request = request.clone(rel_url=request.rel_url.update_query(model=route.model))
    connect_timeout, read_timeout = request.app[MANAGER].config.timeouts(spec)
    resp = await forward(request, request.app[UPSTREAM], api_base(spec.url), request.path, body or None,
                         connect_timeout=connect_timeout, read_timeout=read_timeout,
                         rewriter=ModelRewriter(route.model, requested) if route.model != requested else None,
                         stats=stats, light=request.method == "GET", upstream_headers=headers(spec))
    if resp.status >= 400 and isinstance(resp, web.Response) and not resp.prepared:
        _name_peer(resp, route.peer)
    return resp


def _name_peer(resp: web.Response, peer: str) -> None:
    """A peer's error, or the relay's own (the peer cannot be reached): its message names the peer."""
    raw = resp.body if isinstance(resp.body, bytes) else b""
    prefix = f"peer '{peer}': "
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        err["message"] = prefix + err["message"]
    elif isinstance(err, str):
        data = {**data, "error": prefix + err} if isinstance(data, dict) else data
    else:
        text = raw.decode("utf-8", "replace").strip()[:500]
        data = error_body(resp.status, prefix + (text or f"answered {resp.status} {resp.reason or ''}".strip()),
                          "upstream_error")
    resp.body = json.dumps(data).encode()
    resp.content_type = "application/json"


def peer_entries(request: web.Request, now: int) -> list[dict[str, Any]]:
    """The peers' models as /v1/models lists them: `PEER/MODEL`, status `external`, the peer's
    own fields of its entry (owned_by, created...) kept where they do not clash."""
    peers = peers_of(request)
    if peers is None:
        return []
    config, key = request.app[MANAGER].config, request.get(API_KEY)
    out = []
    for m in peers.served():
        bare = peers.bare_name_routes(m) and config.resolve(m.model) is None
        if not (may_see(key, m.fqn, config) or (bare and may_see(key, m.model, config))):
            continue
        st = peers.state[m.peer]
        own = st.listed.get(m.model, {})
        entry: dict[str, Any] = {k: v for k, v in own.items() if k not in ("id", "status", "aliases", "object")}
        entry.update({
            "id": m.fqn, "object": "model", "owned_by": own.get("owned_by", m.peer),
            "created": own.get("created", now), "name": f"{m.peer}: {m.model}",
            "aliases": [m.model] if bare else [],
            "status": {"value": "external", "peer": m.peer, "reachable": st.reachable, "error": st.error},
        })
        out.append(entry)
    return out
