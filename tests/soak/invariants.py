"""The soak's invariants: pure functions from what was recorded to table rows.
(Longer than 300 lines because it is the one list of them, each next to why it holds.)

Nothing here runs a process; tests/soak/test_invariants.py feeds each check a
made-up violation to prove it can fail. Sources, and why each proves its
invariant:

- client outcomes (tests/soak/clients.py): what every request got, judged by
  the client that sent it, against its own timeout;
- `/models/sse`, recorded from the first to the last second of the load: the
  router's own state changes in the order it made them (one event bus, one
  queue per subscriber, written in order), so "a model began loading while
  another was loading or loaded" is read straight off the sequence;
- `/api/activity/stream`: one row per request, recorded by the router right
  after the request's lease is released, with no await in between, so a
  Stop that the release allowed cannot run before the row's end time;
- the router's JSON log (`--log-format json`, millisecond times): the
  "KV cache saved" / "save failed" and "stopped (reason)" lines, all written
  inside a stop, before the next child can start;
- inotify on the slot folder: which files children read (a read is a restore);
- /proc and psutil: the router's RSS and file descriptors, its children.
"""

from __future__ import annotations

import bisect
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from router.backend.slotfiles import model_prefix
from tests.soak.chaos import Action
from tests.soak.clients import Outcome
from tests.soak.inotify import FileEvent
from tests.soak.monitor import Sample
from tests.soak.slotdir import SlotFileState

MIB = 1024 * 1024
# Late window median - early window median. The router's RSS still creeps up in a 10-minute
# run (+4 to +10 MiB, slowing down; docs/reliability.md), so the limit leaves it room and the
# slope is shown; a leak of a few KiB a request (SOAK_BREAK=leak-mem) is far past it.
RSS_LIMIT = 16 * MIB
EXPLAIN_WINDOW_S = 15.0  # how long after a kill (or a SIGCONT) its broken requests may still be answered
_FINAL = re.compile(r"^[A-Za-z0-9_-]+\.[0-9a-f]{16}\.slot\d{1,4}\.bin$")
_RESTORED = re.compile(r"KV cache restored: (\d+) slot\(s\), (\d+) tokens")


@dataclass
class Check:
    name: str
    value: str
    limit: str
    ok: bool
    evidence: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LogLine:
    at: float  # epoch seconds, to the millisecond (floored)
    level: str
    logger: str
    model: str | None
    message: str
    exception: bool = False


# ----- replies ------------------------------------------------------------------
def check_replies(outcomes: Sequence[Outcome]) -> list[Check]:
    bad = [o for o in outcomes if o.result in ("broken", "malformed")]
    hung = [o for o in outcomes if o.result == "hung"]
    return [
        Check("every reply complete or a well-formed error", f"{len(bad)} bad of {len(outcomes)}", "0 bad",
              not bad, [f"{o.request_id} {o.kind} {o.model}: {o.result}: {o.detail}" for o in bad[:8]]),
        Check("no request hung past its own timeout", f"{len(hung)} hung", "0", not hung,
              [f"{o.request_id} {o.kind} {o.model}: {o.detail}" for o in hung[:8]]),
    ]


def _canonical(model: str | None, aliases: dict[str, str]) -> str | None:
    return aliases.get(model, model) if model else model


def check_upstream_failures(outcomes: Sequence[Outcome], replays: Sequence[LogLine], actions: Sequence[Action],
                            read_timeout: float, aliases: dict[str, str]) -> Check:
    """A request may lose its child only to the chaos (a SIGKILL). One lost to anything
    else was cut off by the router itself (a busy model stopped), which is what this
    catches that the timing check may miss. Read timeouts are not losses: the router
    gives them on purpose to a child slower than read_timeout (frozen, or starved of CPU)."""
    failures = [(o.ended, _canonical(o.model, aliases), f"{o.request_id}: {o.error}")
                for o in outcomes if o.child_lost]
    failures += [(ln.at, ln.model, f"replay: {ln.message}") for ln in replays]
    unexplained = [f for f in failures if not _explained(f[0], f[1], actions, read_timeout)]
    return Check("children lost under requests: all by the chaos", f"{len(unexplained)} of {len(failures)} "
                 "unexplained", "0 unexplained", not unexplained,
                 [f"{m} at {t:.3f}: {d}" for t, m, d in unexplained[:8]])


def _explained(at: float, model: str | None, actions: Sequence[Action], read_timeout: float) -> bool:
    for a in actions:
        if a.model != model or a.kind not in ("kill", "sigstop"):
            continue
        end = (a.ended or a.started) + (read_timeout if a.kind == "sigstop" else 0.0) + EXPLAIN_WINDOW_S
        if a.started - 1.0 <= at <= end:
            return True
    return False


# ----- processes ----------------------------------------------------------------
def check_processes(strays: dict[int, str], leftovers: Sequence[str], max_live: int, models_max: int,
                    exit_code: int | None, over: Sequence[tuple[float, list[int]]]) -> list[Check]:
    return [
        Check("no llama-server of this run outside the router's tree (orphan)", f"{len(strays)} seen", "0",
              not strays, [f"pid {p}: {c[:160]}" for p, c in list(strays.items())[:8]]),
        Check("no child left running after the router stopped", f"{len(leftovers)} left", "0", not leftovers,
              list(leftovers[:8])),
        Check("model children alive at once (sampled 4/s)", str(max_live), f"<= {models_max} (models_max)",
              max_live <= models_max, [f"at {t:.3f}: pids {p}" for t, p in over[:8]]),
        Check("router exit status after SIGTERM", str(exit_code), "0", exit_code == 0),
    ]


def _window(samples: Sequence[Sample], start: float, end: float) -> list[Sample]:
    return [s for s in samples if start <= s.at <= end]


def check_flat(samples: Sequence[Sample], main: tuple[float, float], rest_before: Sample | None,
               rest_after: Sample | None) -> list[Check]:
    """RSS and fds of a late window against an early one, both under the same load
    (the first 10% of the chaos phase is warm-up); fds at rest after against before.
    The RSS limit is absolute (a router meant to run for weeks may not grow with the
    requests it serves), and the slope over the phase is shown beside it."""
    t0, t1 = main
    span = t1 - t0
    early = _window(samples, t0 + 0.10 * span, t0 + 0.35 * span)
    late = _window(samples, t1 - 0.25 * span, t1)
    if not early or not late:
        missing = Check("router RSS and fds sampled", f"{len(early)} early / {len(late)} late samples", ">= 1 each",
                        False)
        return [missing]
    rss_e, rss_l = statistics.median(s.rss for s in early), statistics.median(s.rss for s in late)
    fd_e, fd_l = statistics.median(s.fds for s in early), statistics.median(s.fds for s in late)
    fd_limit = max(16.0, 0.10 * fd_e)
    slope = _slope(_window(samples, t0 + 0.10 * span, t1))
    out = [
        Check("router RSS flat: late window median - early",
              f"{(rss_l - rss_e) / MIB:+.1f} MiB ({rss_e / MIB:.1f} -> {rss_l / MIB:.1f}; {slope * 60 / MIB:+.2f} "
              "MiB/min)", f"<= +{RSS_LIMIT / MIB:.0f} MiB", rss_l - rss_e <= RSS_LIMIT),
        Check("router open fds flat: late window median - early", f"{round(fd_l - fd_e):+d} ({fd_e:.0f} -> {fd_l:.0f})",
              f"<= +{fd_limit:.0f}", fd_l - fd_e <= fd_limit),
    ]
    if rest_before and rest_after:
        grew = rest_after.fds - rest_before.fds
        out.append(Check("router open fds at rest: after the chaos - before", f"{grew:+d} ({rest_before.fds} -> "
                         f"{rest_after.fds})", "<= +8", grew <= 8))
    return out


def _slope(samples: Sequence[Sample]) -> float:
    """Least-squares RSS growth in bytes per second."""
    if len(samples) < 2:
        return 0.0
    mt = statistics.fmean(s.at for s in samples)
    mr = statistics.fmean(s.rss for s in samples)
    var = sum((s.at - mt) ** 2 for s in samples)
    return sum((s.at - mt) * (s.rss - mr) for s in samples) / var if var else 0.0


# ----- the scheduler ----------------------------------------------------------
def check_scheduler_events(events: Sequence[dict[str, Any]], models_max: int) -> list[Check]:
    """From /models/sse in the router's own order: a load begins with `loading` for a
    model that holds nothing, and ends with `loaded` or a failed `unloaded`; a model
    holds memory from its load's start to its `unloaded`."""
    state: dict[str, str] = {}
    max_loading = max_held = loads = 0
    two_loads: list[str] = []
    too_many: list[str] = []
    for i, e in enumerate(events):
        if e.get("event") != "status_change":
            continue
        model, status = e.get("model", "?"), e.get("data", {}).get("status")
        if status == "loading" and state.get(model, "unloaded") == "unloaded":
            loading = [m for m, s in state.items() if s == "loading"]
            held = [m for m, s in state.items() if s in ("loading", "loaded")]
            if loading:
                two_loads.append(f"event {i}: {model} began loading while {loading} loading")
            if len(held) + 1 > models_max:
                too_many.append(f"event {i}: {model} began loading while {held} held memory")
            loads += 1
            state[model] = "loading"
        elif status == "loaded":
            state[model] = "loaded"
        elif status == "unloaded":
            state[model] = "unloaded"
        max_loading = max(max_loading, sum(1 for s in state.values() if s == "loading"))
        max_held = max(max_held, sum(1 for s in state.values() if s in ("loading", "loaded")))
    return [
        Check("never two loads at once (/models/sse)", f"max {max_loading} loading, {loads} loads",
              "<= 1", not two_loads, two_loads[:8]),
        Check("models loading or loaded at once (/models/sse)", f"max {max_held}", f"<= {models_max} (models_max)",
              not too_many, too_many[:8]),
    ]


def check_busy_stops(rows: Sequence[dict[str, Any]], log: Sequence[LogLine], models: Iterable[str]) -> Check:
    """No stop of a model falls inside a request's busy window on it.

    A request is busy on its child from the first byte of the child's reply
    (`time - total_s + ttft_s`, the router's own clock) until its row's `time`,
    taken just after its lease was released. The probes are the log lines a
    stop writes while the child is being stopped (its KV save, its "stopped");
    a probe strictly inside a busy window of the same model is a busy model
    stopped. Log times are floored to the millisecond, hence the 1 ms margin."""
    probes = [ln for ln in log if ln.model in set(models) and _is_stop_probe(ln)]
    windows: dict[str, list[tuple[float, float, str]]] = {}
    for r in rows:
        if r.get("ttft_s") is None or r.get("status") is None:
            continue
        end = float(r["time"])
        windows.setdefault(r["model"], []).append((end - float(r["total_s"]) + float(r["ttft_s"]), end,
                                                   str(r.get("request_id"))))
    hits = []
    for model, ws in windows.items():
        ws.sort()
        starts = [w[0] for w in ws]
        reach: list[float] = []  # reach[i]: the latest end among windows 0..i
        for w in ws:
            reach.append(max(w[1], reach[-1]) if reach else w[1])
        for p in (p for p in probes if p.model == model):
            k = bisect.bisect_left(starts, p.at)  # windows 0..k-1 began before the probe
            if k == 0 or reach[k - 1] <= p.at + 0.001:
                continue
            begin, end, rid = next(w for w in reversed(ws[:k]) if w[1] > p.at + 0.001)
            hits.append(f"{model}: '{p.message[:60]}' at {p.at:.3f} inside {rid} busy {begin:.3f}..{end:.3f}")
    return Check("never a busy model stopped (stop log lines vs activity rows)",
                 f"{len(hits)} of {len(probes)} stops", "0", not hits, hits[:8])


def _is_stop_probe(ln: LogLine) -> bool:
    return ((ln.logger == "router.manager" and ln.message.startswith("stopped ("))
            or (ln.logger == "router.kvcache" and ln.message.startswith(("KV cache saved", "KV cache save failed"))))


# ----- KV files -----------------------------------------------------------------
def check_kv(events: Sequence[dict[str, Any]], log: Sequence[LogLine], files: Sequence[FileEvent],
             overflowed: bool, at_end: Sequence[SlotFileState], models: Iterable[str]) -> list[Check]:
    last: dict[str, tuple[int, int]] = {}
    restores: list[tuple[str, int, int]] = []
    mismatched = []
    saves = 0
    for e in events:
        kind, model, data = e.get("event"), e.get("model", "?"), e.get("data", {})
        if kind == "kv_saved":
            saves += 1
            last[model] = (int(data["tokens"]), int(data["bytes"]))
        elif kind == "kv_restored":
            got = (int(data["tokens"]), int(data["bytes"]))
            restores.append((model, *got))
            if last.get(model) != got:
                mismatched.append(f"{model}: restored {got} (tokens, bytes), last save {last.get(model)}")
    reads = [f for f in files if f.kind == "read"]
    partial = [f.name for f in reads if not _FINAL.match(f.name)]
    logged = [(ln.model, int(m.group(2))) for ln in log if (m := _RESTORED.search(ln.message))]
    from_events = [(m, t) for m, t, _ in restores]
    # llama-server opens a file once or twice per restore (inotify merges repeats): at least once.
    by_prefix = {model_prefix(m): m for m in models}
    short = [m for m in by_prefix.values()
             if sum(1 for f in reads if _FINAL.match(f.name) and by_prefix.get(f.name.split(".", 1)[0]) == m)
             < sum(1 for r in restores if r[0] == m)]
    consistent = logged == from_events and not short
    final_reads = len(reads) - len(partial)
    return [
        Check("every restored KV file whole: restore = its model's last save", f"{len(mismatched)} of "
              f"{len(restores)} differ ({saves} saves)", "0", not mismatched, mismatched[:8]),
        Check("no .partial (or foreign) slot file ever read by a child", f"{len(partial)} of {len(reads)} reads"
              + (" (inotify overflowed)" if overflowed else ""), "0", not partial and not overflowed, partial[:8]),
        Check("'KV cache restored' log lines = kv_restored events <= file reads",
              f"{len(logged)} / {len(from_events)} / {final_reads}", "=, = and <= per model", consistent,
              [f"log {logged[:5]} events {from_events[:5]}; fewer reads than restores: {short}"]
              if not consistent else []),
        _check_files_at_end(at_end, last, models),
    ]


def _check_files_at_end(at_end: Sequence[SlotFileState], last: dict[str, tuple[int, int]],
                        models: Iterable[str]) -> Check:
    by_prefix = {model_prefix(m): m for m in models}
    bad = []
    for f in at_end:
        if not _FINAL.match(f.name):
            continue
        model = by_prefix.get(f.name.split(".", 1)[0])
        expected = last.get(model) if model else None
        if f.problem:
            bad.append(f"{f.name}: {f.problem}")
        elif expected is None or f.size != expected[1]:
            bad.append(f"{f.name}: {f.size} bytes, last save of {model}: {expected}")
    return Check("slot files on disk at the end whole (= their last save)", f"{len(bad)} of {len(at_end)} bad",
                 "0", not bad, bad[:8])


# ----- reloads, streams, the log ------------------------------------------------
def check_reloads(actions: Sequence[Action], log: Sequence[LogLine]) -> Check:
    """Every SIGHUP is answered, in order: a valid catalogue applied, an invalid one refused."""
    sent = ["ok" if a.kind == "reload" else "refused" for a in actions if a.kind in ("reload", "reload_invalid")]
    got = []
    for ln in log:
        if ln.message.startswith("reload (SIGHUP) failed"):
            got.append("refused")
        elif ln.message.startswith("reload (SIGHUP): ") and not ln.message.startswith("reload (SIGHUP): skipped"):
            got.append("ok")
    applied, refused = sent.count("ok"), sent.count("refused")
    return Check("SIGHUP reloads: valid applied, invalid refused, in order",
                 f"{got.count('ok')}/{applied} applied, {got.count('refused')}/{refused} refused", "all, in order",
                 got == sent, [f"sent {sent}", f"router {got}"] if got != sent else [])


def check_streams(dropped: Sequence[str]) -> Check:
    return Check("event streams complete (no subscriber dropped)", f"{len(dropped)} dropped", "0", not dropped,
                 list(dropped))


def check_log(log: Sequence[LogLine], raw_tracebacks: int) -> Check:
    bad = [ln for ln in log if ln.exception or "Task exception was never retrieved" in ln.message
           or "Error handling request" in ln.message or "Unhandled exception" in ln.message]
    return Check("no unhandled exception in the router log", f"{len(bad) + raw_tracebacks}", "0",
                 not bad and not raw_tracebacks, [f"{ln.logger}: {ln.message[:160]}" for ln in bad[:8]])


def check_coverage(outcomes: Sequence[Outcome], actions: Sequence[Action], events: Sequence[dict[str, Any]],
                   clients: int, disk_fill: bool) -> Check:
    """A soak that exercised nothing proves nothing: each kind of chaos, loads and
    KV restores must have happened, and every client must have been served."""
    count = {k: sum(1 for a in actions if a.kind == k) for k in ("kill", "sigstop", "fill_disk", "reload",
                                                                  "reload_invalid")}
    kinds = [e.get("event") for e in events]
    loads = sum(1 for e in events if e.get("event") == "status_change" and e.get("data", {}).get("status") == "loaded")
    need = {"kill": 1, "sigstop": 1, "reload": 1, "reload_invalid": 1, "fill_disk": 1 if disk_fill else 0}
    short = [k for k, n in need.items() if count[k] < n]
    if loads < 3 or kinds.count("kv_restored") < 1:
        short.append("loads/restores")
    if len(outcomes) < 5 * clients:
        short.append("requests")
    value = (f"{len(outcomes)} req, {loads} loads, {kinds.count('kv_saved')} saves, {kinds.count('kv_restored')} "
             f"restores; kill {count['kill']}, stop {count['sigstop']}, fill {count['fill_disk']}, "
             f"reload {count['reload']}+{count['reload_invalid']} bad")
    return Check("the soak exercised every fault", value, "each >= 1", not short, short)


def render(checks: Sequence[Check]) -> str:
    rows = [("invariant", "value", "limit", "result")] + [(c.name, c.value, c.limit, "PASS" if c.ok else "FAIL")
                                                          for c in checks]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for c in checks:
        if not c.ok and c.evidence:
            lines.append(f"FAIL {c.name}:")
            lines += [f"    {e}" for e in c.evidence]
    return "\n".join(lines)
