"""What a search optimises, and how one trial is measured.

Objectives are costs (lower is better) and qualities against the uncached videos of the same prompts and seeds:

* ``macs``: MACs computed per generation, as the runtime counted them after it (``handle.stats().computed_macs``;
  mean over prompts). For a static policy they are the same for every prompt; a data-dependent one (``static =
  False``, e.g. ``fbcache``) decides while it runs, so its MACs, computed fraction and ideal speedup are those of
  the generations it ran: means over the prompts, with each prompt's computed fraction recorded.
* ``latency``: median wall clock of whole generations (one per prompt), synchronised on CUDA, after one warm-up.
* ``psnr`` (dB, higher is better; identical videos count as :data:`PSNR_CAP` dB so that every value is finite),
  ``ssim`` (higher is better) and ``lpips`` (lower is better): the mean over the prompts' videos.

Bounds: a quality floor (``psnr=28``, ``ssim=0.9``; for ``lpips`` an upper bound, ``lpips=0.1``) or a cost ceiling
(``latency`` in seconds; ``macs`` as a fraction of the uncached MACs when at most 1, e.g. ``0.5`` = at most half,
else absolute MACs). Bounds become Optuna constraints (a trial that misses one is infeasible and never on the
Pareto front). A trial whose *first* prompt misses a floor by more than :data:`PRUNE_MARGINS` (PSNR 3 dB,
SSIM 0.05, LPIPS 0.05), or the MACs ceiling at all when the policy is static (its MACs are the same for every
prompt; a data-dependent policy may reuse more on the next prompts), is pruned there.

References (uncached videos) are computed once per model, prompt, seed, steps, guidance, device type, device model
and dtype, and cached on disk (``<out>/references/<hash>.pt``) so that workers and resumed searches reuse them.
The uncached latency that ``measured_speedup`` divides by is never taken from there: each process that runs trials
times the uncached generations itself, just before its first trial, the way it times trials (one warm-up, the
median over the prompts), so both sides of the ratio ran with the same threads, on the same device, under the same
load of the other workers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import cachelab
from cachelab import metrics
from cachelab.zoo.registry import VideoModel
from cachelab.search.errors import SearchError
from cachelab.timing import device_model, timed as timed_call, warmup_steps

__all__ = [
    "COSTS",
    "PRUNE_MARGINS",
    "PSNR_CAP",
    "QUALITIES",
    "Evaluator",
    "Measurement",
    "Objectives",
    "Workload",
    "as_rgb_videos",
    "load_references",
    "parse_objectives",
]

#: cost objectives and quality metrics, each with its Optuna direction
COSTS = {"macs": "minimize", "latency": "minimize"}
QUALITIES = {"psnr": "maximize", "ssim": "maximize", "lpips": "minimize"}
#: how far below a floor (above, for LPIPS) the first prompt may fall before the trial is pruned
PRUNE_MARGINS = {"psnr": 3.0, "ssim": 0.05, "lpips": 0.05}
#: PSNR (dB) that identical videos count as
PSNR_CAP = 100.0


@dataclass(frozen=True)
class Objectives:
    """Objective names in order (Optuna's values), quality floors and cost ceilings."""

    names: tuple[str, ...]
    floor: dict[str, float] = field(default_factory=dict)
    ceiling: dict[str, float] = field(default_factory=dict)

    @property
    def directions(self) -> list[str]:
        return [{**COSTS, **QUALITIES}[n] for n in self.names]

    @property
    def qualities(self) -> list[str]:
        """Quality metrics a trial must compute (objectives and floors)."""
        return [q for q in QUALITIES if q in self.names or q in self.floor]

    @property
    def needs_latency(self) -> bool:
        return "latency" in self.names or "latency" in self.ceiling

    def to_dict(self) -> dict:
        return {"names": list(self.names), "floor": dict(self.floor), "ceiling": dict(self.ceiling)}

    def check_available(self) -> None:
        """Raise before any trial runs when a metric cannot be computed here (LPIPS without its weights)."""
        if "lpips" in self.qualities:
            ok, why = metrics.lpips_available()
            if not ok:
                raise SearchError(
                    f"quality metric 'lpips' is unavailable: {why}. Use psnr or ssim, or make the weights available "
                    f"({metrics.LPIPS_WEIGHTS_ENV})"
                )


def parse_objectives(objectives: str | Sequence[str], floor=None, ceiling=None) -> Objectives:
    """``("macs", "psnr")`` or ``"macs,psnr"``; ``floor``/``ceiling`` as ``{"psnr": 28}``, ``"psnr=28"`` or lists."""
    allowed = ", ".join([*COSTS, *QUALITIES])
    if isinstance(objectives, str):
        names = [n.strip().lower() for n in objectives.split(",") if n.strip()]
    else:
        names = [str(n).strip().lower() for n in objectives]
    if not names:
        raise SearchError(f"no objective given; choose from: {allowed}")
    for name in names:
        if name not in COSTS and name not in QUALITIES:
            raise SearchError(f"unknown objective {name!r}; allowed: {allowed}")
    if len(set(names)) != len(names):
        raise SearchError(f"objectives {names} name one metric twice")
    floors = _bounds(floor, "floor", QUALITIES, "quality metric")
    ceilings = _bounds(ceiling, "ceiling", COSTS, "cost")
    costs = [n for n in names if n in COSTS]
    qualities = [n for n in names if n in QUALITIES]
    if len(names) == 1:
        if costs and not floors:
            raise SearchError(
                f"a single cost objective ({names[0]}) needs a quality floor, e.g. floor psnr=28; or search "
                f"{names[0]} together with a quality metric (e.g. objectives {names[0]},psnr)"
            )
        if qualities and not ceilings:
            raise SearchError(
                f"a single quality objective ({names[0]}) needs a cost ceiling, e.g. ceiling macs=0.5; or search it "
                f"together with a cost (e.g. objectives macs,{names[0]})"
            )
    elif not costs or not qualities:
        raise SearchError(
            f"objectives {','.join(names)}: a multi-objective search needs one cost ({', '.join(COSTS)}) and at "
            f"least one quality metric ({', '.join(QUALITIES)})"
        )
    return Objectives(tuple(names), floors, ceilings)


def _bounds(value, what: str, known: dict, kind: str) -> dict[str, float]:
    if value is None:
        return {}
    items: list[tuple[str, Any]]
    if isinstance(value, dict):
        items = list(value.items())
    else:
        texts = [value] if isinstance(value, str) else list(value)
        items = []
        for text in texts:
            if not isinstance(text, str) or "=" not in text:
                raise SearchError(f"{what} {text!r}: write it as metric=value, e.g. {next(iter(known))}=0.5")
            k, v = text.split("=", 1)
            items.append((k, v))
    out: dict[str, float] = {}
    for key, raw in items:
        key = str(key).strip().lower()
        if key not in known:
            raise SearchError(f"{what} {key!r}: unknown {kind}; allowed: {', '.join(known)}")
        try:
            number = float(raw)
        except (TypeError, ValueError):
            raise SearchError(f"{what} {key}={raw!r} is not a number") from None
        if not math.isfinite(number):
            raise SearchError(f"{what} {key}={raw!r} is not a finite number")
        if key in ("macs", "latency", "lpips") and number <= 0 and not (key == "lpips" and number == 0):
            raise SearchError(f"{what} {key}={number:g} must be positive")
        if key == "ssim" and not -1.0 <= number <= 1.0:
            raise SearchError(f"{what} ssim={number:g} is outside [-1, 1], where SSIM lies")
        if key in out:
            raise SearchError(f"{what} {key} is given twice")
        out[key] = number
    return out


# ------------------------------------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class Workload:
    """The generations every trial runs: one per prompt, batch 1, with its own seed."""

    model: str
    prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int
    guidance: float

    def to_dict(self) -> dict:
        return {"model": self.model, "prompts": list(self.prompts), "seeds": list(self.seeds),
                "steps": self.steps, "guidance": self.guidance}


def as_rgb_videos(x: torch.Tensor) -> torch.Tensor:
    """``(B, F, 3, H, W)`` in [0, 1] for metrics and media. Videos without 3 colour channels (random-weight
    presets return latents, ``(B, C, F, H, W)``) become grey frames, one per leading channel and frame."""
    x = x.detach().float().cpu()
    if x.ndim == 4:
        x = x.unsqueeze(0)
    if x.ndim == 5 and x.shape[2] == 3:
        return x
    if x.ndim != 5:
        raise SearchError(f"a generated video has shape {tuple(x.shape)}; expected (B, F, 3, H, W)")
    b, a, c, h, w = x.shape
    return x.reshape(b, a * c, 1, h, w).expand(b, a * c, 3, h, w)


def _ssim_kernel(video: torch.Tensor) -> int:
    """SSIM's 11-pixel window, or the largest odd window that fits smaller frames."""
    side = min(video.shape[-2:])
    return metrics.SSIM_KERNEL_SIZE if side >= metrics.SSIM_KERNEL_SIZE else max(1, side - (1 - side % 2))


# ----------------------------------------------------------------------------------------------------- references


def _reference_key(workload: Workload, index: int, device: torch.device, dtype: torch.dtype) -> dict:
    return {
        "model": workload.model,
        "prompt": workload.prompts[index],
        "seed": workload.seeds[index],
        "steps": workload.steps,
        "guidance": workload.guidance,
        "device": device.type,
        "device_model": device_model(device),
        "dtype": str(dtype),
    }


def load_references(model: VideoModel, workload: Workload, cache_dir: Path | None) -> list[torch.Tensor]:
    """The uncached video (``(1, F, 3, H, W)`` on the CPU) of every prompt of ``workload``, from ``cache_dir`` when
    there, else generated (and stored, written atomically)."""
    device = next(model.transformer.parameters()).device
    dtype = next(model.transformer.parameters()).dtype
    out: list[torch.Tensor] = []
    for i in range(len(workload.prompts)):
        key = _reference_key(workload, i, device, dtype)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        path = cache_dir / f"{digest}.pt" if cache_dir is not None else None
        if path is not None and path.is_file():
            data = torch.load(path, weights_only=True)
            if data.get("key") == key:
                out.append(data["video"])
                continue
        video = as_rgb_videos(model.generate([workload.prompts[i]], [workload.seeds[i]], workload.steps,
                                             workload.guidance))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp")
            torch.save({"key": key, "video": video}, tmp)
            os.replace(tmp, path)
        out.append(video)
    return out


# ---------------------------------------------------------------------------------------------------- measurement


@dataclass
class PromptResult:
    """One prompt's generation under the policy."""

    index: int
    macs: float
    total_macs: float
    latency_s: float
    quality: dict[str, float]  # psnr (capped), ssim, lpips: whichever were computed
    identical: bool
    macs_by_kind: dict[str, tuple[float, float]] = field(default_factory=dict)  # kind -> (uncached, computed)

    @property
    def computed_fraction(self) -> float:
        return self.macs / self.total_macs if self.total_macs else float("nan")


@dataclass
class Measurement:
    """All prompts of one trial, with what W&B shows of it."""

    prompts: list[PromptResult]
    reuse: dict[str, list[bool]]  # site key -> compute per step (first prompt)
    roles: dict[str, str]  # site key -> kind
    sample: torch.Tensor | None  # first prompt's video, (1, F, 3, H, W)
    reference_latency_s: float | None = None  # uncached, timed by the same process
    timed_on: dict[str, Any] | None = None  # where both latencies were measured

    @property
    def macs(self) -> float:
        return statistics.fmean(p.macs for p in self.prompts)

    @property
    def total_macs(self) -> float:
        return statistics.fmean(p.total_macs for p in self.prompts)

    @property
    def computed_fraction(self) -> float:
        return self.macs / self.total_macs if self.total_macs else float("nan")

    @property
    def ideal_speedup(self) -> float:
        return self.total_macs / self.macs if self.macs else float("nan")

    @property
    def by_kind(self) -> dict[str, float]:
        """Site kind -> computed fraction of its MACs, over all prompts."""
        kinds = sorted({kind for p in self.prompts for kind in p.macs_by_kind})
        sums = {k: [sum(p.macs_by_kind.get(k, (0.0, 0.0))[i] for p in self.prompts) for i in (0, 1)] for k in kinds}
        return {k: computed / uncached if uncached else float("nan") for k, (uncached, computed) in sums.items()}

    @property
    def latency_s(self) -> float:
        return statistics.median(p.latency_s for p in self.prompts)

    def quality(self, name: str) -> float:
        return statistics.fmean(p.quality[name] for p in self.prompts)

    def value(self, name: str) -> float:
        if name == "macs":
            return self.macs
        if name == "latency":
            return self.latency_s
        return self.quality(name)

    def constraints(self, objectives: Objectives) -> dict[str, float]:
        """Optuna constraint values (feasible when <= 0), one per floor and ceiling."""
        out = {}
        for name, bound in objectives.floor.items():
            value = self.quality(name)
            out[f"floor_{name}"] = value - bound if name == "lpips" else bound - value
        for name, bound in objectives.ceiling.items():
            if name == "macs":
                out["ceiling_macs"] = (self.computed_fraction if bound <= 1 else self.macs) - bound
            else:
                out["ceiling_latency"] = self.latency_s - bound
        return out

    def attrs(self) -> dict[str, Any]:
        """What a trial records (Optuna user attrs): JSON-safe, NaN as None."""
        out: dict[str, Any] = {
            "macs": self.macs,
            "total_macs": self.total_macs,
            "computed_fraction": self.computed_fraction,
            "computed_fraction_per_prompt": [p.computed_fraction for p in self.prompts],
            "ideal_speedup": self.ideal_speedup,
            "computed_fraction_by_kind": dict(self.by_kind),
            "latency_s": self.latency_s,
            "identical_videos": sum(p.identical for p in self.prompts),
        }
        if self.reference_latency_s:
            out["reference_latency_s"] = self.reference_latency_s
            out["measured_speedup"] = self.reference_latency_s / self.latency_s
            out["timed_on"] = self.timed_on
        for name in QUALITIES:
            if all(name in p.quality for p in self.prompts):
                out[name] = self.quality(name)
                out[f"{name}_per_prompt"] = [p.quality[name] for p in self.prompts]
        return _json_safe(out)


def prune_reason(objectives: Objectives, first: PromptResult, static: bool) -> str | None:
    """Why a trial should stop after its first prompt, or None. ``static``: the policy's MACs are the same for
    every prompt (a data-dependent policy's are not, so its first prompt says nothing of their mean)."""
    for name, bound in objectives.floor.items():
        value, margin = first.quality[name], PRUNE_MARGINS[name]
        if name == "lpips" and value > bound + margin:
            return f"first prompt LPIPS {value:.4f} is above the bound {bound:g} by more than {margin:g}"
        if name != "lpips" and value < bound - margin:
            unit = " dB" if name == "psnr" else ""
            return (f"first prompt {name.upper()} {value:.4g}{unit} is below the floor {bound:g}{unit} "
                    f"by more than {margin:g}{unit}")
    bound = objectives.ceiling.get("macs")
    if bound is not None and static:
        value = first.computed_fraction if bound <= 1 else first.macs
        if value > bound:
            what = "computed fraction of the MACs" if bound <= 1 else "MACs"
            return f"{what} {value:.4g} is above the ceiling {bound:g} (MACs are the same for every prompt)"
    return None


class Evaluator:
    """Runs a policy on the workload's prompts and measures cost and quality against the references; with a
    latency objective, also times the uncached generations once, in this process, before the first trial."""

    def __init__(self, model: VideoModel, workload: Workload, references: list[torch.Tensor], objectives: Objectives):
        self.model, self.workload, self.references, self.objectives = model, workload, references, objectives
        self.device = next(model.transformer.parameters()).device
        self.reference_latency_s: float | None = None
        self.timed_on: dict[str, Any] | None = None

    def _warm_up(self, handle=None) -> None:
        """Allocations, kernels and the policy's MAC profiling, outside the timings."""
        wl = self.workload
        self.model.generate(wl.prompts[:1], wl.seeds[:1], warmup_steps(wl.steps, handle), wl.guidance)

    def _timed_generation(self, i: int) -> tuple[torch.Tensor, float]:
        wl = self.workload
        return timed_call(lambda: self.model.generate([wl.prompts[i]], [wl.seeds[i]], wl.steps, wl.guidance),
                          self.device)

    def _time_reference(self) -> None:
        """The uncached latency, timed exactly like a trial, with this process's threads and device."""
        self._warm_up()
        self.reference_latency_s = statistics.median(
            self._timed_generation(i)[1] for i in range(len(self.workload.prompts))
        )
        self.timed_on = {"pid": os.getpid(), "device": str(self.device), "device_model": device_model(self.device),
                         "threads": torch.get_num_threads()}

    def measure(self, policy, after_prompt: Callable[[PromptResult], None] | None = None) -> Measurement:
        """Generate every prompt with ``policy`` attached; ``after_prompt`` may raise (e.g. to prune)."""
        if self.objectives.needs_latency and self.reference_latency_s is None:
            self._time_reference()
        results: list[PromptResult] = []
        sample = reuse = roles = None
        with cachelab.apply(self.model.target, policy, cfg=self.model.cfg) as handle:
            if self.objectives.needs_latency:
                self._warm_up(handle)
            for i in range(len(self.workload.prompts)):
                video, latency = self._timed_generation(i)
                stats = handle.stats()
                video = as_rgb_videos(video)
                quality, identical = self._quality(video, self.references[i])
                by_kind = {kind: (row["macs"], row["macs_computed"]) for kind, row in stats.by_kind().items()}
                result = PromptResult(i, stats.computed_macs, stats.total_macs, latency, quality, identical, by_kind)
                if i == 0:
                    sample = video
                    roles = dict(stats.roles)
                    reuse = {key: stats.computed_steps(key) for key in roles}
                results.append(result)
                if after_prompt is not None:
                    after_prompt(result)
        return Measurement(results, reuse, roles, sample, self.reference_latency_s, self.timed_on)

    def _quality(self, video: torch.Tensor, ref: torch.Tensor) -> tuple[dict[str, float], bool]:
        wanted = set(self.objectives.qualities) | {"psnr", "ssim"}  # PSNR and SSIM are always recorded
        out: dict[str, float] = {}
        psnr = float(metrics.psnr(video, ref)[0])
        identical = math.isinf(psnr)
        out["psnr"] = min(psnr, PSNR_CAP)
        if "ssim" in wanted:
            out["ssim"] = float(metrics.ssim(video, ref, kernel_size=_ssim_kernel(video))[0])
        if "lpips" in wanted:
            out["lpips"] = float(metrics.lpips(video, ref)[0])
        return out, identical


def _json_safe(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
