"""``cachelab bench``: the uncached baseline and cache policies on the same prompts and seeds, measured alike.

Per case: MACs and ideal speedup (cachelab's counts for its policies; for the uncached baseline and other libraries'
caches, the MACs that ran in one more generation under ``FlopCounterMode``), latency (synchronised wall clock of
whole generations after a warm-up; median and spread of the timed runs), measured speedup against the baseline of
the same run,
peak device memory, the cache's own bytes (held vs what the policy must keep), quality against the uncached
videos (PSNR, SSIM, LPIPS when its weights are present) and, for the bundled models, prompt following.

Diffusers' own ``PyramidAttentionBroadcastConfig`` and ``FasterCacheConfig`` can run beside cachelab's policies at
the same schedule (``diffusers_cases``), so speeds compare side by side.
"""

from __future__ import annotations

import importlib.util
import json
import re
import statistics
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ContextManager

import torch
from tqdm.auto import tqdm

import cachelab
from cachelab import metrics
from cachelab.errors import PolicyError
from cachelab.hooks.engine import counting_macs
from cachelab.hooks.stats import Stats
from cachelab.policies import calibration
from cachelab.zoo.registry import VideoModel
from cachelab.spec import policy_to_dict, resolve_policy
from cachelab.timing import timed, warmup_steps as warmup_steps_for

NEVER_REUSE = {"policy": "fastercache", "dynamic": {"interval": 1}, "cfg_cache": {"interval": 1}}
#: the name of the case that runs NEVER_REUSE: the hooks' overhead
OVERHEAD_CASE = "hooks, never reuse"
FBCACHE_THRESHOLD = 0.1  # skips about half the steps of the bundled models: both decision paths run
TAYLORSEER = {"interval": 3, "max_order": 1, "warmup_steps": 3}
MAGCACHE_THRESHOLD = 0.12


@dataclass
class Case:
    """One row of a bench: ``kind`` is ``uncached``, ``cachelab``, or the library of another implementation
    (``diffusers``, ``cache-dit``).

    ``policy`` is a cachelab policy spec; for another library's row, ``attach`` is a context manager factory that
    enables that library's cache on a model, and ``policy`` names the cachelab spec with the same settings (the row
    it is compared with; each row's MACs are counted on its own).
    """

    name: str
    kind: str = "cachelab"
    policy: Any = None
    attach: Callable[[VideoModel], ContextManager] | None = None

    @property
    def other(self) -> bool:
        return self.kind not in ("uncached", "cachelab")


@dataclass
class CaseResult:
    name: str
    kind: str
    policy: Any
    latency_s: float
    latencies_s: list[float]
    #: (slowest - fastest) / median of the timed runs the latency is the median of; None for one run
    latency_spread: float | None = None
    speedup: float | None = None
    total_macs: float | None = None
    computed_macs: float | None = None
    computed_fraction: float | None = None
    ideal_speedup: float | None = None
    realised_of_ideal: float | None = None
    peak_memory_bytes: int | None = None
    cache_bytes_held: int | None = None
    cache_bytes_needed: int | None = None
    psnr: float | None = None
    psnr_identical: int | None = None
    ssim: float | None = None
    lpips: float | None = None
    lpips_reason: str | None = None
    prompt_following: dict | None = None
    error: str | None = None
    #: the error is the policy refusing this model (a PolicyError saying why), not a failure
    refused: bool = False


@dataclass
class BenchReport:
    model: str
    trained: bool
    device: str
    steps: int
    guidance: float
    prompts: list[str]
    seeds: list[int]
    repeats: int
    results: list[CaseResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def save_json(self, path) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1, default=str)


def policy_cases(names: list[str]) -> list[Case]:
    return [Case(name=n, policy=n) for n in names]


def diffusers_cases(model: VideoModel, steps: int) -> list[Case]:
    """diffusers' PAB and FasterCache with the settings of diffusers' docs, each beside cachelab's policy at the
    same schedule, then the same-settings pairs of :func:`same_settings_cases` at one setting each. diffusers' PAB
    identifiers also match Latte's temporal blocks (they get the spatial interval), and its FasterCache
    extrapolates attention only on steps where the unconditional branch is skipped; the cachelab configs
    reproduce both, so the two rows of a pair do the same work. MagCache joins where the model has a calibration
    for ``steps`` steps."""
    try:
        magcache = same_settings_cases(model, "magcache", steps, threshold=MAGCACHE_THRESHOLD)
    except PolicyError:  # no calibration of this model for this step count
        magcache = []
    latte = model.tensor_format == "BCFHW" and "latte" in type(model.transformer).__name__.lower()
    pab_same = {
        "policy": "pab",
        "spatial_interval": 2,
        "temporal_interval": 2 if latte else 1,
        "cross_interval": 1,
        "joint_interval": 2,
        "window": [799, 101, "timestep"],  # diffusers' ranges exclude their ends: (100, 800) on integer timesteps
    }
    self_attention = ["attn.spatial", "attn.temporal", "attn.joint"]
    fastercache_same = {
        "policy": "fastercache",
        "dynamic": {
            "roles": self_attention,
            "interval": 2,
            "window": [680, 0, "timestep"],
            "weight": 0.3,
            "only_when_uncond_skipped": True,
        },
        "cfg_cache": {
            "interval": 5,
            "window": [640, 0, "timestep"],
            "low_freq_weight": 1.1,
            "low_freq_window": [640, 100, "timestep"],
            "high_freq_weight": 1.1,
            "high_freq_window": [300, 0, "timestep"],
        },
    }

    def pab_config(model, timestep):
        from diffusers import PyramidAttentionBroadcastConfig

        return PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=2,
            spatial_attention_timestep_skip_range=(100, 800),
            current_timestep_callback=timestep,
        )

    def fastercache_config(model, timestep):
        from diffusers import FasterCacheConfig

        return FasterCacheConfig(
            spatial_attention_block_skip_range=2,
            spatial_attention_timestep_skip_range=(-1, 681),
            low_frequency_weight_update_timestep_range=(99, 641),
            high_frequency_weight_update_timestep_range=(-1, 301),
            spatial_attention_block_identifiers=["transformer_blocks"],
            attention_weight_callback=lambda _: 0.3,
            tensor_format=model.tensor_format,
            current_timestep_callback=timestep,
        )

    return [
        Case("pab (diffusers schedule)", "cachelab", pab_same),
        Case("diffusers PAB", "diffusers", pab_same, diffusers_cache(pab_config)),
        Case("fastercache (diffusers schedule)", "cachelab", fastercache_same),
        Case("diffusers FasterCache", "diffusers", fastercache_same, diffusers_cache(fastercache_config)),
        *same_settings_cases(model, "fbcache", steps, threshold=FBCACHE_THRESHOLD),
        *same_settings_cases(model, "taylorseer", steps, defaults_too=True, **TAYLORSEER),
        *magcache,
    ]


def same_settings_cases(model: VideoModel, policy: str, steps: int, defaults_too: bool = False,
                        **settings: Any) -> list[Case]:
    """cachelab's ``policy`` with ``settings`` (its own parameter names), then each other implementation of the
    same method that is installed, configured to mean the same (the library's parameter names are mapped here),
    for generations of ``steps`` steps. With ``defaults_too``, also diffusers' TaylorSeer on its default modules."""
    label = ", ".join(f"{k} {v}" for k, v in settings.items())
    ours = {"policy": policy, **settings}
    config = resolve_policy(ours).config  # the settings' meaning, defaults included, for the other library
    cases = [Case(f"{policy} ({label})", "cachelab", ours)]
    if policy == "fbcache":

        def fbcache_config(model, timestep):
            from diffusers import FirstBlockCacheConfig

            return FirstBlockCacheConfig(threshold=config.threshold)

        cases.append(Case(f"diffusers FirstBlockCache ({label})", "diffusers", ours, diffusers_cache(fbcache_config)))
    elif policy == "taylorseer":
        # diffusers hooks only modules named like ``...attn`` by default (none on CogVideoX or Latte, whose
        # attention is attn1/attn2): one row names the blocks cachelab forecasts, one keeps diffusers' default
        blocks = [re.escape(site.name) for site in cachelab.find_sites(model.transformer).by_role("block")]

        def taylorseer_config(identifiers):
            def build(model, timestep):
                from diffusers import TaylorSeerCacheConfig

                return TaylorSeerCacheConfig(cache_interval=config.interval, max_order=config.max_order,
                                             disable_cache_before_step=config.warmup_steps,
                                             taylor_factors_dtype=torch.float32, cache_identifiers=identifiers)

            return build

        cases.append(Case(f"diffusers TaylorSeer ({label}, blocks named)", "diffusers", ours,
                          diffusers_cache(taylorseer_config(["|".join(blocks)]))))
        if defaults_too:
            cases.append(Case(f"diffusers TaylorSeer ({label}, its default modules)", "diffusers", None,
                              diffusers_cache(taylorseer_config(None))))
    elif policy == "magcache":
        ratios = config.mag_ratios or calibration.for_steps(
            "magcache", calibration.for_model("magcache", model.transformer, config.calibration), steps).values

        def magcache_config(model, timestep):
            from diffusers import MagCacheConfig

            return MagCacheConfig(mag_ratios=ratios, num_inference_steps=steps, threshold=config.threshold,
                                  max_skip_steps=config.max_skip_steps, retention_ratio=config.retention_ratio)

        cases.append(Case(f"diffusers MagCache ({label})", "diffusers", ours, diffusers_cache(magcache_config)))
    elif policy == "dbcache" and importlib.util.find_spec("cache_dit") is not None:
        cases.append(Case(f"cache-dit DBCache ({label})", "cache-dit", ours, cache_dit_dbcache(config)))
    return cases


def cache_dit_dbcache(config) -> Callable[[VideoModel], ContextManager]:
    """A case's ``attach`` for cache-dit's DBCache with the meaning of a ``dbcache`` config. cache-dit patches the
    pipeline's and transformer's classes; the patches must be gone afterwards, or every later row would run them."""

    @contextmanager
    def attach(model: VideoModel):
        import cache_dit
        from cache_dit import DBCacheConfig

        pipe = model.target
        before = _class_methods(pipe, model.transformer)
        cache_dit.enable_cache(pipe, cache_config=DBCacheConfig(
            Fn_compute_blocks=config.fn, Bn_compute_blocks=config.bn, residual_diff_threshold=config.threshold,
            max_warmup_steps=config.warmup_steps, max_cached_steps=config.max_cached_steps or -1,
            max_continuous_cached_steps=config.max_continuous_cached_steps or -1))
        try:
            yield
        finally:
            cache_dit.disable_cache(pipe)
            if _class_methods(pipe, model.transformer) != before:
                raise RuntimeError("cache-dit's disable_cache left its class patches on the pipeline or transformer; "
                                   "the rows after this one would be wrong")

    return attach


def _class_methods(*objects) -> list:
    return [(type(o).__call__, getattr(type(o), "forward", None), getattr(o, "forward", None)) for o in objects]


@contextmanager
def _attached(model: VideoModel, case: Case):
    """Attach the case's caching to the model for the duration of the block; yields the cachelab handle or None."""
    if case.kind == "uncached":
        yield None
        return
    if case.kind == "cachelab":
        with warnings.catch_warnings():
            if case.policy == NEVER_REUSE:  # the overhead row reuses nothing on purpose
                warnings.simplefilter("ignore", cachelab.NothingReusedWarning)
            with cachelab.apply(model.target, case.policy, cfg=model.cfg) as handle:
                yield handle
        return
    with case.attach(model):
        yield None


def diffusers_cache(build_config: Callable[[VideoModel, Callable], Any]) -> Callable[[VideoModel], ContextManager]:
    """A case's ``attach`` for a diffusers cache config: ``build_config(model, current_timestep)``; diffusers' PAB
    and FasterCache read the current timestep through a callback, captured here from the transformer's input."""

    @contextmanager
    def attach(model: VideoModel):
        seen: dict[str, Any] = {}

        def remember(module, args, kwargs):
            t = kwargs.get("timestep")
            seen["t"] = t.reshape(-1)[0] if isinstance(t, torch.Tensor) else t

        pre = model.transformer.register_forward_pre_hook(remember, with_kwargs=True)
        model.transformer.enable_cache(build_config(model, lambda: seen["t"]))
        try:
            yield
        finally:
            model.transformer.disable_cache()
            pre.remove()

    return attach


def run_bench(
    model: VideoModel,
    cases: list[Case],
    prompts: list[str],
    seeds: list[int],
    steps: int,
    guidance: float,
    repeats: int = 1,
    warmup_steps: int | None = None,
    on_result: Callable[[CaseResult, torch.Tensor], None] | None = None,
    progress: bool = True,
) -> BenchReport:
    """Run every case on the same prompts and seeds; the first case must be the uncached baseline."""
    if not cases or cases[0].kind != "uncached":
        cases = [Case("uncached", "uncached")] + [c for c in cases if c.kind != "uncached"]
    device = next(model.transformer.parameters()).device
    # other libraries' caches are measured, not taken from a cachelab twin: count the MACs that run
    count_macs = any(c.other for c in cases)
    report = BenchReport(model.name, model.trained, device_name(device), steps, guidance, list(prompts), list(seeds), repeats)
    baseline = None
    bar = tqdm(cases, desc=f"bench {model.name}", disable=not progress)
    for case in bar:
        bar.set_postfix_str(case.name)
        try:
            run = run_case(model, case, prompts, seeds, steps, guidance, repeats, warmup_steps, baseline, count_macs)
        except Exception as exc:  # one failing case (e.g. a library's cache on a pipeline it does not support)
            if case.kind == "uncached":
                raise
            report.results.append(CaseResult(case.name, case.kind, _policy_repr(case.policy), float("nan"), [],
                                             error=f"{type(exc).__name__}: {exc}",
                                             refused=case.kind == "cachelab" and isinstance(exc, PolicyError)))
            continue
        if case.kind == "uncached":
            baseline = run
        report.results.append(run.result)
        if on_result is not None:
            on_result(run.result, run.videos)
    return report


@dataclass
class CaseRun:
    """A measured case: its result, its videos (N, F, 3, H, W) and the cachelab counts of its tracked generation
    (None for the baseline and other libraries' caches)."""

    result: CaseResult
    videos: torch.Tensor
    stats: Stats | None = None


def run_case(
    model: VideoModel,
    case: Case,
    prompts: list[str],
    seeds: list[int],
    steps: int,
    guidance: float,
    repeats: int = 1,
    warmup_steps: int | None = None,
    baseline: CaseRun | None = None,
    count_macs: bool = False,
) -> CaseRun:
    """Measure one case as :func:`run_bench` does: cost, latency, memory and, against ``baseline`` (the uncached
    case's run on the same prompts and seeds), speedup and quality. Raises what the case raises."""
    if case.kind != "uncached" and baseline is None:
        raise ValueError(f"case {case.name!r}: speedup and quality need the uncached baseline's run")
    device = next(model.transformer.parameters()).device
    result, videos, stats = _run_case(model, case, prompts, seeds, steps, guidance, repeats, warmup_steps, device,
                                      count_macs)
    if case.other and result.computed_macs:
        result.total_macs = baseline.result.total_macs
        result.computed_fraction = result.computed_macs / result.total_macs
        result.ideal_speedup = result.total_macs / result.computed_macs
    if case.kind == "uncached":
        result.speedup = 1.0
    else:
        result.speedup = baseline.result.latency_s / result.latency_s
        if result.ideal_speedup:
            result.realised_of_ideal = result.speedup / result.ideal_speedup
        quality = metrics.compare_videos(videos, baseline.videos)
        result.psnr, result.psnr_identical = quality["psnr_mean"], quality["psnr_identical"]
        result.ssim, result.lpips, result.lpips_reason = quality["ssim_mean"], quality["lpips_mean"], quality["lpips_reason"]
    if model.prompt_following is not None:
        result.prompt_following = model.prompt_following(videos, prompts)
    return CaseRun(result, videos, stats)


def _run_case(model, case, prompts, seeds, steps, guidance, repeats, warmup_steps, device, count_macs=False):
    """Warm up, one tracked generation (outputs, counts, memory), then the rest of the timed generations; with
    ``count_macs``, uncached and other libraries' cases run once more, untimed, under a MAC counter."""
    with _attached(model, case) as handle:
        # allocations, kernels, MAC profiling; a few steps unless a policy only runs at its calibrated step count
        model.generate(prompts, seeds, warmup_steps_for(steps, handle) if warmup_steps is None else warmup_steps, guidance)
        if handle is not None:
            # a few warm-up steps may all fall outside the policy's windows: that it reused nothing there is no
            # news, so only the timed generations are checked for reuse
            handle.runtime.records.clear()
            handle.runtime.track_cache = True
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        videos, first = timed(lambda: model.generate(prompts, seeds, steps, guidance), device)
        times = [first]
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        stats = handle.stats() if handle is not None else None
        cache = None
        if handle is not None:
            handle.runtime.track_cache = False
            cache = handle.runtime.cache_peaks()
        for _ in range(repeats - 1):
            times.append(timed(lambda: model.generate(prompts, seeds, steps, guidance), device)[1])
        counted = None
        if count_macs and case.kind != "cachelab":
            with counting_macs(model.transformer) as counted:
                model.generate(prompts, seeds, steps, guidance)
    timed_runs = times[1:] if len(times) > 1 else times
    latency = statistics.median(timed_runs)
    spread = (max(timed_runs) - min(timed_runs)) / latency if len(timed_runs) > 1 else None
    result = CaseResult(case.name, case.kind, _policy_repr(case.policy), latency, times, spread, peak_memory_bytes=peak)
    if counted is not None:
        result.computed_macs = counted[0]
        if case.kind == "uncached":
            result.total_macs, result.computed_fraction, result.ideal_speedup = counted[0], 1.0, 1.0
    if stats is not None:
        result.total_macs = stats.total_macs
        result.computed_macs = stats.computed_macs
        result.computed_fraction = stats.computed_fraction
        result.ideal_speedup = stats.ideal_speedup
    if cache is not None:
        result.cache_bytes_held, result.cache_bytes_needed = cache
    return result, videos, stats


def _policy_repr(policy):
    if policy is None:
        return None
    if isinstance(policy, (str, dict, list)):
        return policy_to_dict(resolve_policy(policy))
    return policy_to_dict(policy)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def format_table(report: BenchReport) -> list[list[str]]:
    """Rows of strings for the report table (header first)."""
    header = ["case", "GMACs", "ideal", "latency s", "spread", "speedup", "of ideal", "peak mem", "cache held/needed",
              "PSNR dB", "SSIM", "LPIPS"]
    pf_keys = ["colour", "shape", "motion"] if any(r.prompt_following for r in report.results) else []
    header += pf_keys
    rows = [header]
    for r in report.results:
        if r.error:
            rows.append([r.name, f"{'refuses' if r.refused else 'failed'}: {r.error[:120]}"] + [""] * (len(header) - 2))
            continue
        row = [
            r.name,
            _num(r.computed_macs, 1e-9, "{:.2f}"),
            _num(r.ideal_speedup, 1, "{:.2f}x"),
            f"{r.latency_s:.3f}",
            _num(r.latency_spread, 100, "{:.1f}%"),
            _num(r.speedup, 1, "{:.2f}x"),
            _num(r.realised_of_ideal, 100, "{:.1f}%"),
            _bytes(r.peak_memory_bytes),
            "-" if r.cache_bytes_held is None else f"{_bytes(r.cache_bytes_held)}/{_bytes(r.cache_bytes_needed)}",
            "-" if r.kind == "uncached" else ("identical" if r.psnr is None and r.psnr_identical else _num(r.psnr, 1, "{:.2f}")),
            "-" if r.kind == "uncached" else _num(r.ssim, 1, "{:.4f}"),
            "-" if r.kind == "uncached" else ("unavailable" if r.lpips is None else f"{r.lpips:.4f}"),
        ]
        row += [_num((r.prompt_following or {}).get(k), 1, "{:.2f}") for k in pf_keys]
        rows.append(row)
    return rows


#: what a cell of :func:`format_table` holds when the case has no value for its column
NO_VALUE = ("-", "n/a", "unavailable")

#: why a column can have no value for any case
_WHY_EMPTY = {
    "spread": "one timed run per case",
    "peak mem": "measured on CUDA devices only",
    "cache held/needed": "no case holds a cache",
}


def legend(report: BenchReport, hidden: list[str] = ()) -> str:
    """What the columns of :func:`format_table` mean, for the lines under the table; ``hidden`` names columns
    left out of it because no case has a value there, each with why."""
    n = len(report.prompts)
    lines = [
        "GMACs: multiply-accumulates the denoiser computed for all prompts; ideal: the speedup those MACs allow "
        "(uncached MACs / computed); latency s: wall clock of one generation of all prompts; speedup: uncached "
        "latency / this case's; of ideal: speedup / ideal; cache held/needed: bytes the cache kept at its peak / "
        "what the policy reads.",
        "PSNR dB, SSIM: each case's videos against the uncached ones from the same prompts and seeds (identical: "
        "bit-equal).",
    ]
    if any(r.prompt_following for r in report.results):
        lines.append(f"colour, shape, motion: the share of the {n} videos in which the checks find the prompt's "
                     "colour, shape and direction; uncached shows what the model itself reaches, a policy that "
                     "loses an attribute scores below it" + (f" (each video counts {1 / n:.2f})" if n < 10 else "") + ".")
    idle = [r.name for r in report.results if r.kind == "cachelab" and not r.error and r.computed_fraction == 1.0
            and r.name != OVERHEAD_CASE]
    if idle:
        lines.append(f"Reused nothing on this schedule (ideal 1.00x: their thresholds or windows never let them "
                     f"skip): {', '.join(idle)}.")
    if report.repeats == 1:
        lines.append("One timed run per case: latency differences of 10-20% are within run-to-run noise on a busy "
                     "machine; --repeats 3 gives medians.")
    why = {**_WHY_EMPTY, "LPIPS": next((r.lpips_reason for r in report.results if r.lpips_reason), "")}
    # columns empty for a reason of the machine or the run; others are empty only because no policy row ran
    said = [f"{column} ({why[column]})" for column in hidden if why.get(column)]
    if said:
        lines.append("Not shown, no case has a value: " + "; ".join(said) + ".")
    return "\n".join(lines)


def markdown_table(report: BenchReport) -> str:
    rows = format_table(report)
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    pairs = pair_comparisons(report)
    if pairs:
        lines += ["", *(f"- {line}" for line in pairs)]
    return "\n".join(lines)


def pair_comparisons(report: BenchReport) -> list[str]:
    """One line per other library's row beside the cachelab row with the same schedule: their MACs (each counted
    on its own), and their latency ratio, called a difference only when it exceeds the spread of either row's
    timed runs."""
    lines = []
    for other in report.results:
        if other.kind in ("uncached", "cachelab") or other.error:
            continue
        ours = next((r for r in report.results if r.kind == "cachelab" and r.policy == other.policy and not r.error), None)
        if ours is None:
            continue
        text = f"{ours.name} vs {other.name}: "
        if ours.computed_macs and other.computed_macs:
            gap = other.computed_macs / ours.computed_macs - 1
            text += (f"MACs {ours.computed_macs * 1e-9:.2f} vs {other.computed_macs * 1e-9:.2f} G "
                     f"({'equal work' if abs(gap) < 0.005 else f'{gap:+.1%}'}); ")
        ratio = other.latency_s / ours.latency_s
        spreads = [r.latency_spread for r in (ours, other)]
        if None in spreads:
            text += f"latency ratio {ratio:.3f} from one timed run each: repeat (--repeats) to tell a difference"
        elif abs(ratio - 1) <= max(spreads):
            text += f"no difference in latency (ratio {ratio:.3f}, inside the runs' spread of {max(spreads):.1%})"
        else:
            faster = ours.name if ratio > 1 else other.name
            text += f"{faster} faster by {max(ratio, 1 / ratio):.3f}x (runs' spread {max(spreads):.1%})"
        lines.append(text)
    return lines


def _num(value, scale, fmt) -> str:
    if value is None or value != value:
        return "-"
    return fmt.format(value * scale)


def _bytes(n) -> str:
    if n is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
