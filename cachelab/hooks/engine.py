"""The runtime behind a cache handle: site hooks, the denoiser hook, plans, histories and counts.

A hook never knows which policy it serves: each hooked site has a *controller* (anything with the attributes of
:class:`Controller`), and the runtime hands it a :class:`Call` for every intercepted forward.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable, Protocol

import torch
from torch import nn
from torch.utils import flop_counter

from cachelab.hooks.context import StepContext, StepTracker, plan_contexts
from cachelab.hooks.history import History, tree_leaves
from cachelab.hooks.registry import ModuleHook, attach, detach_all
from cachelab.hooks.stats import GenerationRecord, Stats
from cachelab.hooks.sites import Site, denoiser_key


class Controller(Protocol):
    """What the runtime needs from whatever decides at a site (a policy)."""

    #: computed values kept per site and branch (the reuse step reads this many)
    history: int
    #: True when ``compute_at`` depends only on the step context, so plans can be built ahead
    static: bool

    def compute_at(self, site: Site, ctx: StepContext) -> bool: ...

    def forward(self, site: Site, call: "Call") -> Any: ...


class Call:
    """One intercepted forward: its inputs, the original forward, and the services a controller may use."""

    __slots__ = ("site", "ctx", "original", "args", "kwargs", "runtime", "computed_branches", "_slot")

    def __init__(self, site: Site, ctx: StepContext, original, args, kwargs, runtime: "Runtime", slot: "_SiteSlot"):
        self.site = site
        self.ctx = ctx
        self.original = original
        self.args = args
        self.kwargs = kwargs
        self.runtime = runtime
        self.computed_branches: tuple[str, ...] = ()
        self._slot = slot

    # -- running the real forward ----------------------------------------------------------------------------
    def run(self, args: tuple | None = None, kwargs: dict | None = None, branches: tuple[str, ...] | None = None):
        """Run the original forward (on other inputs if given, holding only ``branches`` of the batch)."""
        args = self.args if args is None else args
        kwargs = self.kwargs if kwargs is None else kwargs
        if branches is None or branches == self.ctx.branches:
            self.computed_branches += self.ctx.branches
            return self.original(*args, **kwargs)
        runtime, outer = self.runtime, self.runtime.ctx
        runtime.ctx = outer.with_branches(branches)
        try:
            out = self.original(*args, **kwargs)
        finally:
            runtime.ctx = outer
        self.computed_branches += branches
        return out

    def argument(self, name: str, default: Any = None) -> Any:
        """An input of the call by parameter name (positional or keyword)."""
        if name in self.kwargs:
            return self.kwargs[name]
        index = self._slot.positions.get(name)
        if index is not None and index < len(self.args):
            return self.args[index]
        return default

    # -- the plan and the stored values ------------------------------------------------------------------------
    def should_compute(self) -> bool:
        """The plan's decision for this step, overridden to compute when too little is stored to reuse."""
        slot = self._slot
        if not slot.plan_says_compute(self.ctx):
            return slot.history.available(self.ctx.branches) < slot.controller.history
        return True

    def planned_compute(self) -> bool:
        """The plan's decision for this step alone (no check of what is stored)."""
        return self._slot.plan_says_compute(self.ctx)

    def should_store(self) -> bool:
        return self._slot.keep_at(self.ctx.step)

    def store(self, value: Any) -> None:
        self._slot.history.push(value, self.ctx.branches, self.ctx.step)

    def cached(self, count: int | None = None) -> list[Any]:
        """Stored values for this call's branches, most recent first."""
        return self._slot.history.get(self.ctx.branches, count or self._slot.controller.history)

    @property
    def history(self) -> History:
        return self._slot.history

    @property
    def state(self) -> dict:
        """Free-form per-site storage for controllers that keep more than a history; cleared every generation."""
        return self._slot.state


class _SiteSlot:
    """Runtime state of one hooked site."""

    def __init__(self, site: Site, controller: Controller, original_forward: Callable):
        self.site = site
        self.controller = controller
        self.history = History(max(controller.history, 1))
        self.state: dict = {}
        self.positions = _parameter_positions(original_forward)
        self.plan: list[bool] | None = None  # compute? per step, when known ahead
        self.keep: list[bool] | None = None  # store the computed value? per step
        self.last_use: int | None = None  # last step that reads stored values

    def plan_says_compute(self, ctx: StepContext) -> bool:
        if self.plan is not None and ctx.step < len(self.plan):
            return self.plan[ctx.step]
        return self.controller.compute_at(self.site, ctx)

    def keep_at(self, step: int) -> bool:
        if self.keep is not None and step < len(self.keep):
            return self.keep[step]
        return True

    def build_plan(self, contexts: list[StepContext]) -> None:
        if not self.controller.static:
            self.plan = self.keep = self.last_use = None
            return
        self.plan, self.keep, self.last_use = plan_site(self.controller, self.site, contexts)


def plan_site(controller: Controller, site: Site, contexts: list[StepContext]):
    """``(compute per step, store per step, last step that reads stored values)`` of a static controller.

    A reuse with too little stored (the first steps) becomes a compute, as the runtime would do; a computed value
    is stored only if a later reuse reads it."""
    plan = [controller.compute_at(site, ctx) for ctx in contexts]
    depth = controller.history
    computes: list[int] = []
    keep = [False] * len(plan)
    last_use = None
    for step, compute in enumerate(plan):
        if not compute and len(computes) < depth:
            plan[step] = compute = True
        if compute:
            computes.append(step)
        else:
            for earlier in computes[-depth:]:
                keep[earlier] = True
            last_use = step
    return plan, keep, last_use


def _parameter_positions(fn: Callable) -> dict[str, int]:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return {}
    return {
        p.name: i
        for i, p in enumerate(params)
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }


class _SiteHook(ModuleHook):
    def __init__(self, runtime: "Runtime", slot: _SiteSlot):
        self.runtime = runtime
        self.slot = slot

    def new_forward(self, module, original, args, kwargs):
        runtime = self.runtime
        ctx = runtime.ctx
        if ctx is None:  # called outside a denoiser call (e.g. a block run on its own): behave as if unhooked
            return original(*args, **kwargs)
        slot = self.slot
        if slot.last_use is not None and ctx.step > slot.last_use and slot.history.depth:
            slot.history.clear()  # nothing reads it any more in this generation
        call = Call(slot.site, ctx, original, args, kwargs, runtime, slot)
        counter = runtime.flop_counter
        if counter is not None:
            before = counter.get_total_flops()
            out = slot.controller.forward(slot.site, call)
            if call.computed_branches == ctx.branches:
                runtime.profile_site(slot.site, (counter.get_total_flops() - before) / 2, ctx)
        else:
            out = slot.controller.forward(slot.site, call)
        runtime.count(slot.site, call)
        return out


class _DenoiserHook(ModuleHook):
    def __init__(self, runtime: "Runtime", site: Site, slot: _SiteSlot | None, original_forward: Callable):
        self.runtime = runtime
        self.site = site
        self.slot = slot
        positions = _parameter_positions(original_forward)
        self.timestep_position = positions.get("timestep")
        self.sample_names = [n for n in ("hidden_states", "sample", "x", "latents") if n in positions]

    def _timestep(self, args, kwargs) -> float:
        t = kwargs.get("timestep")
        if t is None and self.timestep_position is not None and self.timestep_position < len(args):
            t = args[self.timestep_position]
        if t is None:
            raise ValueError(
                f"{type(self.site.module).__name__}.forward was called without a `timestep`: cachelab derives the "
                "denoising step from it. Pass timestep=... (positionally or by keyword)."
            )
        return self.runtime.tracker.timestep_value(t)

    def _sample(self, args, kwargs) -> torch.Tensor | None:
        for name in self.sample_names:
            if isinstance(kwargs.get(name), torch.Tensor):
                return kwargs[name]
        if args and isinstance(args[0], torch.Tensor):
            return args[0]
        return None

    def new_forward(self, module, original, args, kwargs):
        runtime = self.runtime
        if runtime.ctx is not None:  # a denoiser nested in another's call (never in diffusers): just run it
            return original(*args, **kwargs)
        t = self._timestep(args, kwargs)
        tracker = runtime.tracker
        new_generation, call_index = tracker.advance(t)
        if new_generation:
            runtime.start_generation(t)
        sample = self._sample(args, kwargs)
        batch = int(sample.shape[0]) if sample is not None else 1
        branches = tracker.branches_for_call(call_index, batch, sample)
        ctx = tracker.context(t, branches, max(batch // len(branches), 1))
        runtime.ctx = ctx
        runtime.record.logical_samples[(self.site.key, ctx.step)] += batch
        try:
            signature = _signature(args, kwargs)
            if runtime.needs_profile(self.site, signature):
                with flop_counter.FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS) as counter:
                    runtime.flop_counter = counter
                    try:
                        out = self._dispatch(original, args, kwargs, ctx)
                    finally:
                        runtime.flop_counter = None
                if runtime.profile_complete(signature, self.site, counter.get_total_flops() / 2, ctx):
                    runtime.use_profile(self.site, signature)
            else:
                runtime.use_profile(self.site, signature)
                out = self._dispatch(original, args, kwargs, ctx)
        finally:
            runtime.ctx = None
        if runtime.track_cache:
            held, needed = runtime.cache_bytes()
            runtime.peak_cache = (max(runtime.peak_cache[0], held), max(runtime.peak_cache[1], needed))
        return out

    def _dispatch(self, original, args, kwargs, ctx):
        if self.slot is None:
            return original(*args, **kwargs)
        call = Call(self.site, ctx, original, args, kwargs, self.runtime, self.slot)
        out = self.slot.controller.forward(self.site, call)
        self.runtime.count(self.site, call)
        return out


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


_EXTRA_FLOP_FORMULAS = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    # the CPU flash kernel has no formula in torch's registry; its cost is that of any SDPA
    _EXTRA_FLOP_FORMULAS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_flops


def _signature(args, kwargs) -> tuple:
    """Input shapes without the batch dimension: per-sample MACs are the same for equal signatures."""
    parts = []
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            parts.append((i, tuple(a.shape[1:])))
    for k, v in kwargs.items():
        if isinstance(v, torch.Tensor):
            parts.append((k, tuple(v.shape[1:])))
    return tuple(parts)


class Runtime:
    """Everything a handle attaches: one tracker, one slot per hooked site, counts per generation."""

    def __init__(
        self,
        denoisers: dict[str, nn.Module],
        assignments: list[tuple[Site, Controller]],
        tracker: StepTracker,
        schedule_source: Callable[[], Any] | None = None,
        count_macs: bool = True,
    ):
        self.tracker = tracker
        self.schedule_source = schedule_source
        self.count_macs = count_macs
        self.ctx: StepContext | None = None
        self.flop_counter = None
        self.slots: dict[str, _SiteSlot] = {}
        self.sites: list[Site] = [s for s, _ in assignments]
        self.records: list[GenerationRecord] = []
        self.record = GenerationRecord(generation=-1)
        self._profiles: dict[tuple, dict[str, float]] = {}
        self._profiling: dict[str, float] = {}
        self._reused_while_profiling = False
        #: when True, the largest cache footprint seen at the end of any denoiser call is kept in peak_cache
        self.track_cache = False
        self.peak_cache = (0, 0)
        self._attached: list[tuple[nn.Module, str]] = []  # (module, hook name), in attach order
        self._denoiser_sites: dict[str, Site] = {}
        for site, controller in assignments:
            self.slots[site.key] = _SiteSlot(site, controller, site.module.forward)
        try:
            for name, model in denoisers.items():
                site = Site(name="", role="denoiser", module=model, denoiser=name)
                owned = [s for s in self.sites if s.role == "denoiser" and s.denoiser == name]
                if owned:
                    site = owned[0]
                self._denoiser_sites[site.key] = site
                slot = self.slots.get(site.key)
                name = f"cachelab:{site.key}"
                attach(model, _DenoiserHook(self, site, slot, model.forward), name)
                self._attached.append((model, name))
            for site in self.sites:
                if site.role != "denoiser":
                    name = f"cachelab:{site.key}"
                    attach(site.module, _SiteHook(self, self.slots[site.key]), name)
                    self._attached.append((site.module, name))
        except Exception:
            self.detach()
            raise

    # -- lifecycle -------------------------------------------------------------------------------------------
    def detach(self) -> None:
        """Detach every hook, or none (:class:`~cachelab.errors.HookStackError` says what blocks it)."""
        detach_all(reversed(self._attached))
        self._attached.clear()
        self.reset_state()

    def reset_state(self) -> None:
        for slot in self.slots.values():
            slot.history.clear()
            slot.state.clear()

    def start_generation(self, first_timestep: float) -> None:
        """Called on the first denoiser call of a generation: clear stored values, build plans."""
        self.reset_state()
        if self.schedule_source is not None and self.tracker.schedule is None:
            timesteps = self.schedule_source()
            if timesteps is not None and len(timesteps):
                self.tracker.set_schedule(timesteps)
        self.tracker.align(first_timestep)
        self.record = GenerationRecord(generation=self.tracker.generation, num_steps=self.tracker.num_steps)
        self.records.append(self.record)
        num_steps = self.tracker.num_steps
        contexts = plan_contexts(num_steps, self.tracker.schedule) if num_steps else None
        for slot in self.slots.values():
            if contexts is None or (self.tracker.schedule is None and getattr(slot.controller, "needs_timesteps", False)):
                slot.plan = slot.keep = slot.last_use = None
            else:
                slot.build_plan(contexts)

    # -- counting ----------------------------------------------------------------------------------------------
    def count(self, site: Site, call: Call) -> None:
        ctx = call.ctx
        computed = len(call.computed_branches) * ctx.branch_size
        total = len(ctx.branches) * ctx.branch_size
        if computed < total and self.flop_counter is not None:
            self._reused_while_profiling = True
        self.record.record(site.key, ctx.step, min(computed, total), max(total - computed, 0))

    def needs_profile(self, denoiser: Site, signature: tuple) -> bool:
        return self.count_macs and (denoiser.key, signature) not in self._profiles

    def profile_site(self, site: Site, macs: float, ctx: StepContext) -> None:
        self._profiling[site.key] = macs / (len(ctx.branches) * ctx.branch_size)

    def profile_complete(self, signature: tuple, denoiser: Site, macs: float, ctx: StepContext) -> bool:
        """Store the per-sample MACs measured in a call; True once every site of the denoiser is measured."""
        if not self._reused_while_profiling:  # the denoiser's own total is only valid when nothing was skipped
            self._profiling[denoiser.key] = macs / (len(ctx.branches) * ctx.branch_size)
        self._reused_while_profiling = False
        wanted = {k for k, s in self.slots.items() if s.site.denoiser == denoiser.denoiser} | {denoiser.key}
        if not wanted.issubset(self._profiling):
            return False  # some site reused during this call: measure it on a later call
        self._profiles[(denoiser.key, signature)] = {k: self._profiling.pop(k) for k in wanted}
        return True

    def use_profile(self, denoiser: Site, signature: tuple) -> None:
        profile = self._profiles.get((denoiser.key, signature))
        if profile is None:
            return
        if self.record.macs_per_sample is None:
            self.record.macs_per_sample = {}
        if denoiser.key not in self.record.macs_per_sample:
            self.record.macs_per_sample.update(profile)

    # -- reports -------------------------------------------------------------------------------------------------
    def stats(self, generation: int = -1) -> Stats:
        if not self.records:
            raise RuntimeError("no generation has run with this handle yet")
        roles = {s.key: s.role for s in self.sites}
        denoiser_of = {s.key: denoiser_key(s.denoiser) for s in self.sites}
        for key in self._denoiser_sites:
            roles.setdefault(key, "denoiser")
            denoiser_of[key] = key
        return Stats(self.records[generation], roles, denoiser_of)

    def plan(self, num_steps: int, timesteps=None) -> dict[str, list[bool]]:
        """Per site, compute (True) or reuse (False) at each step of a generation of ``num_steps``."""
        contexts = plan_contexts(num_steps, timesteps)
        out = {}
        for key, slot in self.slots.items():
            if not slot.controller.static:
                continue
            if timesteps is None and getattr(slot.controller, "needs_timesteps", False):
                warnings.warn(
                    f"the plan of {key} uses timestep windows; pass timesteps= for the exact plan "
                    "(an evenly spaced 1000..0 schedule stands in)",
                    stacklevel=3,
                )
            out[key] = plan_site(slot.controller, slot.site, contexts)[0]
        return out

    def cache_bytes(self) -> tuple[int, int]:
        """(bytes held by stored values, bytes the stored branch slices need)."""
        storages: dict[int, int] = {}
        required = 0
        for slot in self.slots.values():
            for t in slot.history.tensors() + tree_leaves(list(slot.state.values())):
                storage = t.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
            required += slot.history.required_bytes()
            required += sum(t.numel() * t.element_size() for t in tree_leaves(list(slot.state.values())))
        return sum(storages.values()), required
