"""The cluster benchmark's pure parts (bench/cluster.py): the trace, the spawn log,
the counts read from GET /cluster, and the tables."""

from __future__ import annotations

from collections import Counter

from bench.cluster import (
    MODELS,
    LatencyOutcome,
    TraceOutcome,
    agents_count,
    latency_table,
    node_of,
    parse_spawns,
    spawn_hosts,
    trace,
    trace_table,
)


def test_the_trace_is_seeded_and_favours_the_first_models():
    a = trace(200)
    assert a == trace(200) and len(a) == 200 and set(a) <= set(MODELS)
    counts = Counter(a)
    assert counts[MODELS[0]] > counts[MODELS[-1]]
    assert trace(200, seed=1) != a


def test_only_child_starts_count_as_loads_in_the_spawn_log():
    log = ("101 --model /m/tiny-a.gguf --alias tiny-a --host 1.2.3.4 --port 55101 -np 1 --ctx-size 512\n"
           "102 --version\n"
           "103 --model /m/tiny-b.gguf --alias tiny-b --host 1.2.3.4 --port 55230 -np 1\n")
    assert parse_spawns(log) == [("tiny-a", 55101), ("tiny-b", 55230)]
    assert [node_of(p) for _, p in parse_spawns(log)] == ["n1", "n3"]
    assert node_of(80) == "?"
    assert spawn_hosts(log) == {"1.2.3.4"}  # the bench fails a run whose children are not on 127.0.0.1


def test_agents_counts_take_each_hosts_highest_and_skip_the_fronts_notes():
    snaps = [
        {"hosts": [{"host": "n1", "models": {"tiny-a": {"state": "loaded", "loads": 1, "pid": 11}}},
                   {"host": "n2", "models": {"tiny-a": {"state": "loaded", "noted": True}}}]},
        {"hosts": [{"host": "n1", "models": {}},  # stopped: gone from the report
                   {"host": "n2", "models": {"tiny-a": {"state": "loaded", "loads": 1, "pid": 22}}}]},
        {"hosts": [{"host": "n1", "models": {"tiny-a": {"state": "loaded", "loads": 3, "pid": 33}}}]},
    ]
    loads, pids = agents_count(snaps)
    assert loads == {"tiny-a": 4}
    assert pids == {"tiny-a": {11, 22, 33}}


def test_the_tables_show_each_policy_and_the_latency_added_to_direct():
    requests = dict(Counter(trace(10)))
    outcomes = [TraceOutcome(p, requests, {m: n for m, n in requests.items()}, {}, {}, {}, 1.5, 0)
                for p in ("memory", "round_robin")]
    text = trace_table(outcomes, 10)
    assert "| Model | requests | loads, memory | loads, round_robin |" in text
    assert "| **all** | 10 | **10** | **10** |" in text and "| total time | | 1.5 s | 1.5 s |" in text
    lat = latency_table([LatencyOutcome("direct", [1.0, 2.0, 3.0]), LatencyOutcome("front", [3.0, 4.0, 5.0])])
    assert "| direct | 2.0 ms | 3.0 ms | - | - | 0 |" in lat
    assert "| front | 4.0 ms | 5.0 ms | +2.0 ms | +2.0 ms | 0 |" in lat


def test_request_times_split_by_whether_a_child_started():
    o = TraceOutcome("memory", {}, {}, {}, {}, {}, 0.0, 0, latency_ms=[50.0, 5.0, 60.0, 70.0],
                     children_started=[1, 0, 2, 1])
    assert o.split(True) == [50.0, 60.0, 70.0] and o.split(False) == [5.0]
    assert "| request that started a child, p50 / p90 | | 60 / 70 ms (3) |" in trace_table([o], 4)
