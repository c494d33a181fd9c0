"""The runtime behind a cache handle: site hooks, the denoiser hook, plans, histories and counts.

A hook never knows which policy it serves: each hooked site has a *controller* (anything with the attributes of
:class:`Controller`), and the runtime hands it a :class:`Call` for every intercepted forward.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import warnings
from typing import Any, Callable, Iterator, Protocol

import torch
from torch import nn
from torch.utils import flop_counter

from cachelab.hooks.context import StepContext, StepTracker, plan_contexts
from cachelab.hooks.graph_memory import StorageOwner
from cachelab.hooks.history import CLOCK, History, tree_leaves
from cachelab.errors import NothingReusedWarning, PolicyError
from cachelab.hooks.parallel import ContextParallel, check_split_inputs, context_parallel_of
from cachelab.hooks.registry import ModuleHook, attach, detach_all
from cachelab.hooks.stats import GenerationRecord, Stats
from cachelab.hooks.sites import Site, denoiser_key

_log = logging.getLogger("cachelab")


class Controller(Protocol):
    """What the runtime needs from whatever decides at a site (a policy)."""

    #: computed values kept per site and branch (the reuse step reads this many)
    history: int
    #: True when ``compute_at`` depends only on the step context, so plans can be built ahead
    static: bool

    #: True when a data-dependent controller (``static`` False) reads its data through ``runtime.reduce_sum`` (or
    #: only through values that are whole on every rank), so that its decisions agree on every rank of a
    #: context-parallel group; static controllers agree by construction
    reduces_across_ranks: bool

    #: True when the controller overrides ``forward``; False when its calls follow the plan (run unchanged, or
    #: replaced by ``reuse``), which lets the runtime skip building a :class:`Call` on plain compute steps
    full_control: bool

    def compute_at(self, site: Site, ctx: StepContext) -> bool: ...

    def forward(self, site: Site, call: "Call") -> Any: ...

    def remember(self, site: Site, call: "Call", output: Any) -> Any: ...

    def reuse(self, site: Site, call: "Call", cached: list[Any]) -> Any: ...


class Deferred:
    """A run of the original forward that the runtime performs after the controller has decided (see
    :meth:`Call.defer`): on ``args``/``kwargs``, holding ``branches``, then ``then(output)`` gives the call's value."""

    __slots__ = ("args", "kwargs", "branches", "then")

    def __init__(self, args, kwargs, branches, then):
        self.args, self.kwargs, self.branches, self.then = args, kwargs, branches, then


class Call:
    """One intercepted forward: its inputs, the original forward, and the services a controller may use.

    A controller computes with :meth:`run` (runs now) or returns :meth:`defer` (the runtime runs it). Both give the
    same values; deferring keeps the computation in the caller's graph under ``torch.compile``, since the
    controller itself always runs outside compiled graphs.
    """

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

    def defer(
        self,
        args: tuple | None = None,
        kwargs: dict | None = None,
        branches: tuple[str, ...] | None = None,
        then: Callable[[Any], Any] | None = None,
    ) -> Deferred:
        """Ask the runtime to run the original forward (as :meth:`run` would) and return ``then(output)``
        (``output`` itself without ``then``). Return the result from ``forward``."""
        return Deferred(
            self.args if args is None else args,
            self.kwargs if kwargs is None else kwargs,
            self.ctx.branches if branches is None else branches,
            then,
        )

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

    def drop_unread(self, step: int) -> None:
        """Clear the stored values once no step of this generation reads them any more."""
        if self.last_use is not None and step > self.last_use and self.history.depth:
            self.history.clear()

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


# What a hook does with one call; decided outside any compiled graph (see ``_SiteHook``). _STORE: run and keep the
# output (a prepared decision only).
_RUN, _DEFERRED, _REUSE, _EAGER, _PASS, _STORE = range(6)


class _OutsideGraphs:
    """Gives a hook its bookkeeping methods twice: as they are, for eager calls, and under
    ``torch.compiler.disable`` for calls that dynamo traces. The disabled wrapper costs microseconds per call,
    which launch-bound eager workloads would feel at every hooked site."""

    def _bookkeeping(self, **methods) -> None:
        self._eager_methods = methods
        self._disabled = {name: torch.compiler.disable(fn) for name, fn in methods.items()}

    def _methods(self):
        """The bookkeeping methods for this call: the disabled ones while dynamo traces, and also while it merely
        watches (a frame it runs untraced inside a compiled region: a plain call would then be compiled itself)."""
        if torch.compiler.is_compiling() or _dynamo_watching():
            return self._disabled
        return self._eager_methods


_eval_frame_callback = getattr(getattr(torch._C, "_dynamo", None), "eval_frame", None)
_eval_frame_callback = getattr(_eval_frame_callback, "get_eval_frame_callback", None)


def _dynamo_watching() -> bool:
    """Whether dynamo would intercept a new Python frame now (never true outside torch.compile'd code)."""
    return _eval_frame_callback is None or _eval_frame_callback() not in (None, False)


def _is_compiled(module: nn.Module) -> bool:
    """Whether ``module`` runs compiled: ``module.compile()`` or a ``torch.compile`` wrapper in its place."""
    return getattr(module, "_compiled_call_impl", None) is not None or type(module).__name__ == "OptimizedModule"


def _begin_deferred(runtime: "Runtime", call: Call, deferred: Deferred) -> None:
    """Before the runtime runs a deferred forward: sites inside it see the branches it holds."""
    if deferred.branches != call.ctx.branches:
        runtime.ctx = call.ctx.with_branches(deferred.branches)


def _end_deferred(runtime: "Runtime", call: Call, deferred: Deferred, output: Any) -> Any:
    runtime.ctx = call.ctx
    call.computed_branches += deferred.branches
    return output if deferred.then is None else deferred.then(output)


class _SiteHook(_OutsideGraphs, ModuleHook):
    """The hook of one site.

    Its forward is written for ``torch.compile``: the controller's decision and all bookkeeping (the step context,
    plans, stored values, counts) run in methods under ``torch.compiler.disable``, which hand back a small integer
    and what to run or return; the site's own computation stays in the caller's graph. A compiled block therefore
    breaks its graph only at the sites a policy owns, and dynamo guards on nothing that changes between steps
    (a constant per kind of decision, so a few graphs compiled once).
    """

    def __init__(self, runtime: "Runtime", slot: _SiteSlot):
        self.runtime = runtime
        self.slot = slot
        self.full_control = getattr(slot.controller, "full_control", True)
        #: whether the decision of each call can be prepared at the denoiser's entry (see Runtime.prepare_sites):
        #: a static controller that follows its plan and builds reused values from stored ones alone
        self.preparable = (getattr(slot.controller, "static", False) and not self.full_control
                           and not getattr(slot.controller, "reads_inputs", True))
        self.clear_prepared()
        self._pending: tuple[Call, Deferred] | None = None
        self._bookkeeping(decide=self._decide, finish=self._finish, abandon=self._abandon, eager=self._eager)

    def clear_prepared(self) -> None:
        #: whether the running denoiser call has decided this site's call already (see Runtime.prepare_sites)
        self.prepared = False
        #: the prepared decision: _RUN, _STORE or _REUSE; the site's forward never reads it (see new_forward)
        self.prepared_mode = _RUN
        self.reused: Any = None  # the value a prepared _REUSE call returns
        self.prepared_call: Call | None = None
        self.stored: Any = None  # the output of a prepared call that computes
        self.hit = False  # whether the site ran (or was reused) under its prepared decision

    def new_forward(self, module, original, args, kwargs):
        if self.prepared:
            # decided at the denoiser's entry, and traced with no break. Dynamo guards on what the forward reads,
            # so it reads only whether a value is reused: computing and computing-to-store share one graph (the
            # output is always handed over; settling keeps it only for a store), which halves the graphs per
            # block against dynamo's recompile limit, shared by every block of a regionally compiled model
            self.hit = True
            reused = self.reused
            if reused is not None:
                return reused
            output = original(*args, **kwargs)
            self.stored = output
            return output
        if torch.compiler.is_compiling():
            self.runtime.compiled = True  # from the next denoiser call on, decisions of such sites are prepared
        methods = self._methods()
        mode, payload = methods["decide"](original, args, kwargs)
        if mode == _RUN:
            return original(*args, **kwargs)
        if mode == _REUSE:
            return payload
        if mode == _DEFERRED:
            try:
                output = original(*payload.args, **payload.kwargs)
            except BaseException:
                methods["abandon"]()
                raise
            return methods["finish"](output)
        return methods["eager"](original, args, kwargs)

    def _decide(self, original, args, kwargs):
        runtime = self.runtime
        ctx = runtime.ctx
        if ctx is None:  # called outside a denoiser call (e.g. a block run on its own): behave as if unhooked
            return _RUN, None
        slot = self.slot
        step = ctx.step
        slot.drop_unread(step)
        if runtime.flop_counter is not None:  # the denoiser's measuring pass: run, count, touch no state
            return _EAGER, None
        plan = slot.plan
        if not self.full_control and plan is not None and step < len(plan) and plan[step] and not slot.keep[step]:
            runtime.record.record(slot.site.key, step, len(ctx.branches) * ctx.branch_size, 0)  # without a Call
            return _RUN, None
        call = Call(slot.site, ctx, original, args, kwargs, runtime, slot)
        result = slot.controller.forward(slot.site, call)
        if isinstance(result, Deferred):
            _begin_deferred(runtime, call, result)
            self._pending = (call, result)
            return _DEFERRED, result
        runtime.count(slot.site, call)
        return _REUSE, result

    def _finish(self, output):
        (call, deferred), self._pending = self._pending, None
        value = _end_deferred(self.runtime, call, deferred, output)
        self.runtime.count(self.slot.site, call)
        return value

    def _abandon(self) -> None:
        call, _ = self._pending
        self._pending = None
        self.runtime.ctx = call.ctx

    def _eager(self, original, args, kwargs):
        runtime, slot = self.runtime, self.slot
        counter = runtime.flop_counter
        before = counter.get_total_flops()
        out = original(*args, **kwargs)
        runtime.profile_site(slot.site, (counter.get_total_flops() - before) / 2, runtime.ctx)
        return out


#: Names a denoiser's timestep parameter goes by, in order of preference (HiDream: ``timesteps``; Z-Image: ``t``).
TIMESTEP_NAMES = ("timestep", "timesteps", "t", "sigma", "sigmas", "noise_level")


def timestep_parameter(module: nn.Module, forward: Callable, given: str | None = None) -> str | None:
    """The name of ``forward``'s timestep parameter: ``given``, else a known name, else the first parameter
    whose name contains ``time``. None when ``forward`` only takes ``**kwargs`` (looked up by name per call)."""
    try:
        params = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        params = {}
    open_kwargs = not params or any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())
    if given is not None:
        if given not in params and not open_kwargs:
            raise ValueError(
                f"timestep_arg={given!r}: {type(module).__name__}.forward has no such parameter; its parameters "
                f"are {', '.join(params)}"
            )
        return given
    for name in TIMESTEP_NAMES:
        if name in params:
            return name
    for name in params:
        if "time" in name:
            return name
    if open_kwargs:
        return None
    raise ValueError(
        f"cachelab cannot find the timestep argument of {type(module).__name__}.forward({', '.join(params)}): it "
        f"looked for a parameter named {', '.join(TIMESTEP_NAMES)} or containing 'time'. cachelab derives the "
        "denoising step from it; name it with cachelab.apply(..., timestep_arg='<parameter name>')."
    )


class _DenoiserHook(_OutsideGraphs, ModuleHook):
    """The hook of a whole denoiser: places each call in sampling (step, CFG branch) and runs the controller of
    the denoiser site if a policy owns it. Like :class:`_SiteHook`, its bookkeeping runs outside compiled graphs;
    a call that is profiled for MACs or decided by a denoiser-level policy (CFG-Cache) runs eagerly."""

    def __init__(self, runtime: "Runtime", site: Site, slot: _SiteSlot | None, original_forward: Callable):
        self.runtime = runtime
        self.site = site
        self.slot = slot
        positions = _parameter_positions(original_forward)
        given = runtime.tracker.timestep_arg
        self.timestep_name = timestep_parameter(site.module, original_forward, given)
        self.timestep_position = positions.get(self.timestep_name) if self.timestep_name else None
        self.sample_names = [n for n in ("hidden_states", "sample", "x", "latents") if n in positions]
        self._pending: tuple[Call, Deferred] | None = None
        self._bookkeeping(enter=self._enter, finish=self._finish, exit=self._exit)

    def _timestep(self, args, kwargs):
        name = self.timestep_name
        if name is None:  # forward(**kwargs): look for a known name in this call
            name = next((n for n in TIMESTEP_NAMES if n in kwargs), None)
        t = kwargs.get(name) if name is not None else None
        if t is None and self.timestep_position is not None and self.timestep_position < len(args):
            t = args[self.timestep_position]
        if t is None:
            looked = repr(name) if name else ", ".join(TIMESTEP_NAMES)
            raise ValueError(
                f"{type(self.site.module).__name__}.forward was called without its timestep (looked for {looked}): "
                "cachelab derives the denoising step from it. Pass it by keyword or position, or name the "
                "parameter with cachelab.apply(..., timestep_arg='<parameter name>')."
            )
        return t

    def _sample(self, args, kwargs) -> torch.Tensor | None:
        for name in self.sample_names:
            if isinstance(kwargs.get(name), torch.Tensor):
                return kwargs[name]
        if args and isinstance(args[0], torch.Tensor):
            return args[0]
        return None

    def new_forward(self, module, original, args, kwargs):
        if torch.compiler.is_compiling():
            self.runtime.compiled = True  # the whole denoiser is traced: prepare its sites' decisions at entry
        methods = self._methods()
        mode, payload = methods["enter"](original, args, kwargs)
        if mode == _PASS:
            return original(*args, **kwargs)
        if mode == _REUSE:
            return payload
        if mode == _DEFERRED:
            args, kwargs = payload.args, payload.kwargs
        try:
            output = original(*args, **kwargs)
        except BaseException as exc:
            methods["exit"]()
            explained = self.runtime.parallel.explain(exc) if self.runtime.parallel is not None else None
            if explained is not None:
                raise explained from None
            raise
        return methods["finish"](output)

    def _enter(self, original, args, kwargs):
        runtime = self.runtime
        if runtime.ctx is not None:  # a denoiser nested in another's call (never in diffusers): just run it
            return _PASS, None
        tracker = runtime.tracker
        t, index = tracker.read_timestep(self._timestep(args, kwargs))
        new_generation, call_index = tracker.advance(t, index)
        if new_generation:
            runtime.start_generation(t, index)
        sample = self._sample(args, kwargs)
        batch = int(sample.shape[0]) if sample is not None else 1
        if runtime.parallel is not None and tracker.batched is None and sample is not None:
            # batched CFG is recognised by equal halves: decided on the whole latents, so alike on every rank
            sample = runtime.whole_input("hidden_states", sample)
        branches = tracker.branches_for_call(call_index, batch, sample)
        ctx = tracker.context(t, branches, max(batch // len(branches), 1))
        runtime.ctx = ctx
        runtime.record.logical_samples[(self.site.key, ctx.step)] += batch
        signature = _signature(args, kwargs) if runtime.count_macs else ()
        if runtime.needs_profile(self.site, signature):
            self._measure(original, args, kwargs, ctx, signature)
        runtime.use_profile(self.site, signature)
        if self.slot is None:
            runtime.prepare_sites(self.site.denoiser)
            return _RUN, None
        call = Call(self.site, ctx, original, args, kwargs, runtime, self.slot)
        result = self.slot.controller.forward(self.site, call)
        if isinstance(result, Deferred):
            _begin_deferred(runtime, call, result)
            self._pending = (call, result)
            runtime.prepare_sites(self.site.denoiser)
            return _DEFERRED, result
        runtime.count(self.site, call)
        self._exit()
        return _REUSE, result

    def _finish(self, output):
        self.runtime.settle_sites()
        pending, self._pending = self._pending, None
        if pending is not None:
            call, deferred = pending
            output = _end_deferred(self.runtime, call, deferred, output)
            self.runtime.count(self.site, call)
        self._exit()
        return output

    def _exit(self) -> None:
        runtime = self.runtime
        runtime.drop_prepared()  # after an exception: nothing of this call is kept (else settled already)
        runtime.ctx = None
        self._pending = None
        runtime.own_stored()
        if runtime.track_cache:
            runtime.sample_cache()

    def _measure(self, original, args, kwargs, ctx: StepContext, signature: tuple) -> None:
        """MACs per sample of the denoiser and of every site, for this input shape: one extra, uncached run of
        the call, eager, whose output is dropped. The real call then runs like every other, so the first
        generation compiles the same graphs as the later ones."""
        runtime = self.runtime
        with torch.no_grad(), _eager(), _flop_counter() as counter:
            runtime.flop_counter = counter
            try:
                original(*args, **kwargs)
            except BaseException as exc:
                runtime.ctx = None
                explained = runtime.parallel.explain(exc) if runtime.parallel is not None else None
                if explained is not None:
                    raise explained from None
                raise
            finally:
                runtime.flop_counter = None
        runtime.profile_complete(signature, self.site, counter.get_total_flops() / 2, ctx)


def _eager():
    """Compiled regions run eagerly while this lasts. The measuring pass runs under a torch dispatch mode
    (FlopCounterMode), and dynamo, meeting a frame under one, refuses it and marks its code never to be compiled
    again: without this, regionally compiled blocks would run eagerly for good after the first call."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    return set_stance("force_eager") if set_stance is not None else contextlib.nullcontext()


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


_EXTRA_FLOP_FORMULAS = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    # the CPU flash kernel has no formula in torch's registry; its cost is that of any SDPA
    _EXTRA_FLOP_FORMULAS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_flops


class _GlobalOnly:
    """FlopCounterMode's module tracker reduced to the one total this needs: the tracker names every submodule by
    walking the module tree, which recurses forever where a library's patches leave a cycle (cache-dit's blocks)."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def _flop_counter() -> flop_counter.FlopCounterMode:
    """torch's FLOP counter with the formulas it lacks and no per-module tracking (only totals are read)."""
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS)
    counter.mod_tracker = _GlobalOnly()
    return counter


@contextlib.contextmanager
def counting_macs(module: nn.Module) -> Iterator[list[float]]:
    """Count the MACs that run inside ``module``'s calls while the block lasts, with the formulas of the runtime's
    own profile (FlopCounterMode): how another library's cache is measured without trusting anyone's bookkeeping.
    Yields a one-item list holding the running total."""
    total = [0.0]
    counters: list[flop_counter.FlopCounterMode] = []

    def enter(module, args, kwargs):
        counters.append(_flop_counter())
        counters[-1].__enter__()

    def leave(module, args, kwargs, output):
        counter = counters.pop()
        counter.__exit__(None, None, None)
        total[0] += counter.get_total_flops() / 2

    handles = [module.register_forward_pre_hook(enter, with_kwargs=True),
               module.register_forward_hook(leave, with_kwargs=True, always_call=True)]
    try:
        with _eager():  # compiled regions counted under a dispatch mode would never compile again (see _eager)
            yield total
    finally:
        for handle in handles:
            handle.remove()


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
        #: diffusers' context-parallel group of the hooked model, found at the start of every generation
        self.parallel: ContextParallel | None = None
        self.slots: dict[str, _SiteSlot] = {}
        self.sites: list[Site] = [s for s, _ in assignments]
        self.records: list[GenerationRecord] = []
        self.record = GenerationRecord(generation=-1)
        self._profiles: dict[tuple, dict[str, float]] = {}
        self._profiling: dict[str, float] = {}
        self._warned_no_reuse = False
        #: when True, the cache footprint is sampled at the end of every denoiser call (see cache_peaks)
        self.track_cache = False
        self._cache_samples: list[tuple[int, int, int, list]] = []
        self._attached: list[tuple[nn.Module, str]] = []  # (module, hook name), in attach order
        self._denoiser_sites: dict[str, Site] = {}
        self._pre_hooks: list = []
        #: set when dynamo traces a site hook; from then on the decisions of preparable sites are made at the
        #: denoiser's entry, so compiled regions need no graph break at those sites
        self.compiled = False
        self._preparable: dict[str, list[_SiteHook]] = {}
        self._prepared: list[_SiteHook] = []  # the hooks holding a decision for the running denoiser call
        self._raised_limit: tuple[str, int] | None = None  # dynamo's recompile limit before cachelab raised it
        self._storage_owner = StorageOwner()  # stored tensors that CUDA graphs would overwrite get copied
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
                # a torch pre-hook runs before diffusers' hooks, whose split of the inputs precedes cachelab's entry
                self._pre_hooks.append(model.register_forward_pre_hook(check_split_inputs, with_kwargs=True))
            for site in self.sites:
                if site.role != "denoiser":
                    name = f"cachelab:{site.key}"
                    hook = _SiteHook(self, self.slots[site.key])
                    attach(site.module, hook, name)
                    self._attached.append((site.module, name))
                    if hook.preparable:
                        self._preparable.setdefault(site.denoiser, []).append(hook)
        except Exception:
            self.detach()
            raise

    # -- lifecycle -------------------------------------------------------------------------------------------
    def detach(self) -> None:
        """Detach every hook, or none (:class:`~cachelab.errors.HookStackError` says what blocks it)."""
        detach_all(reversed(self._attached))
        self._attached.clear()
        if self._raised_limit is not None:
            name, value = self._raised_limit
            setattr(torch._dynamo.config, name, value)
            self._raised_limit = None
        for hook in self._pre_hooks:
            hook.remove()
        self._pre_hooks.clear()
        self.reset_state()
        self._storage_owner.release()
        self.check_reuse()

    def check_reuse(self) -> None:
        """Warn, once per handle, when a finished generation reused nothing: nothing is silently a no-op."""
        record = self.records[-1] if self.records else None
        if self._warned_no_reuse or record is None or not self.slots or not record.events:
            return
        if any(row[1] for row in record.events.values()):
            return
        self._warned_no_reuse = True
        steps = f"{record.num_steps} steps" if record.num_steps else "an unknown number of steps"
        schedule = self.tracker.schedule
        span = f", timesteps {schedule[0]:g} to {schedule[-1]:g}" if schedule else ""
        warnings.warn(
            f"cachelab: generation {record.generation} ({steps}{span}) reused nothing at any of the policy's "
            f"{len(self.slots)} sites, so the policy only added overhead. Check its windows against this schedule "
            "(windows in timesteps are on the scheduler's 0-1000 scale; progress windows are fractions of the "
            "steps) and its intervals; handle.plan(num_steps, timesteps=pipe.scheduler.timesteps) shows what it "
            "would do.",
            NothingReusedWarning,
            stacklevel=2,
        )

    def own_stored(self) -> None:
        """After a denoiser call: copy stored tensors that may live in CUDA-graph memory, which the denoiser's
        next replay would overwrite (see :mod:`cachelab.hooks.graph_memory`). Nothing is copied without CUDA
        graphs, and a tensor is copied once."""
        owner = self._storage_owner
        owner.forget_devices()
        if not owner.graphs_loaded():
            return
        for slot in self.slots.values():
            slot.history.replace_values(owner.own)
            owner.own(slot.state)

    def reset_state(self) -> None:
        for slot in self.slots.values():
            slot.history.clear()
            slot.state.clear()

    def start_generation(self, first_timestep: float, index: int | None = None) -> None:
        """Called on the first denoiser call of a generation: clear stored values, build plans."""
        self.check_reuse()  # of the generation that just ended
        self.reset_state()
        self.parallel = self._find_parallel()
        if self.schedule_source is not None and self.tracker.schedule is None:
            timesteps = self.schedule_source()
            if timesteps is not None and len(timesteps):
                self.tracker.set_schedule(timesteps)
                self.tracker.align(first_timestep, index)
        self.record = GenerationRecord(generation=self.tracker.generation, num_steps=self.tracker.num_steps)
        self.records.append(self.record)
        if not self.compiled:  # blocks compiled on their own (regional compile): prepare decisions from the start
            compiled = [m for site in self._denoiser_sites.values() for m in site.module.modules() if _is_compiled(m)]
            if compiled:
                self.compiled = True
                self._allow_graphs_per_region(compiled)
        num_steps = self.tracker.num_steps
        contexts = plan_contexts(num_steps, self.tracker.schedule) if num_steps else None
        for slot in self.slots.values():
            if contexts is None or (self.tracker.schedule is None and getattr(slot.controller, "needs_timesteps", False)):
                slot.plan = slot.keep = slot.last_use = None
            else:
                slot.build_plan(contexts)

    def _allow_graphs_per_region(self, regions: list[nn.Module]) -> None:
        """Raise dynamo's recompile limit to what regionally compiled blocks with hooked sites need. All blocks of
        a list share one code object, and with it one limit (8 graphs by default), which the model alone can
        nearly fill (the first block's inputs have other strides; batch sizes turn dynamic). A block with k
        hooked sites needs up to 2**k graphs for each of those (each site computes or reuses): past the limit
        dynamo runs the block eagerly for good, slower than no cache at all."""
        modules = {id(site.module) for site in self.sites if site.role != "denoiser"}
        denoisers = {id(site.module) for site in self._denoiser_sites.values()}
        # a whole compiled denoiser has a code object of its own: one graph per pattern of a step's decisions
        hooked = max((sum(id(m) in modules for m in region.modules()) for region in regions
                      if id(region) not in denoisers), default=0)
        if not hooked:
            return
        config = torch._dynamo.config
        name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
        current, needed = getattr(config, name), 8 * 2 ** min(hooked, 3)
        if current < needed:
            self._raised_limit = (name, current)
            setattr(config, name, needed)
            _log.info("cachelab: torch._dynamo.config.%s raised from %d to %d (%d hooked sites in a compiled "
                      "block; restored when the hooks are removed)", name, current, needed, hooked)

    # -- context parallelism -------------------------------------------------------------------------------------
    def _find_parallel(self) -> ContextParallel | None:
        """The context-parallel group of the hooked denoisers (enabled before or after the handle was applied),
        after checking that every controller decides alike on every rank."""
        found = next((p for p in map(context_parallel_of, (s.module for s in self._denoiser_sites.values()))
                      if p is not None), None)
        if found is None:
            return None
        refused = sorted({getattr(slot.controller, "name", "") or type(slot.controller).__name__
                          for slot in self.slots.values()
                          if not slot.controller.static and not getattr(slot.controller, "reduces_across_ranks", False)})
        if refused:
            raise PolicyError(
                f"policy {', '.join(map(repr, refused))} cannot run sharded: under {found.describe()} its "
                f"data-dependent decisions would read only this rank's shard of the sequence, so ranks could "
                "disagree and wait for each other forever. Allowed: policies whose decisions depend on the step only "
                "(plans), and data-dependent ones that reduce their metrics across ranks (set "
                "reduces_across_ranks = True after reading data through call.runtime.reduce_sum or "
                "cachelab.policies.streams.mean_abs)."
            )
        return found

    def reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the ranks of the model's context-parallel group (itself without one): what a
        data-dependent decision reads, so every rank decides alike."""
        return tensor if self.parallel is None else self.parallel.reduce_sum(tensor)

    def whole_input(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """The denoiser input ``name`` as the pipeline passed it: gathered from every rank where diffusers split
        it before the denoiser's forward (LTX-Video, Flux), unchanged otherwise."""
        if self.parallel is None:
            return tensor
        dim = self.parallel.input_split_dim(name, tensor)
        return tensor if dim is None else self.parallel.gather(tensor, dim)

    # -- decisions prepared at the denoiser's entry (compiled models) --------------------------------------------
    def prepare_sites(self, denoiser: str) -> None:
        """Once a compiled region holds hooked sites: decide now, for this denoiser call, what each preparable site
        does (what ``Policy.forward`` would decide at the site: compute, compute and store, or reuse a value built
        from stored ones), so that the site's hook only reads the decision."""
        if not self.compiled or self.flop_counter is not None:
            return
        ctx = self.ctx
        for hook in self._preparable.get(denoiser, ()):
            slot = hook.slot
            slot.drop_unread(ctx.step)
            call = Call(slot.site, ctx, None, (), {}, self, slot)
            if call.should_compute():
                hook.prepared_mode = _STORE if call.should_store() else _RUN
            else:
                hook.prepared_mode = _REUSE
                reused = slot.controller.reuse(slot.site, call, call.cached())
                if reused is None:
                    raise PolicyError(f"{type(slot.controller).__name__}.reuse returned None for {slot.site.key}")
                # the compiled site reads it as a static input: under CUDA graphs, always at the same address
                # (one per CFG branch set, so a two-call CFG step's second call leaves the first call's intact)
                hook.reused = self._storage_owner.at_fixed_address((slot.site.key, ctx.branches), reused)
            hook.prepared = True
            hook.prepared_call = call
            self._prepared.append(hook)

    def settle_sites(self) -> None:
        """After the denoiser call: store what prepared sites computed, count what they did, clear the decisions."""
        for hook in self._prepared:
            mode, call = hook.prepared_mode, hook.prepared_call
            if hook.hit:
                if mode != _REUSE:
                    call.computed_branches = call.ctx.branches
                if mode == _STORE and hook.stored is not None:
                    call.store(hook.slot.controller.remember(hook.slot.site, call, hook.stored))
                self.count(hook.slot.site, call)
        self.drop_prepared()

    def drop_prepared(self) -> None:
        """Clear the decisions prepared for the running denoiser call (after it, or after an exception in it)."""
        for hook in self._prepared:
            hook.clear_prepared()
        self._prepared.clear()

    # -- counting ----------------------------------------------------------------------------------------------
    def count(self, site: Site, call: Call) -> None:
        ctx = call.ctx
        computed = len(call.computed_branches) * ctx.branch_size
        total = len(ctx.branches) * ctx.branch_size
        self.record.record(site.key, ctx.step, min(computed, total), max(total - computed, 0))

    def needs_profile(self, denoiser: Site, signature: tuple) -> bool:
        return self.count_macs and (denoiser.key, signature) not in self._profiles

    def profile_site(self, site: Site, macs: float, ctx: StepContext) -> None:
        self._profiling[site.key] = macs / (len(ctx.branches) * ctx.branch_size)

    def profile_complete(self, signature: tuple, denoiser: Site, macs: float, ctx: StepContext) -> None:
        """Keep the per-sample MACs of a measuring pass (every site ran once, uncached)."""
        self._profiling[denoiser.key] = macs / (len(ctx.branches) * ctx.branch_size)
        wanted = {k for k, s in self.slots.items() if s.site.denoiser == denoiser.denoiser} | {denoiser.key}
        # a site the pass did not reach (called only on some steps) counts as free rather than blocking the profile
        self._profiles[(denoiser.key, signature)] = {k: self._profiling.pop(k, 0.0) for k in wanted}

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

    def stored_tensors(self) -> list[torch.Tensor]:
        """Every tensor the sites keep now: their histories and controllers' free-form state."""
        return [t for slot in self.slots.values() for t in slot.history.tensors() + tree_leaves(list(slot.state.values()))]

    def cache_bytes(self) -> int:
        """Bytes of device storage that stored values keep alive now (a slice keeps its whole storage)."""
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in self.stored_tensors()}
        return sum(storages.values())

    def sample_cache(self) -> None:
        """Record the footprint now, and which kept branch slices there are, for :meth:`cache_peaks`."""
        # a tensor held under two keys of a controller's state (a residual and the forecast built on it) counts once
        state = sum({(t.data_ptr(), t.numel()): t.numel() * t.element_size() for slot in self.slots.values()
                     for t in tree_leaves(list(slot.state.values()))}.values())
        slices = [s for slot in self.slots.values() for s in slot.history.slices()]
        self._cache_samples.append((next(CLOCK), self.cache_bytes(), state, slices))

    def cache_peaks(self) -> tuple[int, int]:
        """(peak bytes held, peak bytes needed) over the samples since ``track_cache`` was set, then forgets them.

        Needed at a sample counts the kept branch slices that some later call reads (a slice kept but never read
        again is waste), plus controllers' free-form state, whose reads cachelab cannot see and so counts whole."""
        held = max((h for _, h, _, _ in self._cache_samples), default=0)
        needed = max((state + sum(n for reads, branch, n in slices if reads.get(branch, -1) > tick)
                      for tick, _, state, slices in self._cache_samples), default=0)
        self._cache_samples = []
        return held, needed
