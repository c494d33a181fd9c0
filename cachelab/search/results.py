"""What a search leaves behind: the Pareto trials, their policies as YAML, a plot and a CSV of every trial."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from cachelab import media
from cachelab.manifest import write_manifest
from cachelab.search.objectives import COSTS, Objectives
from cachelab.spec import resolve_policy, save_policy_file

__all__ = ["ParetoTrial", "SearchResult", "pareto_trials", "plot_front", "write_results"]

_ATTR_COLUMNS = ("ideal_speedup", "computed_fraction", "macs", "total_macs", "latency_s", "measured_speedup",
                 "psnr", "ssim", "lpips", "identical_videos", "feasible", "pruned_reason", "error")


@dataclass
class ParetoTrial:
    """A trial on the Pareto front (or the best trial of a single-objective search)."""

    number: int
    values: dict[str, float]
    params: dict[str, Any]
    policy: dict
    attrs: dict[str, Any]
    path: Path | None = None


@dataclass
class SearchResult:
    """The outcome of :func:`cachelab.search.run_search`.

    ``pareto`` is sorted by the first cost objective (cheapest first); ``yaml_paths[i]`` holds ``pareto[i]``'s
    policy in the form ``cachelab.apply`` and ``cachelab run --config`` read.
    """

    study_name: str
    storage: str
    out_dir: Path
    objectives: tuple[str, ...]
    directions: list[str]
    pareto: list[ParetoTrial]
    counts: dict[str, int]
    yaml_paths: list[Path] = field(default_factory=list)
    plot_path: Path | None = None
    csv_path: Path | None = None
    #: the trial that ran the policy's default configuration, and the complete trials that dominate it
    baseline: ParetoTrial | None = None
    dominating: list[int] = field(default_factory=list)

    @property
    def best(self) -> ParetoTrial | None:
        return self.pareto[0] if self.pareto else None

    def table(self):
        """A rich table of the Pareto trials."""
        from rich.table import Table

        title = (f"Pareto front of study {self.study_name!r}: {len(self.pareto)} of {self.counts.get('COMPLETE', 0)} "
                 f"complete trials ({self.counts.get('PRUNED', 0)} pruned, {self.counts.get('FAIL', 0)} failed)")
        table = Table(title=title, title_justify="left")
        extra = [m for m in ("psnr", "ssim") if m not in self.objectives]
        for column in ("#", "trial", *self.objectives, "ideal speedup", "computed", *extra, "yaml"):
            table.add_column(column, overflow="fold")
        for i, t in enumerate(self.pareto):
            a = t.attrs
            table.add_row(
                str(i),
                str(t.number),
                *(_format(name, t.values[name]) for name in self.objectives),
                _num(a.get("ideal_speedup"), "{:.2f}x"),
                _num(a.get("computed_fraction"), "{:.1%}"),
                *(_format(m, a[m]) if isinstance(a.get(m), (int, float)) else "-" for m in extra),
                str(t.path) if t.path else "",
            )
        return table

    def baseline_line(self) -> str | None:
        """One line on the default configuration: its values and which trials dominate it."""
        if self.baseline is None:
            return None
        b = self.baseline
        values = ", ".join(f"{k} {_format(k, v)}" for k, v in b.values.items())
        verdict = (f"dominated by trial(s) {', '.join(f'#{n}' for n in self.dominating)}" if self.dominating
                   else "not dominated by any trial")
        return f"policy defaults (trial {b.number}): {values}, ideal speedup {_num(b.attrs.get('ideal_speedup'), '{:.2f}x')}; {verdict}"


def _num(value, fmt: str) -> str:
    return fmt.format(value) if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def _format(name: str, value: float) -> str:
    if name == "macs":
        for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
            if value >= scale:
                return f"{value / scale:.4g} {prefix}MACs"
        return f"{value:.4g} MACs"
    if name == "latency":
        return f"{value:.4g} s"
    if name == "psnr":
        return f"{value:.2f} dB"
    return f"{value:.4f}"


def front_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Optuna's Pareto front of any study (one objective: its best trial; none when no complete trial is feasible)."""
    if len(study.directions) > 1:
        return list(study.best_trials)
    try:
        return [study.best_trial]
    except ValueError:  # no complete (feasible) trial
        return []


def pareto_trials(study: optuna.Study, objectives: Objectives) -> list[FrozenTrial]:
    """Feasible, non-dominated complete trials of a cachelab search, cheapest first."""
    trials = front_trials(study)
    key = next((i for i, n in enumerate(objectives.names) if n in COSTS), 0)
    sign = 1 if objectives.directions[key] == "minimize" else -1
    return sorted(trials, key=lambda t: (sign * t.values[key], t.number))


def write_results(study: optuna.Study, objectives: Objectives, out_dir: Path, storage: str) -> SearchResult:
    """Write ``pareto_<i>.yaml`` (replacing older ones), ``pareto.png``, ``trials.csv`` and ``manifest.json`` (kind
    ``search``: the study's name and storage, for ``cachelab report``) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    counts = {s.name: 0 for s in TrialState}
    for t in trials:
        counts[t.state.name] += 1
    front = pareto_trials(study, objectives)
    for old in out_dir.glob("pareto_*.yaml"):
        old.unlink()
    pareto, paths = [], []
    for i, t in enumerate(front):
        values = dict(zip(objectives.names, t.values))
        path = out_dir / f"pareto_{i}.yaml"
        save_policy_file(resolve_policy(t.user_attrs["policy"]), path)
        header = f"# study {study.study_name!r}, trial {t.number}: " + ", ".join(
            f"{k}={_format(k, v)}" for k, v in values.items()) + "\n"
        path.write_text(header + path.read_text())
        paths.append(path)
        pareto.append(ParetoTrial(t.number, values, dict(t.params), t.user_attrs["policy"], dict(t.user_attrs), path))
    result = SearchResult(study.study_name, storage, out_dir, objectives.names, objectives.directions, pareto, counts,
                          paths)
    base = next((t for t in trials if "baseline" in t.user_attrs and t.state == TrialState.COMPLETE), None)
    if base is not None:
        result.baseline = ParetoTrial(base.number, dict(zip(objectives.names, base.values)), dict(base.params),
                                      base.user_attrs.get("policy", {}), dict(base.user_attrs))
        result.dominating = [t.number for t in trials if t.state == TrialState.COMPLETE and t.number != base.number
                             and _dominates(t.values, base.values, objectives.directions)]
    result.plot_path = plot_front(trials, front, objectives, out_dir / "pareto.png", study.study_name)
    result.csv_path = _csv(trials, objectives, out_dir / "trials.csv")
    write_manifest(out_dir, "search", study=study.study_name, storage=storage, objectives=list(objectives.names),
                   directions=list(objectives.directions))
    return result


def _dominates(a, b, directions) -> bool:
    """``a`` is at least as good as ``b`` in every objective and better in one."""
    better = [x < y if d == "minimize" else x > y for x, y, d in zip(a, b, directions)]
    no_worse = [x <= y if d == "minimize" else x >= y for x, y, d in zip(a, b, directions)]
    return all(no_worse) and any(better)


def plot_front(trials, front, objectives: Objectives, path: Path, name: str) -> Path | None:
    """The cost/quality scatter of the feasible complete trials, ``front`` and the baseline starred; None when no
    trial has both values."""
    cost = next((n for n in objectives.names if n in COSTS), "macs")
    quality = next((n for n in objectives.names if n not in COSTS), None) or next(iter(objectives.floor), "psnr")
    on_front = {t.number for t in front}
    points, infeasible = [], 0
    for t in trials:
        if t.state != TrialState.COMPLETE:
            continue
        if t.user_attrs.get("feasible") is False:
            infeasible += 1
            continue
        c = t.user_attrs.get("macs") if cost == "macs" else t.user_attrs.get("latency_s")
        q = t.user_attrs.get(quality)
        if c is None or q is None:
            continue
        baseline = "baseline" in t.user_attrs
        points.append({
            "cost": c / 1e9 if cost == "macs" else c,
            "quality": -q if quality == "lpips" else q,
            "label": f"#{t.number} (defaults)" if baseline else f"#{t.number}",
            "highlight": t.number in on_front or baseline,
        })
    if path.exists():
        path.unlink()
    if not points:
        return None
    cost_label = "GMACs per generation" if cost == "macs" else "latency per generation (s)"
    quality_label = {"psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "-LPIPS"}[quality]
    title = f"{name}: {len(points)} feasible trials" + (f", {infeasible} infeasible not shown" if infeasible else "")
    return media.pareto_plot(points, path, cost_label=cost_label, quality_label=quality_label, title=title)


def _csv(trials, objectives: Objectives, path: Path) -> Path:
    """Every trial, one row, columns named like Optuna's ``trials_dataframe`` (which needs pandas)."""
    params = sorted({p for t in trials for p in t.params})
    kinds = sorted({k for t in trials for k in (t.user_attrs.get("computed_fraction_by_kind") or {})})
    columns = ["number", "state", *(f"values_{n}" for n in objectives.names), *(f"params_{p}" for p in params),
               *(f"user_attrs_{a}" for a in _ATTR_COLUMNS), *(f"user_attrs_computed_fraction_{k}" for k in kinds),
               "user_attrs_policy", "datetime_start", "datetime_complete", "duration_s"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for t in sorted(trials, key=lambda t: t.number):
            a = t.user_attrs
            by_kind = a.get("computed_fraction_by_kind") or {}
            values = list(t.values) if t.values is not None else [None] * len(objectives.names)
            duration = None
            if t.datetime_complete and t.datetime_start:
                duration = (t.datetime_complete - t.datetime_start).total_seconds()
            writer.writerow([
                t.number, t.state.name, *values, *(t.params.get(p) for p in params),
                *(a.get(k) for k in _ATTR_COLUMNS), *(by_kind.get(k) for k in kinds),
                json.dumps(a["policy"]) if "policy" in a else None,
                t.datetime_start.isoformat() if t.datetime_start else None,
                t.datetime_complete.isoformat() if t.datetime_complete else None,
                duration,
            ])
    return path
