"""Calibration of data-dependent policies: what ``cachelab calibrate`` records and fits, the YAML file it writes,
and how ``teacache`` and ``magcache`` find and check such a file.

A file holds: ``policy``, ``model`` (a name), ``model_class`` and ``fingerprint`` (a hash of the model's config,
so a file for another model is refused), ``steps``, the fitted values under the parameter name the policy takes
(teacache ``coefficients``: numpy.polyfit, degree 4, of the stack residual's relative L1 change between steps on
the modulated input's; magcache ``mag_ratios``: per step, the mean over tokens of ``|r_t| / |r_t-1|`` of the stack
residual ``r``, 1.0 at the first step, averaged over prompts and CFG calls), ``prompts`` and ``cachelab_version``.
Files for the bundled models ship beside their weights, ``zoo/weights/<model>/<policy>-<steps>steps.calibration.yaml``
(their default 50 steps, and the 20 that bench uses on a CPU); a policy finds them by fingerprint and picks the one
made for the generation's step count.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from cachelab.errors import PolicyError
from cachelab.policies.dbcache import relative_l1
from cachelab.policies.stack import StackCache, modulated_input
from cachelab.policies.streams import mean_abs

#: where the bundled models' weights, and their calibration files, live in the package
SHIPPED = Path(__file__).resolve().parents[1] / "zoo" / "weights"
#: the parameter each calibrated policy takes its fitted values as
VALUES = {"teacache": "coefficients", "magcache": "mag_ratios"}
DEGREE = 4


@dataclass
class Calibration:
    policy: str
    model: str
    model_class: str
    fingerprint: str
    steps: int
    values: list[float]
    prompts: list[str] = field(default_factory=list)
    cachelab_version: str = ""
    path: str = ""

    def to_yaml(self) -> str:
        data = asdict(self)
        data.pop("path")
        data[VALUES[self.policy]] = data.pop("values")
        return yaml.safe_dump(data, sort_keys=False)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_yaml())
        return path


def identity(model: torch.nn.Module) -> tuple[str, str]:
    """``(class name, fingerprint)``: a hash of the config (diffusers models) or of the parameter shapes."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "items"):
        described = {k: v for k, v in config.items() if not k.startswith("_")}
    else:
        described = {name: list(p.shape) for name, p in model.named_parameters()}
    text = json.dumps(described, sort_keys=True, default=str)
    return type(model).__name__, hashlib.sha256(text.encode()).hexdigest()[:16]


def calibrate_command(policy: str, model: str = "<model>", steps: int | str = "<steps>") -> str:
    return f"cachelab calibrate --model {model} --policy {policy} --prompts 4 --steps {steps} --out {policy}.yaml"


def load(path: str | Path, policy: str) -> Calibration:
    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"{policy}: calibration={str(path)!r}: no such file; write one with `{calibrate_command(policy)}`")
    data = yaml.safe_load(path.read_text())
    key = VALUES[policy]
    if not isinstance(data, dict) or data.get("policy") != policy or key not in data:
        found = data.get("policy") if isinstance(data, dict) else type(data).__name__
        raise PolicyError(
            f"{policy}: calibration={str(path)!r} is not a {policy} calibration (policy: {found!r}); it needs "
            f"'policy: {policy}' and '{key}: [...]' as `cachelab calibrate --policy {policy}` writes"
        )
    try:
        return Calibration(
            policy=policy, model=str(data["model"]), model_class=str(data["model_class"]),
            fingerprint=str(data["fingerprint"]), steps=int(data["steps"]), values=[float(v) for v in data[key]],
            prompts=list(data.get("prompts") or []), cachelab_version=str(data.get("cachelab_version", "")),
            path=str(path),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PolicyError(f"{policy}: calibration={str(path)!r}: missing or malformed field ({exc})") from None


def for_model(policy: str, model: torch.nn.Module, path: str | None) -> list[Calibration]:
    """The calibration ``path`` names (checked against ``model``), else those shipped for ``model`` (one per step
    count, most steps first)."""
    model_class, fingerprint = identity(model)
    if path is not None:
        found = load(path, policy)
        if (found.model_class, found.fingerprint) != (model_class, fingerprint):
            raise PolicyError(
                f"{policy}: calibration={path!r} was made for {found.model} ({found.model_class}, fingerprint "
                f"{found.fingerprint}), not for this {model_class} (fingerprint {fingerprint}); calibrate this model "
                f"with `{calibrate_command(policy)}`"
            )
        return [found]
    shipped = [load(p, policy) for p in sorted(SHIPPED.glob(f"*/{policy}-*steps.calibration.yaml"))]
    shipped = [c for c in shipped if (c.model_class, c.fingerprint) == (model_class, fingerprint)]
    if not shipped:
        raise PolicyError(
            f"{policy} needs a calibration of this {model_class} (fingerprint {fingerprint}) and none ships with "
            f"cachelab: run `{calibrate_command(policy)}` and pass calibration='{policy}.yaml', or give "
            f"{VALUES[policy]}=[...]"
        )
    return sorted(shipped, key=lambda c: -c.steps)


def per_denoiser(policy: str, sites, inline, path: str | None) -> dict[str, list[Calibration]]:
    """The calibrations of each denoiser among ``sites`` (none when the values are given ``inline``)."""
    if inline is not None and path is not None:
        raise PolicyError(f"{policy}: give {VALUES[policy]}=[...] or calibration=PATH, not both")
    if inline is not None:
        return {}
    return {s.denoiser: for_model(policy, s.module, path) for s in sites.by_role("denoiser")}


def for_steps(policy: str, found: list[Calibration], steps: int | None, hint: str = "") -> Calibration:
    """The calibration made for ``steps``, else an error that says how to recalibrate (and ``hint``)."""
    match = next((c for c in found if c.steps == steps), None)
    if match is not None:
        return match
    made = ", ".join(str(c.steps) for c in found)
    where = ", ".join(c.path or c.model for c in found)
    raise PolicyError(
        f"{policy}: the calibration {where} is for {made} steps but this generation has {steps}; recalibrate with "
        f"`{calibrate_command(policy, found[0].model, steps)}`{hint}"
    )


class Recorder(StackCache):
    """Runs every block (never skips) and records, per generation, CFG call and step, what the calibrated
    policies measure: the modulated input's and the residual's relative L1 change, and the residual's magnitude
    ratio."""

    name = "calibrate"
    reduces_across_ranks = True  # never skips; what it records is reduced over the ranks

    def __init__(self, policy: str, modulated_input: str | None = None):
        super().__init__()
        self.policy, self.probe = policy, modulated_input
        self.records: dict[tuple[int, tuple[str, ...]], dict[str, dict[int, float]]] = {}

    def fresh(self):
        return Recorder(self.policy, self.probe)

    def select(self, sites):
        self._models = {s.denoiser: s.module for s in sites.by_role("denoiser")}
        return super().select(sites)

    def _record(self, call) -> dict[str, dict[int, float]]:
        return self.records.setdefault((call.ctx.generation, call.ctx.branches), {"input": {}, "output": {}, "ratio": {}})

    def decide(self, site, call, state):
        if self.policy == "teacache":
            current = modulated_input(self.name, self._models[site.denoiser], site, call, self.probe)
            if "modulated" in state:
                self._record(call)["input"][call.ctx.step] = relative_l1(current, state["modulated"], call.runtime)
            state["modulated"] = current
        return False

    def computed(self, site, call, state):
        current = state["residual"]["hidden_states"]
        record, step = self._record(call), call.ctx.step
        previous = state.get("previous")
        if previous is None:
            record["ratio"][step] = 1.0
        else:
            record["output"][step] = relative_l1(current, previous, call.runtime)
            ratio = torch.linalg.norm(current.float(), dim=-1) / (torch.linalg.norm(previous.float(), dim=-1) + 1e-8)
            record["ratio"][step] = mean_abs(call.runtime, ratio)[0].item()  # ratios are positive
        state["previous"] = current

    def fit(self, steps: int, policy: str | None = None) -> list[float]:
        """The fitted values of ``policy`` (default: the one recorded for): teacache's polynomial coefficients
        (highest power first) or magcache's per-step ratios."""
        if (policy or self.policy) == "teacache":
            pairs = [(r["input"][s], r["output"][s]) for r in self.records.values() for s in r["input"] if s in r["output"]]
            if len(pairs) <= DEGREE:
                raise PolicyError(f"teacache: {len(pairs)} recorded steps cannot fit a degree-{DEGREE} polynomial; "
                                  "calibrate with more steps or prompts")
            x, y = np.array(pairs).T
            return [float(c) for c in np.polyfit(x, y, DEGREE)]
        ratios = []
        for step in range(steps):
            seen = [r["ratio"][step] for r in self.records.values() if step in r["ratio"]]
            if not seen:
                raise PolicyError(f"magcache: no residual was recorded at step {step} of {steps}")
            ratios.append(float(np.mean(seen)))
        return ratios
