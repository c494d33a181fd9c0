"""``cachelab ablate``: one base policy and named arms that change it, measured alike and resumably.

A spec (YAML) names a model, a base policy, arms (overrides merged deep into the base, or a policy of their own),
prompts, seeds, steps and repeats. Every arm runs through the bench's measurement (:func:`cachelab.bench.run_case`)
on the same prompts and seeds, against the same uncached videos. Each finished arm is written atomically to
``arms/<arm>.json`` (with its reuse map and a side-by-side sample), and the uncached videos to
``arms/uncached-videos.pt``, so a run killed at any point resumes with the arms it had finished. An arm remembers
what it depends on (model, prompts, seeds, steps, guidance, repeats, device, its resolved policy and the baseline
run it was compared with): a changed arm runs again; changed settings of the whole ablation are refused unless
``restart``. Each arm is also one W&B run (group = the ablation's name), offline unless logged in.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from tqdm.auto import tqdm

from cachelab import media
from cachelab.bench import BenchReport, Case, CaseResult, CaseRun, device_name, run_case
from cachelab.errors import CachelabError, PolicyError
from cachelab.manifest import write_json, write_manifest
from cachelab.policies.base import deep_merge, format_validation_error
from cachelab.spec import policy_to_dict, read_data_file, resolve_policy

__all__ = ["AblationError", "AblationResult", "AblationSpec", "load_spec", "resolve_arms", "run_ablation"]

BASELINE = "uncached"
_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_REPLACES = ("policy", "policies")  # an arm holding one of these keys is a policy of its own, not overrides


class AblationError(CachelabError, ValueError):
    """A bad ablation spec, or an output directory holding results the spec's run must not mix with."""


class AblationSpec(BaseModel):
    """What ``cachelab ablate SPEC.yaml`` reads."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="the ablation's name: the W&B group and the default output folder")
    description: str = Field("", description="free text shown with the table")
    model: str = Field(description="a registered model (cachelab models)")
    base: Any = Field(description="the policy every arm starts from, in any form cachelab.apply takes: a name, "
                                  "{policy: NAME, PARAM: VALUE ...}, {policies: [...]} or a list")
    arms: dict[str, dict[str, Any] | None] = Field(
        description="arm name -> overrides merged deep into base (for a composition, keyed by member policy), "
                    "or a policy of its own ({policy: ...} / {policies: [...]}); {} or nothing runs base as it is")
    paper: dict[str, str] = Field(default_factory=dict, description="arm name -> what the paper found for it")
    expected: str | None = Field(None, description="the expected ordering of the arms, free text")
    prompts: int | list[str] = Field(4, description="how many of the model's prompts, or the prompts themselves")
    seeds: list[int] | None = Field(None, description="one seed per prompt [default: 0, 1, ...]")
    steps: int = Field(20, ge=1, le=1000, description="sampling steps")
    guidance: float | None = Field(None, description="guidance scale [default: the model's]")
    repeats: int = Field(1, ge=1, le=100, description="timed generations per arm (latency is their median)")

    @field_validator("arms")
    @classmethod
    def _arms(cls, arms: dict) -> dict:
        if not arms:
            raise ValueError("a spec needs at least one arm, e.g. arms: {faster: {interval: 3}}")
        for name in arms:
            if name == BASELINE:
                raise ValueError(f"arm name {name!r} is reserved for the uncached baseline, which always runs first")
            if not _ARM_NAME.match(name):
                raise ValueError(f"arm name {name!r}: use letters, digits, '_', '-' and '.' (it names files)")
        return {name: overrides or {} for name, overrides in arms.items()}

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, prompts):
        if isinstance(prompts, int) and prompts < 1:
            raise ValueError(f"give at least one prompt, got {prompts}")
        if isinstance(prompts, list) and not prompts:
            raise ValueError("the list of prompts is empty")
        return prompts

    @field_validator("paper")
    @classmethod
    def _paper(cls, paper: dict, info: ValidationInfo) -> dict:
        arms = info.data.get("arms")
        unknown = [arm for arm in paper if arms is not None and arm not in arms]
        if unknown:
            raise ValueError(f"paper names arms the spec does not have: {', '.join(unknown)}; arms: {', '.join(arms)}")
        return paper

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int] | None, info: ValidationInfo) -> list[int] | None:
        prompts = info.data.get("prompts")
        count = prompts if isinstance(prompts, int) else len(prompts or [])
        if seeds is not None and prompts is not None and len(seeds) != count:
            raise ValueError(f"{len(seeds)} seeds for {count} prompts; give one per prompt or leave seeds out "
                             "(0, 1, ...)")
        return seeds


def load_spec(path: str | Path, **overrides: Any) -> AblationSpec:
    """Read and validate a spec file; ``overrides`` (e.g. ``model=``, ``prompts=``) replace its fields when not None."""
    path = Path(path)
    data = read_data_file(path, "ablation spec", AblationError)
    if not isinstance(data, dict):
        raise AblationError(f"ablation spec {str(path)!r} must hold a mapping with name, model, base and arms")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return AblationSpec(**data)
    except ValidationError as exc:
        raise AblationError(format_validation_error("ablation spec", AblationSpec, exc,
                                                    header=f"invalid ablation spec {str(path)!r}:")) from None


def _as_mapping(spec: Any) -> dict:
    """A policy spec as a mapping whose parameters sit beside ``policy`` (so overrides merge into it)."""
    if isinstance(spec, str):
        return {"policy": spec}
    if isinstance(spec, (list, tuple)):
        return {"policies": [_as_mapping(s) for s in spec]}
    if isinstance(spec, dict) and "policies" in spec:
        return {**spec, "policies": [_as_mapping(s) for s in spec["policies"]]}
    if isinstance(spec, dict) and isinstance(spec.get("params"), dict):
        return deep_merge({k: v for k, v in spec.items() if k != "params"}, spec["params"])
    return spec


def arm_spec(base: Any, overrides: dict, arm: str) -> dict:
    """The policy spec of one arm: its own policy, or ``overrides`` merged deep into ``base``."""
    if any(key in overrides for key in _REPLACES):
        return _as_mapping(overrides)
    base = _as_mapping(base)
    if not isinstance(base, dict) or "policies" not in base:
        return deep_merge(base, overrides)
    members = [m.get("policy") if isinstance(m, dict) else None for m in base["policies"]]
    merged = list(base["policies"])
    for key, value in overrides.items():
        if key not in members:
            raise AblationError(f"arms.{arm}.{key}: the base composition has no member {key!r}; its members: "
                                f"{', '.join(map(str, members))} (override a member's parameters under its name)")
        if not isinstance(value, dict):
            raise AblationError(f"arms.{arm}.{key}: expected a mapping of {key}'s parameters, got {value!r}")
        i = members.index(key)
        merged[i] = deep_merge(merged[i], value)
    return {"policies": merged}


def resolve_arms(spec: AblationSpec) -> dict[str, dict]:
    """Every arm's resolved policy as a dict (what :func:`cachelab.spec.resolve_policy` reads back); any bad arm
    fails here, before work starts, naming the arm, the parameter, its value and what is allowed."""
    try:
        resolve_policy(_as_mapping(spec.base))
    except PolicyError as exc:
        raise AblationError(f"base: {exc}") from None
    policies = {}
    for arm, overrides in spec.arms.items():
        try:
            policies[arm] = policy_to_dict(resolve_policy(arm_spec(spec.base, overrides, arm)))
        except PolicyError as exc:
            raise AblationError(f"arms.{arm}: {exc}") from None
    return policies


# -- running -----------------------------------------------------------------------------------------------------
@dataclass
class AblationResult:
    out_dir: Path
    report: BenchReport  # the baseline and every arm, in the spec's order (names are arm names)
    rows: list[dict]  # the arm records of table.json
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # arms that broke (not refusals): not written, run again next time

    @property
    def table_paths(self) -> tuple[Path, Path]:
        return self.out_dir / "table.json", self.out_dir / "table.csv"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _key(depends: dict) -> str:
    return hashlib.sha256(json.dumps(depends, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _changes(old: dict, new: dict) -> str:
    """``steps: 6 -> 5, policy.params.interval: 3 -> 2``: the leaves that differ."""
    old, new = _leaves(old), _leaves(new)
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(f"{k}: {_short(old.get(k))} -> {_short(new.get(k))}" for k in changed)


def _leaves(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # absent, or not written by us: the arm runs (again)


def run_ablation(
    spec: AblationSpec,
    out_dir: str | Path | None = None,
    device: str | None = None,
    wandb: bool = True,
    wandb_project: str | None = None,
    restart: bool = False,
    samples: bool = True,
    progress: bool = True,
    command: list[str] | None = None,
    echo: Callable[[str], None] = print,
) -> AblationResult:
    """Run the uncached baseline and every arm of ``spec`` not already finished in ``out_dir`` (default
    ``ablations/<name>``), write the arm files and the table, and return them."""
    from cachelab.search.tracking import Tracker, TrackingConfig
    from cachelab.zoo.registry import create_model

    policies = resolve_arms(spec)  # every arm checked before the model loads
    out = Path(out_dir) if out_dir is not None else Path("ablations") / spec.name
    arms_dir = out / "arms"
    model = create_model(spec.model, device=device)
    if isinstance(spec.prompts, list):
        for prompt in spec.prompts:
            model.check_prompt(prompt)
    prompts = list(spec.prompts) if isinstance(spec.prompts, list) else model.prompts(spec.prompts)
    seeds = list(spec.seeds) if spec.seeds is not None else list(range(len(prompts)))
    guidance = model.guidance if spec.guidance is None else spec.guidance
    dev = next(model.transformer.parameters()).device
    settings = {"model": model.name, "steps": spec.steps, "guidance": guidance, "prompts": prompts, "seeds": seeds,
                "repeats": spec.repeats, "device": device_name(dev)}

    if restart and arms_dir.exists():
        shutil.rmtree(arms_dir)
    previous = _read_json(arms_dir / f"{BASELINE}.json")
    if previous is not None and previous.get("depends") != settings:
        raise AblationError(
            f"{out} holds arms run with other settings ({_changes(previous.get('depends') or {}, settings)}); "
            "they would not compare with new ones. Pass --restart to discard them, or --out another directory")
    arms_dir.mkdir(parents=True, exist_ok=True)
    manifest = _read_json(out / "manifest.json") or {}
    write_manifest(out, "ablation", command=command or [], created=manifest.get("created") or _now(), updated=_now(),
                   name=spec.name, model=model.name, spec=spec.model_dump(mode="json"))
    media.atomic_write(out / "spec.yaml", lambda tmp: Path(tmp).write_text(
        yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)))

    tracker = Tracker(TrackingConfig(enabled=wandb, group=spec.name, out_dir=str(out), project=wandb_project,
                                     setup={"ablation": spec.name, **settings}))
    result = AblationResult(out, BenchReport(model.name, model.trained, settings["device"], spec.steps, guidance,
                                             prompts, seeds, spec.repeats), [])
    videos_path = arms_dir / f"{BASELINE}-videos.pt"

    def measure(case: Case, baseline: CaseRun | None) -> CaseRun:
        return run_case(model, case, prompts, seeds, spec.steps, guidance, spec.repeats, baseline=baseline)

    bar = tqdm(total=1 + len(spec.arms), desc=f"ablate {spec.name}", disable=not progress)
    # -- the uncached baseline: its record and its videos, which every arm is compared with
    bar.set_postfix_str(BASELINE)
    if previous is not None and videos_path.is_file():
        baseline = CaseRun(CaseResult(**previous["result"]), torch.load(videos_path, map_location="cpu"))
        record = previous
        result.skipped.append(BASELINE)
    else:
        baseline = measure(Case(BASELINE, "uncached"), None)
        media.atomic_write(videos_path, lambda tmp: torch.save(baseline.videos.cpu(), tmp))
        sample = media.save_video(baseline.videos[0], arms_dir / f"{BASELINE}-sample.gif") if samples else None
        record = {"arm": BASELINE, "overrides": {}, "policy": None, "result": asdict(baseline.result),
                  "reuse_map": None, "sample": _relative(sample, out), "finished": _now(), "depends": settings,
                  "key": _key(settings)}
        write_json(arms_dir / f"{BASELINE}.json", record)
        _log_arm(tracker, record, out)
        result.ran.append(BASELINE)
    result.rows.append(record)
    result.report.results.append(baseline.result)
    bar.update()

    # -- the arms, in the spec's order
    for arm, overrides in spec.arms.items():
        bar.set_postfix_str(arm)
        depends = {**settings, "policy": policies[arm], "baseline": record["finished"]}
        path = arms_dir / f"{arm}.json"
        done = _read_json(path)
        if done is not None and done.get("key") == _key(depends):
            result.skipped.append(arm)
            result.rows.append(done)
            result.report.results.append(CaseResult(**done["result"]))
            bar.update()
            continue
        if done is not None:
            echo(f"arm {arm}: {_changes(done.get('depends') or {}, depends)} since it ran; running it again")
        run = _run_arm(measure, arm, policies[arm], baseline)
        entry = {"arm": arm, "overrides": overrides, "policy": policies[arm], "result": asdict(run.result),
                 "reuse_map": None, "sample": None, "finished": _now(), "depends": depends, "key": _key(depends)}
        if run.result.error and not run.result.refused:
            result.failed.append(arm)  # not written: the next run tries again
            echo(f"arm {arm} failed: {run.result.error}")
        else:
            if run.stats is not None:
                reuse = {key: run.stats.computed_steps(key) for key in run.stats.roles}
                entry["reuse_map"] = _relative(media.reuse_map(reuse, arms_dir / f"{arm}-reuse.png",
                                                               title=f"{spec.name}: {arm}", roles=run.stats.roles), out)
            if samples and run.videos is not None:
                entry["sample"] = _relative(media.side_by_side(
                    {BASELINE: baseline.videos[0], arm: run.videos[0]}, arms_dir / f"{arm}-sample.gif"), out)
            write_json(path, entry)
            _log_arm(tracker, entry, out)
            result.ran.append(arm)
        result.rows.append(entry)
        result.report.results.append(run.result)
        bar.update()
    bar.close()

    leftover = sorted(p.stem for p in arms_dir.glob("*.json") if p.stem not in spec.arms and p.stem != BASELINE)
    if leftover:
        echo(f"arms in {arms_dir} that the spec no longer has (left out of the table): {', '.join(leftover)}")
    _write_table(result, spec)
    return result


def _run_arm(measure, arm: str, policy: dict, baseline: CaseRun) -> CaseRun:
    """One arm measured; a policy refusing the model, or any failure, becomes a result row with the error."""
    try:
        return measure(Case(arm, "cachelab", policy), baseline)
    except Exception as exc:  # noqa: BLE001 - one broken arm must not lose the others
        return CaseRun(CaseResult(arm, "cachelab", policy, float("nan"), [], error=f"{type(exc).__name__}: {exc}",
                                  refused=isinstance(exc, PolicyError)), None)


def _relative(path: Path | None, out: Path) -> str | None:
    return None if path is None else str(Path(path).relative_to(out))


def _log_arm(tracker, record: dict, out: Path) -> None:
    """The arm's W&B run: settings and policy as config, the bench's columns as summary, its media."""
    res = record["result"]
    summary = {k: v for k, v in res.items() if isinstance(v, (int, float, str, bool)) and v is not None
               and k not in ("name", "kind")}
    for key, value in (res.get("prompt_following") or {}).items():
        summary[f"prompt_following/{key}"] = value
    files = {name: out / record[key] for name, key in (("reuse_map", "reuse_map"), ("sample", "sample"))
             if record.get(key)}
    tracker.log_run(record["arm"], "arm", {"arm": record["arm"], "overrides": record["overrides"],
                                           "policy": record["policy"], **tracker.config.setup},
                    summary, files, what=f"arm {record['arm']}")


_CSV_FIELDS = [f.name for f in fields(CaseResult) if f.name not in ("name", "policy", "latencies_s", "prompt_following")]


def _write_table(result: AblationResult, spec: AblationSpec) -> None:
    report = result.report
    write_json(result.out_dir / "table.json", {
        "name": spec.name, "model": report.model, "device": report.device, "steps": report.steps,
        "guidance": report.guidance, "prompts": report.prompts, "seeds": report.seeds, "repeats": report.repeats,
        "description": spec.description, "expected": spec.expected,
        "rows": [{**row, "paper": spec.paper.get(row["arm"])} for row in result.rows]})
    following = sorted({k for row in result.rows for k in (row["result"].get("prompt_following") or {})})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["arm", *_CSV_FIELDS, *(f"prompt_following_{k}" for k in following), "paper"])
    for row in result.rows:
        res = row["result"]
        writer.writerow([row["arm"], *("" if res.get(k) is None else res[k] for k in _CSV_FIELDS),
                         *((res.get("prompt_following") or {}).get(k, "") for k in following),
                         spec.paper.get(row["arm"], "")])
    text = buffer.getvalue()
    media.atomic_write(result.out_dir / "table.csv", lambda tmp: Path(tmp).write_text(text))
