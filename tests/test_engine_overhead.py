"""benchmarks/engine_overhead.py's per-step breakdown on its CPU path: each step's MAC fraction adds up to the
generation's, the step clock marks every scheduler step and leaves the scheduler as it found it, and the script
writes its table."""

from __future__ import annotations

import argparse
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
    assert sum(f for f, _, _ in fractions.values()) / 6 == pytest.approx(stats.computed_fraction, rel=1e-9)
    for step, (fraction, label, batch) in fractions.items():
        reused = sorted(kind for kind, (_c, r) in stats.by_step()[step].items() if r)
        assert (label == "computes all") == (not reused) == (fraction == 1.0)
        assert all(kind in label for kind in reused)
        # CFG-Cache rebuilds the unconditional half: the denoiser computes half the samples on exactly those steps
        assert (batch == 0.5) == ("denoiser" in label) and batch in (0.5, 1.0)
        assert fraction <= batch
    assert {label for _, label, _ in fractions.values()} != {"computes all"}  # fastercache reused something
    assert any(batch == 0.5 for _, _, batch in fractions.values())


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


def trace_events(ranges, kernels) -> list[dict]:
    """Chrome-trace events as torch.profiler writes them: step ranges (start, duration) and kernels (launch time,
    start, duration), each kernel tied to its launch by a correlation id (1, 2, ...)."""
    events = [{"cat": "user_annotation", "name": f"step_{i:03d}", "ts": ts, "dur": dur} for i, (ts, dur) in enumerate(ranges)]
    for corr, (launch, start, dur) in enumerate(kernels, 1):
        events += [{"cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": launch, "dur": 2, "args": {"correlation": corr}},
                   {"cat": "kernel", "name": f"k{corr}", "ts": start, "dur": dur, "args": {"correlation": corr}}]
    return events


def test_kernels_per_step_sum_the_kernels_each_step_launched(engine_overhead):
    """A step's device time is its kernels' summed durations, each kernel counted in the step whose range holds
    its launch (kernels run after their launch, possibly after the range ended); idle gaps count for nothing."""
    events = trace_events(ranges=[(0, 100), (100, 100)], kernels=[(10, 20, 30), (90, 120, 40), (150, 300, 5)])
    events[4]["cat"] = "cuda_driver"  # the second kernel launched through the driver API (Triton's kernels are)
    events += [
        {"cat": "kernel", "name": "d", "ts": 400, "dur": 7, "args": {"correlation": 99}},  # no launch seen
        {"cat": "gpu_user_annotation", "name": "step_001", "ts": 120, "dur": 185},  # a span, not busy time
    ]
    counts, busy = zip(*engine_overhead.kernels_per_step(events, 3))
    assert counts == (2, 1, 0) and busy == pytest.approx((70e-6, 5e-6, 0.0))


def test_trace_steps_tables_busy_time_against_each_range(tmp_path, capsys):
    import gzip

    trace_steps = benchmark_module("trace_steps")
    events = trace_events(ranges=[(0, 1000), (1000, 4000)], kernels=[(10, 20, 800), (1010, 1020, 1000)])
    path = tmp_path / "trace-x.json.gz"
    path.write_bytes(gzip.compress(json.dumps({"traceEvents": events}).encode()))
    trace_steps.main([str(path)])
    out = capsys.readouterr().out
    assert "| 0 | 1 | 0.80 | 1.00 | 80% |" in out and "| 1 | 1 | 1.00 | 4.00 | 25% |" in out
    assert "| all | 2 | 1.8 | 5.0 | 36% |" in out
    empty = tmp_path / "empty.json.gz"
    empty.write_bytes(gzip.compress(b'{"traceEvents": []}'))
    with pytest.raises(SystemExit):
        trace_steps.main([str(empty)])
    assert "no step_NNN ranges" in capsys.readouterr().err


def test_half_batch_ideal_holds_cfg_cache_steps_to_the_half_batch(tmp_path):
    """--half-batch: the uncached model also runs at half the prompts, and a CFG-Cache step's ideal is that time
    (scaled by the MACs it computed of its half); steps that ran the whole batch keep their MAC ideal."""
    run_script("engine_overhead.py", "--part", "steps", "--model", "tiny-random-cogvideox", "--prompts", "2",
               "--steps", "6", "--repeats", "1", "--modes", "eager", "--policies", "fastercache", "--half-batch",
               "--out", str(tmp_path))
    rows = json.loads((tmp_path / "steps-tiny-random-cogvideox-eager.json").read_text())["rows"]
    assert {r["policy"] for r in rows} == {"fastercache"}  # the half-batch run is a reference, not a row
    for r in rows:
        assert r["of_batch_ideal"] == pytest.approx(r["speedup"] / r["batch_ideal_speedup"])
        if "denoiser" not in r["steps_reusing"] and r["steps_reusing"] != "all steps":
            assert r["batch_ideal_speedup"] == pytest.approx(r["ideal_speedup"])
    assert any("denoiser" in r["steps_reusing"] for r in rows)
    assert "of batch ideal" in (tmp_path / "steps-tiny-random-cogvideox-eager.md").read_text()


def test_device_time_profiles_each_case_at_its_own_batch(engine_overhead, model, tmp_path, monkeypatch):
    """--device-time with --half-batch: the half-batch reference is profiled at half the prompts (it once profiled
    the whole batch), and every case's trace gets a file name without spaces or commas. (The script asks for a
    GPU for --device-time; its steps part is called directly here.)"""
    profiled = []  # prompts per generation that ran under the profiler
    generate = model.generate

    def counting(prompts, *rest):
        if torch.autograd.profiler._is_profiler_enabled:
            profiled.append(len(prompts))
        return generate(prompts, *rest)

    monkeypatch.setattr(model, "generate", counting)
    args = argparse.Namespace(model="tiny-random-cogvideox", prompts=2, steps=4, repeats=1, modes=["eager"],
                              policies=["fastercache"], half_batch=True, device_time=True, backend="inductor",
                              trace_dir=tmp_path)
    rows = engine_overhead.run_steps(model, args)
    assert profiled == [2, 1, 2]  # uncached, half the prompts, fastercache
    assert all("cached_kernel_seconds" in r for r in rows)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 3 and not any(" " in n or "," in n for n in names), names


def test_eager_part_times_diffusers_caches_beside_their_cachelab_twins(tmp_path):
    """--diffusers adds diffusers' PAB and FasterCache, each with MACs counted as it runs (not copied from the
    cachelab twin at the same schedule), interleaved with the other cases."""
    run_script("engine_overhead.py", "--part", "eager", "--model", "tiny-random-cogvideox", "--steps", "6",
               "--repeats", "2", "--cases", "uncached,never", "--diffusers", "--out", str(tmp_path))
    rows = {r["case"]: r for r in json.loads((tmp_path / "eager-tiny-random-cogvideox.json").read_text())["rows"]}
    assert set(rows) == {"uncached", "hooks, never reuse", "pab (diffusers schedule)", "diffusers PAB",
                         "fastercache (diffusers schedule)", "diffusers FasterCache"}
    assert all(len(r["times"]) == 2 for r in rows.values())
    assert rows["uncached"]["computed_fraction"] == 1.0 and rows["hooks, never reuse"]["computed_fraction"] == 1.0
    for ours, theirs in [("pab (diffusers schedule)", "diffusers PAB"),
                         ("fastercache (diffusers schedule)", "diffusers FasterCache")]:
        assert 0 < rows[theirs]["computed_fraction"] < 1
        assert rows[theirs]["computed_fraction"] == pytest.approx(rows[ours]["computed_fraction"], rel=1e-6)


def test_compile_part_checks_compiled_outputs_against_eager(tmp_path):
    """--check-outputs: each compiled case's output against the same case run eagerly (aot_eager keeps the
    kernels, so the outputs are equal), and no graph compiled after the warm-up generation."""
    run_script("engine_overhead.py", "--part", "compile", "--model", "tiny-random-cogvideox", "--steps", "4",
               "--repeats", "1", "--modes", "whole", "--policies", "pab", "--backend", "aot_eager",
               "--check-outputs", "--out", str(tmp_path))
    rows = {r["case"]: r for r in json.loads((tmp_path / "compile-tiny-random-cogvideox-whole.json").read_text())["rows"]}
    assert set(rows) == {"whole: uncached", "whole: pab"}
    assert all(r["output_psnr_vs_eager"] == float("inf") for r in rows.values())
    assert all(r["graphs_compiled_after_warmup"] == 0 for r in rows.values())
    assert "PSNR vs eager dB" in (tmp_path / "compile-tiny-random-cogvideox-whole.md").read_text()


def test_cuda_graph_recordings_count_only_recordings(engine_overhead):
    """The compile part's recording count listens to dynamo's compile callbacks: a CUDA-graph recording counts, a
    dynamo compile does not, and nothing counts once the block is left."""
    from torch._dynamo.callback import CallbackTrigger, callback_handler

    with engine_overhead.cuda_graph_recordings() as recorded:
        for trigger in (CallbackTrigger.CUDAGRAPH_RECORDING, CallbackTrigger.DYNAMO, CallbackTrigger.CUDAGRAPH_RECORDING):
            with callback_handler.install_callbacks(trigger, "0/0"):
                pass
    with callback_handler.install_callbacks(CallbackTrigger.CUDAGRAPH_RECORDING, "0/0"):
        pass
    assert recorded == [2]


@pytest.mark.parametrize("modes,backend,message", [
    ("regional,wholecudagraphs", "inductor", "--modes: unknown ['wholecudagraphs']"),
    ("whole-cudagraphs", "aot_eager", "--modes whole-cudagraphs compiles with inductor's CUDA graphs"),
    ("whole,regional-cudagraphs", "inductor", "--modes regional-cudagraphs: blocks compiled one by one with CUDA "
     "graphs fail in torch itself"),
])
def test_modes_are_checked_before_anything_runs(engine_overhead, tmp_path, capsys, modes, backend, message):
    with pytest.raises(SystemExit):
        engine_overhead.main(["--part", "compile", "--modes", modes, "--backend", backend, "--out", str(tmp_path)])
    assert message in capsys.readouterr().err


def test_cudagraph_mode_compiles_with_reduce_overhead(engine_overhead, monkeypatch):
    """whole-cudagraphs compiles the transformer with mode="reduce-overhead"; regional compiles each block."""
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append((type(self).__name__, kw)))
    transformer = create_model("tiny-random-cogvideox", device="cpu").transformer
    blocks = len(transformer.transformer_blocks)
    engine_overhead.compile_transformer(transformer, "whole-cudagraphs")
    assert compiled == [(type(transformer).__name__, {"mode": "reduce-overhead"})]
    compiled.clear()
    engine_overhead.compile_transformer(transformer, "regional", "aot_eager")
    assert compiled == [(type(transformer.transformer_blocks[0]).__name__, {"backend": "aot_eager"})] * blocks
