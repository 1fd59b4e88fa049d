"""The scheduler's decisions, driven directly: no processes, no sleeps."""

from __future__ import annotations

from router.core.scheduler import Grant, ModelView, Reject, Scheduler, Start, State, Stop, plan_evictions


def make(models_max=1, **groups):
    names = groups or {"a": None, "b": None, "c": None}
    return Scheduler({n: (f"group:{g}" if g else f"model:{n}") for n, g in names.items()}, models_max)


def ticket(s: Scheduler, model: str):
    t = s.new_ticket()
    return t, s.submit(t, model)


def load(s: Scheduler, model: str):
    """Bring `model` to READY through a request, releasing it afterwards."""
    t, eff = ticket(s, model)
    assert Start(model) in eff
    eff = s.loaded(model)
    assert Grant(t, model) in eff
    s.release(t)


def test_request_for_stopped_model_starts_it_and_is_granted_when_ready():
    s = make()
    t, eff = ticket(s, "a")
    assert eff == [Start("a")]
    assert s.state("a") is State.STARTING
    assert s.loaded("a") == [Grant(t, "a")]
    assert s.state("a") is State.READY


def test_many_waiters_for_a_loading_model_cause_one_load():
    s = make()
    effects = []
    tickets = []
    for _ in range(20):
        t, eff = ticket(s, "a")
        tickets.append(t)
        effects += eff
    assert effects.count(Start("a")) == 1
    grants = s.loaded("a")
    assert grants == [Grant(t, "a") for t in tickets]


def test_swap_stops_the_idle_model_before_starting_the_next():
    s = make()
    load(s, "a")
    t, eff = ticket(s, "b")
    assert eff == [Stop("a", "swap")]  # never two loads at once
    assert s.state("b") is State.STOPPED
    assert s.stopped("a") == [Start("b")]
    assert s.loaded("b") == [Grant(t, "b")]


def test_busy_model_is_never_evicted_until_its_requests_finish():
    s = make()
    t_a, _ = ticket(s, "a")
    s.loaded("a")  # t_a granted and in flight
    _, eff = ticket(s, "b")
    assert eff == []  # a is busy: the swap waits
    assert s.state("a") is State.READY
    assert s.release(t_a) == [Stop("a", "swap")]


def test_requests_for_a_draining_model_wait_for_the_swap():
    s = make()
    t_a, _ = ticket(s, "a")
    s.loaded("a")
    ticket(s, "b")  # swap decided, waits for a to drain
    _, eff = ticket(s, "a")
    assert eff == []  # not granted: a is being drained
    assert s.release(t_a) == [Stop("a", "swap")]
    assert s.stopped("a") == [Start("b")]
    s.loaded("b")
    assert s.waiting("a") == 1  # served after b's turn


def test_all_waiting_requests_of_the_loaded_model_are_served_before_swapping_back():
    """Mixed burst: requests queued for the model being loaded all ride on one load."""
    s = make()
    load(s, "a")
    b_tickets = [ticket(s, "b")[0] for _ in range(5)]
    s.stopped("a")
    eff = s.loaded("b")
    assert [e for e in eff if isinstance(e, Grant)] == [Grant(t, "b") for t in b_tickets]


def test_models_in_one_group_run_together():
    s = make(models_max=0, a="light", b="light", c=None)
    load(s, "a")
    _, eff = ticket(s, "b")
    assert eff == [Start("b")]  # a stays
    s.loaded("b")
    assert set(s.running()) == {"a", "b"}


def test_a_model_of_another_group_unloads_the_whole_group():
    s = make(models_max=0, a="light", b="light", c=None)
    load(s, "a")
    load(s, "b")
    _, eff = ticket(s, "c")
    assert set(eff) == {Stop("a", "swap"), Stop("b", "swap")}
    assert s.stopped("a") == []
    assert s.stopped("b") == [Start("c")]


def test_models_max_evicts_the_least_recently_used_idle_model_of_the_group():
    s = make(models_max=2, a="g", b="g", c="g")
    load(s, "a")
    load(s, "b")
    t, _ = ticket(s, "a")  # a becomes the most recently used
    s.release(t)
    _, eff = ticket(s, "c")
    assert eff == [Stop("b", "swap")]


def test_models_max_prefers_an_idle_victim_over_a_busy_one():
    s = make(models_max=2, a="g", b="g", c="g")
    load(s, "a")
    load(s, "b")
    ticket(s, "a")  # a in flight, but b is more recent
    _, eff = ticket(s, "c")
    assert eff == [Stop("b", "swap")]
    assert s.inflight("a") == 1


def test_failed_load_rejects_its_waiters_and_the_next_swap_proceeds():
    s = make()
    t1, _ = ticket(s, "a")
    ticket(s, "b")
    eff = s.load_failed("a", "boom")
    assert Reject(t1, "a", "boom") in eff
    assert Start("b") in eff


def test_crashed_model_is_reloaded_by_the_next_request():
    s = make()
    t, _ = ticket(s, "a")
    s.loaded("a")
    s.stopped("a")  # the child died with t in flight
    assert s.state("a") is State.STOPPED
    s.release(t)  # the failed request finishing later is harmless
    _, eff = ticket(s, "a")
    assert eff == [Start("a")]


def test_unload_waits_for_in_flight_requests():
    s = make()
    t, _ = ticket(s, "a")
    s.loaded("a")
    assert s.unload("a") == []
    assert s.release(t) == [Stop("a", "unload")]
    assert s.stopped("a") == []
    assert s.state("a") is State.STOPPED


def test_preload_loads_without_a_request():
    s = make()
    assert s.load("a") == [Start("a")]
    assert s.loaded("a") == []
    assert s.state("a") is State.READY and s.inflight("a") == 0


def test_cancelled_waiter_does_not_hold_a_model():
    s = make()
    load(s, "a")
    t, eff = ticket(s, "b")
    assert eff == [Stop("a", "swap")]
    s.cancel(t)
    s.stopped("a")  # the swap already decided goes on; nothing is granted to a ghost
    assert all(not isinstance(e, Grant) for e in s.loaded("b"))


def test_ttl_expiry_lists_only_idle_ready_models():
    s = make(models_max=0, a="g", b="g")
    load(s, "a")
    t, _ = ticket(s, "b")
    s.loaded("b", now=0)
    assert s.expired(now=100, ttls={"a": 10, "b": 10}) == ["a"]
    s.release(t, now=100)
    assert s.expired(now=105, ttls={"a": 10, "b": 10}) == ["a"]
    assert s.expired(now=111, ttls={"a": 10, "b": 10}) == ["a", "b"]


def test_removed_model_stops_and_its_waiters_are_rejected():
    s = make()
    load(s, "a")
    eff = s.set_models({"b": "model:b"})
    assert Stop("a", "reload") in eff
    s.stopped("a")
    s.forget_removed({"b": "model:b"})
    assert s.running() == []


def test_plan_evictions_is_a_pure_function_of_what_runs():
    running = [ModelView("a", "g1", 1, False), ModelView("b", "g2", 2, True), ModelView("c", "g2", 3, False)]
    assert plan_evictions("d", "g2", running, 0) == ["a"]
    assert plan_evictions("d", "g2", running, 2) == ["a", "c"]
    assert plan_evictions("d", "g2", running, 1) == ["a", "c", "b"]


def test_a_busy_model_being_swapped_out_takes_the_rest_of_a_burst_for_a_while():
    s = Scheduler({"a": "model:a", "b": "model:b"}, 1, swap_patience=2.0)
    t_a = s.new_ticket()
    s.submit(t_a, "a", now=0)
    s.loaded("a", now=0.5)
    assert s.submit(s.new_ticket(), "b", now=1.0) == []  # swap decided; a is busy
    rider = s.new_ticket()
    assert s.submit(rider, "a", now=2.5) == [Grant(rider, "a")]  # within the window: rides along
    late = s.new_ticket()
    assert s.submit(late, "a", now=3.5) == []  # past the window: waits, so b is not starved
    s.release(t_a, now=3.6)
    assert s.release(rider, now=3.7) == [Stop("a", "swap")]
    assert s.waiting("a") == 1


def test_patience_never_delays_the_swap_away_from_an_idle_model():
    s = Scheduler({"a": "model:a", "b": "model:b"}, 1, swap_patience=60.0)
    load(s, "a")
    assert s.submit(s.new_ticket(), "b", now=1.0) == [Stop("a", "swap")]
    later = s.new_ticket()
    assert s.submit(later, "a", now=1.1) == []  # a is stopping: the request waits its turn


def test_a_light_request_in_flight_keeps_its_model_loaded():
    """/tokenize, /props, /slots...: they take no slot, so no concurrency limit holds them,
    but while one is in flight its model is busy and is never stopped under it."""
    s = make()
    s.set_limits({"a": (1, 0)})
    load(s, "a")
    heavy, _ = ticket(s, "a")  # takes the only slot
    light = s.new_ticket()
    assert s.submit(light, "a", light=True) == [Grant(light, "a")]  # past the limit
    s.release(heavy)
    _, eff = ticket(s, "b")
    assert eff == []  # a still serves the light request: b waits
    assert s.state("a") is State.READY
    assert s.release(light) == [Stop("a", "swap")]
    assert s.stopped("a") == [Start("b")]


def test_a_light_request_passes_a_full_queue_but_not_a_swap_away_from_its_model():
    """A /tokenize to a ready model is answered at once, however many requests wait for a
    slot (it joins no queue: the queue's length and order are unchanged); while a swap is
    leaving its model, it waits like any other request that came after the swap."""
    s = make()
    s.set_limits({"a": (1, 0)})
    load(s, "a")
    ticket(s, "a")  # takes the only slot
    waiting = [ticket(s, "a")[0] for _ in range(5)]
    light = s.new_ticket()
    assert s.submit(light, "a", light=True) == [Grant(light, "a")]
    assert s.waiting("a") == 5 and [s.queue_position(t).position for t in waiting] == [1, 2, 3, 4, 5]
    assert s.release(light) == []
    ticket(s, "b")  # a swap away from a, once a's queue is served
    late = s.new_ticket()
    assert s.submit(late, "a", light=True) == []  # arrived after the swap: it waits for a's return


def test_take_light_grants_only_what_its_model_serves_at_once():
    """The router's fast path for /tokenize and the like: granted without a queue only when
    the model is ready and nothing is leaving it; released like any request."""
    s = make()
    assert not s.take_light(s.new_ticket(), "a")  # not loaded: it waits for the load as usual
    load(s, "a")
    t = s.new_ticket()
    assert s.take_light(t, "a") and s.inflight("a") == 1 and s.waiting("a") == 0
    _, eff = ticket(s, "b")
    assert eff == []  # a serves t: the swap to b waits for it
    assert not s.take_light(s.new_ticket(), "a")  # a swap is leaving a
    assert s.release(t) == [Stop("a", "swap")]


def test_a_waiter_that_leaves_before_the_swap_starts_causes_no_swap():
    """llama.cpp's test_router_queue_client_disconnect_keeps_model: b's client gives up
    while a is busy; once a is idle it stays loaded and b is never started."""
    s = make()
    t_a, _ = ticket(s, "a")
    s.loaded("a")  # t_a in flight
    t_b, eff = ticket(s, "b")
    assert eff == []  # the swap waits for a
    assert s.cancel(t_b) == []
    assert s.release(t_a) == []  # a is idle, and nobody wants b any more
    assert s.state("a") is State.READY and s.state("b") is State.STOPPED
    assert s.swap_target is None
    _, eff = ticket(s, "c")  # the next request decides a new swap as usual
    assert eff == [Stop("a", "swap")] and s.swap_target == "c"


def test_a_swap_keeps_going_while_one_of_its_waiters_remains():
    s = make()
    t_a, _ = ticket(s, "a")
    s.loaded("a")
    first, _ = ticket(s, "b")
    second, _ = ticket(s, "b")
    s.cancel(first)
    assert s.release(t_a) == [Stop("a", "swap")]
    assert s.stopped("a") == [Start("b")]
    assert s.loaded("b") == [Grant(second, "b")]


def test_a_victim_already_stopping_stops_but_the_abandoned_target_never_starts():
    s = make()
    load(s, "a")
    t_b, eff = ticket(s, "b")
    assert eff == [Stop("a", "swap")]  # a was idle: told to stop at once
    assert s.cancel(t_b) == []
    assert s.stopped("a") == []  # b's load is not started for nobody
    assert s.state("a") is State.STOPPED and s.state("b") is State.STOPPED


def test_a_preload_keeps_its_swap_without_a_request():
    s = make()
    t_a, _ = ticket(s, "a")
    s.loaded("a")
    assert s.load("b") == []  # /models/load: waits for a's request like any other
    assert s.release(t_a) == [Stop("a", "swap")]
    assert s.stopped("a") == [Start("b")]


def test_the_target_of_a_swap_is_loaded_only_once_its_victim_has_exited():
    """llama.cpp's test_router_models_max_evicts_lru, with room in memory for the third model
    to start while the first exits: the third becomes READY (and is granted) only when the
    first is gone, so no view shows it loaded next to a model it evicted."""
    MiB = 1024 * 1024
    s = Scheduler({n: "pool" for n in "abc"}, 2, budget={"ram": 1000 * MiB})
    for n in "abc":
        s.set_memory(n, {"ram": 100 * MiB})
    load(s, "a")
    load(s, "b")
    t = s.new_ticket()
    assert s.submit(t, "c") == [Stop("a", "swap"), Start("c")]  # c starts while a exits
    assert s.loaded("c") == []
    assert (s.state("a"), s.state("c")) == (State.STOPPING, State.STARTING)
    assert s.stopped("a") == [Grant(t, "c")]
    assert (s.state("a"), s.state("b"), s.state("c")) == (State.STOPPED, State.READY, State.READY)


def test_a_target_that_crashes_while_its_victim_exits_fails_its_load():
    MiB = 1024 * 1024
    s = Scheduler({"a": "pool", "b": "pool"}, 1, budget={"ram": 1000 * MiB})
    s.set_memory("a", {"ram": 100 * MiB})
    s.set_memory("b", {"ram": 100 * MiB})
    load(s, "a")
    t = s.new_ticket()
    assert s.submit(t, "b") == [Stop("a", "swap"), Start("b")]
    assert s.loaded("b") == []
    eff = s.stopped("b")  # b's child died before a was gone
    assert [type(e) for e in eff] == [Reject] and s.state("b") is State.STOPPED
    assert s.stopped("a") == [] and s.running() == []
