"""``cachelab.apply``: attach a policy to a denoiser or pipeline; the handle it returns reports and detaches."""

from __future__ import annotations

import contextlib
import functools
import weakref
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from cachelab.errors import AlreadyAppliedError, HookStackError, TargetError
from cachelab.hooks.context import CfgMode, CfgOrder, StepTracker
from cachelab.hooks.engine import Runtime
from cachelab.hooks.registry import hook_of
from cachelab.hooks.stats import Stats
from cachelab.models.discovery import find_sites
from cachelab.hooks.sites import SiteSet
from cachelab.plan import Plan
from cachelab.policies import Policy
from cachelab.spec import PolicySpec, resolve_policy

_HANDLES: "weakref.WeakKeyDictionary[nn.Module, CacheHandle]" = weakref.WeakKeyDictionary()


def denoisers_of(target: Any) -> tuple[dict[str, nn.Module], Any]:
    """``(name -> transformer, pipeline or None)`` for a transformer, any torch module, or a pipeline."""
    if isinstance(target, nn.Module):
        return {"transformer": target}, None
    components = getattr(target, "components", None)
    if isinstance(components, dict):
        found = {
            name: module
            for name, module in components.items()
            if isinstance(module, nn.Module) and name.startswith("transformer")
        }
        if not found:
            names = ", ".join(f"{k} ({type(v).__name__})" for k, v in components.items())
            raise TargetError(
                f"{type(target).__name__} has no transformer component to cache (components: {names}); "
                "apply cachelab to the denoiser module directly and name its sites with sites={...}"
            )
        return found, target
    raise TargetError(
        f"cachelab.apply needs a torch.nn.Module (a diffusers transformer or any DiT) or a diffusers pipeline; "
        f"got {type(target).__name__}"
    )


class CacheHandle:
    """A policy attached to a model. Detach with :meth:`remove` or by leaving a ``with`` block."""

    def __init__(
        self,
        target: Any,
        policy: Policy,
        sites: Mapping[str, str | list[str]] | None = None,
        cfg: CfgMode = "auto",
        cfg_order: CfgOrder = "cond_first",
        num_steps: int | None = None,
        count_macs: bool = True,
        timestep_arg: str | None = None,
    ):
        denoisers, pipeline = denoisers_of(target)
        self.policy = policy
        self.pipeline = pipeline
        self.denoisers = denoisers
        all_sites = []
        for name, model in denoisers.items():
            all_sites += list(find_sites(model, sites, denoiser=name))
        self.sites = SiteSet(all_sites)
        owned = policy.select(self.sites)
        assignments = [(site, policy.controller_for(site)) for site in owned]
        num_train = _num_train_timesteps(pipeline)
        self.tracker = StepTracker(
            cfg=cfg, cfg_order=cfg_order, num_steps=num_steps, num_train_timesteps=num_train, timestep_arg=timestep_arg
        )
        schedule_source = None
        if pipeline is not None and getattr(pipeline, "scheduler", None) is not None:
            schedule_source = lambda: _timesteps_of(pipeline.scheduler)  # noqa: E731
        self.runtime = Runtime(denoisers, assignments, self.tracker, schedule_source, count_macs)
        self._scheduler_patched = None
        if schedule_source is not None:
            self._patch_scheduler(pipeline.scheduler)
        self._contexts_patched = [self._patch_cache_context(m) for m in denoisers.values() if hasattr(m, "cache_context")]
        for model in denoisers.values():
            _HANDLES[model] = self
        self.active = True

    # -- generation boundaries -------------------------------------------------------------------------------
    def _patch_scheduler(self, scheduler) -> None:
        """A pipeline calls ``scheduler.set_timesteps`` once at the start of every generation."""
        original = scheduler.set_timesteps
        tracker = self.tracker

        @functools.wraps(original)  # keeps the signature: diffusers' retrieve_timesteps looks for `sigmas` in it
        def set_timesteps(*args, **kwargs):
            out = original(*args, **kwargs)
            tracker.begin(timesteps=_timesteps_of(scheduler))
            return out

        self._scheduler_patched = (scheduler, scheduler.__dict__.get("set_timesteps"), set_timesteps)
        scheduler.set_timesteps = set_timesteps

    def _patch_cache_context(self, model: nn.Module):
        """Pipelines of diffusers >= 0.36 name each CFG call with ``transformer.cache_context("cond")``: record the
        name for the step tracker, which then knows the branch instead of inferring it."""
        original = model.cache_context
        tracker = self.tracker

        @functools.wraps(original)
        @contextlib.contextmanager
        def cache_context(name, *args, **kwargs):
            previous, tracker.context_name = tracker.context_name, name
            try:
                with original(name, *args, **kwargs):
                    yield
            finally:
                tracker.context_name = previous

        had_instance_attr = "cache_context" in model.__dict__
        model.cache_context = cache_context
        return model, had_instance_attr, original

    def begin(self, num_steps: int | None = None, timesteps: Sequence[float] | None = None) -> None:
        """Start a new generation at the next denoiser call (for loops that call the transformer directly)."""
        self.tracker.begin(num_steps=num_steps, timesteps=timesteps)

    # -- detaching -------------------------------------------------------------------------------------------------
    def remove(self) -> None:
        """Detach every hook: the model behaves bit-identically to one that never had hooks."""
        if not self.active:
            return
        patched = self._scheduler_patched
        if patched is not None and patched[0].__dict__.get("set_timesteps") is not patched[2]:
            raise HookStackError(
                f"cannot detach cachelab, nothing was detached: {type(patched[0]).__name__}.set_timesteps was "
                "replaced after cachelab wrapped it; restore that replacement first"
            )
        self.runtime.detach()  # all hooks or none
        if patched is not None:
            scheduler, previous, _ = patched
            if previous is None:
                del scheduler.set_timesteps
            else:
                scheduler.set_timesteps = previous
            self._scheduler_patched = None
        for model, had_instance_attr, original in self._contexts_patched:
            if had_instance_attr:
                model.cache_context = original
            else:
                del model.cache_context
        self._contexts_patched = []
        for model in self.denoisers.values():
            if _HANDLES.get(model) is self:
                del _HANDLES[model]
        self.active = False

    def __enter__(self) -> "CacheHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    # -- reports -----------------------------------------------------------------------------------------------------
    def stats(self, generation: int = -1) -> Stats:
        """Computed vs reused forwards and MACs, per site kind and step, of a generation (default: the last)."""
        return self.runtime.stats(generation)

    def plan(self, num_steps: int, timesteps: Sequence[float] | None = None) -> Plan:
        """Compute/reuse per site and step that the policy's schedule gives for ``num_steps`` steps."""
        return Plan(self.runtime.plan(num_steps, timesteps), {s.key: s.role for s in self.sites})

    def cache_bytes(self) -> int:
        """Bytes of device storage the stored values keep alive now (peaks over a generation, and how much of it
        later calls read: ``runtime.track_cache`` and ``runtime.cache_peaks()``, as ``cachelab bench`` does)."""
        return self.runtime.cache_bytes()

    @property
    def owned_sites(self) -> list:
        return [slot.site for slot in self.runtime.slots.values()]

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return f"<CacheHandle {self.policy!r} on {len(self.owned_sites)} sites, {state}>"


def apply(
    target: Any,
    policy: PolicySpec,
    *,
    sites: Mapping[str, str | list[str]] | None = None,
    cfg: CfgMode = "auto",
    cfg_order: CfgOrder = "cond_first",
    num_steps: int | None = None,
    count_macs: bool = True,
    timestep_arg: str | None = None,
    replace: bool = False,
    **params: Any,
) -> CacheHandle:
    """Attach a cache policy to a diffusers transformer, any torch DiT, or a diffusers pipeline.

    Args:
        target: the denoiser module, or a pipeline (its ``transformer*`` components are hooked).
        policy: a policy name, config, :class:`Policy`, dict, YAML/JSON path, or a list of those (composition).
        sites: ``role -> regex`` patterns (full match on module names) to name sites of models cachelab cannot
            see by itself, or to override automatic discovery.
        cfg: how classifier-free guidance reaches the denoiser: ``auto`` (detect a batched ``[uncond, cond]``
            call by its duplicated latents; repeated timesteps mean two calls per step), ``batched``,
            ``sequential`` or ``off``.
        cfg_order: which branch comes first when CFG runs as two calls per step.
        num_steps: number of sampling steps, for progress schedules when the transformer is called without a
            pipeline (with a pipeline it is read from the scheduler).
        count_macs: measure MACs per site once per input shape (for ``stats()``); costs one slower first call.
        timestep_arg: the name of the denoiser's timestep parameter, for a model whose parameter is named none of
            ``timestep``, ``timesteps``, ``t``, ``sigma``, ``sigmas``, ``noise_level`` and contains no ``time``.
        replace: if the model already has a cachelab handle, remove it first instead of raising.
        **params: parameters of the named policy.
    """
    _check_choice("cfg", cfg, ("auto", "batched", "sequential", "off"))
    _check_choice("cfg_order", cfg_order, ("cond_first", "uncond_first"))
    if num_steps is not None and (not isinstance(num_steps, int) or num_steps < 1):
        raise ValueError(f"num_steps={num_steps!r}: give a positive whole number of sampling steps")
    denoisers, _ = denoisers_of(target)
    for model in denoisers.values():
        existing = _HANDLES.get(model)
        if existing is None and hook_of(model) is None:
            continue
        if not replace:
            raise AlreadyAppliedError(
                f"{type(model).__name__} already has cachelab hooks ({existing!r}); call handle.remove() first, "
                "or pass replace=True to swap the policy"
            )
        if existing is not None:
            existing.remove()
    resolved = resolve_policy(policy, **params)
    return CacheHandle(target, resolved, sites, cfg, cfg_order, num_steps, count_macs, timestep_arg)


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {', '.join(allowed)}")


def _timesteps_of(scheduler):
    """The scheduler's timesteps: the tensor itself when it is one (calls that pass views of it are then read
    without a device sync), else a list of numbers."""
    timesteps = getattr(scheduler, "timesteps", None)
    if timesteps is None or isinstance(timesteps, torch.Tensor):
        return timesteps
    try:
        return [float(t) for t in timesteps]
    except TypeError:
        return None


def _num_train_timesteps(pipeline) -> int:
    scheduler = getattr(pipeline, "scheduler", None)
    config = getattr(scheduler, "config", None)
    return int(getattr(config, "num_train_timesteps", 1000) or 1000) if config is not None else 1000


def handle_of(model: nn.Module) -> CacheHandle | None:
    """The active handle attached to ``model``, if any."""
    return _HANDLES.get(model)
