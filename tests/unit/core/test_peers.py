"""Which of a peer's models are served, and by which names (router/core/peers.py)."""

from __future__ import annotations

from router.catalogue.parse import parse_config
from router.core.peers import PeerModel, Peers, PeerState
from router.upstream.client import ChildClient
from router.upstream.endpoint import api_base, endpoint
from router.upstream.pool import UpstreamPool


def peers_with(config_peers: dict, listed: dict[str, list[str]], models: dict | None = None):
    config = parse_config({"models": models or {}, "peers": config_peers})
    peers = Peers(ChildClient(UpstreamPool()))
    peers.specs = dict(config.peers)
    peers.state = {n: PeerState(listed={i: {"id": i} for i in listed.get(n, [])}, reachable=True)
                   for n in config.peers}
    peers._route()
    return peers, config


def test_filters_choose_listed_ids_and_plain_names_are_served_unlisted():
    peers, _ = peers_with({"or": {"url": "https://openrouter.ai/api/v1", "models": ["qwen/*", "gpt-x"]}},
                          {"or": ["qwen/qwen3-8b", "qwen/qwen3-32b", "meta/llama-3"]})
    assert [m.fqn for m in peers.served()] == ["or/qwen/qwen3-8b", "or/qwen/qwen3-32b", "or/gpt-x"]


def test_no_filter_serves_every_listed_model():
    peers, _ = peers_with({"lab": {"url": "http://lab:8082"}}, {"lab": ["a", "b"]})
    assert [m.model for m in peers.served()] == ["a", "b"]


def test_a_bare_name_routes_only_when_one_peer_has_it_and_the_catalogue_does_not():
    peers, config = peers_with({"p": {"url": "http://p:1"}, "q": {"url": "http://q:1"}},
                               {"p": ["shared", "only-p", "local"], "q": ["shared"]},
                               models={"local": {"path": "/m.gguf"}})
    assert peers.resolve("only-p", config) == PeerModel("p", "only-p")
    assert peers.resolve("shared", config) is None  # two peers have it: PEER/MODEL only
    assert peers.resolve("q/shared", config) == PeerModel("q", "shared")
    assert peers.resolve("local", config) is None  # the catalogue's own model wins
    assert peers.resolve("p/local", config) == PeerModel("p", "local")
    assert peers.resolve("nothing", config) is None


def test_a_peer_id_that_is_no_model_name_here_is_left_out():
    peers, _ = peers_with({"p": {"url": "http://p:1"}}, {"p": ["ok-model", "has space", "../up"]})
    assert [m.model for m in peers.served()] == ["ok-model"]


def test_an_openai_base_url_keeps_v1_in_each_path():
    assert api_base("https://openrouter.ai/api/v1") == "https://openrouter.ai/api"
    assert api_base("http://host:8080/v1/") == "http://host:8080"
    assert api_base("http://host:8080") == "http://host:8080"
    where = endpoint(api_base("https://openrouter.ai/api/v1"))
    assert (where.host, where.port, where.tls) == ("openrouter.ai", 443, True)
    assert where.target("/v1/chat/completions?x=1") == "/api/v1/chat/completions?x=1"
    assert endpoint("http://127.0.0.1:50001").target("/health") == "/health"
