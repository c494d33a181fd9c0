"""Every seed policy on every tiny transformer: what the coverage test asserts and the README table shows.

A check applies a policy to a tiny model called directly (batched CFG, ``[uncond, cond]``, at decreasing
timesteps), counts FLOPs with ``torch.utils.flop_counter.FlopCounterMode`` against the same calls without the
policy, and compares outputs bit for bit: under never-reuse parameters, and after ``remove()``. A policy that
cannot serve a model must refuse with a cachelab error; the refusal is the result.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

import cachelab
from cachelab.errors import CachelabError
from cachelab.hooks.engine import _GlobalOnly
from configs import AGGRESSIVE, NEVER_REUSE, SEED_POLICIES
from tiny_transformers import TINY_TRANSFORMERS, draw

STEPS = 4
TIMESTEPS = torch.linspace(900, 300, STEPS).tolist()  # decreasing, as a sampler calls the denoiser
CFG_BATCH = 2  # [uncond, cond] in one call
LATENT_DRIFT = 0.05  # how far the latents move per step, in units of a standard-normal draw


@dataclass(frozen=True)
class Outcome:
    """What a policy did on one model: a skipped-FLOPs fraction, or a refusal message."""

    skipped: float | None = None
    refusal: str | None = None


@functools.cache
def baseline(name: str):
    """The model, its outputs and its FLOPs without any policy (built once per model and process)."""
    spec = TINY_TRANSFORMERS[name]
    model = spec.build()
    outputs, flops = run(model, name, count=True)
    return model, outputs, flops


@functools.cache
def inputs(name: str) -> tuple[dict, ...]:
    """The model's inputs at each step (drawn once per model and process). The latents move a little at every
    step, as a sampler's do: policies that read the change of the input (EasyCache's transformation rate) see
    one, while the timestep alone would leave it undefined."""
    spec = TINY_TRANSFORMERS[name]
    drift = draw(CFG_BATCH, 1, **spec.latents)
    steps = []
    next_timesteps = [*TIMESTEPS[1:], 0.0]  # a flow map's target time: the next step's, clean data after the last
    for step, (t, next_t) in enumerate(zip(TIMESTEPS, next_timesteps)):
        kwargs = spec.inputs(CFG_BATCH, t, next_timestep=next_t)
        for key in spec.latents:
            kwargs[key] = kwargs[key] + LATENT_DRIFT * step * drift[key].to(kwargs[key].dtype)
        steps.append(kwargs)
    return tuple(steps)


def run(model: torch.nn.Module, name: str, count: bool = False) -> tuple[list[torch.Tensor], int | None]:
    """Outputs at every step, and the FLOPs of the whole run when ``count`` (counting slows the calls down)."""
    with torch.no_grad():
        if not count:
            return [model(**kwargs)[0] for kwargs in inputs(name)], None
        with total_flop_counter() as counter:
            outputs = [model(**kwargs)[0] for kwargs in inputs(name)]
    return outputs, counter.get_total_flops()


def total_flop_counter() -> FlopCounterMode:
    """torch's FLOP counter without its per-module tracker (only the total is read): the tracker hooks the backward
    of every module input that requires grad, and fails on a view of a parameter taken under no_grad (BriaFibo2's
    Perceiver queries), which requires grad but has no grad_fn."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    return counter


def params_for(policy: str, kind: str, outputs: list[torch.Tensor]) -> dict:
    """The test parameters of a policy; outputs that are not images or videos (packed latent tokens, audio,
    embeddings) need cfg_cache's flat layout."""
    params = {**(NEVER_REUSE if kind == "never" else AGGRESSIVE)[policy]}
    if outputs[0].ndim not in (4, 5):
        if policy == "cfg_cache":
            params["layout"] = "flat"
        elif policy == "fastercache":
            params["cfg_cache"] = {**params["cfg_cache"], "layout": "flat"}
    return params


def check(name: str, policy: str) -> Outcome:
    """Apply, measure and compare; raises AssertionError when a policy serves a model wrongly."""
    model, reference, base_flops = baseline(name)
    try:
        with cachelab.apply(model, policy, cfg="batched", num_steps=STEPS, count_macs=False,
                            **params_for(policy, "never", reference)):
            never, _ = run(model, name)
    except CachelabError as exc:
        assert cachelab.handle_of(model) is None, "a refusing policy left hooks behind"
        return Outcome(refusal=str(exc))
    assert all(torch.equal(a, b) for a, b in zip(never, reference)), f"{policy} never-reuse changed {name}'s outputs"
    with cachelab.apply(model, policy, cfg="batched", num_steps=STEPS, count_macs=False,
                        **params_for(policy, "aggressive", reference)):
        cached, flops = run(model, name, count=True)
    assert [c.shape for c in cached] == [r.shape for r in reference], f"{policy} changed {name}'s output shapes"
    assert all(torch.isfinite(c).all() for c in cached), f"{policy} made {name}'s outputs non-finite"
    assert flops < base_flops, f"{policy} skipped no FLOPs on {name} ({flops} of {base_flops})"
    after, _ = run(model, name)
    assert all(torch.equal(a, b) for a, b in zip(after, reference)), f"{name} differs after {policy}'s remove()"
    return Outcome(skipped=1 - flops / base_flops)


def short_reason(message: str) -> str:
    """A refusal's first clause: what the model lacks."""
    first = message.split("(it has:")[0].split(";")[0].split(". ")[0].split(", so ")[0]
    return first.strip().rstrip(",").replace("|", "/")


def cell(outcome: Outcome) -> str:
    """The README table's cell for one outcome: ``✓ 25%`` (FLOPs skipped) or ``refuses: why``."""
    if outcome.refusal is not None:
        return f"refuses: {short_reason(outcome.refusal)}"
    return "✓ <1%" if outcome.skipped < 0.005 else f"✓ {outcome.skipped:.0%}"


README_SECTION = "## Coverage"


def readme_section(text: str) -> str:
    return text.split(README_SECTION + "\n", 1)[1].split("\n## ", 1)[0]


def readme_not_covered(text: str) -> list[str]:
    """The classes the README's coverage section lists as not covered (``- `Class`: reason`` lines)."""
    return [line[3:].split("`", 1)[0] for line in readme_section(text).splitlines() if line.startswith("- `")]


def readme_table(text: str) -> dict[str, dict[str, str]]:
    """``model class -> policy -> cell`` from the README's coverage section."""
    section = readme_section(text)
    rows = [line for line in section.splitlines() if line.startswith("|")]
    policies = [c.strip() for c in rows[0].strip("|").split("|")][1:]
    table = {}
    for line in rows[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        table[cells[0].strip("`")] = dict(zip(policies, cells[1:]))
    return table


__all__ = ["Outcome", "SEED_POLICIES", "STEPS", "baseline", "cell", "check", "readme_not_covered", "readme_table", "short_reason"]
