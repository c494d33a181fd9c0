"""Measure the redundancy that cache policies exploit, on uncached generations (FasterCache, Lv et al. 2024):

- per site kind and step, how much a site's output changes between adjacent steps: MSE and relative L1
  ``mean|x_t - x_t-1| / mean|x_t-1|`` (the paper's Fig. 4), per CFG branch, averaged over the sites of a kind;
- per step, how far the unconditional denoiser output is from the conditional one, ``mean|u - c| / mean|c|``
  (Fig. 6), how much that difference changes from step to step (what CFG-Cache reuses), and which share of its
  energy lies in the low frequencies (Fig. 7b): ``sum |FFT|^2`` inside CFG-Cache's low-frequency disk over the
  total, per frame over the last two (H, W) dims.

Observation goes through the engine like any policy: a private observer owns every site, runs each call unchanged
(``call.defer``) and reads its output afterwards, so the generated videos equal uncached ones bit for bit. Only the
previous step's output per site and branch is kept; statistics are 0-d tensors read once at the end.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

import cachelab
from cachelab import media
from cachelab.errors import CachelabError, NothingReusedWarning, SiteError
from cachelab.hooks.history import tree_leaves
from cachelab.hooks.sites import ROLES
from cachelab.manifest import write_json, write_manifest
from cachelab.policies.base import Policy
from cachelab.policies.cfg_cache import CfgCacheConfig, split_frequencies, splits_into_frequencies
from cachelab.policies.streams import sample_of

#: the low-frequency disk of CFG-Cache: radius min(H, W) // this
RADIUS_DIVISOR = CfgCacheConfig.model_fields["radius_divisor"].default
PLOTS = {"adjacent_change": "adjacent_change.png", "cfg_difference": "cfg_difference.png",
         "cfg_frequency": "cfg_frequency.png"}
PHASES = ("early", "middle", "late")


class AnalysisError(CachelabError, ValueError):
    """Input the analysis cannot work with (no generate function for a pipeline, no prompts, ...)."""


# ------------------------------------------------------------------------------------------------- what is recorded


def adjacent_change(current: list[torch.Tensor], previous: list[torch.Tensor]) -> torch.Tensor:
    """``[MSE, relative L1]`` of ``current`` against ``previous`` (lists of tensors of equal shapes, taken as one):
    ``mean (x_t - x_t-1)^2`` and ``mean|x_t - x_t-1| / mean|x_t-1|``, as a float32 tensor of two values."""
    squared = absolute = reference = 0.0
    count = 0
    for now, before in zip(current, previous):
        diff = now.float() - before.float()
        squared = squared + diff.square().sum()
        absolute = absolute + diff.abs().sum()
        reference = reference + before.float().abs().sum()
        count += diff.numel()
    return torch.stack([torch.as_tensor(squared) / count, torch.as_tensor(absolute) / torch.as_tensor(reference)])


def cfg_difference(uncond: torch.Tensor, cond: torch.Tensor, radius_divisor: int = RADIUS_DIVISOR) -> torch.Tensor:
    """``[relative difference, low-frequency share, high-frequency share]`` of the two CFG outputs: ``mean|u - c| /
    mean|c|``, and the share of ``|FFT(u - c)|^2`` inside and outside the low-frequency disk (per frame, over the last
    two dims; NaN for outputs without (H, W) dims, such as packed token sequences)."""
    diff = uncond.float() - cond.float()
    relative = diff.abs().mean() / cond.float().abs().mean()
    if not splits_into_frequencies(diff):
        nan = torch.full((), math.nan, device=diff.device)
        return torch.stack([relative, nan, nan])
    low, high = split_frequencies(diff, radius_divisor)
    low_energy, high_energy = low.abs().square().sum(), high.abs().square().sum()
    total = low_energy + high_energy
    return torch.stack([relative, low_energy / total, high_energy / total])


def branch_parts(output: Any, branches: tuple[str, ...]) -> dict[str, list[torch.Tensor]]:
    """A call's output tensors per CFG branch: a batched ``[uncond, cond]`` call holds the branches as halves of
    every tensor's first dim (batch-major, also where frames or tokens are folded into the batch)."""
    leaves = [leaf for leaf in tree_leaves(output) if leaf.ndim > 0]
    count = len(branches)
    if count == 1 or not leaves or any(leaf.shape[0] % count for leaf in leaves):
        return {"+".join(branches): leaves}
    chunks = [leaf.chunk(count) for leaf in leaves]
    return {branch: [c[i] for c in chunks] for i, branch in enumerate(branches)}


class Recorder:
    """Streams what the observer sees into statistics: per site and step, ``[MSE, rel L1]`` per branch; per step,
    the CFG difference; the timestep of each step."""

    def __init__(self, radius_divisor: int = RADIUS_DIVISOR, on_step: Callable[[], None] | None = None):
        self.radius_divisor = radius_divisor
        self.on_step = on_step
        self.generation: int | None = None
        self.previous: dict[tuple[str, str], tuple[int, list[torch.Tensor]]] = {}
        self.adjacent: dict[str, dict[int, list[torch.Tensor]]] = {}
        self.cfg: dict[int, list[torch.Tensor]] = {}
        self.cfg_delta_change: dict[int, list[torch.Tensor]] = {}  # [MSE, rel L1] of uncond - cond against last step
        self._previous_delta: dict[str, tuple[int, torch.Tensor]] = {}
        self.timesteps: dict[int, float] = {}
        self.branches_seen: set[str] = set()
        self._first_branch: dict[str, tuple[int, str, torch.Tensor]] = {}  # two calls per step: the step's first
        self._steps_seen: set[tuple[int, int]] = set()

    def observe(self, site, ctx, output):
        if ctx.generation != self.generation:  # a new generation: nothing of the last one is adjacent
            self.generation = ctx.generation
            self.previous.clear()
            self._first_branch.clear()
            self._previous_delta.clear()
        step = ctx.step
        sample = sample_of("analyze", output) if site.role == "denoiser" else None  # not the rest of an output object
        for branch, current in branch_parts(output if sample is None else sample, ctx.branches).items():
            if not current:  # a site that returns no tensor has nothing to compare
                continue
            key = (site.key, branch)
            before = self.previous.get(key)
            if before is not None and before[0] < step:
                self.adjacent.setdefault(site.key, {}).setdefault(step, []).append(adjacent_change(current, before[1]))
            self.previous[key] = (step, [t.detach().clone() for t in current])
        if sample is not None:
            self._denoiser(site, ctx, sample)
        return output

    def _denoiser(self, site, ctx, sample: torch.Tensor) -> None:
        step = ctx.step
        self.branches_seen.update(ctx.branches)
        self.timesteps.setdefault(step, float(ctx.timestep))
        if ctx.branches == ("uncond", "cond"):
            uncond, cond = sample.chunk(2)
            self._cfg(site, step, uncond, cond)
        elif ctx.branches in (("cond",), ("uncond",)):
            branch = ctx.branches[0]
            first = self._first_branch.pop(site.key, None)
            if first is not None and first[0] == step and first[1] != branch:
                uncond, cond = (first[2], sample) if branch == "cond" else (sample, first[2])
                self._cfg(site, step, uncond, cond)
            else:
                self._first_branch[site.key] = (step, branch, sample.detach().clone())
        if (ctx.generation, step) not in self._steps_seen:
            self._steps_seen.add((ctx.generation, step))
            if self.on_step is not None:
                self.on_step()

    def _cfg(self, site, step: int, uncond: torch.Tensor, cond: torch.Tensor) -> None:
        self.cfg.setdefault(step, []).append(cfg_difference(uncond, cond, self.radius_divisor))
        delta = uncond.float() - cond.float()
        before = self._previous_delta.get(site.key)
        if before is not None and before[0] < step:
            self.cfg_delta_change.setdefault(step, []).append(adjacent_change([delta], [before[1]]))
        self._previous_delta[site.key] = (step, delta)

    @staticmethod
    def step_means(per_step: dict[int, list[torch.Tensor]], num_steps: int, width: int) -> np.ndarray:
        """``(num_steps, width)``: the mean over generations and branches at each step, NaN where nothing was
        recorded (one device read for all of them)."""
        steps = sorted(per_step)
        out = np.full((num_steps, width), np.nan)
        if steps:
            means = torch.stack([torch.stack(per_step[s]).mean(0) for s in steps]).cpu().numpy()
            for row, step in zip(means, steps):
                if step < num_steps:
                    out[step] = row
        return out


class _Observer(Policy):
    """Owns every site, runs each call unchanged and hands its output to a :class:`Recorder`."""

    name = "analyze"
    history = 0
    static = False

    def __init__(self, recorder: Recorder):
        super().__init__()
        self.recorder = recorder

    def fresh(self) -> "_Observer":
        return _Observer(self.recorder)

    def select(self, sites):
        return list(sites)

    def forward(self, site, call):
        ctx = call.ctx
        return call.defer(then=lambda output: self.recorder.observe(site, ctx, output))


# ------------------------------------------------------------------------------------------------------- the result


@dataclass
class Analysis:
    """What :func:`analyze` measured; ``to_json()`` gives ``analysis.json``, ``save(dir)`` writes it with the plots.

    ``site_kinds[kind]``: ``adjacent_mse`` and ``adjacent_rel_l1`` per step (None at step 0 and where no site of
    the kind ran), ``sites`` (how many). ``cfg``: ``rel_diff``, ``low_freq_share``, ``high_freq_share`` per step and
    ``delta_adjacent_rel_l1`` (how much ``uncond - cond`` itself changed since the last step: what CFG-Cache relies
    on when it reuses it), or None when no step had both CFG branches (``cfg_note`` says why)."""

    model: str
    steps: int
    guidance: float | None
    prompts: list[str]
    seeds: list[int]
    timesteps: list[float | None]
    site_kinds: dict[str, dict[str, Any]]
    cfg: dict[str, Any] | None
    cfg_note: str = ""
    radius_divisor: int = RADIUS_DIVISOR
    plots: dict[str, str | None] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    # -- summaries -------------------------------------------------------------------------------------------------
    def phase_means(self, values: Sequence[float | None]) -> list[float | None]:
        """Means over the first, middle and last third of the steps (None where a third has no value)."""
        thirds = np.array_split(np.arange(self.steps), 3)
        out = []
        for steps in thirds:
            seen = [values[s] for s in steps if s < len(values) and values[s] is not None]
            out.append(float(np.mean(seen)) if seen else None)
        return out

    def smallest_cfg_difference(self) -> tuple[int, float] | None:
        """``(step, relative difference)`` where the CFG difference is smallest, or None without CFG."""
        if self.cfg is None:
            return None
        seen = [(v, s) for s, v in enumerate(self.cfg["rel_diff"]) if v is not None]
        if not seen:
            return None
        value, step = min(seen)
        return step, value

    def tables(self) -> list:
        """Rich tables of the summary: adjacent change per site kind and phase; the CFG difference per phase."""
        from rich.table import Table

        kinds = Table(title=f"{self.model}, {len(self.prompts)} prompt(s), {self.steps} steps: adjacent-step change "
                            "per site kind (mean over each third of the steps)", title_justify="left")
        kinds.add_column("site kind")
        kinds.add_column("sites", justify="right")
        for metric in ("rel L1", "MSE"):
            for phase in PHASES:
                kinds.add_column(f"{metric} {phase}", justify="right")
        for kind, row in self.site_kinds.items():
            rel = self.phase_means(row["adjacent_rel_l1"])
            mse = self.phase_means(row["adjacent_mse"])
            kinds.add_row(kind, str(row["sites"]), *[_fmt(v, ".3f") for v in rel], *[_fmt(v, ".3g") for v in mse])
        tables = [kinds]
        if self.cfg is not None:
            title = f"CFG difference |uncond - cond| / |cond| at guidance {self.guidance} and its frequency shares"
            cfg = Table(title=title, title_justify="left", min_width=len(title))
            cfg.add_column("")
            for phase in PHASES:
                cfg.add_column(phase, justify="right")
            for name, key in (("relative difference", "rel_diff"),
                              ("its change from the last step (rel L1)", "delta_adjacent_rel_l1"),
                              ("low-frequency share", "low_freq_share"), ("high-frequency share", "high_freq_share")):
                cfg.add_row(name, *[_fmt(v, ".3f") for v in self.phase_means(self.cfg[key])])
            tables.append(cfg)
        return tables

    def summary_lines(self) -> list[str]:
        smallest = self.smallest_cfg_difference()
        if smallest is None:
            return [f"CFG: none measured ({self.cfg_note})"]
        step, value = smallest
        timestep = self.timesteps[step] if step < len(self.timesteps) else None
        at = f"step {step}" + (f" (timestep {timestep:g})" if timestep is not None else "")
        lines = [f"CFG difference smallest at {at}: {value:.4f}"]
        if self.cfg_note:
            lines.append(f"CFG: {self.cfg_note}")
        return lines

    # -- files -----------------------------------------------------------------------------------------------------
    def save(self, out_dir: str | Path, command: Sequence[str] = ()) -> list[Path]:
        """Write ``manifest.json``, ``analysis.json`` and the plots into ``out_dir``; returns the written paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = [plot_adjacent_change(self, out / PLOTS["adjacent_change"])]
        self.plots = {"adjacent_change": PLOTS["adjacent_change"], "cfg_difference": None, "cfg_frequency": None}
        if self.cfg is not None:
            written.append(plot_cfg_difference(self, out / PLOTS["cfg_difference"]))
            self.plots["cfg_difference"] = PLOTS["cfg_difference"]
            if any(v is not None for v in self.cfg["low_freq_share"]):
                written.append(plot_cfg_frequency(self, out / PLOTS["cfg_frequency"]))
                self.plots["cfg_frequency"] = PLOTS["cfg_frequency"]
        written.append(write_json(out / "analysis.json", self.to_dict()))
        written.append(write_manifest(out, "analysis", command=command, model=self.model))
        return written


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _listed(values: np.ndarray) -> list[float | None]:
    return [None if not math.isfinite(v) else float(v) for v in values]


# -------------------------------------------------------------------------------------------------------- the run


def analyze(
    target: Any,
    prompts: int | Sequence[str] = 2,
    *,
    generate: Callable[[str, int], Any] | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    device: str | None = None,
    cfg: str | None = None,
    sites: dict | None = None,
    radius_divisor: int = RADIUS_DIVISOR,
    progress: bool = False,
) -> Analysis:
    """Run uncached generations with every site observed and return what changed between steps and CFG branches.

    Args:
        target: a registered model name (``cachelab models``), a model from ``cachelab.zoo.registry.create_model``,
            or anything :func:`cachelab.apply` takes (a diffusers pipeline or a transformer) with ``generate``.
        prompts: how many of a registered model's prompts, or the prompts themselves.
        generate: ``generate(prompt, seed)`` runs one generation on ``target`` (needed unless it is a registered
            model, whose own generate is used with ``steps`` and ``guidance``).
        steps, guidance: a registered model's defaults when None (for a ``generate`` of your own they are only
            recorded; the steps counted are those the denoiser saw).
        seed: prompt ``i`` runs with seed ``seed + i``.
        cfg: how CFG reaches the denoiser (``cachelab.apply``'s ``cfg``); default: the model's, ``off`` at
            guidance <= 1, else ``auto``.
        sites: ``role -> regex`` for models cachelab cannot see by itself (as in ``cachelab.apply``).
        radius_divisor: the low-frequency disk's radius is ``min(H, W) // radius_divisor`` (CFG-Cache's default).
    """
    from cachelab.zoo.registry import VideoModel, create_model

    if isinstance(target, str):
        target = create_model(target, device=device)
    if isinstance(prompts, int):
        if prompts < 1:
            raise AnalysisError(f"prompts={prompts}: give at least one prompt")
        if not isinstance(target, VideoModel):
            raise AnalysisError("prompts: give the prompts themselves (a list of strings) for a pipeline or model "
                                "of your own; a number picks a registered model's prompts")
        prompts = target.prompts(prompts)
    prompts = list(prompts)
    if not prompts:
        raise AnalysisError("prompts: the list is empty; give at least one prompt")
    if isinstance(target, VideoModel):
        model, name = target, target.name
        steps = model.steps if steps is None else steps
        guidance = model.guidance if guidance is None else guidance
        if not 1 <= steps <= 1000:
            raise AnalysisError(f"steps={steps}: give between 1 and 1000 sampling steps")
        for prompt in prompts:
            model.check_prompt(prompt)
        cfg = cfg or (model.cfg if guidance > 1 else "off")
        apply_to = model.target
        if generate is None:
            generate = lambda prompt, seed: model.generate([prompt], [seed], steps, guidance)  # noqa: E731
    else:
        if generate is None:
            raise AnalysisError(f"generate: a {type(target).__name__} needs generate=lambda prompt, seed: ... that "
                                "runs one generation on it (a registered model name brings its own)")
        apply_to, name, cfg = target, type(target).__name__, cfg or "auto"
    seeds = [seed + i for i in range(len(prompts))]

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts) * steps if steps else None, desc=f"analyze {name}", unit="step")
    recorder = Recorder(radius_divisor, on_step=bar.update if bar is not None else None)
    try:
        try:
            handle = cachelab.apply(apply_to, _Observer(recorder), sites=sites, cfg=cfg, count_macs=False)
        except SiteError as exc:
            raise SiteError(f"analyze: {exc} analyze takes the same sites={{...}}.") from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NothingReusedWarning)  # observing never reuses
            with handle, torch.no_grad():
                for prompt, prompt_seed in zip(prompts, seeds):
                    generate(prompt, prompt_seed)
        observed = handle.owned_sites
    finally:
        if bar is not None:
            bar.close()
    return _summarise(recorder, observed, name, prompts, seeds, guidance, cfg)


def _summarise(recorder: Recorder, sites, name, prompts, seeds, guidance, cfg_mode) -> Analysis:
    num_steps = max(recorder.timesteps, default=-1) + 1
    if num_steps == 0:
        raise AnalysisError(f"{name}: the denoiser never ran during the generations; check generate")
    timesteps = [recorder.timesteps.get(s) for s in range(num_steps)]
    kinds: dict[str, dict[str, Any]] = {}
    for kind in ROLES:
        of_kind = [s for s in sites if s.role == kind]
        if not of_kind:
            continue
        per_site = np.stack([recorder.step_means(recorder.adjacent.get(s.key, {}), num_steps, 2) for s in of_kind])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN steps (step 0) stay NaN
            means = np.nanmean(per_site, axis=0)
        kinds[kind] = {"adjacent_mse": _listed(means[:, 0]), "adjacent_rel_l1": _listed(means[:, 1]),
                       "sites": len(of_kind)}
    cfg, note = None, ""
    if recorder.cfg:
        values = recorder.step_means(recorder.cfg, num_steps, 3)
        delta_change = recorder.step_means(recorder.cfg_delta_change, num_steps, 2)
        cfg = {"rel_diff": _listed(values[:, 0]), "low_freq_share": _listed(values[:, 1]),
               "high_freq_share": _listed(values[:, 2]), "delta_adjacent_rel_l1": _listed(delta_change[:, 1])}
        if all(v is None for v in cfg["low_freq_share"]):
            note = "the denoiser output has no (H, W) dims (a token sequence): frequency shares are not measured"
    elif cfg_mode == "off" or "uncond" not in recorder.branches_seen:
        given = "" if guidance is None else f" at guidance {guidance:g}"
        note = (f"no call held an unconditional branch{given}: the model ran without classifier-free guidance "
                "(guidance <= 1, or a guidance-distilled model that embeds the scale, such as Flux)")
    else:
        note = ("unconditional calls never met a conditional call of the same step; pass cfg='batched' or "
                "'sequential' if cfg='auto' misreads how this pipeline runs CFG")
    return Analysis(model=name, steps=num_steps, guidance=guidance, prompts=prompts, seeds=seeds, timesteps=timesteps,
                    site_kinds=kinds, cfg=cfg, cfg_note=note, radius_divisor=recorder.radius_divisor)


# ------------------------------------------------------------------------------------------------------------ plots


def _steps_axis(ax, analysis: Analysis) -> None:
    ax.set_xlabel("step (timestep falls from left to right)")
    ax.grid(True, alpha=0.3)
    ax.set_xlim(0, max(analysis.steps - 1, 1))


def _series(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def plot_adjacent_change(analysis: Analysis, path: str | Path) -> Path:
    """Per site kind, the MSE and the relative L1 change between adjacent steps (log y), as in FasterCache Fig. 4."""
    p = media._prepare_path(path, media.IMAGE_SUFFIXES)
    fig = media._new_figure((10, 4.2))
    axes = fig.subplots(1, 2)
    steps = np.arange(analysis.steps)
    colors = [f"C{i}" for i in range(len(analysis.site_kinds))]  # a kind keeps its colour in both panels
    for ax, key, label in ((axes[0], "adjacent_mse", "MSE"), (axes[1], "adjacent_rel_l1", "relative L1")):
        for color, (kind, row) in zip(colors, analysis.site_kinds.items()):
            values = _series(row[key])
            if (values[np.isfinite(values)] > 0).any():  # log axes cannot show an all-zero line
                ax.plot(steps, values, marker=".", color=color, label=f"{kind} ({row['sites']})")
        if ax.lines:
            ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "no adjacent steps to compare", transform=ax.transAxes, ha="center", color="#555555")
        ax.set_ylabel(f"{label}, step t vs t-1")
        ax.set_title(f"adjacent-step {label} of site outputs", fontsize=10)
        _steps_axis(ax, analysis)
    if axes[1].lines:
        axes[1].legend(fontsize=8, loc="best")
    fig.suptitle(f"{analysis.model}: mean over sites of each kind, {len(analysis.prompts)} prompt(s)", fontsize=10)
    return media._save_figure(fig, p)


def plot_cfg_difference(analysis: Analysis, path: str | Path) -> Path:
    """The relative difference of the unconditional and conditional denoiser outputs per step (FasterCache Fig. 6),
    and how much that difference changes from one step to the next (log y)."""
    p = media._prepare_path(path, media.IMAGE_SUFFIXES)
    fig = media._new_figure((10, 4.2))
    left, right = fig.subplots(1, 2)
    steps = np.arange(analysis.steps)
    left.plot(steps, _series(analysis.cfg["rel_diff"]), marker=".", color="#2b6cb0")
    smallest = analysis.smallest_cfg_difference()
    if smallest is not None:
        left.scatter([smallest[0]], [smallest[1]], s=80, marker="*", color="#d62728", zorder=5, label="smallest")
        left.legend(fontsize=8)
    left.set_ylabel("mean|uncond - cond| / mean|cond|")
    left.set_title("CFG difference of the denoiser output", fontsize=10)
    change = _series(analysis.cfg["delta_adjacent_rel_l1"])
    right.plot(steps, change, marker=".", color="#2f855a")
    if (change[np.isfinite(change)] > 0).any():
        right.set_yscale("log")
    right.set_ylabel("relative L1 of (uncond - cond), step t vs t-1")
    right.set_title("how much the CFG difference changes between steps", fontsize=10)
    for ax in (left, right):
        _steps_axis(ax, analysis)
    fig.suptitle(f"{analysis.model}: guidance {analysis.guidance}, {len(analysis.prompts)} prompt(s)", fontsize=10)
    return media._save_figure(fig, p)


def plot_cfg_frequency(analysis: Analysis, path: str | Path) -> Path:
    """Low- vs high-frequency share of the CFG difference's energy per step (FasterCache Fig. 7b)."""
    p = media._prepare_path(path, media.IMAGE_SUFFIXES)
    fig = media._new_figure((6.4, 4.2))
    ax = fig.add_subplot()
    steps = np.arange(analysis.steps)
    low, high = _series(analysis.cfg["low_freq_share"]), _series(analysis.cfg["high_freq_share"])
    ax.stackplot(steps, np.nan_to_num(low), np.nan_to_num(high), colors=["#2b6cb0", "#f6ad55"],
                 labels=[f"low (disk radius min(H, W) // {analysis.radius_divisor})", "high"], alpha=0.85)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of |FFT(uncond - cond)|^2")
    ax.set_title(f"{analysis.model}: frequency shares of the CFG difference", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    _steps_axis(ax, analysis)
    return media._save_figure(fig, p)
