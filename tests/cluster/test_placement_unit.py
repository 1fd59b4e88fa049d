"""Placement across hosts, as a pure function: no Ray, no process (router/cluster/placement.py)."""

from __future__ import annotations

from router.cluster.placement import HostView, NoPlacement, Placement, Resident, choose_host, round_robin

MIB = 1024 ** 2


def host(name, budget_mib=100, figure_mib=20, models=None, pending=0, models_max=0, serves=True):
    return HostView(name, models or {}, {"ram": budget_mib * MIB}, {"ram": figure_mib * MIB}, models_max, pending,
                    serves)


def loaded(mib=20, inflight=0, waiting=0, last_used=1, state="loaded", pinned=False):
    return Resident(state, inflight, waiting, last_used, {"ram": mib * MIB}, pinned=pinned)


def test_a_loaded_model_is_served_where_it_is_loaded():
    hosts = [host("a"), host("b", models={"m": loaded()}), host("c")]
    assert choose_host("m", "pool", hosts) == Placement("b", "loaded")


def test_the_least_queued_of_the_hosts_holding_it_is_chosen():
    hosts = [host("a", models={"m": loaded(inflight=2, waiting=3)}), host("b", models={"m": loaded(inflight=1)})]
    assert choose_host("m", "pool", hosts) == Placement("b", "loaded")


def test_a_load_in_progress_is_joined_never_started_twice():
    hosts = [host("a", budget_mib=1000), host("b", models={"m": loaded(state="loading")})]
    assert choose_host("m", "pool", hosts) == Placement("b", "loading")


def test_requests_sent_and_not_answered_yet_count_as_a_load_in_progress():
    hosts = [host("a", budget_mib=1000), host("b", pending=1)]
    assert choose_host("m", "pool", hosts) == Placement("b", "loading")


def test_a_model_not_loaded_goes_where_it_fits_without_evictions():
    full = host("a", budget_mib=40, models={"x": loaded(30)})
    roomy = host("b", budget_mib=40)
    assert choose_host("m", "pool", [full, roomy]) == Placement("b", "fits")


def test_among_hosts_with_room_the_one_left_with_most_free_memory_wins():
    assert choose_host("m", "pool", [host("a", 50), host("b", 200), host("c", 100)]).host == "b"


def test_the_host_with_the_fewest_evictions_is_chosen_when_none_has_room():
    two = host("a", budget_mib=60, models={"x": loaded(30, last_used=1), "y": loaded(30, last_used=2)},
               figure_mib=50)
    one = host("b", budget_mib=60, models={"x": loaded(30)}, figure_mib=50)
    assert choose_host("m", "pool", [two, one]) == Placement("b", "evicts", ("x",))


def test_a_model_too_big_for_one_host_loads_where_it_fits():
    hosts = [host("small", budget_mib=40, figure_mib=100), host("big", budget_mib=200, figure_mib=100)]
    assert choose_host("m", "pool", hosts) == Placement("big", "fits")


def test_a_model_too_big_for_every_host_is_refused_with_each_reason():
    result = choose_host("m", "pool", [host("a", 40, 100), host("b", 50, 100)])
    assert isinstance(result, NoPlacement)
    assert "a: needs 100 MiB of ram, budget 40 MiB" in result.reason and "b:" in result.reason


def test_pinned_models_are_never_evicted_for_a_placement():
    hosts = [host("a", budget_mib=40, models={"p": loaded(30, pinned=True)})]
    assert isinstance(choose_host("m", "pool", hosts), NoPlacement)


def test_busy_models_are_evicted_after_idle_ones():
    busy = host("a", budget_mib=40, models={"x": loaded(30, inflight=1)})
    idle = host("b", budget_mib=40, models={"y": loaded(30)})
    assert choose_host("m", "pool", [busy, idle]) == Placement("b", "evicts", ("y",))


def test_models_max_counts_per_host():
    hosts = [host("a", 1000, models={"x": loaded()}, models_max=1), host("b", 1000, models_max=1)]
    assert choose_host("m", "pool", hosts) == Placement("b", "fits")


def test_hosts_without_the_model_file_are_skipped():
    result = choose_host("m", "pool", [host("a", serves=False), host("b", 10, 20)])
    assert isinstance(result, NoPlacement)
    assert choose_host("m", "pool", [host("a", serves=False), host("b")]) == Placement("b", "fits")


def test_no_host_no_placement():
    assert choose_host("m", "pool", []) == NoPlacement("no host is up in the cluster")


def test_ties_are_broken_by_name_so_placement_is_stable():
    hosts = [host("c"), host("a"), host("b")]
    assert choose_host("m", "pool", hosts).host == "a"


# ----- replicas: a long queue starts another copy ------------------------------------------------
def test_a_long_queue_starts_a_replica_where_it_fits_without_waiting():
    hosts = [host("a", models={"m": loaded(inflight=1, waiting=3)}), host("b", 40), host("c", 200)]
    assert choose_host("m", "pool", hosts, replicas=2, queue_threshold=4) == Placement("c", "replica")


def test_below_the_threshold_or_without_replicas_the_loaded_copy_serves():
    hosts = [host("a", models={"m": loaded(inflight=1, waiting=2)}), host("b")]
    assert choose_host("m", "pool", hosts, replicas=2, queue_threshold=4) == Placement("a", "loaded")
    long = [host("a", models={"m": loaded(inflight=1, waiting=9)}), host("b")]
    assert choose_host("m", "pool", long) == Placement("a", "loaded"), "replicas default to 1"


def test_a_replica_never_waits_for_a_busy_model_and_never_exceeds_the_count():
    busy_elsewhere = [host("a", models={"m": loaded(inflight=1, waiting=5)}),
                      host("b", budget_mib=30, models={"x": loaded(30, inflight=1)})]
    assert choose_host("m", "pool", busy_elsewhere, replicas=2, queue_threshold=2) == Placement("a", "loaded")
    two = [host("a", models={"m": loaded(inflight=1, waiting=5)}),
           host("b", models={"m": loaded(inflight=1, waiting=5)}), host("c")]
    assert choose_host("m", "pool", two, replicas=2, queue_threshold=2).why == "loaded"
    assert choose_host("m", "pool", two, replicas=3, queue_threshold=2) == Placement("c", "replica")


def test_one_replica_starts_at_a_time_and_the_copies_share_the_queue():
    starting = [host("a", models={"m": loaded(inflight=1, waiting=5)}),
                host("b", models={"m": loaded(state="loading")}), host("c")]
    assert choose_host("m", "pool", starting, replicas=3, queue_threshold=2) == Placement("a", "loaded")
    both = [host("a", models={"m": loaded(inflight=1, waiting=5)}), host("b", models={"m": loaded(inflight=1)})]
    assert choose_host("m", "pool", both, replicas=2, queue_threshold=2) == Placement("b", "loaded")


# ----- round robin: the naive baseline ------------------------------------------------------------
def test_round_robin_takes_hosts_in_turn_whatever_they_hold():
    hosts = [host("b"), host("a", models={"m": loaded()}), host("c")]
    assert [round_robin("m", "pool", hosts, turn).host for turn in range(4)] == ["a", "b", "c", "a"]


def test_round_robin_skips_hosts_the_model_cannot_fit_on():
    hosts = [host("a", budget_mib=40, figure_mib=100), host("b", 200, 100), host("c", 200, 100)]
    assert [round_robin("m", "pool", hosts, turn).host for turn in range(3)] == ["b", "c", "b"]
    refused = round_robin("m", "pool", [host("a", 40, 100)], 0)
    assert isinstance(refused, NoPlacement) and "a: needs 100 MiB" in refused.reason


# ----- why no host can take a model: the cause a fallback follows (router/cluster/fallbacks.py) ---------
def test_a_refusal_says_why_so_that_the_models_fallbacks_may_serve():
    for place in (lambda hosts: choose_host("m", "pool", hosts), lambda hosts: round_robin("m", "pool", hosts, 0)):
        assert place([host("a", 40, 100), host("b", 50, 100)]).cause == "too_big"
        assert place([host("a", budget_mib=40, models={"p": loaded(30, pinned=True)})]).cause == "too_big"
        assert place([host("a", serves=False), host("b", serves=False)]).cause == "file_missing"
        assert place([]) == NoPlacement("no host is up in the cluster", "unavailable")  # nothing falls back
