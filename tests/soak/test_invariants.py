"""Each soak invariant fails on a made-up violation and passes on its near miss:
a check that cannot fail proves nothing. Pure data, no process: milliseconds."""

from __future__ import annotations

from tests.soak import invariants as inv
from tests.soak.chaos import Action
from tests.soak.clients import Outcome, StreamJudge, judge_json
from tests.soak.inotify import FileEvent
from tests.soak.monitor import Sample
from tests.soak.slotdir import SlotFileState

MIB = 1024 * 1024
A_FILE = "tiny-a-d450127b.9a5619c38c8aac1c.slot0.bin"


def outcome(result: str, *, model: str = "tiny-a", ended: float = 100.0, error: str = "") -> Outcome:
    return Outcome(0, "chat", model, "rid", ended - 1, ended, 60, 200, result, error, "why")


def status(model: str, value: str, **data) -> dict:
    return {"model": model, "event": "status_change", "data": {"status": value, **data}}


def log(at: float, logger: str, model: str | None, message: str) -> inv.LogLine:
    return inv.LogLine(at, "info", logger, model, message)


def test_a_broken_malformed_or_hung_reply_fails():
    good = [outcome("complete"), outcome("error", error="x: y"), outcome("cancelled")]
    assert all(c.ok for c in inv.check_replies(good))
    for bad in ("broken", "malformed"):
        assert not inv.check_replies([*good, outcome(bad)])[0].ok
    assert not inv.check_replies([*good, outcome("hung")])[1].ok


def test_replies_are_judged_by_their_shape():
    assert judge_json(404, b'{"error": {"message": "no", "type": "x"}}', "chat")[0] == "error"
    assert judge_json(502, b"Bad Gateway", "chat")[0] == "malformed"
    assert judge_json(200, b'{"choices": []}', "chat")[0] == "malformed"
    cut = StreamJudge()
    cut.feed(b'data: {"choices": []}\n\n')
    assert cut.verdict()[0] == "malformed"  # a stream that stops without its end
    ended = StreamJudge()
    ended.feed(b'data: {"choices": []}\n\ndata: {"error": {"message": "upstream model server failed"}}\n\n')
    assert ended.verdict()[0] == "error"


def test_an_upstream_failure_without_chaos_on_that_model_fails():
    failed = outcome("error", model="tiny-b", ended=100.0, error="upstream_error: upstream model server failed")
    kill_b = Action("kill", 98.0, 98.0, pid=1, model="tiny-b")
    kill_a = Action("kill", 98.0, 98.0, pid=1, model="tiny-a")
    assert inv.check_upstream_failures([failed], [], [kill_b], 3.0, {}).ok
    assert not inv.check_upstream_failures([failed], [], [kill_a], 3.0, {}).ok
    replay = log(100.0, "router.proxy", "tiny-b", "child lost before replying (x): replaying the request once")
    assert not inv.check_upstream_failures([], [replay], [], 3.0, {}).ok
    slow = outcome("error", model="tiny-b", error="upstream_error: upstream model server failed: SocketTimeoutError: "
                                                  "Timeout on reading data from socket")
    assert inv.check_upstream_failures([slow], [], [], 3.0, {}).ok  # read_timeout did its job: not a lost child


def test_orphans_leftovers_two_children_or_a_bad_exit_fail():
    assert all(c.ok for c in inv.check_processes({}, [], 1, 1, 0, []))
    names = [c.name for c in inv.check_processes({}, [], 1, 1, 0, [])]
    cases = [({7: "llama-server --model x"}, [], 1, 0), ({}, ["pid 7"], 1, 0), ({}, [], 2, 0), ({}, [], 1, 1)]
    for i, (strays, left, live, code) in enumerate(cases):
        failed = [c.name for c in inv.check_processes(strays, left, live, 1, code, []) if not c.ok]
        assert failed == [names[i]]


def test_a_growing_router_fails_the_flat_checks():
    flat = [Sample(t, 50 * MIB, 70) for t in range(100)]
    assert all(c.ok for c in inv.check_flat(flat, (0, 100), flat[0], flat[-1]))
    growing = [Sample(t, (50 + t // 2) * MIB, 70 + t) for t in range(100)]
    checks = inv.check_flat(growing, (0, 100), growing[0], growing[-1])
    assert [c.ok for c in checks] == [False, False, False]


def test_two_loads_or_two_models_at_once_fail():
    one_at_a_time = [status("a", "loading"), status("a", "loaded"), status("a", "unloaded"),
                     status("b", "loading"), status("b", "loading", progress=0.5), status("b", "loaded")]
    assert all(c.ok for c in inv.check_scheduler_events(one_at_a_time, 1))
    two_loads = [status("a", "loading"), status("b", "loading")]
    assert [c.ok for c in inv.check_scheduler_events(two_loads, 1)] == [False, False]
    two_models = [status("a", "loading"), status("a", "loaded"), status("b", "loading")]
    assert [c.ok for c in inv.check_scheduler_events(two_models, 1)] == [True, False]


def test_a_stop_inside_a_busy_window_fails_and_one_just_after_passes():
    row = {"time": 10.0, "model": "tiny-a", "status": 200, "total_s": 2.0, "ttft_s": 0.5, "request_id": "r1"}
    inside = log(9.0, "router.manager", "tiny-a", "stopped (swap), exit code 0")
    after = log(10.0, "router.kvcache", "tiny-a", "KV cache saved: 1 slot(s), 5 tokens, 0.0 MB in 2 ms")
    other = log(9.0, "router.manager", "tiny-b", "stopped (swap), exit code 0")
    assert not inv.check_busy_stops([row], [inside], ["tiny-a", "tiny-b"]).ok
    assert inv.check_busy_stops([row], [after, other], ["tiny-a", "tiny-b"]).ok
    queued = {**row, "ttft_s": None}  # never reached the child: not busy on it
    assert inv.check_busy_stops([queued], [inside], ["tiny-a"]).ok


def test_a_stale_or_partial_restore_or_a_damaged_file_fails():
    saved = {"model": "tiny-a", "event": "kv_saved", "data": {"tokens": 50, "bytes": 1000}}
    restored = {"model": "tiny-a", "event": "kv_restored", "data": {"tokens": 50, "bytes": 1000}}
    stale = {"model": "tiny-a", "event": "kv_restored", "data": {"tokens": 40, "bytes": 900}}
    line = log(1.0, "router.kvcache", "tiny-a", "KV cache restored: 1 slot(s), 50 tokens, 0.0 MB in 4 ms")
    read = FileEvent(1.0, A_FILE, "read")
    whole = SlotFileState(A_FILE, 1000, 60, None)

    def oks(events, lines, reads, files):
        return [c.ok for c in inv.check_kv(events, lines, reads, False, files, ["tiny-a"])]

    assert oks([saved, restored], [line], [read], [whole]) == [True, True, True, True]
    assert oks([saved, stale], [log(1.0, "router.kvcache", "tiny-a", "KV cache restored: 1 slot(s), 40 tokens")],
               [read], [whole])[0] is False
    partial_read = FileEvent(1.0, A_FILE + ".partial", "read")
    assert oks([saved, restored], [line], [read, partial_read], [whole])[1] is False
    assert oks([saved, restored], [], [read], [whole])[2] is False  # an event with no log line
    assert oks([saved, restored], [line], [], [whole])[2] is False  # a restore that read no file
    assert oks([saved, restored], [line], [read], [SlotFileState(A_FILE, 999, 60, None)])[3] is False


def test_an_invalid_catalogue_applied_or_a_reload_unanswered_fails():
    actions = [Action("reload", 1.0), Action("reload_invalid", 2.0)]
    ok = [log(1.1, "router.reload", None, "reload (SIGHUP): added -, removed -"),
          log(2.1, "router.reload", None, "reload (SIGHUP) failed; keeping the running catalogue: x")]
    assert inv.check_reloads(actions, ok).ok
    assert not inv.check_reloads(actions, [ok[0], ok[0]]).ok
    assert not inv.check_reloads(actions, ok[:1]).ok


def test_a_dropped_stream_or_an_exception_in_the_log_fails():
    assert not inv.check_streams(["/models/sse ended early"]).ok
    boom = inv.LogLine(1.0, "error", "aiohttp.server", None, "Error handling request", exception=True)
    assert not inv.check_log([boom], 0).ok
    assert not inv.check_log([], 1).ok


def test_a_soak_that_exercised_nothing_fails():
    assert not inv.check_coverage([], [], [], 10, True).ok
