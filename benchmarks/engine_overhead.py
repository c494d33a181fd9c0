"""What the framework costs on a GPU: small eager workloads, and torch.compile with and without caches.

Parts (one per run, so that each fits a short job):

* ``eager``: one prompt on a model (launch-bound at small sizes): uncached, hooks that never reuse, and every
  seed policy at its defaults. Each case: one warm-up generation (MAC profiling, allocations), then ``--repeats``
  timed ones; cases are timed in turn, round after round, so that drift hits all of them alike. The uncached case
  runs in every round, and the spread of its timings is the run-to-run spread.
* ``compile``: ``--prompts`` prompts, compiled ``regional`` (each transformer block, as diffusers'
  ``compile_repeated_blocks`` does) and ``whole`` (``transformer.compile()``): uncached and cached, each compiled
  from scratch (``torch._dynamo.reset()``). The warm-up generation compiles; graphs compiled during the timed
  generations are counted (0 means no recompilation), and so are the CUDA graphs recorded in the last timed
  generation (the ``-cudagraphs`` modes; 0 means every graph replayed: a graph recorded again in a steady generation,
  e.g. for a static input at a new address, costs about an eager run).
* ``profile``: kernel launches and host time of one generation per case (torch.profiler), for the eager part.
* ``steps``: where a cached generation's time goes, per kind of step. Each scheduler step is marked on the
  device's timeline (a CUDA event after ``scheduler.step``, outside any compiled region); the steps of a cached
  run are grouped by what they reused, and each group's time is compared with the same steps of the uncached run
  (same mode) and with the group's own MAC ideal. ``--modes`` takes ``eager`` too. ``--device-time`` adds one
  profiled generation per case (torch.profiler, the device synchronised after every step) and the time the
  device's kernels took in each group (their summed durations, the device's busy time): a step that is slower
  while its kernels are not is waiting on the host.
  ``--trace-dir`` also writes each profiled generation's Chrome trace (gzipped) there.

usage: python benchmarks/engine_overhead.py --part eager --model tiny-cogvideox --out OUT_DIR
Writes ``<part>-<model>.json`` and ``.md`` into OUT_DIR.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import datetime
import json
import re
import statistics
import time
import warnings
from pathlib import Path

import torch

import cachelab
from cachelab.bench import NEVER_REUSE
from cachelab.metrics import compare_videos
from cachelab.hooks.engine import counting_macs
from cachelab.timing import timed
from cachelab.zoo.registry import create_model
from provenance import commit, device_name

SEED_POLICIES = ["vanilla", "dynamic", "cfg_cache", "pab", "delta_dit", "fastercache"]






class Case:
    """A timed case: a cachelab policy spec, or (``attach``) another library's cache, as a bench case attaches it."""

    def __init__(self, name: str, policy, attach=None):
        self.name, self.policy, self.attach = name, policy, attach
        self.handle = None
        self.times: list[float] = []
        self.fraction: float | None = None
        self.graphs_after_warmup: int | None = None
        self.cudagraphs_recorded_last: int | None = None  # CUDA graphs recorded in the last timed generation
        self.compile_seconds: float | None = None  # the first generation of a compiled case
        self.launches: int | None = None  # kernel launches of one generation (``--launches``)
        self.output_psnr: float | None = None  # compiled output against the eager output (``--check-outputs``)

    @property
    def uncached(self) -> bool:
        return self.policy is None and self.attach is None


def workload(model, args):
    """The device, and one generation of ``--prompts`` prompts (seeds 0..K-1) at ``--steps`` steps."""
    prompts, seeds = model.prompts(args.prompts), list(range(args.prompts))
    generate = lambda: model.generate(prompts, seeds, args.steps, model.guidance)  # noqa: E731
    return next(model.transformer.parameters()).device, generate


def compile_transformer(transformer, mode: str, backend: str = "inductor") -> None:
    """``whole``: ``transformer.compile()``; ``regional``: each block of its block lists, as diffusers'
    ``compile_repeated_blocks`` does; ``whole-cudagraphs``: the whole transformer with CUDA graphs
    (``mode="reduce-overhead"``, inductor only); ``eager``: nothing."""
    options = {"mode": "reduce-overhead"} if mode in CUDAGRAPH_MODES else {"backend": backend}
    if mode in ("whole", "whole-cudagraphs"):
        transformer.compile(**options)
    elif mode == "regional":
        for blocks in transformer.children():
            if isinstance(blocks, torch.nn.ModuleList):
                for block in blocks:
                    block.compile(**options)


CUDAGRAPH_MODES = ("whole-cudagraphs",)
MODES = ("eager", "whole", "regional", *CUDAGRAPH_MODES)
# Modes that cannot measure anything, and why. Each call of a compiled frame may start a new generation of torch's
# CUDA-graph trees, which in inference frees the previous graph's outputs: with each block compiled with CUDA
# graphs, the next block's input is gone, and the uncached model fails before any cache is applied.
REFUSED_MODES = {
    "regional-cudagraphs": "blocks compiled one by one with CUDA graphs fail in torch itself, without any cache: "
    "a block's compiled call frees the previous block's outputs, its input (pytorch/pytorch#152887, "
    "benchmarks/results/2026-12-08-h100-cudagraphs-fixed); compile the whole transformer (whole-cudagraphs)",
}


def eager_cases() -> list[Case]:
    return [Case("uncached", None), Case("hooks, never reuse", NEVER_REUSE)] + [Case(p, p) for p in SEED_POLICIES]


def diffusers_pairs(model, steps: int) -> list[Case]:
    """diffusers' PAB and FasterCache, each beside cachelab's policy at the same schedule (the bench's pairs)."""
    from cachelab.bench import diffusers_cases

    wanted = ("pab (diffusers schedule)", "diffusers PAB", "fastercache (diffusers schedule)", "diffusers FasterCache")
    return [Case(c.name, None, c.attach) if c.other else Case(c.name, c.policy)
            for c in diffusers_cases(model, steps) if c.name in wanted]


def kernel_launches(generate) -> int:
    """Kernel launches of one generation, counted by torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        generate()
    return sum(e.count for e in prof.key_averages() if e.key in LAUNCH_EVENTS)


LAUNCH_EVENTS = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cudaGraphLaunch")


def run_eager(model, args) -> list[Case]:
    dev, generate = workload(model, args)
    cases = [c for c in eager_cases() if not args.cases or c.name in args.cases]
    if args.diffusers:
        cases += diffusers_pairs(model, args.steps)
    total_macs = None
    for case in cases:  # warm-up and MACs: cachelab counts its own; other libraries' caches are counted as they run
        with _applied(model, case):
            if case.attach is None and not case.uncached:
                generate()
                case.fraction = case.handle.stats().computed_fraction
            else:
                with counting_macs(model.transformer) as counted:
                    generate()
                total_macs = counted[0] if case.uncached else total_macs
                case.fraction = counted[0] if case.attach is not None else 1.0
            if args.launches and dev.type == "cuda":
                case.launches = kernel_launches(generate)
    for case in cases:
        if case.attach is not None:
            case.fraction = case.fraction / total_macs if total_macs else None
    for _ in range(args.repeats):
        for case in cases:
            with _applied(model, case, count_macs=False):
                case.times.append(timed(generate, dev)[1])
    return cases


class _applied:
    """The case's caching on the model for a block. ``count_macs=False`` for timed rounds: a fresh cachelab handle
    measures MACs with one extra, uncached denoiser call under FlopCounterMode, which is not part of caching."""

    def __init__(self, model, case: Case, count_macs: bool = True):
        self.model, self.case, self.count_macs = model, case, count_macs
        self.other = None

    def __enter__(self):
        if self.case.attach is not None:
            self.other = self.case.attach(self.model)
            self.other.__enter__()
        elif self.case.policy is not None:
            self.case.handle = cachelab.apply(self.model.target, self.case.policy, cfg=self.model.cfg,
                                              count_macs=self.count_macs)
        return self.case.handle

    def __exit__(self, *exc):
        if self.other is not None:
            self.other.__exit__(*exc)
        elif self.case.handle is not None:
            self.case.handle.remove()


def run_compile(model, args) -> list[Case]:
    from torch._dynamo.utils import counters

    dev, generate = workload(model, args)
    cases = []
    for mode in args.modes:
        for policy in [None, *args.policies]:
            case = Case(f"{mode}: {policy or 'uncached'}", policy)
            torch._dynamo.reset()
            transformer = model.transformer
            with _applied(model, case):
                eager = generate() if args.check_outputs else None
                compile_transformer(transformer, mode, args.backend)
                _, compile_seconds = timed(generate, dev)
                case.fraction = case.handle.stats().computed_fraction if case.handle else 1.0
                counters.clear()
                for _ in range(args.repeats):
                    with cuda_graph_recordings() as recorded:
                        out, seconds = timed(generate, dev)
                    case.times.append(seconds)
                case.graphs_after_warmup = int(counters["stats"].get("unique_graphs", 0))
                case.cudagraphs_recorded_last = recorded[0] if mode in CUDAGRAPH_MODES else None
                case.compile_seconds = compile_seconds
                if eager is not None:
                    psnr = compare_videos(out, eager, with_lpips=False)
                    case.output_psnr = float("inf") if psnr["psnr_mean"] is None else psnr["psnr_mean"]
            _uncompile(transformer)
            cases.append(case)
            print(f"{case.name}: {statistics.median(case.times):.3f} s (first run {compile_seconds:.1f} s, "
                  f"graphs compiled later {case.graphs_after_warmup})", flush=True)
    return cases


@contextlib.contextmanager
def cuda_graph_recordings():
    """A one-item list counting the CUDA graphs that torch's CUDA-graph trees record inside the block: each
    recording is announced to dynamo's compile callbacks as ``CUDAGRAPH_RECORDING``."""
    from torch._dynamo.callback import CallbackTrigger, callback_handler

    count = [0]

    def on_start(args) -> None:
        if args.callback_trigger == CallbackTrigger.CUDAGRAPH_RECORDING:
            count[0] += 1

    callback_handler.register_start_callback(on_start)
    try:
        yield count
    finally:
        callback_handler.remove_start_callback(on_start)


def _uncompile(transformer) -> None:
    for module in transformer.modules():
        module._compiled_call_impl = None


def run_profile(model, args) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    _, generate = workload(model, args)
    rows = []
    for case in eager_cases() + [Case("cfg_cache, never reuse", {"policy": "cfg_cache", "interval": 1}),
                                 Case("pab, never reuse", {"policy": "pab", "spatial_interval": 1, "temporal_interval": 1,
                                                           "cross_interval": 1, "joint_interval": 1})]:
        with _applied(model, case):
            generate()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                generate()
        events = prof.key_averages()
        launches = sum(e.count for e in events if e.key in LAUNCH_EVENTS)
        host = sum(e.self_cpu_time_total for e in events) / 1e6
        syncs = {e.key: e.count for e in events if "ynchronize" in e.key or "Memcpy" in e.key or e.key == "aten::item"
                 or e.key == "aten::_local_scalar_dense"}
        top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
        rows.append({"case": case.name, "kernel_launches": launches, "host_seconds": host, "syncs": syncs,
                     "top_host_ops": [(e.key, e.count, e.self_cpu_time_total / 1e6) for e in top]})
        print(f"{case.name}: {launches} launches, host {host:.3f} s, syncs and copies {syncs}", flush=True)
    return rows


def run_pyprofile(model, args) -> str:
    """cProfile of one generation per case: where the host's time goes (the GPU waits on it when launch-bound)."""
    import cProfile
    import io
    import pstats

    _, generate = workload(model, args)
    report = io.StringIO()
    for case in [Case("uncached", None), Case("hooks, never reuse", NEVER_REUSE), Case("fastercache", "fastercache")]:
        with _applied(model, case):
            generate()
            profiler = cProfile.Profile()
            profiler.enable()
            generate()
            torch.cuda.synchronize() if torch.cuda.is_available() else None
            profiler.disable()
        report.write(f"\n## {case.name}\n")
        stats = pstats.Stats(profiler, stream=report)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats("cachelab", 25)
    return report.getvalue()


class _StepClock:
    """Marks the end of every ``scheduler.step`` (and the start of the generation) on the device's timeline."""

    def __init__(self, scheduler, device: torch.device):
        self.scheduler, self.device, self.marks = scheduler, device, []

    def _mark(self):
        if self.device.type != "cuda":
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def __enter__(self):
        original = self.scheduler.step

        def step(*args, **kwargs):
            out = original(*args, **kwargs)
            self.marks.append(self._mark())
            return out

        self.marks = [self._mark()]
        self.scheduler.step = step  # an instance attribute over the class's method, removed on exit
        return self

    def __exit__(self, *exc):
        del self.scheduler.step
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def seconds(self) -> list[float]:
        if self.device.type != "cuda":
            return [b - a for a, b in zip(self.marks, self.marks[1:])]
        return [a.elapsed_time(b) / 1e3 for a, b in zip(self.marks, self.marks[1:])]


def step_fractions(stats) -> dict[int, tuple[float, str, float]]:
    """step -> (MACs computed over MACs of an uncached step, what the step reused, share of the step's samples the
    denoiser computed: 0.5 on a CFG-Cache step, where only the conditional half runs)."""
    record, macs = stats.record, stats.record.macs_per_sample or {}
    total: dict[int, float] = {}
    logical: dict[int, int] = {}
    for (denoiser, step), samples in record.logical_samples.items():
        total[step] = total.get(step, 0.0) + macs.get(denoiser, 0.0) * samples
        logical[step] = logical.get(step, 0) + samples
    saved: dict[int, float] = {}
    denoiser_computed: dict[int, int] = {}
    denoisers = set(stats.denoiser_of.values())
    for (key, step), row in record.events.items():
        saved[step] = saved.get(step, 0.0) + macs.get(key, 0.0) * row[3]
        if key in denoisers:
            denoiser_computed[step] = denoiser_computed.get(step, 0) + row[2]
    out = {}
    for step, kinds in stats.by_step().items():
        reused = sorted(kind for kind, (_computed, re) in kinds.items() if re)
        label = "reuses " + ", ".join(reused) if reused else "computes all"
        fraction = (total[step] - saved.get(step, 0.0)) / total[step] if total.get(step) else 1.0
        batch = denoiser_computed.get(step, logical.get(step, 0)) / logical[step] if logical.get(step) else 1.0
        out[step] = (fraction, label, batch)
    return out


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class _StepRanges:
    """One profiler range per scheduler step (``step_NNN``), the device synchronised at each step's end, so that
    every kernel a step launched is counted in its range's device time."""

    def __init__(self, scheduler):
        self.scheduler, self.range, self.index = scheduler, None, 0

    def _next(self):
        if self.range is not None:
            _synchronize()
            self.range.__exit__(None, None, None)
        self.range = torch.profiler.record_function(f"step_{self.index:03d}")
        self.range.__enter__()
        self.index += 1

    def __enter__(self):
        original = self.scheduler.step

        def step(*args, **kwargs):
            out = original(*args, **kwargs)
            self._next()
            return out

        self._next()
        self.scheduler.step = step
        return self

    def __exit__(self, *exc):
        del self.scheduler.step
        _synchronize()
        self.range.__exit__(None, None, None)


def step_ranges(events: list[dict]) -> list[tuple[float, float, str]]:
    """The ``step_NNN`` ranges of a Chrome trace's host events, as (start, end, name) in microseconds, in order."""
    return sorted((e["ts"], e["ts"] + e["dur"], e["name"]) for e in events
                  if e.get("cat") == "user_annotation" and str(e.get("name", "")).startswith("step_"))


def kernels_per_step(events: list[dict], steps: int) -> list[tuple[int, float]]:
    """Per ``step_NNN`` range of a Chrome trace's events: how many kernels it launched, and their summed duration
    in seconds, the device's busy time. (A range's own device time in the profiler spans its first to its last
    kernel, idle gaps included, so on a host-bound step it is the step's wall time, not its kernels'.) A kernel
    belongs to the step whose range holds the host call that launched it (matched by correlation id)."""
    ranges = step_ranges(events)
    launches = {e["args"]["correlation"]: e["ts"] for e in events
                if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}
    starts = [r[0] for r in ranges]
    out: dict[str, tuple[int, float]] = {}
    for k in events:
        if k.get("cat") != "kernel":
            continue
        ts = launches.get(k.get("args", {}).get("correlation"))
        i = bisect.bisect_right(starts, ts) - 1 if ts is not None else -1
        if i >= 0 and ts <= ranges[i][1]:
            count, busy = out.get(ranges[i][2], (0, 0.0))
            out[ranges[i][2]] = (count + 1, busy + k["dur"] / 1e6)
    return [out.get(f"step_{i:03d}", (0, 0.0)) for i in range(steps)]


def device_seconds_per_step(generate, scheduler, steps: int, trace: Path | None = None) -> list[float]:
    """The device's busy time in each step (summed kernel durations), from one profiled generation."""
    import gzip
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        with _StepRanges(scheduler):
            generate()
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(plain))
        text = plain.read_bytes()
    if trace is not None:
        trace.write_bytes(gzip.compress(text))
    return [busy for _, busy in kernels_per_step(json.loads(text)["traceEvents"], steps)]


HALF_BATCH = "uncached, half the prompts"


def run_steps(model, args) -> list[dict]:
    dev, generate = workload(model, args)
    prompts, seeds = model.prompts(args.prompts // 2), list(range(args.prompts // 2))
    half_generate = lambda: model.generate(prompts, seeds, args.steps, model.guidance)  # noqa: E731
    rows = []
    for mode in args.modes:
        per_case: dict[str, list[list[float]]] = {}
        device_time: dict[str, list[float]] = {}
        recordings: dict[str, int] = {}  # CUDA graphs recorded in the last timed generation
        fractions: dict[str, dict[int, tuple[float, str]]] = {}
        for policy in [None, *([HALF_BATCH] if args.half_batch else []), *args.policies]:
            name = policy or "uncached"
            torch._dynamo.reset()
            case = Case(name, None if policy == HALF_BATCH else policy)
            run = half_generate if policy == HALF_BATCH else generate
            with _applied(model, case):
                compile_transformer(model.transformer, mode, args.backend)
                run()  # warm-up: compiles, and counts MACs for the fractions
                if case.handle is not None:
                    fractions[name] = step_fractions(case.handle.stats())
                runs = []
                for _ in range(args.repeats):
                    with _StepClock(model.target.scheduler, dev) as clock, cuda_graph_recordings() as recorded:
                        run()
                    runs.append(clock.seconds())
                if mode in CUDAGRAPH_MODES:
                    recordings[name] = recorded[0]
                per_case[name] = runs
                if args.device_time:
                    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)  # "uncached, half the prompts" is no file name
                    trace = args.trace_dir / f"trace-{args.model}-{mode}-{slug}.json.gz" if args.trace_dir else None
                    device_time[name] = device_seconds_per_step(run, model.target.scheduler, args.steps, trace)
            _uncompile(model.transformer)
        base = [statistics.median(run[i] for run in per_case["uncached"]) for i in range(args.steps)]
        half_base = ([statistics.median(run[i] for run in per_case[HALF_BATCH]) for i in range(args.steps)]
                     if HALF_BATCH in per_case else None)
        for name, runs in per_case.items():
            if name in ("uncached", HALF_BATCH):
                continue
            mine = [statistics.median(run[i] for run in runs) for i in range(args.steps)]

            def row(label: str, steps: list[int]) -> dict:
                theirs, cached = sum(base[i] for i in steps), sum(mine[i] for i in steps)
                ideal = len(steps) / sum(fractions[name][i][0] for i in steps)
                out = {"mode": mode, "policy": name, "steps_reusing": label, "steps": len(steps),
                       "cudagraphs_recorded_in_last_generation": recordings.get(name),
                       "uncached_seconds": theirs, "cached_seconds": cached, "speedup": theirs / cached,
                       "ideal_speedup": ideal, "of_ideal": theirs / cached / ideal}
                if half_base is not None:
                    # a step whose denoiser ran half the samples is held to the uncached model at half the
                    # prompts (same shapes), scaled by the MACs it computed of that half; any other step to its MACs
                    best = sum(half_base[i] * fractions[name][i][0] / 0.5 if fractions[name][i][2] == 0.5
                               else base[i] * fractions[name][i][0] for i in steps)
                    out.update(batch_ideal_speedup=theirs / best, of_batch_ideal=best / cached)
                if device_time:
                    base_k = sum(device_time["uncached"][i] for i in steps)
                    mine_k = sum(device_time[name][i] for i in steps)
                    out.update(uncached_kernel_seconds=base_k, cached_kernel_seconds=mine_k,
                               kernel_speedup=base_k / mine_k if mine_k else float("nan"))
                return out

            groups: dict[str, list[int]] = {}
            for step, (_fraction, label, _batch) in fractions[name].items():
                groups.setdefault(label, []).append(step)
            rows += [row(label, steps) for label, steps in sorted(groups.items(), key=lambda kv: kv[1][0])]
            rows.append(row("all steps", list(range(args.steps))))
        for row in rows:
            if row["mode"] == mode:
                print(f"{mode} {row['policy']} [{row['steps_reusing']}] x{row['steps']}: {row['speedup']:.3f}x of "
                      f"{row['ideal_speedup']:.2f}x ideal ({row['of_ideal']:.1%})", flush=True)
    return rows


def steps_table(rows: list[dict]) -> str:
    kernels = any("kernel_speedup" in r for r in rows)
    batch = any("batch_ideal_speedup" in r for r in rows)
    lines = ["| mode | policy | steps that | steps | uncached s | cached s | speedup | ideal | of ideal |"
             + (" batch ideal | of batch ideal |" if batch else "")
             + (" kernels busy: uncached s | cached s | speedup |" if kernels else ""),
             "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if batch else "") + ("---|---|---|" if kernels else "")]
    for r in rows:
        line = (f"| {r['mode']} | {r['policy']} | {r['steps_reusing']} | {r['steps']} | {r['uncached_seconds']:.4f} | "
                f"{r['cached_seconds']:.4f} | {r['speedup']:.3f}x | {r['ideal_speedup']:.2f}x | {r['of_ideal']:.1%} |")
        if batch:
            line += f" {r['batch_ideal_speedup']:.2f}x | {r['of_batch_ideal']:.1%} |"
        if kernels:
            line += (f" {r['uncached_kernel_seconds']:.4f} | {r['cached_kernel_seconds']:.4f} | "
                     f"{r['kernel_speedup']:.3f}x |")
        lines.append(line)
    recorded = [f"{r['mode']} {r['policy']} {r['cudagraphs_recorded_in_last_generation']}" for r in rows
                if r["steps_reusing"] == "all steps" and r.get("cudagraphs_recorded_in_last_generation") is not None]
    if recorded:
        lines.append("\nCUDA graphs recorded in the last timed generation (0: every graph replayed): "
                     + ", ".join(recorded))
    return "\n".join(lines)


def table(cases: list[Case], baselines: dict[str, float]) -> str:
    """One row per case. With launch counts, the launch ideal is the uncached case's launches over the case's: where
    the host issuing launches bounds a generation, that, not the MAC ideal, is what a cache can realise."""
    launches = {c.name.split(":")[0] if ":" in c.name else "": c.launches for c in cases if c.uncached}
    with_launches = any(c.launches for c in cases)
    checked = any(c.output_psnr is not None for c in cases)
    recorded = any(c.cudagraphs_recorded_last is not None for c in cases)
    lines = ["| case | ideal speedup | latency s (median) | speedup | of ideal |"
             + (" launches | launch ideal | of launch ideal |" if with_launches else "")
             + (" PSNR vs eager dB |" if checked else "") + " graphs compiled after warm-up |"
             + (" CUDA graphs recorded in the last generation |" if recorded else ""),
             "|---|---|---|---|---|" + ("---|---|---|" if with_launches else "") + ("---|" if checked else "") + "---|"
             + ("---|" if recorded else "")]
    for case in cases:
        median = statistics.median(case.times)
        mode = case.name.split(":")[0] if ":" in case.name else ""
        ideal = 1 / case.fraction if case.fraction else float("nan")
        speed = baselines[mode] / median
        line = f"| {case.name} | {ideal:.2f}x | {median:.4f} | {speed:.3f}x | {'-' if case.uncached else f'{speed / ideal:.1%}'} |"
        if with_launches:
            base = launches.get(mode)
            launch_ideal = base / case.launches if base and case.launches else float("nan")
            line += (f" {case.launches} | {launch_ideal:.3f}x | "
                     f"{'-' if case.uncached else f'{speed / launch_ideal:.1%}'} |")
        if checked:
            line += f" {'-' if case.output_psnr is None else f'{case.output_psnr:.2f}'} |"
        graphs = "-" if case.graphs_after_warmup is None else str(case.graphs_after_warmup)
        line += f" {graphs} |"
        if recorded:
            line += f" {'-' if case.cudagraphs_recorded_last is None else case.cudagraphs_recorded_last} |"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["eager", "compile", "profile", "pyprofile", "steps"], required=True)
    p.add_argument("--model", default="tiny-cogvideox")
    p.add_argument("--prompts", type=int, default=1)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--modes", default="regional,whole", help="compile and steps parts: regional, whole, "
                   "whole-cudagraphs (the whole transformer compiled with mode='reduce-overhead') and, for "
                   "steps, eager; comma-separated")
    p.add_argument("--policies", default="fastercache,pab", help="compile part: cached cases")
    p.add_argument("--cases", default="", help="eager part: only these cases (comma-separated names), e.g. "
                   "'uncached,hooks, never reuse' is written uncached,never")
    p.add_argument("--diffusers", action="store_true", help="eager part: also diffusers' PAB and FasterCache, each "
                   "beside cachelab's policy at the same schedule")
    p.add_argument("--launches", action="store_true", help="eager part, on a GPU: count each case's kernel launches "
                   "(one profiled generation) and show the launch ideal beside the MAC ideal")
    p.add_argument("--check-outputs", action="store_true", help="compile part: compare each compiled case's output "
                   "with the same case run eagerly (PSNR; inf when equal)")
    p.add_argument("--static-shapes", action="store_true",
                   help="compile part: no automatic dynamic shapes (CFG-Cache's half batches get graphs of their own)")
    p.add_argument("--half-batch", action="store_true", help="steps part: also time the uncached model at half the "
                   "prompts, and hold steps that ran half the batch (CFG-Cache) to it (the batch ideal)")
    p.add_argument("--device-time", action="store_true",
                   help="steps part, on a GPU: one more profiled generation per case, and each group's kernel time")
    p.add_argument("--trace-dir", type=Path, default=None, help="with --device-time: write each profiled "
                   "generation's Chrome trace (gzipped) here")
    p.add_argument("--backend", default="inductor", help="compile and steps parts: torch.compile's backend "
                   "(aot_eager checks the machinery on a CPU in seconds)")
    p.add_argument("--dtype", default=None, choices=[None, "bf16", "fp16", "fp32"])
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    args.policies = [x for x in args.policies.split(",") if x]
    aliases = {"never": "hooks, never reuse"}
    args.cases = [aliases.get(x, x) for x in args.cases.split(",") if x]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.device_time and not torch.cuda.is_available():
        p.error("--device-time needs a CUDA device (it times the kernels each step launched)")
    if args.half_batch and (args.prompts < 2 or args.prompts % 2):
        p.error(f"--half-batch halves the prompts: --prompts must be even and at least 2, not {args.prompts}")
    refused = [m for m in args.modes if m in REFUSED_MODES]
    if refused:
        p.error(f"--modes {refused[0]}: {REFUSED_MODES[refused[0]]}")
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        p.error(f"--modes: unknown {unknown}; allowed: {', '.join(MODES)}")
    graphs = [m for m in args.modes if m in CUDAGRAPH_MODES]
    if args.backend != "inductor" and graphs:
        p.error(f"--modes {','.join(graphs)} compiles with inductor's CUDA graphs: leave --backend at inductor")
    if args.trace_dir is not None:
        args.trace_dir.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore", cachelab.NothingReusedWarning)  # the never-reusing row does so on purpose
    if args.static_shapes:
        torch._dynamo.config.automatic_dynamic_shapes = False
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, None: None}[args.dtype]
    model = create_model(args.model, device=device, dtype=dtype)
    meta = {
        "device": device_name(),
        "command": "python benchmarks/engine_overhead.py " + " ".join(argv or __import__("sys").argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit(),
        "torch": torch.__version__,
        "static_shapes": args.static_shapes, "model": args.model, "prompts": args.prompts, "steps": args.steps, "repeats": args.repeats,
    }
    stem = args.out / f"{args.part}-{args.model}{'-' + '-'.join(args.modes) if args.part in ('compile', 'steps') else ''}{'-static' if args.static_shapes else ''}"
    if args.part == "pyprofile":
        text = run_pyprofile(model, args)
        stem.with_suffix(".txt").write_text(text)
        return
    if args.part == "steps":
        rows = run_steps(model, args)
        stem.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
        header = (f"{meta['device']}, {meta['date']}, commit {meta['commit'][:10]}, torch {meta['torch']}\n\n"
                  f"`{meta['command']}`\n\n{args.model}, {args.prompts} prompt(s), {args.steps} steps, per-step "
                  f"medians of {args.repeats} generations\n\n")
        stem.with_suffix(".md").write_text(header + steps_table(rows) + "\n")
        print(header + steps_table(rows), flush=True)
        return
    if args.part == "profile":
        rows = run_profile(model, args)
        stem.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
        return
    cases = run_eager(model, args) if args.part == "eager" else run_compile(model, args)
    baselines = {}
    for case in cases:
        if case.uncached:
            baselines[case.name.split(":")[0] if ":" in case.name else ""] = statistics.median(case.times)
    uncached = [c for c in cases if c.uncached]
    spread = {c.name: (min(c.times), max(c.times)) for c in uncached}
    md = table(cases, baselines)
    rows = [{"case": c.name, "policy": c.policy, "times": c.times, "computed_fraction": c.fraction,
             "graphs_compiled_after_warmup": c.graphs_after_warmup,
             "cudagraphs_recorded_in_last_generation": c.cudagraphs_recorded_last,
             "first_generation_seconds": c.compile_seconds, "kernel_launches": c.launches,
             "output_psnr_vs_eager": c.output_psnr} for c in cases]
    stem.with_suffix(".json").write_text(json.dumps({**meta, "spread": spread, "rows": rows}, indent=2))
    header = (f"{meta['device']}, {meta['date']}, commit {meta['commit'][:10]}, torch {meta['torch']}\n\n"
              f"`{meta['command']}`\n\n{args.model}, {args.prompts} prompt(s), {args.steps} steps, median of "
              f"{args.repeats}; uncached spread (min-max): "
              + ", ".join(f"{k} {lo:.4f}-{hi:.4f} s" for k, (lo, hi) in spread.items()) + "\n\n")
    stem.with_suffix(".md").write_text(header + md + "\n")
    print(header + md, flush=True)


if __name__ == "__main__":
    main()
