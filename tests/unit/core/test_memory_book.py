"""Memory-aware placement in the pure scheduler: models fill the budget,
never more; pinned models stay; a model that can never fit is refused at once."""

from __future__ import annotations

from router.catalogue.config import POOL
from router.core.scheduler import Grant, ModelView, Reject, Scheduler, Start, State, Stop, plan_evictions

MiB = 1024 * 1024


def pool(budget_mib: int, models_max: int = 0, **sizes_mib: int) -> Scheduler:
    s = Scheduler({n: POOL for n in sizes_mib}, models_max, budget={"ram": budget_mib * MiB})
    for name, size in sizes_mib.items():
        s.set_memory(name, {"ram": size * MiB})
    return s


def use(s: Scheduler, model: str) -> list:
    """A request for `model` that finishes at once; the effects seen on the way."""
    t = s.new_ticket()
    seen = list(s.submit(t, model))
    while Grant(t, model) not in seen:
        starts = [e for e in seen if isinstance(e, Start)]
        stops = [e for e in seen if isinstance(e, Stop)]
        assert starts or stops, f"stuck: {seen}"
        for e in stops:
            seen += s.stopped(e.model)
        for e in starts:
            seen += s.loaded(e.model)
        if not [e for e in seen if isinstance(e, Start | Stop) and e not in starts + stops]:
            break
    s.release(t)
    return seen


def running(s: Scheduler) -> set[str]:
    return set(s.running())


def test_models_that_fit_run_together_without_a_count_limit():
    s = pool(1000, a=300, b=400, c=500)
    use(s, "a")
    use(s, "b")
    assert running(s) == {"a", "b"}
    assert s.used() == {"ram": 700 * MiB}


def test_the_next_model_stops_the_least_recently_used_idle_one_only():
    s = pool(1000, a=300, b=400, c=500)
    use(s, "a")
    use(s, "b")
    seen = use(s, "c")  # 700 + 500 > 1000: a (coldest, and alone enough) goes
    assert Stop("a", "swap") in seen and Stop("b", "swap") not in seen
    assert running(s) == {"b", "c"}
    assert s.used()["ram"] <= 1000 * MiB


def test_fewest_victims_before_coldest():
    # c needs 600: stopping the coldest (a, 200) is not enough; b (500) alone is.
    s = pool(1000, a=200, b=500, c=600)
    use(s, "a")
    use(s, "b")
    seen = use(s, "c")
    assert [e.model for e in seen if isinstance(e, Stop)] == ["b"]
    assert running(s) == {"a", "c"}


def test_a_model_bigger_than_the_budget_is_refused_at_once_with_the_figures():
    s = pool(1000, a=300, huge=1500)
    use(s, "a")
    t = s.new_ticket()
    eff = s.submit(t, "huge")
    assert len(eff) == 1 and isinstance(eff[0], Reject)
    assert "1.46 GiB of ram" in eff[0].reason and "1000 MiB" in eff[0].reason
    assert running(s) == {"a"}  # nothing was stopped for it


def test_a_pinned_model_is_never_stopped_and_the_next_coldest_goes():
    s = pool(1000, a=300, b=400, c=500)
    s.set_pinned(["a"])
    use(s, "a")
    use(s, "b")
    seen = use(s, "c")
    assert Stop("a", "swap") not in seen and Stop("b", "swap") in seen
    assert running(s) == {"a", "c"}


def test_when_only_stopping_a_pinned_model_would_make_room_the_request_fails_clearly():
    s = pool(1000, a=600, b=600)
    s.set_pinned(["a"])
    use(s, "a")
    t = s.new_ticket()
    eff = s.submit(t, "b")
    assert eff == [Reject(t, "b", eff[0].reason)] and "pinned: a" in eff[0].reason
    assert running(s) == {"a"}


def test_models_max_still_caps_the_count_inside_the_budget():
    s = pool(10_000, models_max=2, a=100, b=100, c=100)
    use(s, "a")
    use(s, "b")
    use(s, "c")
    assert len(running(s)) == 2


def test_a_busy_model_is_waited_for_not_cut_off():
    s = pool(1000, a=600, b=600)
    t_a = s.new_ticket()
    s.submit(t_a, "a")
    s.loaded("a")  # a is in flight
    t_b = s.new_ticket()
    assert s.submit(t_b, "b") == []  # b must wait: a is busy
    assert s.release(t_a) == [Stop("a", "swap")]
    assert s.stopped("a") == [Start("b")]


def test_keep_alive_forever_is_evicted_after_the_others():
    views = [ModelView("a", POOL, 1, False, {"ram": 300}, keep=True), ModelView("b", POOL, 2, False, {"ram": 300})]
    assert plan_evictions("c", POOL, views, 0, {"ram": 500}, {"ram": 1000}) == ["b"]


def test_a_named_group_stays_exclusive_of_the_pool():
    s = Scheduler({"a": POOL, "b": POOL, "g": "group:big"}, 0, budget={"ram": 1000 * MiB})
    for n in "ab":
        s.set_memory(n, {"ram": 100 * MiB})
    s.set_memory("g", {"ram": 100 * MiB})
    use(s, "a")
    use(s, "b")
    seen = use(s, "g")
    assert {e.model for e in seen if isinstance(e, Stop)} == {"a", "b"}


def test_without_a_budget_memory_is_not_a_limit():
    assert plan_evictions("c", POOL, [ModelView("a", POOL, 1, False, {"ram": 10**12})], 0, {"ram": 10**12}, None) == []


def test_a_concurrency_limit_holds_the_rest_in_the_router_and_a_full_queue_is_busy():
    s = pool(1000, a=100)
    s.set_limits({"a": (1, 1)})
    t1 = s.new_ticket()
    s.submit(t1, "a")
    assert s.loaded("a") == [Grant(t1, "a")]
    t2 = s.new_ticket()
    assert s.submit(t2, "a") == []  # waits: one in flight is the limit
    t3 = s.new_ticket()
    eff = s.submit(t3, "a")
    assert len(eff) == 1 and isinstance(eff[0], Reject) and eff[0].busy and "max_queue" in eff[0].reason
    assert s.release(t1) == [Grant(t2, "a")]  # first come, first served


def test_keep_alive_forever_marks_a_model_to_go_last():
    s = pool(1000, a=400, b=400, c=400)
    use(s, "a")
    use(s, "b")
    s.set_keep("a", True)  # a is the least recently used, but asked to stay
    seen = use(s, "c")
    assert Stop("b", "swap") in seen and Stop("a", "swap") not in seen


def test_light_requests_pass_a_full_concurrency_limit():
    s = pool(1000, a=100)
    s.set_limits({"a": (1, 0)})
    t1 = s.new_ticket()
    s.submit(t1, "a")
    s.loaded("a")
    t2 = s.new_ticket()
    assert s.submit(t2, "a", light=True) == [Grant(t2, "a")]  # /tokenize takes no slot
    t3 = s.new_ticket()
    assert s.submit(t3, "a") == []  # a completion does


def test_requests_that_came_before_a_swap_are_served_first_one_slot_at_a_time():
    s = Scheduler({"a": POOL, "b": POOL}, 1)
    s.set_limits({"a": (1, 0)})
    t1 = s.new_ticket()
    s.submit(t1, "a")
    s.loaded("a")
    early = [s.new_ticket() for _ in range(2)]
    for t in early:
        assert s.submit(t, "a") == []  # queued in the router behind t1
    tb = s.new_ticket()
    assert s.submit(tb, "b") == []  # b must wait: a still owes two requests that came first
    late = s.new_ticket()
    assert s.submit(late, "a") == []
    assert s.release(t1) == [Grant(early[0], "a")]
    assert s.release(early[0]) == [Grant(early[1], "a")]
    assert s.release(early[1]) == [Stop("a", "swap")]  # the late one waits for the swap back
    assert s.stopped("a") == [Start("b")]


def test_a_busy_victim_serves_what_it_took_within_swap_patience_before_stopping():
    s = Scheduler({"a": POOL, "b": POOL}, 1, swap_patience=2.0)
    s.set_limits({"a": (1, 0)})
    t1 = s.new_ticket()
    s.submit(t1, "a", now=0.0)
    s.loaded("a", now=0.0)
    tb = s.new_ticket()
    assert s.submit(tb, "b", now=1.0) == []  # swap to b decided at 1.0; a is busy
    within = s.new_ticket()
    assert s.submit(within, "a", now=2.0) == []  # queued behind the slot, but a owes it (within patience)
    after = s.new_ticket()
    assert s.submit(after, "a", now=3.5) == []  # patience is over: this one waits for the swap back
    assert s.release(t1, now=3.6) == [Grant(within, "a")]
    assert s.release(within, now=3.7) == [Stop("a", "swap")]


# ----- a count-limited swap need not wait for the victim's exit when memory has room -------------
def test_with_room_for_both_the_target_starts_while_the_victim_exits():
    s = pool(1000, models_max=1, a=300, b=300)
    use(s, "a")
    t = s.new_ticket()
    assert s.submit(t, "b") == [Stop("a", "swap"), Start("b")]  # a still holds its 300 MiB: 600 fit
    assert s.used() == {"ram": 600 * MiB}
    assert s.loaded("b") == []  # b is up, but a still exits: b is READY (and serves) once a is gone,
    assert s.state("b") is State.STARTING  # so no list shows b loaded while a still reads loaded
    assert s.stopped("a") == [Grant(t, "b")]
    assert running(s) == {"b"} and s.state("b") is State.READY


def test_without_room_for_both_the_target_waits_for_the_exit():
    s = pool(500, models_max=1, a=300, b=300)
    use(s, "a")
    t = s.new_ticket()
    assert s.submit(t, "b") == [Stop("a", "swap")]
    assert s.stopped("a") == [Start("b")]


def test_without_a_budget_or_a_figure_the_target_waits_for_the_exit():
    s = Scheduler({"a": POOL, "b": POOL}, 1)  # no memory budget: nothing says both fit
    use(s, "a")
    assert s.submit(s.new_ticket(), "b") == [Stop("a", "swap")]
    s = Scheduler({"a": POOL, "b": POOL}, 1, budget={"ram": 1000 * MiB})
    s.set_memory("a", {"ram": 300 * MiB})  # b's figure is not known yet
    use(s, "a")
    assert s.submit(s.new_ticket(), "b") == [Stop("a", "swap")]
    s = Scheduler({"a": POOL, "b": POOL}, 1, budget={"ram": 1000 * MiB})
    s.set_memory("a", {"ram": 300 * MiB})
    s.set_memory("b", {"ram": 300 * MiB, "gpu0": 100 * MiB})  # a device the budget does not know
    use(s, "a")
    assert s.submit(s.new_ticket(), "b") == [Stop("a", "swap")]


def test_a_busy_victim_is_still_waited_for_before_anything_starts():
    s = pool(1000, models_max=1, a=300, b=300)
    t_a = s.new_ticket()
    s.submit(t_a, "a")
    s.loaded("a")
    assert s.submit(s.new_ticket(), "b") == []
    assert s.release(t_a) == [Stop("a", "swap"), Start("b")]
