"""``cachelab report``: one self-contained HTML dashboard of what searches, ablations and analyses wrote.

Nothing is generated or measured again; figures the inputs lack (a study's Pareto plot, an ablation's cost/quality
plot, a search trial's reuse map from its policy's plan on the model) are drawn into a temporary directory. Inputs:

* a directory holding ``manifest.json`` (kind ``search``, ``ablation`` or ``analysis``), or whose direct children
  do; one dashboard shows every one it finds. A search directory written before manifests existed is read from its
  ``trials.csv`` and ``pareto_*.yaml`` (and its ``study.db`` when there).
* an Optuna study: its name plus a storage URL, or a storage URL alone when it holds one study.

Panels (each a stable ``id`` in the page): ``pareto`` (cost/quality fronts: :func:`cachelab.search.results.plot_front`
for studies, :func:`cachelab.media.pareto_plot` for ablation arms), ``importances`` (Optuna's
``get_param_importances`` with PED-ANOVA, one ranking per objective), ``trials`` (the trial and arm tables, sortable),
``reuse-maps``, ``samples`` (side-by-side GIFs) and ``analysis`` (the analysis plots and a table of key numbers).

The page is one file: images and videos are ``data:`` URIs, CSS and the small sorting script are inline, nothing
is fetched. The template is rendered with jinja2 (autoescaped). :func:`log_to_wandb` sends the same panels to one
W&B run (``job_type="report"``) as tables, images and videos, through the search's tracker (offline unless
logged in; failures warn).
"""

from __future__ import annotations

import base64
import csv
import datetime
import json
import math
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cachelab
from cachelab import media
from cachelab.errors import CachelabError
from cachelab.manifest import MANIFEST

__all__ = ["Dashboard", "Figure", "Importance", "ReportError", "Section", "Table", "build_dashboard", "log_to_wandb",
           "render_html", "summary_lines", "write_report"]

KINDS = ("search", "ablation", "analysis")
MEDIA_TYPES = {".png": "image/png", ".gif": "image/gif", ".mp4": "video/mp4"}
#: where W&B tracking of a search leaves each trial's reuse map and sample (cachelab.search.tracking)
SEARCH_MEDIA = "media"
TEMPLATES = Path(__file__).with_name("templates")


class ReportError(CachelabError, ValueError):
    """Nothing to report in the input, or an input file that cannot be read."""


# ------------------------------------------------------------------------------------------------------ panels


@dataclass
class Figure:
    """An image (PNG) or video (GIF, MP4) file and its caption."""

    title: str
    path: Path

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() == ".mp4"

    @property
    def is_animation(self) -> bool:
        return self.path.suffix.lower() in (".gif", ".mp4")

    def data_uri(self) -> str:
        kind = MEDIA_TYPES[self.path.suffix.lower()]
        return f"data:{kind};base64," + base64.b64encode(self.path.read_bytes()).decode("ascii")


@dataclass
class Table:
    """Rows of cells (numbers, strings or None), shown sortable."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""


@dataclass
class Importance:
    """One objective's parameter importances (largest first), or why they could not be computed."""

    title: str
    values: dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass
class Section:
    """What one input (a search, an ablation, an analysis) contributes to each panel."""

    kind: str
    name: str
    source: str
    pareto: list[Figure] = field(default_factory=list)
    importances: list[Importance] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    reuse_maps: list[Figure] = field(default_factory=list)
    samples: list[Figure] = field(default_factory=list)
    plots: list[Figure] = field(default_factory=list)
    numbers: list[Table] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)  # panel id -> lines

    def note(self, panel: str, text: str) -> None:
        self.notes.setdefault(panel, []).append(text)


@dataclass
class Dashboard:
    title: str
    sections: list[Section]
    created: str = field(default_factory=lambda: datetime.datetime.now().isoformat(timespec="seconds"))


# ------------------------------------------------------------------------------------------------------ inputs


def is_storage_url(text: str) -> bool:
    return "://" in text or text.startswith("journal:")


def build_dashboard(source: str, storage: str | None = None, work_dir: Path | None = None, reuse_maps: int = 6,
                    title: str | None = None) -> Dashboard:
    """Read ``source`` (a directory, a study name with ``storage``, or a storage URL) into a :class:`Dashboard`.

    Figures the inputs do not hold (a study's Pareto plot and trial reuse maps) are drawn into ``work_dir``;
    ``reuse_maps`` caps how many Pareto trials get one (0: none).
    """
    work_dir = Path(work_dir) if work_dir is not None else Path(".")
    if storage is not None or is_storage_url(source):
        from cachelab.search.storage import display_url

        url = storage if storage is not None else source
        name = source if storage is not None else None
        study = _load_study(url, name)
        section = _study_section(study, display_url(url), None, work_dir, reuse_maps)
        return Dashboard(title or f"study {study.study_name}", [section])
    root = Path(source)
    if not root.is_dir():
        raise ReportError(f"{source!r} is no directory; give a directory written by cachelab search, ablate or "
                          "analyze, a study name with --storage URL, or an Optuna storage URL")
    sections = []
    for index, (directory, manifest) in enumerate(_inputs(root)):
        kind = manifest["kind"] if manifest is not None else "search"  # no manifest: a search's trials.csv
        # figures drawn for this input go to a folder of its own: two inputs may share a name (one ablation run
        # on two models), and each figure is read only when the page is rendered
        drawn = work_dir / f"input-{index}"
        drawn.mkdir(parents=True, exist_ok=True)
        if kind == "search":
            sections.append(_search_dir_section(directory, manifest, drawn, reuse_maps))
        elif kind == "ablation":
            sections.append(_ablation_section(directory, manifest, drawn))
        else:
            sections.append(_analysis_section(directory, manifest))
    if not sections:
        raise ReportError(
            f"nothing to report in {str(root)!r}: looked for {MANIFEST} of kind {', '.join(KINDS)} (written by "
            f"cachelab search, ablate and analyze) or a search's trials.csv, in the directory and its direct "
            f"children, and found none")
    return Dashboard(title or f"cachelab report: {root.resolve().name}", sections)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read {str(path)!r}: {exc}") from None


def _inputs(root: Path) -> list[tuple[Path, dict | None]]:
    """``root`` and its direct children (by name) that hold a manifest, or a search's ``trials.csv`` written before
    manifests existed (manifest None)."""
    out = []
    for d in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
        path = d / MANIFEST
        if not path.is_file():
            if (d / "trials.csv").is_file():
                out.append((d, None))
            continue
        manifest = _read_json(path)
        kind = manifest.get("kind") if isinstance(manifest, dict) else None
        if kind not in KINDS:
            raise ReportError(f"{str(path)!r}: kind {kind!r} is not one cachelab report reads; allowed: "
                              f"{', '.join(KINDS)}")
        out.append((d, manifest))
    return out


def _attach(section: Section, panel: str, figures: list[Figure], title: str, directory: Path, rel: str | None) -> None:
    """Add ``directory/rel`` to ``figures`` when it is there in a format the page embeds; else say why not."""
    if not rel:
        return
    path = directory / rel
    if not path.is_file():
        section.note(panel, f"{title}: {path} is missing")
    elif path.suffix.lower() not in MEDIA_TYPES:
        section.note(panel, f"{title}: {path} is not one of {', '.join(MEDIA_TYPES)}")
    else:
        figures.append(Figure(title, path))


# ------------------------------------------------------------------------------------------------------ studies


def _load_study(url: str, name: str | None):
    import optuna

    from cachelab.search.storage import display_url, open_storage

    missing = _missing_file(url)
    if missing is not None:
        raise ReportError(f"storage {display_url(url)}: no file {str(missing)!r}")
    store = open_storage(url)
    names = [s.study_name for s in optuna.get_all_study_summaries(store, include_best_trial=False)]
    shown = display_url(url)
    if name is None:
        if len(names) != 1:
            listed = ", ".join(repr(n) for n in sorted(names)) or "none"
            raise ReportError(f"{shown} holds {len(names)} studies ({listed}); name one: cachelab report STUDY "
                              f"--storage {shown}")
        name = names[0]
    if name not in names:
        listed = ", ".join(repr(n) for n in sorted(names)) or "none"
        raise ReportError(f"no study {name!r} in {shown}; its studies: {listed}")
    return optuna.load_study(study_name=name, storage=store)


def _missing_file(url: str) -> Path | None:
    """The file a SQLite or journal URL names when it does not exist (opening it would create an empty one)."""
    if url.startswith("journal:"):
        path = Path(url[len("journal:"):]).expanduser()
    elif url.startswith("sqlite:") and "///" in url:
        path = Path(url.split("///", 1)[1].split("?", 1)[0]).expanduser()
        if str(path) in ("", ":memory:"):
            return None
    else:
        return None
    return None if path.is_file() else path


def _search_dir_section(directory: Path, manifest: dict | None, work_dir: Path, reuse_maps: int) -> Section:
    """A search directory: its study when the storage opens (the manifest's, else ``study.db`` beside it), else
    what its files hold."""
    candidates = []
    if manifest and manifest.get("storage"):
        candidates.append((manifest["storage"], manifest.get("study")))
    if (directory / "study.db").is_file():
        name = manifest.get("study") if manifest else None
        candidates.append((f"sqlite:///{(directory / 'study.db').resolve()}", name))
    problems = []
    for url, name in candidates:
        try:
            study = _load_study(url, name)
        except CachelabError as exc:
            problems.append(str(exc))
            continue
        return _study_section(study, url, directory, work_dir, reuse_maps)
    return _csv_section(directory, problems)


def _objectives_of(study):
    """The search's :class:`~cachelab.search.objectives.Objectives`, or None for a study cachelab did not make."""
    from cachelab.search.objectives import COSTS, QUALITIES, Objectives

    setup = study.user_attrs.get("cachelab_setup") or {}
    spec = setup.get("objectives") or {}
    names = spec.get("names") or study.metric_names or []
    if len(names) != len(study.directions) or any(n not in COSTS and n not in QUALITIES for n in names):
        return None
    return Objectives(tuple(names), dict(spec.get("floor") or {}), dict(spec.get("ceiling") or {}))


def _study_section(study, url: str, directory: Path | None, work_dir: Path, reuse_maps: int) -> Section:
    from optuna.trial import TrialState

    from cachelab.search.results import front_trials, pareto_trials, plot_front

    section = Section("search", study.study_name, f"study {study.study_name!r} in {url}")
    objectives = _objectives_of(study)
    names = list(objectives.names) if objectives else (study.metric_names or
                                                       [f"value_{i}" for i in range(len(study.directions))])
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if objectives is not None:
        front = pareto_trials(study, objectives)
        plot = plot_front(trials, front, objectives, work_dir / f"{_safe(study.study_name)}-pareto.png",
                          study.study_name)
        if plot is not None:
            section.pareto.append(Figure(f"{study.study_name}: Pareto front", plot))
        else:
            section.note("pareto", f"{study.study_name}: no feasible complete trial with both a cost and a quality "
                                   "value to plot")
    else:
        front = front_trials(study)
        section.note("pareto", f"{study.study_name}: not a cachelab search (objectives {names}); no Pareto plot")
    section.importances = _importances(study, names, len(complete))
    section.tables.append(_trial_table(study.study_name, trials, names, {t.number for t in front}))
    if objectives is not None:  # trials of a cachelab search hold their policies
        setup = study.user_attrs.get("cachelab_setup") or {}
        _trial_media(section, directory, front, (setup.get("workload") or {}), work_dir, reuse_maps)
    return section


def _importances(study, names: list[str], complete: int) -> list[Importance]:
    """Optuna's PED-ANOVA importances (no scikit-learn, which fANOVA needs; deterministic): which parameters set the
    best 10 % of trials apart, one ranking per objective and, with several objectives, one for reaching the front."""
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances
    from optuna.study import StudyDirection

    targets = [(f"importance for {name}", (lambda t, i=i, sign=(1 if d == StudyDirection.MINIMIZE else -1):
                                           sign * t.values[i]))  # PED-ANOVA ranks low targets best
               for i, (name, d) in enumerate(zip(names, study.directions))]
    if len(names) > 1:
        targets.append(("importance for reaching the Pareto front", None))
    top = math.ceil(0.1 * complete)
    rough = (f"{top} of {complete} complete trials are in the top 10 %: a rough ranking (PED-ANOVA wants at least 5)"
             if top < 5 else "")
    out = []
    for label, target in targets:
        title = f"{study.study_name}: {label}"
        if complete < 2:
            out.append(Importance(title, note=f"not computable: {complete} complete trial(s); Optuna needs at least 2"))
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                values = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator(), target=target)
            except (RuntimeError, ValueError) as exc:
                out.append(Importance(title, note=f"not computable: {exc}"))
                continue
        equal = next((str(w.message) for w in caught if "will be equal" in str(w.message)), None)
        if not values or equal or not any(values.values()):
            why = equal or "no parameter varies across the complete trials"
            out.append(Importance(title, note=f"not computable: {why}"))
            continue
        out.append(Importance(title, {k: float(v) for k, v in values.items()}, rough))
    return out


_TRIAL_ATTRS = (("ideal speedup", "ideal_speedup"), ("computed", "computed_fraction"), ("PSNR dB", "psnr"),
                ("SSIM", "ssim"), ("latency s", "latency_s"), ("measured speedup", "measured_speedup"))


def _trial_table(name: str, trials, objectives: list[str], front: set[int]) -> Table:
    params = sorted({p for t in trials for p in t.params})
    attrs = [(label, key) for label, key in _TRIAL_ATTRS
             if key not in objectives and any(isinstance(t.user_attrs.get(key), (int, float)) for t in trials)]
    columns = ["trial", "state", "front", *(_objective_label(n) for n in objectives), *(a for a, _ in attrs), *params,
               "note"]
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        values = list(t.values) if t.values is not None else [None] * len(objectives)
        values = [v / 1e9 if n == "macs" and v is not None else v for n, v in zip(objectives, values)]
        a = t.user_attrs
        note = a.get("baseline") or a.get("pruned_reason") or a.get("error") or ""
        rows.append([t.number, t.state.name, "yes" if t.number in front else "", *values,
                     *(a.get(k) for _, k in attrs), *(t.params.get(p) for p in params), str(note)[:200]])
    return Table(f"{name}: {len(trials)} trials", columns, rows)


def _objective_label(name: str) -> str:
    return {"macs": "GMACs", "latency": "latency s", "psnr": "PSNR dB"}.get(name, name)


def _trial_media(section: Section, directory: Path | None, front, workload: dict, work_dir: Path,
                 limit: int) -> None:
    """Reuse maps and samples of the Pareto trials: those W&B tracking left in ``<dir>/media``, else (reuse maps
    only) the policy's plan on the search's model."""
    media_dir = directory / SEARCH_MEDIA if directory is not None else None
    missing = []
    for t in front[:limit] if limit > 0 else []:
        label = f"{section.name}: trial {t.number}"
        stored = media_dir / f"trial_{t.number}_reuse.png" if media_dir is not None else None
        if stored is not None and stored.is_file():
            section.reuse_maps.append(Figure(label, stored))
        elif "policy" in t.user_attrs:
            missing.append(t)
        sample = media_dir / f"trial_{t.number}_sample.gif" if media_dir is not None else None
        if sample is not None and sample.is_file():
            section.samples.append(Figure(f"{label} (first prompt)", sample))
    if limit > 0 and len(front) > limit:
        section.note("reuse-maps", f"{section.name}: reuse maps of the first {limit} of {len(front)} Pareto trials "
                                   "(--reuse-maps N for more)")
    if missing:
        _planned_maps(section, missing, workload, work_dir)
    if front and not section.samples:
        section.note("samples", f"{section.name}: the search logged no sample videos (cachelab search --wandb keeps "
                                "each trial's first-prompt video in its output directory's media/)")


def _planned_maps(section: Section, trials, workload: dict, work_dir: Path) -> None:
    """Each trial's compute/reuse plan on the search's model (built on the CPU; no generation runs)."""
    from tqdm.auto import tqdm

    from cachelab.zoo.registry import create_model

    model_name, steps = workload.get("model"), workload.get("steps")
    if not model_name or not steps:
        section.note("reuse-maps", f"{section.name}: the study records no model and steps; no reuse maps")
        return
    try:
        model = create_model(model_name, device="cpu")
    except CachelabError as exc:
        section.note("reuse-maps", f"{section.name}: cannot build {model_name!r} for the reuse maps: {exc}")
        return
    scheduler = getattr(model.target, "scheduler", None)
    timesteps = None
    if scheduler is not None:
        scheduler.set_timesteps(steps)
        timesteps = [float(x) for x in scheduler.timesteps]
    for t in tqdm(trials, desc=f"reuse maps of {section.name}", leave=False, disable=len(trials) < 3):
        with cachelab.apply(model.target, t.user_attrs["policy"], cfg=model.cfg, count_macs=False) as handle:
            plan = handle.plan(steps, timesteps)
            deciding = [p.name for p in handle.policy.policies if not p.static]
        if deciding:
            shown = "no plan ahead" if not plan else "the map shows only the other sites"
            section.note("reuse-maps", f"{section.name}: trial {t.number}: {', '.join(deciding)} decide(s) while "
                                       f"running (data-dependent): {shown}; cachelab search --wandb records the "
                                       "reuse each trial had")
        if not plan:
            continue
        path = media.reuse_map(plan, work_dir / f"{_safe(section.name)}-trial_{t.number}_reuse.png",
                               title=f"{section.name} trial {t.number} (plan, {steps} steps)")
        section.reuse_maps.append(Figure(f"{section.name}: trial {t.number} (plan on {model_name})", path))


def _safe(name: str) -> str:
    return re.sub(r"[^\w.+-]+", "_", name)


def _csv_section(directory: Path, problems: list[str]) -> Section:
    """A search directory whose study cannot be opened: the trial table from ``trials.csv`` and the plot it has."""
    section = Section("search", directory.name, str(directory))
    for problem in problems:
        section.note("trials", f"study not opened ({problem}); shown from trials.csv")
    path = directory / "trials.csv"
    if not path.is_file():
        raise ReportError(f"{str(directory)!r}: the search's study cannot be opened and there is no trials.csv: "
                          + "; ".join(problems))
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ReportError(f"{str(path)!r} is empty")
    keep = [i for i, c in enumerate(rows[0]) if c not in ("user_attrs_policy", "datetime_start", "datetime_complete")]
    section.tables.append(Table(f"{directory.name}: {len(rows) - 1} trials (trials.csv)", [rows[0][i] for i in keep],
                                [[_number(r[i]) for i in keep] for r in rows[1:]]))
    if (directory / "pareto.png").is_file():
        section.pareto.append(Figure(f"{directory.name}: Pareto front", directory / "pareto.png"))
    section.note("importances", f"{directory.name}: importances need the study; trials.csv has no search space")
    fronts = sorted(directory.glob("pareto_*.yaml"))
    if fronts:
        section.note("trials", f"{len(fronts)} Pareto policies: " + ", ".join(p.name for p in fronts))
    return section


def _number(text: str) -> Any:
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


# ------------------------------------------------------------------------------------------------------ ablations


def _ablation_section(directory: Path, manifest: dict, work_dir: Path) -> Section:
    from cachelab.bench import BenchReport, CaseResult, format_table

    name = manifest.get("name") or directory.name
    if manifest.get("model"):  # one spec is often run on several models: say which one every figure is of
        name = f"{name} on {manifest['model']}"
    section = Section("ablation", name, str(directory))
    table_path = directory / "table.json"
    if table_path.is_file():
        table = _read_json(table_path)
        arms = table.get("rows") or []
    else:  # an ablation still running (or stopped): its finished arms
        table = {}
        arms = [_read_json(p) for p in sorted((directory / "arms").glob("*.json"))]
        arms.sort(key=lambda a: a.get("policy") is not None)  # the uncached baseline first
        section.note("trials", f"{name}: no table.json yet; {len(arms)} finished arm(s) from arms/")
    if not arms:
        section.note("trials", f"{name}: no finished arm")
        return section
    results = []
    for arm in arms:
        try:
            results.append(CaseResult(**arm["result"]))
        except (KeyError, TypeError) as exc:
            raise ReportError(f"{str(directory)!r}: arm {arm.get('arm')!r} has no bench result ({exc})") from None
    report = BenchReport(table.get("model") or manifest.get("model", ""), True, table.get("device", ""),
                         table.get("steps", 0), table.get("guidance", 0.0), table.get("prompts", []),
                         table.get("seeds", []), table.get("repeats", 0), results)
    rows = format_table(report)
    header = ["arm", *rows[0][1:]]
    setup = ", ".join(f"{k} {table[k]}" for k in ("model", "device", "steps", "guidance", "repeats") if k in table)
    section.tables.append(Table(f"{name}: {len(arms)} arms", header,
                                [[a["arm"], *row[1:]] for a, row in zip(arms, rows[1:])], note=setup))
    points = [{"cost": r.computed_macs / 1e9, "quality": r.psnr, "label": a["arm"], "highlight": False}
              for a, r in zip(arms, results) if r.computed_macs and r.psnr is not None and not r.error]
    if points:
        path = media.pareto_plot(points, work_dir / f"{_safe(name)}-arms.png",
                                 cost_label="GMACs per generation", quality_label="PSNR (dB)",
                                 title=f"{name}: arms against the uncached output")
        section.pareto.append(Figure(f"{name}: arms", path))
    else:
        section.note("pareto", f"{name}: no arm has both MACs and PSNR")
    for arm in arms:
        _attach(section, "reuse-maps", section.reuse_maps, f"{name}: {arm['arm']} (reuse map)", directory,
                arm.get("reuse_map"))
        _attach(section, "samples", section.samples, f"{name}: {arm['arm']} (uncached vs arm)", directory,
                arm.get("sample"))
    return section


# ------------------------------------------------------------------------------------------------------ analyses


def _analysis_section(directory: Path, manifest: dict) -> Section:
    model = manifest.get("model") or directory.name
    section = Section("analysis", model, str(directory))
    path = directory / "analysis.json"
    if not path.is_file():
        section.note("analysis", f"{model}: {path} is missing")
        return section
    data = _read_json(path)
    for key, rel in (data.get("plots") or {}).items():
        _attach(section, "analysis", section.plots, f"{model}: {key.replace('_', ' ')}", directory, rel)
    setup = ", ".join(f"{k} {data[k]}" for k in ("steps", "guidance") if k in data)
    rows = []
    for kind, values in (data.get("site_kinds") or {}).items():
        rel = [v for v in values.get("adjacent_rel_l1") or [] if v is not None]
        mse = [v for v in values.get("adjacent_mse") or [] if v is not None]
        peak = max(range(len(rel)), key=rel.__getitem__) + 1 if rel else None
        rows.append([kind, values.get("sites"), _mean(rel), max(rel) if rel else None, peak, _mean(mse)])
    if rows:
        section.numbers.append(Table(f"{model}: step-to-step change per site kind",
                                     ["site kind", "sites", "mean rel. L1", "max rel. L1", "max at step", "mean MSE"],
                                     rows, note=setup))
    cfg = data.get("cfg")
    if cfg:
        rel_diff = [v for v in cfg.get("rel_diff") or [] if v is not None]
        low = [v for v in cfg.get("low_freq_share") or [] if v is not None]
        high = [v for v in cfg.get("high_freq_share") or [] if v is not None]
        section.numbers.append(Table(
            f"{model}: CFG branches (|uncond - cond| / |cond| of the denoiser output)",
            ["quantity", "first step", "last step", "mean", "min", "max"],
            [[label, v[0], v[-1], _mean(v), min(v), max(v)] for label, v in
             (("relative difference", rel_diff), ("low-frequency share", low), ("high-frequency share", high)) if v],
            note=setup))
    else:
        section.note("analysis", f"{model}: runs without CFG (no CFG numbers)")
    return section


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


# ------------------------------------------------------------------------------------------------------ output


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


def _sort_key(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and not math.isfinite(value)) else str(value)


def render_html(dashboard: Dashboard) -> str:
    """The dashboard as one HTML document (jinja2, autoescaped; every figure embedded)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["show"] = _show
    env.filters["sortkey"] = _sort_key
    template = env.get_template("report.html")
    sections = dashboard.sections
    return template.render(
        title=dashboard.title,
        created=dashboard.created,
        version=cachelab.__version__,
        sections=sections,
        panels=_PANELS,
        has={panel: any(_panel_items(s, panel) or s.notes.get(panel) for s in sections) for panel, _, _ in _PANELS},
    )


#: (id, heading, what produces it) in page order
_PANELS = (
    ("pareto", "Pareto front", "a search, or an ablation with MACs and PSNR per arm"),
    ("importances", "Parameter importances", "a search study with at least 2 complete trials"),
    ("trials", "Trials and arms", "a search or an ablation"),
    ("reuse-maps", "Reuse maps", "a search's Pareto trials or an ablation's arms"),
    ("samples", "Samples: uncached beside cached", "an ablation's arms, or a search run with --wandb"),
    ("analysis", "Analysis", "cachelab analyze"),
)


def _panel_items(section: Section, panel: str) -> list:
    return {"pareto": section.pareto, "importances": section.importances, "trials": section.tables,
            "reuse-maps": section.reuse_maps, "samples": section.samples,
            "analysis": section.plots + section.numbers}[panel]


def write_report(source: str, out: str | Path | None = None, storage: str | None = None, reuse_maps: int = 6,
                 title: str | None = None, wandb: bool = False,
                 wandb_project: str | None = None) -> tuple[Path, Dashboard]:
    """Build the dashboard of ``source`` and write it to ``out`` (default: ``SOURCE/report.html`` for a directory,
    ``reports/<study>.html`` for a study); optionally log it to W&B. Returns the path and the dashboard."""
    if reuse_maps < 0:
        raise ReportError(f"reuse_maps={reuse_maps}: give 0 (none) or a positive number of Pareto trials")
    with tempfile.TemporaryDirectory(prefix="cachelab-report-") as tmp:
        dashboard = build_dashboard(source, storage, Path(tmp), reuse_maps, title)
        if out is None:
            from_dir = storage is None and not is_storage_url(source)
            study_page = Path("reports") / f"{_safe(dashboard.sections[0].name)}.html"
            out = Path(source) / "report.html" if from_dir else study_page
        out = Path(out)
        if out.is_dir():
            raise ReportError(f"--out {str(out)!r} is a directory; give an .html file path")
        html = render_html(dashboard)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReportError(f"cannot write {str(out)!r}: {exc.strerror or exc}") from None
        try:
            media.atomic_write(out, lambda tmp: Path(tmp).write_text(html, encoding="utf-8"))
        except media.MediaPathError as exc:
            raise ReportError(str(exc)) from None
        if wandb:
            log_to_wandb(dashboard, wandb_project, out.parent)
    return out, dashboard


def log_to_wandb(dashboard: Dashboard, project: str | None = None, out_dir: str | Path = ".") -> None:
    """One W&B run (``job_type="report"``) with the dashboard's panels: ``<panel>/<title>`` tables (trials, arms,
    importances, analysis numbers), images (Pareto plots, reuse maps, analysis plots) and videos (samples)."""
    from cachelab.search.tracking import Tracker, TrackingConfig

    def panels(wandb) -> dict[str, Any]:
        logged: dict[str, Any] = {}
        for s in dashboard.sections:
            for fig in s.pareto:
                logged[f"pareto/{fig.title}"] = wandb.Image(str(fig.path))
            for imp in s.importances:
                if imp.values:
                    logged[f"importances/{imp.title}"] = wandb.Table(columns=["parameter", "importance"],
                                                                     data=[[k, v] for k, v in imp.values.items()])
            for table in s.tables + s.numbers:
                panel = "trials" if table in s.tables else "analysis"
                logged[f"{panel}/{table.title}"] = wandb.Table(
                    columns=table.columns, data=[[_wandb_cell(c) for c in row] for row in table.rows])
            for fig in s.reuse_maps:
                logged[f"reuse_maps/{fig.title}"] = wandb.Image(str(fig.path))
            for fig in s.samples:
                logged[f"samples/{fig.title}"] = wandb.Video(str(fig.path), format=fig.path.suffix.lstrip(".").lower())
            for fig in s.plots:
                logged[f"analysis/{fig.title}"] = wandb.Image(str(fig.path))
        return logged

    sources = [{"kind": s.kind, "name": s.name, "source": s.source} for s in dashboard.sections]
    tracker = Tracker(TrackingConfig(True, "report", str(out_dir), project, {"title": dashboard.title,
                                                                                "sources": sources}))
    name = _safe(dashboard.title)
    tracker.log_run(name, "report", dict(tracker.config.setup), {"sections": len(dashboard.sections)}, build=panels,
                    what=f"{name} (report)")


def _wandb_cell(value: Any) -> Any:
    """W&B table cells: numbers stay numbers (NaN/inf as None), everything else text."""
    if value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def summary_lines(dashboard: Dashboard) -> list[str]:
    """One line per input: what it put on the page."""
    lines = []
    for s in dashboard.sections:
        counts = {"Pareto plots": len(s.pareto), "tables": len(s.tables) + len(s.numbers),
                  "importances": sum(1 for i in s.importances if i.values), "reuse maps": len(s.reuse_maps),
                  "samples": len(s.samples), "analysis plots": len(s.plots)}
        shown = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        lines.append(f"{s.kind} {s.name} ({s.source}): {shown or 'nothing to show'}")
    return lines

