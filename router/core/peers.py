"""Peers (llama-swap's `peers`): other endpoints whose models this router serves
too. Which of their models, under which names.

Each peer's `/v1/models` is read at start, every REFRESH_S and, at most every
RETRY_S, when a request names one of its models this router has not seen yet
(a model just added there). Its `models` filters choose what is served: a
glob pattern (`qwen-*`) matches the ids the peer lists; a plain name is
served even when the peer does not list it (a hosted API's list is long).
A served model is named `PEER/MODEL`, and `MODEL` alone when no model of the
catalogue and no other peer has that name (the catalogue's own models
always win). A peer that cannot be reached keeps the models it listed last,
marked unreachable; requests for them still go, and its error reaches the
client (router/api/peers.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from router.catalogue.config import NAME_RE, Config, PeerSpec
from router.upstream.client import ChildClient
from router.upstream.endpoint import api_base
from router.upstream.pool import UpstreamError

log = logging.getLogger("router.peers")

REFRESH_S = 60.0
RETRY_S = 5.0  # a request for a model not seen yet reads the peer's list again at most this often
LIST_TIMEOUT_S = 10.0
_GLOB = frozenset("*?[")


@dataclass(frozen=True)
class PeerModel:
    peer: str
    model: str  # its id on the peer

    @property
    def fqn(self) -> str:
        return f"{self.peer}/{self.model}"


@dataclass
class PeerState:
    """What the last reading of a peer's /v1/models found."""

    listed: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> the peer's entry
    reachable: bool | None = None  # None: not read yet
    checked_at: float | None = None
    error: str | None = None
    tried: float = 0.0  # time.monotonic() of the last reading


def headers(spec: PeerSpec) -> dict[str, str]:
    """What goes with every request to the peer: its key, as OpenAI and Anthropic clients send one."""
    return {"Authorization": f"Bearer {spec.api_key}", "x-api-key": spec.api_key} if spec.api_key else {}


class Peers:
    def __init__(self, client: ChildClient) -> None:
        self.client = client
        self.specs: dict[str, PeerSpec] = {}
        self.state: dict[str, PeerState] = {}
        self._served: dict[str, list[PeerModel]] = {}  # per peer
        self._routes: dict[str, PeerModel] = {}  # every name a request may use
        self._reading: dict[str, asyncio.Task[None]] = {}

    def sync(self, config: Config) -> None:
        """Follow the catalogue (a reload): new peers are read in the background."""
        if config.peers == self.specs:
            return
        old, self.specs = self.specs, dict(config.peers)
        # A peer whose settings did not change keeps what it listed.
        kept = {n: st for n, st in self.state.items() if old.get(n) == self.specs.get(n)}
        self.state = {n: kept.get(n) or PeerState() for n in self.specs}
        self._route()
        for name, st in self.state.items():
            if st.checked_at is None:
                self.read_soon(name)
        for name in self.specs:
            if self.state[name].checked_at is None:
                self.read_soon(name)

    # ----- names -----------------------------------------------------------
    def served(self) -> list[PeerModel]:
        """Every peer model served, peer by peer in the catalogue's order."""
        return [m for name in self.specs for m in self._served.get(name, [])]

    def resolve(self, name: str, config: Config) -> PeerModel | None:
        """The peer model a request names; None for a name of the catalogue (it wins) or no peer's."""
        if config.resolve(name) is not None:
            return None
        return self._routes.get(name)

    def bare_name_routes(self, model: PeerModel) -> bool:
        """Whether `model` may be asked for by its own id alone."""
        return self._routes.get(model.model) == model

    def stale(self, name: str) -> bool:
        """A name that may be a peer's model not seen yet: `PEER/...` of a peer not read for RETRY_S."""
        peer = name.split("/", 1)[0]
        st = self.state.get(peer)
        return st is not None and "/" in name and time.monotonic() - st.tried > RETRY_S

    def _route(self) -> None:
        served: dict[str, list[PeerModel]] = {}
        for name, spec in self.specs.items():
            served[name] = _served_ids(spec, self.state[name].listed)
        self._served = served
        routes: dict[str, PeerModel] = {}
        bare: dict[str, list[PeerModel]] = {}
        for models in served.values():
            for m in models:
                routes[m.fqn] = m
                bare.setdefault(m.model, []).append(m)
        for model_id, ms in bare.items():
            if len(ms) == 1 and model_id not in routes:
                routes[model_id] = ms[0]
        self._routes = routes

    # ----- reading the peers' lists -----------------------------------------
    async def read(self, name: str) -> None:
        """Read one peer's /v1/models now."""
        spec, st = self.specs.get(name), self.state.get(name)
        if spec is None or st is None:
            return
        st.tried = time.monotonic()
        error: str | None = None
        try:
            answer = await self.client.get(api_base(spec.url), "/v1/models", timeout=LIST_TIMEOUT_S,
                                           headers=headers(spec))
            if answer.status != 200:
                error = f"/v1/models answered {answer.status}: {answer.text()[:200]}"
            else:
                st.listed = _listed(answer.json())
        except TimeoutError:
            error = f"no answer within {LIST_TIMEOUT_S:g} s"
        except UpstreamError as e:
            error = str(e) or type(e).__name__
        if error is None and not st.reachable:
            log.info("peer %r: %d models listed, %d served", name, len(st.listed),
                     len(_served_ids(spec, st.listed)))
        elif error is not None and st.reachable is not False:
            log.warning("peer %r (%s): %s", name, spec.url, error)
        st.reachable, st.error, st.checked_at = error is None, error, time.time()
        self._route()

    def read_soon(self, name: str) -> None:
        if name in self.specs and name not in self._reading:
            task = asyncio.ensure_future(self.read(name))
            self._reading[name] = task
            task.add_done_callback(lambda _: self._reading.pop(name, None))

    async def read_now(self, name: str) -> None:
        """Read a peer's list, joining a reading under way."""
        self.read_soon(name)
        task = self._reading.get(name)
        if task is not None:
            await asyncio.shield(task)

    async def watch(self) -> None:
        """Read every peer's list every REFRESH_S, for the router's life (the first reading of
        each is sync's, at once)."""
        while True:
            await asyncio.sleep(REFRESH_S)
            await asyncio.gather(*(self.read(n) for n in list(self.specs)), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._reading.values()):
            task.cancel()
        await asyncio.gather(*self._reading.values(), return_exceptions=True)


def _listed(data: Any) -> dict[str, dict[str, Any]]:
    """The ids of an OpenAI model list, with their entries."""
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise UpstreamError("/v1/models is not an OpenAI model list ({\"data\": [...]})")
    return {e["id"]: e for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)}


def _served_ids(spec: PeerSpec, listed: dict[str, dict[str, Any]]) -> list[PeerModel]:
    """The peer's models its filters choose (see the module's docstring); names that are not
    model names here (or too long with the peer's prefix) are left out."""
    chosen = [i for i in listed if not spec.models or any(fnmatchcase(i, p) for p in spec.models)]
    chosen += [p for p in spec.models if not _GLOB & set(p) and p not in listed]
    out = []
    for model_id in chosen:
        m = PeerModel(spec.name, model_id)
        if NAME_RE.match(m.fqn):
            out.append(m)
    return out
