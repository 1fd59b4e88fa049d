"""The fairness bench row's pure parts (bench/fairness.py, the `fairness` group of `python -m bench`):
issue #27's two goals judged from the measured figures, and the section the report prints."""

from __future__ import annotations

import pytest

from bench import fairness, report, suite
from bench.__main__ import GROUPS, main
from bench.fairness import X_GOAL, Outcome, Plan, section, table, x_goal_met, y_goal_met


def outcome(label: str, waits: list[float], x_total: float, swaps: int = 4, errors: tuple[str, ...] = ()) -> Outcome:
    return Outcome(label, y_waits=waits, x_total=x_total, swaps=swaps, failures=len(errors), errors=list(errors))


def three(fair_waits: list[float], fair_total: float, fifo_total: float = 20.0) -> list[Outcome]:
    return [outcome("llama-router, fair share", fair_waits, fair_total, swaps=12),
            outcome("llama-router, FIFO (one key)", [1.5, 2.0, 3.5], fifo_total, swaps=3),
            outcome("llama.cpp router", [9.0, 12.0, 15.0], 19.0, swaps=1)]


def test_y_goal_is_the_p95_wait_within_twice_one_swap_plus_one_reply():
    swap_s = 0.20
    assert y_goal_met(outcome("a", [0.1, 0.2, 0.40], 10.0), swap_s)  # p95 0.40 = 2 x 0.20
    assert not y_goal_met(outcome("a", [0.1, 0.2, 0.41], 10.0), swap_s)
    assert not y_goal_met(outcome("a", [], 10.0), swap_s)  # no reply at all: nothing met
    assert not y_goal_met(outcome("a", [0.1, 0.1], 10.0, errors=("Y: 503: queue full",)), swap_s)


def test_x_goal_is_the_total_within_fifteen_percent_of_fifo():
    assert X_GOAL == 1.15
    fifo = outcome("fifo", [1.0], 20.0)
    assert x_goal_met(outcome("a", [0.1], 23.0), fifo)
    assert not x_goal_met(outcome("a", [0.1], 23.1), fifo)
    assert not x_goal_met(outcome("a", [0.1], 12.0, errors=("X: 500: boom",)), fifo)  # fast because it failed
    assert not x_goal_met(outcome("a", [0.1], 12.0), outcome("fifo", [1.0], 0.0))


def test_the_table_prints_each_verdict_from_the_figures():
    outs = three([0.1, 0.15, 0.3], 21.0)
    text = table(outs, 0.16, outs[1])
    fair = next(ln for ln in text.splitlines() if ln.startswith("| llama-router, fair share"))
    assert "| 0.15 s | 0.30 s | 21.0 s | 12 | 0 |" in fair
    assert "| met | 1.05x: met |" in fair
    cpp = next(ln for ln in text.splitlines() if ln.startswith("| llama.cpp router"))
    assert "| not met | 0.95x: met |" in cpp
    assert "(0.32 s)" in text and "1.15x" in text
    base = next(ln for ln in text.splitlines() if ln.startswith("| llama-router, FIFO"))
    assert "1.00x (the baseline)" in base

    outs = three([0.1, 0.15, 0.5], 23.5)
    slow = table(outs, 0.16, outs[1])
    fair = next(ln for ln in slow.splitlines() if ln.startswith("| llama-router, fair share"))
    assert "| not met | 1.18x: not met |" in fair


def test_the_section_says_the_plan_and_the_fair_share_verdicts():
    outs = three([0.1, 0.15, 0.3], 21.0)
    plan = Plan(x_requests=60, x_concurrency=8, y_requests=6, y_interval=1.0, tokens=512)
    text = section(outs, 0.16, plan, "tiny.gguf")
    assert "60 chats to A, 8 at a time" in text and "6 chats to B, one every 1 s" in text
    assert "512-token replies" in text and "tiny.gguf" in text
    assert "Y's p95 wait 0.30 s <= 0.32 s: met" in text
    assert "X's total 21.0 s, 1.05x FIFO's 20.0 s (goal <= 1.15x): met" in text
    assert table(outs, 0.16, outs[1]) in text
    missed = section(three([0.1, 0.15, 0.9], 30.0), 0.16, plan, "tiny.gguf")
    assert "Y's p95 wait 0.90 s <= 0.32 s: not met" in missed
    assert "1.50x FIFO's 20.0 s (goal <= 1.15x): not met" in missed


def test_failed_requests_are_listed_under_the_table():
    outs = three([0.1, 0.15, 0.3], 21.0)
    outs[2] = outcome("llama.cpp router", [9.0], 19.0, errors=("Y: 500: child crashed",))
    text = section(outs, 0.16, Plan(), "tiny.gguf")
    assert "- llama.cpp router: Y: 500: child crashed" in text


def test_quick_mode_runs_a_smaller_burst_and_full_mode_the_issues_size():
    assert (fairness.FULL.x_requests, fairness.FULL.y_requests) == (200, 20)
    assert fairness.QUICK.x_requests < fairness.FULL.x_requests
    assert fairness.QUICK.y_requests < fairness.FULL.y_requests
    assert fairness.plan_for(suite.QUICK) is fairness.QUICK and fairness.plan_for(suite.FULL) is fairness.FULL


def test_python_m_bench_has_a_fairness_group_and_its_report_prints_the_section():
    assert "fairness" in GROUPS
    res = suite.Results()
    text = section(three([0.1, 0.15, 0.3], 21.0), 0.16, fairness.QUICK, "tiny.gguf")
    res.extra["fairness"] = text
    block = report.generated(res, suite.QUICK, version="b1", command="python -m bench --only fairness",
                             started=0.0, elapsed=60.0)
    assert "### 13. Fair share between API keys" in block
    assert text in block
    assert block.index(text) < block.index(report.END)
    assert "Fair share" not in report.generated(suite.Results(), suite.QUICK, version="b1", command="c",
                                                started=0.0, elapsed=1.0)


def test_an_unknown_group_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--only", "fairnes", "--out", ""])
    assert "fairnes" in capsys.readouterr().err
