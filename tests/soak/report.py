"""What a soak run leaves behind: the router's JSON log read back, a summary of
the load and the chaos, the invariant table, and report.json / report.txt in
the run folder (the router log stays there too)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tests.soak import invariants as inv
from tests.soak.slotdir import SlotFolder

if TYPE_CHECKING:
    from tests.soak.harness import Recording, SoakSettings


@dataclass
class Report:
    checks: list[inv.Check]
    table: str
    summary: str
    run_dir: Path

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def read_log(path: Path) -> tuple[list[inv.LogLine], int]:
    """The router's JSON log; lines that are not JSON count only when they are a traceback."""
    lines, raw_tracebacks = [], 0
    with open(path, errors="replace") as f:
        for text in f:
            if not text.startswith("{"):
                raw_tracebacks += text.startswith("Traceback")
                continue
            try:
                d = json.loads(text)
                at = datetime.strptime(d["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
            except (ValueError, KeyError):
                continue
            lines.append(inv.LogLine(at, d.get("level", ""), d.get("logger", ""), d.get("model"),
                                     d.get("message", ""), "exception" in d))
    return lines, raw_tracebacks


def summarize(s: SoakSettings, rec: Recording, slots: SlotFolder) -> str:
    by_result: dict[str, int] = {}
    for o in rec.outcomes:
        by_result[o.result] = by_result.get(o.result, 0) + 1
    statuses: dict[str, int] = {}
    for o in rec.outcomes:
        statuses[str(o.status)] = statuses.get(str(o.status), 0) + 1
    latencies = sorted(o.ended - o.started for o in rec.outcomes if o.result in ("complete", "error"))
    frozen = [(a.started, a.ended + s.read_timeout + 2.0) for a in rec.actions if a.kind == "sigstop"]
    timeouts = [o for o in rec.outcomes if o.read_timeout]
    starved = sum(1 for o in timeouts if not any(a <= o.ended <= b for a, b in frozen))
    p = (lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]) if latencies else (lambda q: 0.0)
    disk = ("tmpfs of " + f"{s.tmpfs_bytes // 1024} KiB" if slots.mounted or rec.disk_fill
            else f"a plain folder ({slots.why_not_tmpfs})")
    return "\n".join([
        f"soak: {s.clients} clients, {s.warmup_s:g} s warm-up + {s.duration_s:g} s of chaos, read_timeout "
        f"{s.read_timeout:g} s, slots on {disk}, slot_save_max_bytes {s.slot_save_max_bytes}"
        + (f", SOAK_BREAK={','.join(sorted(s.breaks))}" if s.breaks else ""),
        f"requests: {len(rec.outcomes)}; results {dict(sorted(by_result.items()))}; "
        f"HTTP status {dict(sorted(statuses.items()))}",
        f"latency of answered requests: p50 {p(0.5):.2f} s, p99 {p(0.99):.2f} s, max {p(1.0):.2f} s",
        f"read timeouts (502 after router.read_timeout): {len(timeouts)}, {starved} of them while no child was "
        "frozen (a child starved of CPU past read_timeout)",
        f"chaos: {len(rec.actions)} actions; router log and report: {s.run_dir}",
    ])


def save(report: Report, rec: Recording) -> None:
    data = {
        "ok": report.ok,
        "checks": [asdict(c) for c in report.checks],
        "summary": report.summary,
        "actions": [asdict(a) for a in rec.actions],
        "bad_outcomes": [asdict(o) for o in rec.outcomes if o.result in ("hung", "broken", "malformed")][:200],
        "samples": [asdict(x) for x in (rec.proc.samples if rec.proc else [])],
    }
    (report.run_dir / "report.json").write_text(json.dumps(data, indent=1))
    (report.run_dir / "report.txt").write_text(report.summary + "\n\n" + report.table + "\n")
