"""``run_search``: an Optuna study of a policy's schedule against cost and quality; resumable and parallel.

One study lives in one Optuna storage (SQLite file by default; any storage URL, e.g. PostgreSQL, lets workers on
many machines share it). The study remembers the policy, a hash of the search space, the objectives and the
workload (model, prompts, seeds, steps, guidance); reopening it with different ones is an error, reopening it
with the same ones resumes it: ``trials`` is the number of finished (complete or pruned) trials the study should
hold, so a search killed after 12 of 40 trials runs 28 more. See :mod:`cachelab.search.storage` for trials that
killed workers left RUNNING.

Workers (``workers=N``) are fresh Python processes (``python -m cachelab.search.worker``: spawn semantics, no
fork of CUDA state, and no re-run of the caller's ``__main__``) that each load the model and run trials on the
shared study until it holds ``trials`` finished trials; with CUDA, worker *i* uses GPU ``i % n_gpus``. The main
process computes the reference videos first, shows progress, and stops the others when one fails; each worker's
output goes to ``<out>/workers/worker_<i>.log``.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

import cachelab
from cachelab.errors import CachelabError, LayoutError, PolicyError, SiteError
from cachelab.policies.registry import loaded_plugins
from cachelab.zoo.registry import VideoModel, create_model, model_entry
from cachelab.search.errors import SearchError, StudyMismatchError
from cachelab.search.objectives import Evaluator, Objectives, Workload, load_references, parse_objectives, prune_reason
from cachelab.search.results import SearchResult, write_results
from cachelab.search.space import SearchSpace, build_space, load_space_file
from cachelab.search.storage import (
    display_url,
    fail_dead_trials,
    is_memory,
    open_storage,
    register_worker,
    state_counts,
)
from cachelab.search.tracking import Tracker, TrackingConfig
from cachelab.spec import policy_to_dict, resolve_policy

__all__ = ["DEFAULT_OUT", "run_search"]

#: parent of the default output directory (``runs/<study>``)
DEFAULT_OUT = Path("runs")
SETUP_ATTR = "cachelab_setup"
#: a worker stops after this many failed trials in a row (e.g. every sampled schedule is invalid for the model)
MAX_FAILURES_IN_A_ROW = 10
_ACTIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


class _TrialError(Exception):
    """A sampled schedule the model cannot run (the trial is marked FAIL, the search goes on)."""


class _Surplus(Exception):
    """Another worker started the study's last trial at the same moment (this trial is marked FAIL)."""


def run_search(
    model: str | VideoModel = "tiny-latte",
    policy: str | Sequence[str] = "fastercache",
    trials: int = 40,
    objectives: str | Sequence[str] = ("macs", "psnr"),
    prompts: int | Sequence[str] = 4,
    storage: str | None = None,
    study: str | None = None,
    workers: int | None = None,
    wandb: bool = False,
    space: str | Path | dict | None = None,
    floor: Any = None,
    ceiling: Any = None,
    steps: int | None = None,
    guidance: float | None = None,
    out_dir: str | Path | None = None,
    seed: int | None = None,
    baseline: bool = True,
    progress: bool = True,
    wandb_project: str | None = None,
) -> SearchResult:
    """Search a policy's schedule for the best cost/quality trade-offs; resumable, parallel, optionally on W&B.

    Args:
        model: a registered model name (``cachelab.models.list_models()``), or a built :class:`VideoModel`
            (``workers=1`` only).
        policy: a registered policy (``"fastercache"``) or a list of them to compose (``["pab", "cfg_cache"]``).
        trials: finished (complete or pruned) trials the study should hold when the search ends.
        objectives: a cost (``macs``, ``latency``) and quality metrics (``psnr``, ``ssim``, ``lpips``) for a Pareto
            search, or one objective with a ``floor`` (quality) or ``ceiling`` (cost).
        prompts: how many of the model's evaluation prompts (seeds 0, 1, ...), or the prompts themselves.
        storage: an Optuna storage URL (default ``sqlite:///<out_dir>/study.db``), ``journal:<file>`` or ``memory``.
        study: the study's name (default ``<model>-<policy>``); an existing study of that name resumes.
        workers: worker processes on the study (default: one per visible GPU when several, else 1).
        wandb: log every trial and a summary to Weights & Biases (offline unless logged in).
        space: a YAML file or mapping that fixes or overrides parameters of the policy's declared space.
        floor: quality bounds, e.g. ``{"psnr": 28}`` or ``"psnr=28"`` (``lpips``: an upper bound).
        ceiling: cost bounds, e.g. ``"macs=0.5"`` (fraction of the uncached MACs) or ``"latency=2.5"`` (s).
        steps, guidance: sampling steps and guidance scale (default: the model's).
        out_dir: where references, ``pareto_<i>.yaml``, ``pareto.png`` and ``trials.csv`` go (default
            ``runs/<study>``).
        seed: sampler seed (each worker and each resumed run offsets it); None for a random one.
        baseline: make the study's first trial the policy's default configuration (counted in ``trials``), so the
            Pareto table and plot show where the published settings sit beside what the search found.
        progress: show a progress bar.
        wandb_project: W&B project (default ``$WANDB_PROJECT`` or ``cachelab``).

    Returns:
        :class:`SearchResult`: the Pareto trials and the files written.
    """
    trials = _positive_int("trials", trials)
    if steps is not None:
        steps = _positive_int("steps", steps)
    if guidance is not None and (isinstance(guidance, bool) or not isinstance(guidance, (int, float))
                                 or not math.isfinite(guidance)):
        raise SearchError(f"guidance={guidance!r}: give a finite number")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise SearchError(f"seed={seed!r}: give a whole number or None")
    space_data = load_space_file(space) if isinstance(space, (str, Path)) else space
    search_space = build_space(policy, space_data)
    objs = parse_objectives(objectives, floor, ceiling)
    objs.check_available()
    model_obj = model if isinstance(model, VideoModel) else None
    if model_obj is None:
        if not isinstance(model, str):
            raise SearchError(f"model={model!r}: give a registered model name or a VideoModel")
        model_entry(model)  # unknown names fail here, listing the known ones
    model_name = model_obj.name if model_obj is not None else model
    study_name = study or f"{model_name}-{search_space.label}"
    if not isinstance(study_name, str) or not study_name.strip():
        raise SearchError(f"study={study!r}: give a non-empty name")
    out = Path(out_dir) if out_dir is not None else DEFAULT_OUT / re.sub(r"[^\w.+-]+", "_", study_name)
    storage_url = storage if storage is not None else f"sqlite:///{(out / 'study.db').resolve()}"
    n_workers, devices = _plan_workers(workers, trials, storage_url, model_obj is not None)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SearchError(f"cannot create the output directory {str(out)!r}: {exc.strerror or exc}") from None

    heartbeat = "://" in storage_url
    store = open_storage(storage_url)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        if model_obj is None:
            model_obj = create_model(model_name, device=devices[0] if devices[0] != "cpu" else None)
        workload = _workload(model_obj, model_name, prompts, steps, guidance)
        setup = {
            "cachelab": cachelab.__version__,
            "policy": search_space.label,
            "space_hash": search_space.fingerprint(),
            "space": search_space.to_dict(),
            "objectives": objs.to_dict(),
            "workload": workload.to_dict(),
        }
        st = _open_study(study_name, store, storage_url, objs, setup, seed)
        fail_dead_trials(st, heartbeat)
        if baseline and not st.get_trials(deepcopy=False):
            defaults = search_space.default_values()
            if defaults is None:
                warnings.warn(
                    "the policy's defaults lie outside the searched space (narrowed by --space): no baseline trial",
                    stacklevel=2,
                )
            else:  # the policy's own defaults (the paper settings) run first, so every front shows where they sit
                st.enqueue_trial(defaults, user_attrs={"baseline": "policy defaults"})
        references = load_references(model_obj, workload, out / "references")
        tracking = TrackingConfig(wandb, study_name, str(out), wandb_project,
                                  {"study": study_name, "model": model_name, "policy_name": search_space.label,
                                   "objectives": list(objs.names), "steps": workload.steps,
                                   "guidance": workload.guidance, "prompts": len(workload.prompts)})
        finished = _finished(st)
        bar = _progress_bar(progress, trials, finished, study_name)
        try:
            if finished < trials and n_workers == 1:
                evaluator = Evaluator(model_obj, workload, references, objs)
                _optimize(st, search_space, objs, evaluator, Tracker(tracking), trials, heartbeat,
                          on_trial=lambda frozen: _advance(bar, st), device=str(evaluator.device))
            elif finished < trials:
                del model_obj
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                payload = {
                    "policy": list(search_space.policies),
                    "space": space_data,
                    "space_hash": search_space.fingerprint(),
                    "objectives": objs.to_dict(),
                    "workload": workload.to_dict(),
                    "storage": storage_url,
                    "heartbeat": heartbeat,
                    "study": study_name,
                    "out_dir": str(out),
                    "trials": trials,
                    "seed": seed,
                    "tracking": tracking,
                    "plugins": loaded_plugins(),  # policies from the user's modules exist in the workers too
                    "threads": max(1, (os.cpu_count() or 1) // n_workers) if devices[0] == "cpu" else None,
                }
                _run_workers(payload, devices, st, bar)
        finally:
            bar.close()
        result = write_results(st, objs, out, display_url(storage_url))
        _log_summary(Tracker(tracking), result)
        return result
    finally:
        optuna.logging.set_verbosity(verbosity)


# ------------------------------------------------------------------------------------------------------ checks


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SearchError(f"{name}={value!r}: give a positive whole number")
    return value


def _plan_workers(workers, trials: int, storage_url: str, model_object: bool) -> tuple[int, list[str]]:
    """The number of workers and each one's device."""
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if workers is None:
        workers = n_gpus if n_gpus > 1 and not is_memory(storage_url) and not model_object else 1
        workers = min(workers, trials)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SearchError(f"workers={workers!r}: give a positive whole number")
    cpus = os.cpu_count() or 1
    if workers > 1 and is_memory(storage_url):
        raise SearchError(
            f"workers={workers} needs a storage the worker processes share; an in-memory study lives in one process. "
            "Use the default SQLite file, journal:<file> or a database URL"
        )
    if workers > trials:
        raise SearchError(f"workers={workers} is more than trials={trials}; each worker needs at least one trial")
    if workers > 2 * cpus:
        raise SearchError(f"workers={workers} is more than twice the {cpus} CPU cores here; use at most {2 * cpus}")
    if workers > 1 and model_object:
        raise SearchError(
            f"workers={workers} load the model by name in each process; pass the model's name, not a VideoModel"
        )
    devices = [f"cuda:{i % n_gpus}" if n_gpus else "cpu" for i in range(workers)]
    return workers, devices


def _workload(model: VideoModel, name: str, prompts, steps, guidance) -> Workload:
    if isinstance(prompts, bool):
        raise SearchError(f"prompts={prompts!r}: give a number of prompts or a list of prompts")
    if isinstance(prompts, int):
        texts = list(model.prompts(_positive_int("prompts", prompts)))
    elif isinstance(prompts, (list, tuple)) and prompts and all(isinstance(p, str) for p in prompts):
        texts = list(prompts)
    else:
        raise SearchError(f"prompts={prompts!r}: give a number of prompts or a non-empty list of prompts")
    for text in texts:
        model.check_prompt(text)
    return Workload(name, tuple(texts), tuple(range(len(texts))), int(steps or model.steps),
                    float(model.guidance if guidance is None else guidance))


def _open_study(name: str, store, url: str, objs: Objectives, setup: dict, seed) -> optuna.Study:
    st = optuna.create_study(study_name=name, storage=store, directions=objs.directions,
                             sampler=_sampler(seed, 0, 0), load_if_exists=True)
    existing = st.user_attrs.get(SETUP_ATTR)
    where = f"study {name!r} in {display_url(url)}"
    if existing is None:
        if st.get_trials(deepcopy=False):
            raise StudyMismatchError(f"{where} already holds trials that cachelab search did not create; "
                                     "use another study name or storage")
        st.set_user_attr(SETUP_ATTR, setup)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            st.set_metric_names(list(objs.names))
    else:
        problems = _setup_differences(existing, setup)
        if problems:
            raise StudyMismatchError(
                f"{where} was created for another search:\n  " + "\n  ".join(problems)
                + "\nUse another study name (--study) or storage, or search with the study's own settings."
            )
    st.sampler = _sampler(seed, 0, len(st.get_trials(deepcopy=False)))
    return st


def _setup_differences(old: dict, new: dict) -> list[str]:
    out = []
    if old.get("policy") != new["policy"]:
        out.append(f"policy: the study tunes {old.get('policy')!r}, this search {new['policy']!r}")
    elif old.get("space_hash") != new["space_hash"]:
        was = {p["name"]: p for p in old.get("space", {}).get("params", [])}
        now = {p["name"]: p for p in new["space"]["params"]}
        diffs = [f"{n} only in the study" for n in was if n not in now]
        diffs += [f"{n} only in this search" for n in now if n not in was]
        diffs += [f"{n} differs ({_brief(was[n])} vs {_brief(now[n])})" for n in now if n in was and was[n] != now[n]]
        fixed_old, fixed_new = old.get("space", {}).get("fixed", {}), new["space"]["fixed"]
        diffs += [f"fixed {n}: {fixed_old.get(n)!r} vs {fixed_new.get(n)!r}"
                  for n in sorted(set(fixed_old) | set(fixed_new)) if fixed_old.get(n) != fixed_new.get(n)]
        if old.get("space", {}).get("defaults") != new["space"]["defaults"]:
            diffs.append("the policy's default parameters changed (another cachelab version?)")
        out.append(f"search space of {new['policy']!r} (hash {old.get('space_hash')} vs {new['space_hash']}): "
                   + ("; ".join(diffs) or "different"))
    if old.get("objectives") != new["objectives"]:
        out.append(f"objectives: {old.get('objectives')} vs {new['objectives']}")
    for key, value in new["workload"].items():
        if old.get("workload", {}).get(key) != value:
            out.append(f"{key}: {old.get('workload', {}).get(key)!r} vs {value!r}")
    return out


def _brief(param: dict) -> str:
    if param.get("kind") == "choice":
        return f"choices {param.get('choices')}"
    return f"[{param.get('low')}, {param.get('high')}]"


def _sampler(seed, worker: int, offset: int) -> optuna.samplers.BaseSampler:
    """TPE (multi-objective aware, reads Optuna constraints); seeds differ per worker and per resumed run.

    Always with the constant liar (Optuna 5's default, off in 4.x): other workers' RUNNING trials count as bad
    results, so parallel workers do not sample next to each other. A process alone on its study never sees a
    RUNNING trial but its own, which the liar leaves out, so one worker samples exactly as without it; any
    storage may also be shared by searches on other machines, which this process cannot know of."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # Optuna 4.x marks it experimental
        return optuna.samplers.TPESampler(seed=None if seed is None else seed + 7919 * worker + offset,
                                          constant_liar=True)


def _finished(st: optuna.Study) -> int:
    counts = state_counts(st)
    return counts["COMPLETE"] + counts["PRUNED"]


# ---------------------------------------------------------------------------------------------------- trials


def _optimize(st: optuna.Study, space: SearchSpace, objs: Objectives, evaluator: Evaluator, tracker: Tracker,
              target: int, heartbeat: bool, on_trial=None, device: str | None = None) -> None:
    """Run trials in this process until the study holds ``target`` finished trials (counting other workers')."""
    worker = register_worker(st, device)
    measured: dict[int, Any] = {}
    state = {"failures": 0, "last_error": "", "surplus": False}

    def objective(trial: optuna.Trial):
        trial.set_user_attr("worker", worker)
        ahead = sum(1 for t in st.get_trials(deepcopy=False) if t.number < trial.number and t.state in _ACTIVE)
        if ahead >= target:
            trial.set_user_attr("error", "surplus: the study had all its trials when this one started")
            raise _Surplus()
        values = space.suggest(trial)
        try:
            policy = resolve_policy(space.policy_spec(values))
        except CachelabError as exc:
            trial.set_user_attr("error", str(exc))
            raise _TrialError(str(exc)) from None
        trial.set_user_attr("policy", policy_to_dict(policy))
        static = all(member.static for member in policy.policies)

        def after_prompt(result):
            if result.index != 0:
                return
            reason = prune_reason(objs, result, static)
            if reason is not None:
                trial.set_user_attr("pruned_reason", reason)
                trial.set_user_attr("first_prompt", {"computed_fraction": result.computed_fraction, **result.quality})
                raise optuna.TrialPruned(reason)

        try:
            m = evaluator.measure(policy, after_prompt)
        except (PolicyError, LayoutError, SiteError, torch.OutOfMemoryError) as exc:
            if isinstance(exc, torch.OutOfMemoryError):  # e.g. a schedule whose caches do not fit: try others
                gc.collect()
                torch.cuda.empty_cache()
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:2000])
            raise _TrialError(str(exc)) from None
        for key, value in m.attrs().items():
            trial.set_user_attr(key, value)
        constraints = m.constraints(objs)
        for key, value in constraints.items():
            trial.set_constraint(key, value)
        if constraints:
            trial.set_user_attr("feasible", all(v <= 0 for v in constraints.values()))
        measured[trial.number] = m
        return tuple(m.value(name) for name in objs.names)

    def after_trial(_study, frozen):
        if frozen.state == TrialState.FAIL:
            error = frozen.user_attrs.get("error", "")
            if error.startswith("surplus"):
                state["surplus"] = True
                return
            state["failures"] += 1
            state["last_error"] = error
            warnings.warn(f"trial {frozen.number} failed: {error}", stacklevel=2)
        else:
            state["failures"] = 0
        tracker.log_trial(frozen, measured.pop(frozen.number, None), objs.names)
        if on_trial is not None:
            on_trial(frozen)

    while not state["surplus"]:
        fail_dead_trials(st, heartbeat)
        counts = state_counts(st)
        if counts["COMPLETE"] + counts["PRUNED"] + counts["RUNNING"] >= target:
            break  # WAITING trials (the enqueued baseline) do not count: optimize runs them first
        st.optimize(objective, n_trials=1, catch=(_TrialError, _Surplus), callbacks=[after_trial])
        if state["failures"] >= MAX_FAILURES_IN_A_ROW:
            raise SearchError(f"{state['failures']} trials in a row failed; the last: {state['last_error']}")


def _progress_bar(enabled: bool, total: int, initial: int, name: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=min(initial, total), desc=f"search {name}", unit="trial", disable=not enabled,
                dynamic_ncols=True)


def _advance(bar, st: optuna.Study) -> None:
    counts = state_counts(st)
    shown = (counts["COMPLETE"], counts["PRUNED"], counts["FAIL"])
    if getattr(bar, "_cachelab_shown", None) == shown:
        return
    bar._cachelab_shown = shown
    bar.n = min(counts["COMPLETE"] + counts["PRUNED"], bar.total)
    bar.set_postfix(complete=counts["COMPLETE"], pruned=counts["PRUNED"], failed=counts["FAIL"], refresh=False)
    bar.refresh()


def _log_summary(tracker: Tracker, result: SearchResult) -> None:
    if not tracker.enabled:
        return
    columns = ["rank", "trial", *result.objectives, "ideal_speedup", "computed_fraction", "psnr", "ssim", "yaml"]
    rows = [[i, t.number, *(t.values[n] for n in result.objectives), t.attrs.get("ideal_speedup"),
             t.attrs.get("computed_fraction"), t.attrs.get("psnr"), t.attrs.get("ssim"), str(t.path)]
            for i, t in enumerate(result.pareto)]
    summary = {f"trials/{k.lower()}": v for k, v in result.counts.items()}
    summary["pareto_size"] = len(result.pareto)
    tracker.log_summary(columns, rows, result.plot_path, summary)


# --------------------------------------------------------------------------------------------------- workers


def _run_workers(payload: dict, devices: list[str], st: optuna.Study, bar) -> None:
    """Start one fresh interpreter per worker (``python -m cachelab.search.worker``: like multiprocessing's spawn,
    without re-running the caller's ``__main__``), show progress, and raise if any worker fails."""
    run_dir = Path(payload["out_dir"]) / "workers"
    run_dir.mkdir(parents=True, exist_ok=True)
    payload_path = run_dir / "payload.json"
    payload = {**payload, "n_workers": len(devices)}
    for old in run_dir.glob("worker_*.ready"):
        old.unlink()
    payload_path.write_text(json.dumps(payload, default=_jsonable))
    env = dict(os.environ)
    root = str(Path(cachelab.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    procs: list[tuple[subprocess.Popen, Path, Path]] = []
    try:
        for i, device in enumerate(devices):
            log, error = run_dir / f"worker_{i}.log", run_dir / f"worker_{i}.error"
            error.unlink(missing_ok=True)
            with open(log, "w") as log_file:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "cachelab.search.worker", str(payload_path), str(i), device],
                    stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                )
            procs.append((proc, log, error))
        while any(p.poll() is None for p, _, _ in procs):
            if any(p.returncode not in (None, 0) for p, _, _ in procs):
                break  # one failed: stop the others (below)
            time.sleep(0.5)
            _advance(bar, st)
    finally:
        for proc, _, _ in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    _advance(bar, st)
    problems = []
    for i, (proc, log, error) in enumerate(procs):
        if proc.returncode == 0:
            continue
        if error.is_file():
            problems.append(f"worker {i}: {error.read_text().strip()}")
        elif proc.returncode is not None and proc.returncode < 0:
            continue  # stopped by us after another worker failed
        else:
            tail = log.read_text().strip().splitlines()[-5:] if log.is_file() else []
            problems.append(f"worker {i} exited with code {proc.returncode} (log {log}):\n    " + "\n    ".join(tail))
    if problems:
        raise SearchError("search workers failed:\n  " + "\n  ".join(problems))


def _jsonable(value):
    if isinstance(value, TrackingConfig):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot pass {type(value).__name__} to a worker")
