"""The short chaos soak, part of `make test`: a real router, three tiny real
models, 100 clients for 80 seconds of chaos (children SIGKILLed and frozen,
the slot disk full, catalogue reloads). `make soak` runs the same for ten
minutes with 300 clients (python -m tests.soak). The table is printed either
way; `SOAK_BREAK=<break>` makes the run fail on purpose (docs/reliability.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.soak.harness import SoakSettings, run_soak

pytestmark = pytest.mark.real


@pytest.mark.timeout(180)
def test_a_short_chaos_soak_keeps_every_invariant(tmp_path: Path, llama_server: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    settings = SoakSettings(run_dir=tmp_path / "soak", llama_server=llama_server, duration_s=80.0, warmup_s=10.0,
                            clients=100, timeouts=(40.0, 60.0), breaks=SoakSettings.breaks_from_env())
    report = run_soak(settings)
    with capsys.disabled():
        print(f"\n{report.summary}\n{report.table}")
    failed = [c.name for c in report.checks if not c.ok]
    assert not failed, f"soak invariants failed: {failed} (router log in {report.run_dir})"
