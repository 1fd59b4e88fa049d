"""`make gpu-check`: memory-aware placement proven on a real NVIDIA GPU in one
short run (docs/memory.md, "On a GPU").

The scenario of tests/e2e/test_memory_placement.py, on VRAM: one model file
(a generated llama model, 1.3 GiB of F16 weights) at four context sizes,
`-ngl 99`, a GPU budget of a few GiB (`gpu: auto` with the reserve set to
the rest of the card). It checks, per model, the router's estimate against
what NVML says the child uses; that two models that fit run together; that
a third stops the least recently used one (a pinned one stays); that a model
bigger than the budget gets 503 with the figures; and that the GPU's free
memory, sampled every 0.1 s through the swaps, never falls below the reserve.
Then it writes the table into docs/memory.md with the device named (and
into $OUT, so that it comes back from a lent machine).

It runs twice on the GPU: first with a stand-in child that takes the
estimated buffers through the CUDA driver API (bench/gpu_standin.py), while
llama-server builds with CUDA for that GPU's architecture from the carried
source (bench/gpu_build.py); then with that llama-server, if the build
finished in time. Without an NVIDIA GPU it says so and exits 0 at once.

    python -m bench.gpu_check             # on a GPU machine (make gpu-check)
    python -m bench.gpu_check --dry-run   # the same scenario on CPU and RAM, NVML simulated (make test)
    python -m bench.gpu_check --bundle    # here, with PyPI: what the lent machine cannot fetch
    python -m bench.gpu_check --apply DIR # write the results a lent machine sent back into docs/memory.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.gpu_build import bundle, install_wheels, start_build, tail
from bench.gpu_scenario import (
    SHAPES,
    Check,
    Device,
    GiB,
    Row,
    Scenario,
    SimulatedNvml,
    estimates,
    mib,
    plan_budget,
    run_scenario,
    write_models,
)

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".gpu-check"  # ignored by git: the carried bundle and what is built there
BUNDLE = WORK / "bundle"
DOC = ROOT / "docs" / "memory.md"
BEGIN = "<!-- gpu-check: begin (written by `make gpu-check`; edit bench/gpu_check.py instead) -->"
END = "<!-- gpu-check: end -->"
RESULTS = "gpu-check.json"
MiB = 1024 * 1024
SCENARIO_S = 80  # what the llama-server scenario needs after the build (five loads of 1.4 GB, cached)


def query_gpu() -> Device | None:
    """The first NVIDIA GPU, from nvidia-smi; None without one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=name,memory.total,compute_cap,driver_version",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    if out.returncode != 0 or not lines:
        return None
    name, _, cap, driver = (x.strip() for x in lines[0].split(","))
    try:
        import pynvml
    except ImportError:
        sys.exit("gpu-check: NVML's Python binding is missing: pip install 'llama-router[gpu]' (nvidia-ml-py)")
    pynvml.nvmlInit()
    try:
        total = int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).total)
    except pynvml.NVMLError as e:  # a GPU without memory of its own (unified memory): no VRAM to check
        print(f"gpu-check: {name} has no memory figure ({e}): unified memory, see docs/memory.md; nothing to check.")
        return None
    return Device("gpu", name, "gpu0", total, pynvml, cap.replace(".", ""), driver)


# ----- the table -------------------------------------------------------------
def render(runs: list[Scenario], notes: list[str], when: str) -> str:
    """The docs/memory.md section, between its markers."""
    lines = [BEGIN]
    for r in runs:
        lines += ["", f"**{r.device}**, {r.backend}, {when}: budget {mib(r.budget)} on `{r.key}` "
                      f"({r.settings}); {r.seconds:.0f} s.", ""]
        own = "overhead" if r.key == "ram" else "runtime"  # the process's own memory, or the GPU runtime's
        lines += [f"| model | arguments | estimate (weights + KV + compute + {own}) | router's figure | "
                  f"{r.measured_by} | estimate / {r.measured_by.split(',')[0]} |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for row in r.rows:
            parts = " + ".join(f"{row.estimate.get(k, 0) / MiB:,.0f}" for k in ("weights", "kv", "compute", own))
            ratio = f"{row.estimated / row.nvml_peak:.2f}" if row.nvml_peak else "-"
            lines.append(f"| {row.model} | `{' '.join(row.args)}` | {mib(row.estimated)} ({parts}) | "
                         f"{mib(row.recorded)} | {mib(row.nvml_peak)} | {ratio} |")
        lines += [""] + [f"- {'ok' if c.ok else 'FAILED'}: {c.what} ({c.detail})" for c in r.checks]
        lines += [f"- free before the router started: {mib(r.idle_free)}; lowest while models swapped: "
                  f"{mib(r.min_free)} ({r.samples} samples)."]
        runtime = [row.nvml_peak - (row.estimated - row.estimate.get("runtime", 0))
                   for row in r.rows if row.nvml_peak and not r.asserts_estimate and r.key != "ram"]
        if runtime:  # the stand-in holds exactly its buffers: the rest of NVML's figure is CUDA's own
            lines.append(f"- NVML less the buffers the stand-in took (the CUDA context): "
                         f"{', '.join(mib(n) for n in runtime)}; the estimate counts "
                         f"{mib(r.rows[0].estimate.get('runtime', 0))} (`GPU_RUNTIME`).")
    lines += [""] + [f"- {n}" for n in notes] + ["", END]
    return "\n".join(lines)


def write_section(doc: Path, section: str) -> None:
    """Put `section` between the markers of `doc` (at its end when it has none)."""
    text = doc.read_text(encoding="utf-8")
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.write_text(text, encoding="utf-8")


def save(runs: list[Scenario], notes: list[str], doc: Path, out: Path | None) -> None:
    when = time.strftime("%Y-%m-%d", time.gmtime())
    section = render(runs, notes, when)
    write_section(doc, section)
    data = {"when": when, "notes": notes, "runs": [{**asdict(r), "ok": r.ok} for r in runs]}
    for folder in filter(None, [out]):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RESULTS).write_text(json.dumps(data, indent=1) + "\n")
        shutil.copy(doc, folder / "memory.md")
    print(section)


def apply(folder: Path, doc: Path) -> None:
    """Write the results a lent machine sent back (its $OUT) into `doc`."""
    data = json.loads((folder / RESULTS).read_text())
    runs = []
    for r in data["runs"]:
        r.pop("ok", None)
        rows = [Row(**x) for x in r.pop("rows")]
        checks = [Check(**x) for x in r.pop("checks")]
        runs.append(Scenario(**r, rows=rows, checks=checks))
    write_section(doc, render(runs, data["notes"], data["when"]))


# ----- the two modes ---------------------------------------------------------
def gpu_check(a: argparse.Namespace) -> int:
    started = time.monotonic()
    deadline = started + a.time_limit
    device = query_gpu()
    if device is None:
        print("gpu-check: no NVIDIA GPU here (nvidia-smi sees none): nothing to check.")
        return 0
    print(f"gpu-check: {device.name}, {mib(device.total)}, compute capability {device.arch}, "
          f"driver {device.driver}", flush=True)
    build = None if a.llama_server else start_build(a.bundle, WORK, device.arch)  # first: it takes longest
    missing = install_wheels(a.bundle, Path(tempfile.gettempdir()) / "gpu-check-site")
    if missing:
        print(f"gpu-check: installed {', '.join(missing)} from {a.bundle / 'wheels'}", flush=True)
    model = write_models(WORK / "models", "gpu")
    s = SHAPES["gpu"]
    notes = [f"driver {device.driver}; the model: a generated llama ({s.n_layer} layers, {s.n_embd} wide, F16), "
             "one file at four context sizes, `-ngl 99`; NVML per-process figures sampled every 0.1 s."]
    standin = [sys.executable, "-m", "bench.gpu_standin", "--memory", "gpu"]
    runs = [_attempt(device, standin, "stand-in child (cuMemAlloc of the estimated buffers)", model,
                     WORK / "standin", asserts_estimate=False)]
    _save_all(runs, [*notes, "llama-server with CUDA: still building when this was written."], a)
    binary = Path(a.llama_server) if a.llama_server else None
    if build is not None:
        binary = build.wait(deadline - SCENARIO_S)
        if binary is None:
            notes.append(f"llama-server with CUDA: not built ({build.error}); the stand-in's run above "
                         "proves the NVML side only.")
        else:
            notes.append(f"llama-server built there with CUDA for sm_{device.arch} only in {build.seconds:.0f} s "
                         f"(ninja, {os.cpu_count()} cores).")
    if binary is not None:
        runs.append(_attempt(device, [str(binary)], f"llama-server ({_version(binary)}, CUDA)", model,
                             WORK / "llama-server"))
        _save_all(runs, notes, a)
    print(f"gpu-check: {time.monotonic() - started:.0f} s in all", flush=True)
    return 0 if all(r.ok for r in runs) else 1


def _save_all(runs: list[Scenario], notes: list[str], a: argparse.Namespace) -> None:
    """The table, the results and the logs, written after each scenario: a run cut short
    by its time limit still leaves what it had."""
    save(runs, notes, a.doc, a.out)
    if a.out:
        for src, name in ((WORK / "build.log", "build.log"), (WORK / "standin" / "router.log", "router-standin.log"),
                          (WORK / "llama-server" / "router.log", "router-llama-server.log")):
            if src.is_file():
                (a.out / name).write_text(tail(src, 4_000_000))


def _attempt(device: Device, server: list[str], backend: str, model: Path, workdir: Path,
             **kw: Any) -> Scenario:
    """A scenario that could not run is a failed one, with the reason; the next one still runs."""
    try:
        return run_scenario(device, server, backend, model, workdir, **kw)
    except Exception as e:
        print(f"gpu-check: {backend}: {e!r}", file=sys.stderr, flush=True)
        r = Scenario(device.name, backend, device.key, 0, 0, device.total)
        r.checks.append(Check("the scenario ran", False, f"{type(e).__name__}: {str(e)[-600:]}"))
        return r


def dry_run(a: argparse.Namespace) -> int:
    """Everything but the GPU: the same scenario on this machine's RAM, figures from
    a simulated NVML (the children's resident memory), a CPU llama-server; and the
    stand-in child holding RAM. Also shows the device run's build commands."""
    from bench.gpu_build import build_args, cmake_args
    from router.backend.launch import find_llama_server

    found = a.llama_server or os.environ.get("LLAMA_SERVER_BIN") or find_llama_server()
    binary = Path(found) if found else None
    if binary is None:
        print("gpu-check --dry-run: no llama-server here (make setup builds one)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="gpu-check-dry-"))
    try:
        print("the device run would build with:\n  " + " ".join(cmake_args(Path("llama.cpp"), Path("build"), "90"))
              + "\n  " + " ".join(build_args(Path("build"), 16)), flush=True)
        model = write_models(work, "dry")
        figures = {n: e.devices["ram"] for n, e in estimates(model, "dry").items()}
        total = plan_budget(figures) + GiB  # a simulated device: the budget and a 1 GiB reserve
        runs = []
        for server, backend, asserts in (
                ([sys.executable, "-m", "bench.gpu_standin", "--memory", "ram"], "stand-in child (RAM)", False),
                ([str(binary)], f"llama-server ({_version(binary)}, CPU)", True)):
            device = Device("dry", "CPU, dry run (NVML simulated from resident memory)", "ram", total,
                            SimulatedNvml(total))
            runs.append(_attempt(device, server, backend, model, work / backend.split()[0],
                                 asserts_estimate=asserts))
        save(runs, ["dry run: no GPU; the router's figure is what the estimate is checked against."],
             a.doc, a.out)
        return 0 if all(r.ok for r in runs) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _version(binary: Path) -> str:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "version unknown"
    for line in (out.stdout + out.stderr).splitlines():
        if line.startswith("version:"):
            return line.removeprefix("version:").strip()
    return "version unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="the scenario on CPU and RAM, NVML simulated")
    mode.add_argument("--bundle", dest="make_bundle", action="store_true",
                      help="gather what the lent machine needs into --bundle-dir (here, with PyPI)")
    mode.add_argument("--apply", type=Path, metavar="DIR", help=f"write DIR/{RESULTS} into the doc")
    p.add_argument("--doc", type=Path, default=DOC, help="the Markdown file to write the table into")
    p.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None,
                   help="a folder for the results and the doc (default: $OUT when set)")
    p.add_argument("--llama-server", help="a llama-server to use instead of building one")
    p.add_argument("--bundle-dir", dest="bundle", type=Path, default=BUNDLE, help=f"default: {BUNDLE}")
    p.add_argument("--time-limit", type=float, default=580, help="seconds for everything, build included")
    a = p.parse_args(argv)
    if a.make_bundle:
        bundle(a.bundle)
        return 0
    if a.apply:
        apply(a.apply, a.doc)
        return 0
    if a.dry_run:
        return dry_run(a)
    return gpu_check(a)


if __name__ == "__main__":
    sys.exit(main())
