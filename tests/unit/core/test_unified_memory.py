"""Unified memory (Apple silicon, DGX Spark): the GPU computes in the RAM, so
everything a model takes counts against one budget, capped by what the
platform lets the GPU use. Each machine is simulated: its figures are
injected (`Platform`), no Mac needed."""

from __future__ import annotations

import pytest

from router.backend import memory_measure as memory
from router.backend.launch import LaunchPlan
from router.backend.memory_measure import Platform, metal_working_set, read_platform
from router.catalogue.config import POOL, MemorySettings, ModelSpec
from router.core.memory_book import MemoryBook, resolve_budget
from router.core.scheduler import Reject, Scheduler, Start, Stop
from tests.support.tinygguf import write_tiny_model

MiB = 1024 * 1024
GiB = 1024 * MiB

# A 32 GiB Mac: Metal lets the GPU wire two thirds of it.
MAC_32 = Platform("Darwin", "arm64", 32 * GiB, working_set=int(32 * GiB * 2 / 3),
                  working_set_source="Metal's recommendedMaxWorkingSetSize")
MAC_128 = Platform("Darwin", "arm64", 128 * GiB, working_set=96 * GiB)
INTEL_MAC = Platform("Darwin", "x86_64", 32 * GiB)
LINUX_24G_GPU = Platform("Linux", "x86_64", 64 * GiB, gpus=(24 * GiB,))
DGX_SPARK = Platform("Linux", "aarch64", 128 * GiB, gpu_in_ram=True)


def settings(**kw) -> MemorySettings:
    return MemorySettings(**{"reserve": GiB, **kw})


@pytest.mark.parametrize(("machine", "budget"), [
    (MAC_32, {"ram": int(32 * GiB * 2 / 3)}),  # Metal's limit, below the RAM less the reserve
    (MAC_128, {"ram": 96 * GiB}),
    (INTEL_MAC, {"ram": 31 * GiB}),  # no GPU that computes in RAM: the RAM less the reserve
    (LINUX_24G_GPU, {"ram": 63 * GiB, "gpu0": 23 * GiB}),  # a GPU with memory of its own: two budgets
    (DGX_SPARK, {"ram": 127 * GiB}),  # NVML lists the GPU but it has no memory of its own
])
def test_auto_detects_unified_memory_and_caps_it_by_the_gpu_working_set(machine, budget):
    assert resolve_budget(settings(), machine) == budget


def test_unified_can_be_forced_either_way():
    # false on a Mac: the RAM less the reserve, the GPU's limit ignored
    assert resolve_budget(settings(unified=False), MAC_32) == {"ram": 31 * GiB}
    # true on a box whose NVIDIA GPU was not recognised as integrated (a Jetson, say): one budget,
    # GPU budgets do not apply
    assert resolve_budget(settings(unified=True), LINUX_24G_GPU) == {"ram": 63 * GiB}
    assert resolve_budget(settings(unified=True, gpu=8 * GiB), LINUX_24G_GPU) == {"ram": 63 * GiB}


def test_a_written_size_is_taken_as_written_on_unified_memory():
    assert resolve_budget(settings(ram=24 * GiB), MAC_32) == {"ram": 24 * GiB}
    assert resolve_budget(settings(ram=None), MAC_32) is None


@pytest.mark.parametrize(("ram", "metal", "wired_mb", "expected"), [
    (32 * GiB, 22 * GiB, None, (22 * GiB, "Metal's recommendedMaxWorkingSetSize")),
    (32 * GiB, None, 28672, (28 * GiB, "sysctl iogpu.wired_limit_mb")),  # raised by hand
    (16 * GiB, None, 0, (int(16 * GiB * 2 / 3), "2/3 of the RAM (macOS's default)")),
    (36 * GiB, None, None, (24 * GiB, "2/3 of the RAM (macOS's default)")),
    (64 * GiB, None, 0, (48 * GiB, "3/4 of the RAM (macOS's default)")),
])
def test_the_metal_limit_comes_from_metal_then_sysctl_then_macos_default(ram, metal, wired_mb, expected):
    assert metal_working_set(ram, metal, wired_mb) == expected


def test_read_platform_on_simulated_apple_silicon_and_intel_macs(monkeypatch):
    monkeypatch.setattr(memory._platform, "system", lambda: "Darwin")
    monkeypatch.setattr(memory, "total_ram", lambda: 64 * GiB)
    monkeypatch.setattr(memory, "_nvml_gpus", lambda: (None, False))
    monkeypatch.setattr(memory, "_metal_limit", lambda: 52 * GiB)
    monkeypatch.setattr(memory, "_sysctl_int", lambda name: 0)
    monkeypatch.setattr(memory._platform, "machine", lambda: "arm64")
    mac = read_platform()
    assert mac.unified and mac.working_set == 52 * GiB and mac.ram == 64 * GiB
    monkeypatch.setattr(memory, "_metal_limit", lambda: None)  # Metal unreadable: macOS's default
    assert read_platform().working_set == 48 * GiB
    monkeypatch.setattr(memory._platform, "machine", lambda: "x86_64")
    intel = read_platform()
    assert not intel.unified and intel.working_set is None


def plan(path, *args: str) -> LaunchPlan:
    return LaunchPlan(("llama-server", "--model", str(path), *args), {}, "/health", True)


def test_offloaded_layers_count_against_the_one_budget(tmp_path):
    model = write_tiny_model(tmp_path / "tiny.gguf")
    spec = ModelSpec(name="m", path=str(model))
    args = ("-c", "8192", "-ngl", "99")
    mac = MemoryBook(settings(), None, platform=MAC_32)
    est = mac.estimate(spec, plan(model, *args))
    assert mac.unified and est.devices == {"ram": est.total}  # weights, KV, compute: all in the RAM
    assert est.runtime == 0
    gpu_box = MemoryBook(settings(), None, platform=LINUX_24G_GPU)
    split = gpu_box.estimate(spec, plan(model, *args))
    assert not gpu_box.unified and split.devices["gpu0"] >= split.weights + split.kv  # a discrete GPU: its own budget


def test_a_load_on_unified_memory_is_measured_as_ram(tmp_path):
    model = write_tiny_model(tmp_path / "tiny.gguf")
    spec, p = ModelSpec(name="m", path=str(model)), plan(model, "-c", "512", "-ngl", "99")
    spark = MemoryBook(settings(), None, platform=DGX_SPARK)
    est = spark.estimate(spec, p)
    log = ["load_tensors:        CUDA0 model buffer size =   100.00 MiB",
           "llama_kv_cache:        CUDA0 KV buffer size =    60.00 MiB",
           "sched_reserve:      CUDA0 compute buffer size =    20.00 MiB",
           "sched_reserve:  CUDA_Host compute buffer size =     2.00 MiB"]
    figure = spark.record("m", p, log, rss=50 * MiB)
    assert figure == {"ram": 182 * MiB + est.overhead}  # the GPU's buffers are RAM too; nothing on a "gpu0"
    mac = MemoryBook(settings(), None, platform=MAC_32)
    mac.estimate(spec, p)
    metal = ["load_tensors:   MTL0_Mapped model buffer size =   100.00 MiB",
             "llama_kv_cache:        MTL0 KV buffer size =    60.00 MiB",
             "sched_reserve:        MTL0 compute buffer size =    20.00 MiB"]
    assert mac.record("m", p, metal, rss=90 * MiB) == {"ram": 180 * MiB + est.overhead}
    # Metal's buffers are RAM even with `unified: false` (only the working-set cap goes)
    forced = MemoryBook(settings(unified=False), None, platform=MAC_32)
    forced.estimate(spec, p)
    assert forced.record("m", p, metal, rss=90 * MiB) == {"ram": 180 * MiB + est.overhead}


def use(s: Scheduler, model: str) -> list:
    """A request for `model`, carried through its swap; the effects seen."""
    t = s.new_ticket()
    seen = list(s.submit(t, model))
    for e in list(seen):
        if isinstance(e, Stop):
            seen += s.stopped(e.model)
    for e in list(seen):
        if isinstance(e, Start):
            seen += s.loaded(e.model)
    s.release(t)
    return seen


def test_two_models_that_fit_the_ram_but_not_metal_never_run_together():
    """On a 32 GiB Mac two 12 GiB models fit the RAM less the reserve (31 GiB) but not
    Metal's 21.3 GiB: the second one stops the first; a 24 GiB one is refused at once."""
    budget = MemoryBook(settings(), None, platform=MAC_32).budget
    s = Scheduler({"a": POOL, "b": POOL, "huge": POOL}, 0, budget=budget)
    for name, size in (("a", 12 * GiB), ("b", 12 * GiB), ("huge", 24 * GiB)):
        s.set_memory(name, {"ram": size})
    use(s, "a")
    seen = use(s, "b")
    assert Stop("a", "swap") in seen and set(s.running()) == {"b"}
    refused = use(s, "huge")
    assert len(refused) == 1 and isinstance(refused[0], Reject)
    assert "needs 24.00 GiB of ram but the ram budget is 21.33 GiB" in refused[0].reason
    assert set(s.running()) == {"b"}
