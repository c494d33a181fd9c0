"""Search throughput with one worker and with several (one per GPU), in one run's results.

    python benchmarks/search_workers.py --out OUT_DIR                      # 1 then 2 workers, 40 trials each
    python benchmarks/search_workers.py --out OUT_DIR --workers 1,2 --trials 40 --model tiny-cogvideox

Runs the same `cachelab search` (same model, policy, objectives, prompts, steps and sampler seed, a fresh study
each) once per worker count and reads every trial back from its Optuna storage. For each run: trials per hour over
the search itself (first trial start to last trial end) and over the whole command (model loading, uncached
references and worker start-up included), trials per worker and the device each worker ran on (``cuda:0`` and
``cuda:1`` for two workers on two GPUs), and the accounting: trial numbers unique and without gaps, every trial
COMPLETE, PRUNED or FAIL (a FAIL only as a "surplus" start when the study was already full), the finished trials
exactly the number asked, no trial claimed by two workers, and how many parameter sets were sampled twice (not an
error: TPE may propose a point again). Writes OUT_DIR/workers.json and OUT_DIR/workers.md (device, command, date,
commit); OUT_DIR/w<N>/ holds each search's own results (trials.csv, pareto files, the study database).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections import Counter
from pathlib import Path

import optuna

from cachelab.search import run_search

sys.path.insert(0, str(Path(__file__).resolve().parent))
from context_parallel import command_line  # noqa: E402
from provenance import commit, device_name  # noqa: E402

ACCOUNTED = ("COMPLETE", "PRUNED", "FAIL")


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--workers", default="1,2", help="worker counts to compare, comma-separated")
    p.add_argument("--model", default="tiny-cogvideox")
    p.add_argument("--policy", default="fastercache")
    p.add_argument("--objectives", default="macs,psnr")
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def account(study: optuna.Study, trials: int) -> dict:
    """What a study holds after a search of ``trials``: states, workers, devices, and the checks."""
    all_trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in all_trials]
    states = Counter(t.state.name for t in all_trials)
    finished = [t for t in all_trials if t.state.name in ("COMPLETE", "PRUNED")]
    workers = Counter(f"{t.user_attrs['worker']['host']}:{t.user_attrs['worker']['pid']}" for t in finished
                      if isinstance(t.user_attrs.get("worker"), dict))
    devices = Counter(str(t.user_attrs["worker"].get("device")) for t in finished
                      if isinstance(t.user_attrs.get("worker"), dict))
    params = Counter(json.dumps(t.params, sort_keys=True) for t in finished)
    problems = []
    if len(numbers) != len(set(numbers)) or sorted(numbers) != list(range(len(numbers))):
        problems.append(f"trial numbers not unique and contiguous: {sorted(numbers)}")
    if len({t._trial_id for t in all_trials}) != len(all_trials):
        problems.append("a trial id appears twice")
    unaccounted = {s: n for s, n in states.items() if s not in ACCOUNTED}
    if unaccounted:
        problems.append(f"trials neither COMPLETE, PRUNED nor FAIL: {unaccounted}")
    if len(finished) != trials:
        problems.append(f"{len(finished)} finished trials, asked for {trials}")
    odd_failures = [t.number for t in all_trials if t.state.name == "FAIL"
                    and not str(t.user_attrs.get("error", "")).startswith("surplus")]
    if odd_failures:
        problems.append(f"trials that failed other than as surplus: {odd_failures}")
    starts = [t.datetime_start for t in finished if t.datetime_start]
    ends = [t.datetime_complete for t in finished if t.datetime_complete]
    span = (max(ends) - min(starts)).total_seconds() if starts and ends else None
    return {
        "states": dict(states),
        "finished": len(finished),
        "per_worker": dict(workers),
        "per_device": dict(devices),
        "repeated_parameter_sets": sum(n - 1 for n in params.values() if n > 1),
        "search_span_s": span,
        "problems": problems,
    }


def measure(args, workers: int) -> dict:
    out = args.out / f"w{workers}"
    study = f"workers-{workers}"
    storage = f"sqlite:///{out / 'study.db'}"
    start = time.perf_counter()
    policies = args.policy.split("+")
    run_search(model=args.model, policy=policies[0] if len(policies) == 1 else policies, trials=args.trials, objectives=args.objectives,
               prompts=args.prompts, steps=args.steps, storage=storage, study=study, workers=workers,
               out_dir=out, seed=args.seed, progress=False)
    wall = time.perf_counter() - start
    result = account(optuna.load_study(study_name=study, storage=storage), args.trials)
    span = result["search_span_s"]
    result.update(workers=workers, wall_s=wall, trials_per_hour=3600 * result["finished"] / span if span else None,
                  trials_per_hour_wall=3600 * result["finished"] / wall)
    return result


def main(argv=None) -> None:
    argv = sys.argv if argv is None else ["benchmarks/search_workers.py", *argv]
    args = parse(argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs = []
    for n in [int(w) for w in args.workers.split(",")]:
        runs.append(measure(args, n))
        print(f"{n} worker(s): {runs[-1]['trials_per_hour']:.0f} trials/h, problems: {runs[-1]['problems'] or 'none'}",
              flush=True)
    base = runs[0]["trials_per_hour"]
    report = {"device": device_name(), "command": command_line(argv), "date": datetime.datetime.now(
        datetime.timezone.utc).isoformat(timespec="seconds"), "commit": commit(), "model": args.model,
        "policy": args.policy, "objectives": args.objectives, "trials": args.trials, "prompts": args.prompts,
        "steps": args.steps, "runs": runs}
    (args.out / "workers.json").write_text(json.dumps(report, indent=1))
    lines = [f"# Search throughput by worker count ({args.model}, {args.policy})", "",
             f"device: {report['device']}  ", f"date: {report['date']}  ", f"commit: {report['commit']}  ",
             f"command: `{report['command']}`", "",
             f"{args.trials} trials of {args.objectives} on {args.prompts} prompts x {args.steps} steps, sampler seed "
             f"{args.seed}; trials/h over the search (first trial start to last end) and over the whole command.", "",
             "| workers | devices (trials) | trials/h | vs 1 worker | trials/h, whole command | states | checks |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        devices = ", ".join(f"{d} ({n})" for d, n in sorted(r["per_device"].items()))
        ratio = f"{r['trials_per_hour'] / base:.2f}x" if base and r["trials_per_hour"] else "-"
        states = ", ".join(f"{s} {n}" for s, n in sorted(r["states"].items()))
        checks = "; ".join(r["problems"]) or "none lost, none duplicated"
        lines.append(f"| {r['workers']} | {devices} | {r['trials_per_hour']:.0f} | {ratio} | "
                     f"{r['trials_per_hour_wall']:.0f} | {states} | {checks} |")
    (args.out / "workers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
