"""benchmarks/engine_overhead.py's per-step breakdown on its CPU path: each step's MAC fraction adds up to the
generation's, the step clock marks every scheduler step and leaves the scheduler as it found it, and the script
writes its table."""

from __future__ import annotations

import json

import pytest
import torch

import cachelab
from benchmark_scripts import benchmark_module, run_script
from cachelab.zoo.registry import create_model


@pytest.fixture(scope="module")
def engine_overhead():
    return benchmark_module("engine_overhead")


@pytest.fixture(scope="module")
def model():
    return create_model("tiny-random-cogvideox", device="cpu")


def test_step_fractions_add_up_to_the_generation(engine_overhead, model):
    handle = cachelab.apply(model.target, "fastercache", cfg=model.cfg)
    try:
        model.generate(model.prompts(1), [0], 6, model.guidance)
        stats = handle.stats()
    finally:
        handle.remove()
    fractions = engine_overhead.step_fractions(stats)
    assert sorted(fractions) == list(range(6))
    # every step of one generation costs the same uncached, so the generation's fraction is the steps' mean
    assert sum(f for f, _ in fractions.values()) / 6 == pytest.approx(stats.computed_fraction, rel=1e-9)
    for step, (fraction, label) in fractions.items():
        reused = sorted(kind for kind, (_c, r) in stats.by_step()[step].items() if r)
        assert (label == "computes all") == (not reused) == (fraction == 1.0)
        assert all(kind in label for kind in reused)
    assert {label for _, label in fractions.values()} != {"computes all"}  # fastercache reused something


def test_step_clock_marks_each_step_and_restores_the_scheduler(engine_overhead, model):
    scheduler = model.target.scheduler
    with engine_overhead._StepClock(scheduler, torch.device("cpu")) as clock:
        model.generate(model.prompts(1), [0], 4, model.guidance)
    assert len(clock.seconds()) == 4 and all(s > 0 for s in clock.seconds())
    assert "step" not in vars(scheduler)  # the class's own method again


def test_steps_part_writes_its_table(tmp_path):
    run_script("engine_overhead.py", "--part", "steps", "--model", "tiny-random-cogvideox", "--steps", "4",
               "--repeats", "1", "--modes", "eager", "--policies", "pab", "--out", str(tmp_path))
    rows = json.loads((tmp_path / "steps-tiny-random-cogvideox-eager.json").read_text())["rows"]
    assert {r["policy"] for r in rows} == {"pab"} and rows[-1]["steps_reusing"] == "all steps"
    assert sum(r["steps"] for r in rows[:-1]) == rows[-1]["steps"] == 4
    for r in rows:
        assert r["of_ideal"] == pytest.approx(r["speedup"] / r["ideal_speedup"])
    assert "| eager | pab | all steps | 4 |" in (tmp_path / "steps-tiny-random-cogvideox-eager.md").read_text()


def test_step_ranges_profile_each_step_and_the_trace_is_written(engine_overhead, model, tmp_path):
    """--device-time's profiled generation: one profiler range per scheduler step (the device time of each is what
    the GPU run reads), the scheduler restored, and the Chrome trace written gzipped with the step ranges in it."""
    import gzip

    scheduler = model.target.scheduler
    trace = tmp_path / "trace.json.gz"
    seconds = engine_overhead.device_seconds_per_step(
        lambda: model.generate(model.prompts(1), [0], 4, model.guidance), scheduler, 4, trace)
    assert len(seconds) == 4 and all(s >= 0 for s in seconds)  # no CUDA kernels on the CPU: zeros
    assert "step" not in vars(scheduler)
    events = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
    names = {e.get("name") for e in events}
    assert {f"step_{i:03d}" for i in range(4)} <= names
