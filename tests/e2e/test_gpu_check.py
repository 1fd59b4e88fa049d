"""`make gpu-check`'s dry run: the GPU check's whole scenario on this machine's
CPU and RAM, so that the script a lent GPU machine runs cannot rot. A real
router places real llama-server children (and the check's stand-in child)
on a generated model at four context sizes, against NVML figures simulated
from the children's resident memory; the table goes into a copy of
docs/memory.md and the results into the output folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu_check import BEGIN, END, RESULTS

pytestmark = [pytest.mark.real, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_check_runs_dry_on_cpu_and_writes_its_table(tmp_path, llama_server):
    doc, out = tmp_path / "memory.md", tmp_path / "out"
    shutil.copy(ROOT / "docs" / "memory.md", doc)
    run = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--dry-run", "--doc", str(doc), "--out", str(out),
                          "--llama-server", str(llama_server)], cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    results = json.loads((out / RESULTS).read_text())
    stand_in, server = results["runs"]
    assert stand_in["backend"].startswith("stand-in") and server["backend"].startswith("llama-server")
    for r in (stand_in, server):
        failed = [c for c in r["checks"] if not c["ok"]]
        assert r["ok"] and not failed, failed
        assert r["samples"] > 10 and r["min_free"] >= r["reserve"]
        assert [row["model"] for row in r["rows"]] == ["small", "mid", "big", "huge"]
        assert all(row["recorded"] for row in r["rows"][:3]) and r["rows"][3]["recorded"] is None  # huge never ran
    checked = [c["what"] for c in server["checks"]]
    assert sum("estimate within 15%" in c for c in checked) == 3  # small, mid, big
    assert any("503" in c for c in checked) and any("reserve" in c for c in checked)
    text = doc.read_text()
    section = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert "**CPU, dry run" in section and "| small | `-c 8192 -np 1 -ngl 99` |" in section
    assert "FAILED" not in section
    assert text.startswith((ROOT / "docs" / "memory.md").read_text().split(BEGIN, 1)[0])  # the rest untouched
    assert (out / "memory.md").read_text() == text
    assert "-DCMAKE_CUDA_ARCHITECTURES=90" in run.stdout  # the device run's build, shown
