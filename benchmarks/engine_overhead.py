"""What the framework costs on a GPU: small eager workloads, and torch.compile with and without caches.

Parts (one per run, so that each fits a short job):

* ``eager``: one prompt on a model (launch-bound at small sizes): uncached, hooks that never reuse, and every
  seed policy at its defaults. Each case: one warm-up generation (MAC profiling, allocations), then ``--repeats``
  timed ones; cases are timed in turn, round after round, so that drift hits all of them alike. The uncached case
  runs in every round, and the spread of its timings is the run-to-run spread.
* ``compile``: ``--prompts`` prompts, compiled ``regional`` (each transformer block, as diffusers'
  ``compile_repeated_blocks`` does) and ``whole`` (``transformer.compile()``): uncached and cached, each compiled
  from scratch (``torch._dynamo.reset()``). The warm-up generation compiles; graphs compiled during the timed
  generations are counted (0 means no recompilation).
* ``profile``: kernel launches and host time of one generation per case (torch.profiler), for the eager part.
* ``steps``: where a cached generation's time goes, per kind of step. Each scheduler step is marked on the
  device's timeline (a CUDA event after ``scheduler.step``, outside any compiled region); the steps of a cached
  run are grouped by what they reused, and each group's time is compared with the same steps of the uncached run
  (same mode) and with the group's own MAC ideal. ``--modes`` takes ``eager`` too. ``--device-time`` adds one
  profiled generation per case (torch.profiler, the device synchronised after every step) and the time the
  device's kernels took in each group: a step that is slower while its kernels are not is waiting on the host.
  ``--trace-dir`` also writes each profiled generation's Chrome trace (gzipped) there.

usage: python benchmarks/engine_overhead.py --part eager --model tiny-cogvideox --out OUT_DIR
Writes ``<part>-<model>.json`` and ``.md`` into OUT_DIR.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
import warnings
from pathlib import Path

import torch

import cachelab
from cachelab.bench import NEVER_REUSE
from cachelab.timing import timed
from cachelab.zoo.registry import create_model
from provenance import commit, device_name

SEED_POLICIES = ["vanilla", "dynamic", "cfg_cache", "pab", "delta_dit", "fastercache"]






class Case:
    def __init__(self, name: str, policy):
        self.name, self.policy = name, policy
        self.handle = None
        self.times: list[float] = []
        self.fraction: float | None = None
        self.graphs_after_warmup: int | None = None
        self.compile_seconds: float | None = None  # the first generation of a compiled case


def workload(model, args):
    """The device, and one generation of ``--prompts`` prompts (seeds 0..K-1) at ``--steps`` steps."""
    prompts, seeds = model.prompts(args.prompts), list(range(args.prompts))
    generate = lambda: model.generate(prompts, seeds, args.steps, model.guidance)  # noqa: E731
    return next(model.transformer.parameters()).device, generate


def compile_transformer(transformer, mode: str) -> None:
    """``whole``: ``transformer.compile()``; ``regional``: each block of its block lists, as diffusers'
    ``compile_repeated_blocks`` does; ``eager``: nothing."""
    if mode == "whole":
        transformer.compile()
    elif mode == "regional":
        for blocks in transformer.children():
            if isinstance(blocks, torch.nn.ModuleList):
                for block in blocks:
                    block.compile()


def eager_cases() -> list[Case]:
    return [Case("uncached", None), Case("hooks, never reuse", NEVER_REUSE)] + [Case(p, p) for p in SEED_POLICIES]


def run_eager(model, args) -> list[Case]:
    prompts, seeds = model.prompts(args.prompts), list(range(args.prompts))
    dev = next(model.transformer.parameters()).device
    cases = [c for c in eager_cases() if not args.cases or c.name in args.cases]
    generate = lambda: model.generate(prompts, seeds, args.steps, model.guidance)  # noqa: E731
    for case in cases:  # warm-up and MACs
        with _applied(model, case):
            generate()
            case.fraction = case.handle.stats().computed_fraction if case.handle else 1.0
    for _ in range(args.repeats):
        for case in cases:
            with _applied(model, case, count_macs=False):
                case.times.append(timed(generate, dev)[1])
    return cases


class _applied:
    """The case's policy on the model for a block. ``count_macs=False`` for timed rounds: a fresh handle measures
    MACs with one extra, uncached denoiser call under FlopCounterMode, which is not part of caching."""

    def __init__(self, model, case: Case, count_macs: bool = True):
        self.model, self.case, self.count_macs = model, case, count_macs

    def __enter__(self):
        if self.case.policy is not None:
            self.case.handle = cachelab.apply(self.model.target, self.case.policy, cfg=self.model.cfg,
                                              count_macs=self.count_macs)
        return self.case.handle

    def __exit__(self, *exc):
        if self.case.handle is not None:
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
                compile_transformer(transformer, mode)
                _, compile_seconds = timed(generate, dev)
                case.fraction = case.handle.stats().computed_fraction if case.handle else 1.0
                counters.clear()
                for _ in range(args.repeats):
                    case.times.append(timed(generate, dev)[1])
                case.graphs_after_warmup = int(counters["stats"].get("unique_graphs", 0))
                case.compile_seconds = compile_seconds
            _uncompile(transformer)
            cases.append(case)
            print(f"{case.name}: {statistics.median(case.times):.3f} s (first run {compile_seconds:.1f} s, "
                  f"graphs compiled later {case.graphs_after_warmup})", flush=True)
    return cases


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
        launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
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


def step_fractions(stats) -> dict[int, tuple[float, str]]:
    """step -> (MACs computed over MACs of an uncached step, what the step reused)."""
    record, macs = stats.record, stats.record.macs_per_sample or {}
    total: dict[int, float] = {}
    for (denoiser, step), samples in record.logical_samples.items():
        total[step] = total.get(step, 0.0) + macs.get(denoiser, 0.0) * samples
    saved: dict[int, float] = {}
    for (key, step), row in record.events.items():
        saved[step] = saved.get(step, 0.0) + macs.get(key, 0.0) * row[3]
    out = {}
    for step, kinds in stats.by_step().items():
        reused = sorted(kind for kind, (_computed, re) in kinds.items() if re)
        label = "reuses " + ", ".join(reused) if reused else "computes all"
        out[step] = ((total[step] - saved.get(step, 0.0)) / total[step] if total.get(step) else 1.0, label)
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


def device_seconds_per_step(generate, scheduler, steps: int, trace: Path | None = None) -> list[float]:
    """The device time of the kernels each step launched, from one profiled generation."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        with _StepRanges(scheduler):
            generate()
    if trace is not None:
        import gzip
        import shutil

        plain = trace.with_suffix("")
        prof.export_chrome_trace(str(plain))
        with plain.open("rb") as src, gzip.open(trace, "wb") as dst:
            shutil.copyfileobj(src, dst)
        plain.unlink()
    totals = {e.key: e.device_time_total / 1e6 for e in prof.key_averages() if e.key.startswith("step_")}
    return [totals.get(f"step_{i:03d}", 0.0) for i in range(steps)]


def run_steps(model, args) -> list[dict]:
    dev, generate = workload(model, args)
    rows = []
    for mode in args.modes:
        per_case: dict[str, list[list[float]]] = {}
        device_time: dict[str, list[float]] = {}
        fractions: dict[str, dict[int, tuple[float, str]]] = {}
        for policy in [None, *args.policies]:
            name = policy or "uncached"
            torch._dynamo.reset()
            case = Case(name, policy)
            with _applied(model, case):
                compile_transformer(model.transformer, mode)
                generate()  # warm-up: compiles, and counts MACs for the fractions
                if case.handle is not None:
                    fractions[name] = step_fractions(case.handle.stats())
                runs = []
                for _ in range(args.repeats):
                    with _StepClock(model.target.scheduler, dev) as clock:
                        generate()
                    runs.append(clock.seconds())
                per_case[name] = runs
                if args.device_time:
                    trace = args.trace_dir / f"trace-{args.model}-{mode}-{name}.json.gz" if args.trace_dir else None
                    device_time[name] = device_seconds_per_step(generate, model.target.scheduler, args.steps, trace)
            _uncompile(model.transformer)
        base = [statistics.median(run[i] for run in per_case["uncached"]) for i in range(args.steps)]
        for name, runs in per_case.items():
            if name == "uncached":
                continue
            mine = [statistics.median(run[i] for run in runs) for i in range(args.steps)]

            def row(label: str, steps: list[int]) -> dict:
                theirs, cached = sum(base[i] for i in steps), sum(mine[i] for i in steps)
                ideal = len(steps) / sum(fractions[name][i][0] for i in steps)
                out = {"mode": mode, "policy": name, "steps_reusing": label, "steps": len(steps),
                       "uncached_seconds": theirs, "cached_seconds": cached, "speedup": theirs / cached,
                       "ideal_speedup": ideal, "of_ideal": theirs / cached / ideal}
                if device_time:
                    base_k = sum(device_time["uncached"][i] for i in steps)
                    mine_k = sum(device_time[name][i] for i in steps)
                    out.update(uncached_kernel_seconds=base_k, cached_kernel_seconds=mine_k,
                               kernel_speedup=base_k / mine_k if mine_k else float("nan"))
                return out

            groups: dict[str, list[int]] = {}
            for step, (_fraction, label) in fractions[name].items():
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
    lines = ["| mode | policy | steps that | steps | uncached s | cached s | speedup | ideal | of ideal |"
             + (" kernels: uncached s | cached s | speedup |" if kernels else ""),
             "|---|---|---|---|---|---|---|---|---|" + ("---|---|---|" if kernels else "")]
    for r in rows:
        line = (f"| {r['mode']} | {r['policy']} | {r['steps_reusing']} | {r['steps']} | {r['uncached_seconds']:.4f} | "
                f"{r['cached_seconds']:.4f} | {r['speedup']:.3f}x | {r['ideal_speedup']:.2f}x | {r['of_ideal']:.1%} |")
        if kernels:
            line += (f" {r['uncached_kernel_seconds']:.4f} | {r['cached_kernel_seconds']:.4f} | "
                     f"{r['kernel_speedup']:.3f}x |")
        lines.append(line)
    return "\n".join(lines)


def table(cases: list[Case], baselines: dict[str, float]) -> str:
    lines = ["| case | ideal speedup | latency s (median) | speedup | of ideal | graphs compiled after warm-up |",
             "|---|---|---|---|---|---|"]
    for case in cases:
        median = statistics.median(case.times)
        base = baselines[case.name.split(":")[0] if ":" in case.name else ""]
        ideal = 1 / case.fraction if case.fraction else float("nan")
        speed = base / median
        of_ideal = "-" if case.policy is None else f"{speed / ideal:.1%}"
        graphs = "-" if case.graphs_after_warmup is None else str(case.graphs_after_warmup)
        lines.append(f"| {case.name} | {ideal:.2f}x | {median:.4f} | {speed:.3f}x | {of_ideal} | {graphs} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["eager", "compile", "profile", "pyprofile", "steps"], required=True)
    p.add_argument("--model", default="tiny-cogvideox")
    p.add_argument("--prompts", type=int, default=1)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--modes", default="regional,whole", help="compile and steps parts: regional, whole (and, for "
                   "steps, eager), comma-separated")
    p.add_argument("--policies", default="fastercache,pab", help="compile part: cached cases")
    p.add_argument("--cases", default="", help="eager part: only these cases (comma-separated names), e.g. "
                   "'uncached,hooks, never reuse' is written uncached,never")
    p.add_argument("--static-shapes", action="store_true",
                   help="compile part: no automatic dynamic shapes (CFG-Cache's half batches get graphs of their own)")
    p.add_argument("--device-time", action="store_true",
                   help="steps part, on a GPU: one more profiled generation per case, and each group's kernel time")
    p.add_argument("--trace-dir", type=Path, default=None, help="with --device-time: write each profiled "
                   "generation's Chrome trace (gzipped) here")
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
        if case.policy is None:
            baselines[case.name.split(":")[0] if ":" in case.name else ""] = statistics.median(case.times)
    uncached = [c for c in cases if c.policy is None]
    spread = {c.name: (min(c.times), max(c.times)) for c in uncached}
    md = table(cases, baselines)
    rows = [{"case": c.name, "policy": c.policy, "times": c.times, "computed_fraction": c.fraction,
             "graphs_compiled_after_warmup": c.graphs_after_warmup,
             "first_generation_seconds": c.compile_seconds} for c in cases]
    stem.with_suffix(".json").write_text(json.dumps({**meta, "spread": spread, "rows": rows}, indent=2))
    header = (f"{meta['device']}, {meta['date']}, commit {meta['commit'][:10]}, torch {meta['torch']}\n\n"
              f"`{meta['command']}`\n\n{args.model}, {args.prompts} prompt(s), {args.steps} steps, median of "
              f"{args.repeats}; uncached spread (min-max): "
              + ", ".join(f"{k} {lo:.4f}-{hi:.4f} s" for k, (lo, hi) in spread.items()) + "\n\n")
    stem.with_suffix(".md").write_text(header + md + "\n")
    print(header + md, flush=True)


if __name__ == "__main__":
    main()
