"""The step context: which generation, step, timestep and CFG branch a denoiser call belongs to.

Everything is derived from the denoiser's own forward (its ``timestep`` argument and its inputs), so any
pipeline works unchanged; a pipeline wrapper, when present, only adds certainty (where a generation starts,
the scheduler's full timestep list).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Literal, Sequence

import torch

CfgMode = Literal["auto", "batched", "sequential", "off"]
CfgOrder = Literal["cond_first", "uncond_first"]


@dataclass(frozen=True)
class StepContext:
    """Where a call sits in sampling.

    Attributes:
        generation: index of the generation since the handle was applied (0, 1, ...).
        step: denoising step index within the generation (0-based).
        num_steps: steps in this generation, when known (from the pipeline's scheduler or ``num_steps=``).
        timestep: the scheduler timestep of this step (larger = noisier).
        progress: fraction of sampling done before this step, in [0, 1): ``step / num_steps`` when the number
            of steps is known, else ``1 - timestep / num_train_timesteps``.
        call: index of this denoiser call within the step (pipelines that run CFG as two calls make 2).
        branches: CFG branches this call computes, in batch order: ``("uncond", "cond")`` for a batched CFG
            call, ``("cond",)`` or ``("uncond",)`` for one branch, ``("cond",)`` when CFG is off.
        branch_size: samples per branch in this call (the pipeline's batch size times videos per prompt).
    """

    generation: int
    step: int
    num_steps: int | None
    timestep: float
    progress: float
    call: int = 0
    branches: tuple[str, ...] = ("cond",)
    branch_size: int = 1

    def with_branches(self, branches: tuple[str, ...]) -> "StepContext":
        return replace(self, branches=branches)


def plan_contexts(num_steps: int, timesteps: Sequence[float] | None, num_train_timesteps: int = 1000):
    """Synthetic contexts for every step of a generation, for building plans before it runs."""
    out = []
    for step in range(num_steps):
        if timesteps is not None:
            t = float(timesteps[step])
        else:  # evenly spaced stand-in, only used by plans that never read the timestep
            t = num_train_timesteps * (1 - step / num_steps)
        out.append(StepContext(generation=-1, step=step, num_steps=num_steps, timestep=t, progress=step / num_steps))
    return out


#: what a pipeline's ``cache_context`` name says about the call's CFG branches (guiders prefix ``pred_``)
_CONTEXT_BRANCHES = {"cond": ("cond",), "uncond": ("uncond",), "cond_uncond": ("uncond", "cond")}


def branches_of_context(name: str) -> tuple[str, ...]:
    """CFG branches named by diffusers' ``transformer.cache_context(name)``: ``cond``, ``uncond``, ``cond_uncond``
    (a batched ``[uncond, cond]`` call) or a guider's ``pred_cond`` / ``pred_uncond``; any other name (``uncond_stg``)
    is a branch of its own."""
    name = name[5:] if name.startswith("pred_") else name
    return _CONTEXT_BRANCHES.get(name, (name,))


class StepTracker:
    """Turns a stream of denoiser calls into step contexts.

    Where a pipeline is wrapped, the scheduler's timesteps (on its training scale) are known and a call is placed
    in that schedule: by the position of the timestep tensor in the schedule's storage when the pipeline passes a
    view of ``scheduler.timesteps[i]`` (exact, no device read), otherwise by value, mapped onto the training
    scale (``t``, ``t / num_train_timesteps`` as Flux passes it, or ``1 - t / num_train_timesteps`` as Lumina
    does). Steps are positions in the schedule, so second-order schedulers that list a timestep twice (Heun,
    KDPM2) make two steps; further calls at one position are further CFG calls of that step.

    Without a schedule, a call whose timestep differs from the previous one starts a step, a repeated timestep
    is a further call of the step, and a timestep that moves against the direction of sampling (a rise, or a
    fall where timesteps rise) starts a new generation. :meth:`begin` (called by the pipeline wrapper on
    ``scheduler.set_timesteps``) always starts one.
    """

    def __init__(
        self,
        cfg: CfgMode = "auto",
        cfg_order: CfgOrder = "cond_first",
        num_steps: int | None = None,
        num_train_timesteps: int = 1000,
        timestep_arg: str | None = None,
    ):
        self.cfg = cfg
        #: the denoiser's timestep parameter, when its name is not one cachelab looks for
        self.timestep_arg = timestep_arg
        self.cfg_order = cfg_order
        self.fixed_num_steps = num_steps
        self.num_train_timesteps = num_train_timesteps
        self.generation = -1
        self._pending_begin = True
        self._schedule: list[float] | None = None
        self._schedule_tensor: torch.Tensor | None = None
        self._schedule_first = self._schedule_step = 0
        self._contexts: dict[tuple, StepContext] = {}
        #: calls whose timestep had to be read from the device (not a view of the known schedule)
        self.host_reads = 0
        #: the CFG branch a pipeline named with ``transformer.cache_context(name)`` around the running call
        self.context_name: str | None = None
        self._num_steps: int | None = None
        self._last_t: float | None = None
        self._direction = 0  # -1 falling, +1 rising, 0 unknown (one step seen)
        self._map: str | None = None  # how denoiser timesteps map onto the schedule: "same", "fraction", "rising"
        self._calls_per_step: int | None = None
        self._step = 0
        self._call = 0
        self.batched: bool | None = None  # batched CFG in this generation; decided on its first call
        self._warned_progress = False

    # -- generation boundaries ---------------------------------------------------------------------------
    def begin(self, num_steps: int | None = None, timesteps: Sequence[float] | torch.Tensor | None = None) -> None:
        """Declare that the next denoiser call starts a new generation."""
        self._pending_begin = True
        self._set_timesteps(timesteps)
        self._num_steps = num_steps if num_steps is not None else (len(self._schedule) if self._schedule else None)

    def set_schedule(self, timesteps: Sequence[float] | torch.Tensor) -> None:
        """Give the full timestep list of the running generation (read from a pipeline's scheduler)."""
        self._set_timesteps(timesteps)
        self._num_steps = len(self._schedule)

    def _set_timesteps(self, timesteps) -> None:
        self._schedule_tensor = None
        self._contexts = {}
        if timesteps is None:
            self._schedule = None
        elif isinstance(timesteps, torch.Tensor):
            self._schedule = [float(t) for t in timesteps.tolist()]  # one device sync per generation
            if timesteps.ndim == 1 and len(timesteps):
                self._schedule_tensor = timesteps
                # where its elements lie in memory: a view of element i starts at first + i * step
                self._schedule_first = timesteps.data_ptr()
                self._schedule_step = max(timesteps.stride(0), 1) * timesteps.element_size()
        else:
            self._schedule = [float(t) for t in timesteps]

    def read_timestep(self, t) -> tuple[float, int | None]:
        """``(value, position in the schedule or None)`` of a call's timestep argument.

        Pipelines pass ``scheduler.timesteps[i]`` (expanded to the batch), a view of the schedule tensor: its
        offset in that storage gives the position, and the schedule the value, without reading the device.
        Reading it (``.item()``) would synchronise the host with the device on every call and stop the CPU from
        queueing the next step's kernels while the GPU works, which costs small models much of their speed.
        """
        if not isinstance(t, torch.Tensor):
            return float(t), None
        sched = self._schedule_tensor
        if sched is not None and t.dtype == sched.dtype and t.device == sched.device:
            # a view of the live schedule tensor (nothing else can start inside its memory)
            index, rest = divmod(t.data_ptr() - self._schedule_first, self._schedule_step)
            if not rest and 0 <= index < len(self._schedule):
                return self._schedule[index], index
        self.host_reads += 1
        # per-token timesteps (Wan 2.2 TI2V, LTX conditioning) hold 0 for clean tokens: the step is the max
        return (float(t.max().item()) if t.numel() > 1 else float(t.item())), None

    @property
    def num_steps(self) -> int | None:
        return self._num_steps if self._num_steps is not None else self.fixed_num_steps

    @property
    def schedule(self) -> list[float] | None:
        return self._schedule

    # -- placing a call in the schedule ----------------------------------------------------------------------------
    def _on_schedule(self, t: float) -> float:
        """``t`` as the scheduler counts it (training scale), by the mapping chosen at the generation's start."""
        n = float(self.num_train_timesteps)
        if self._map == "fraction":
            return t * n
        if self._map == "rising":
            return (1.0 - t) * n
        return t

    def _choose_map(self, t: float) -> None:
        """Pick the mapping under which the first call's timestep sits closest to a schedule entry."""
        n = float(self.num_train_timesteps)
        candidates = {"same": t}
        if 0.0 <= t <= 1.0:
            candidates.update(fraction=t * n, rising=(1.0 - t) * n)
        sched = self._schedule
        self._map = min(candidates, key=lambda m: min(abs(s - candidates[m]) for s in sched))

    def _nearest(self, u: float, start: int) -> int | None:
        """The first position at or after ``start`` whose value is the nearest to ``u`` among all values."""
        sched = self._schedule
        best = min(abs(s - u) for s in sched)
        for i in range(start, len(sched)):
            if abs(sched[i] - u) <= best + 1e-9:
                return i
        return None

    # -- per call ------------------------------------------------------------------------------------------
    def advance(self, t: float, index: int | None = None) -> tuple[bool, int]:
        """Register a call at timestep ``t`` (schedule position ``index`` if known). Returns (starts a new
        generation?, call index within the step)."""
        new_generation = self._pending_begin or self._last_t is None
        if not new_generation:
            if self._schedule:
                new_generation = not self._place(t, index)
            else:
                new_generation = not self._follow(t)
        if new_generation:
            self._start(t, index)
        self._last_t = t
        return new_generation, self._call

    def _start(self, t: float, index: int | None) -> None:
        self.generation += 1
        self._contexts = {}
        if not self._pending_begin and not self._restarts_schedule(t, index):
            # not announced, and not the known schedule run again: that schedule says nothing here
            self._schedule, self._schedule_tensor, self._num_steps = None, None, None
        self._pending_begin = False
        self._call, self._direction, self._calls_per_step = 0, 0, None
        self.batched = None
        self._map = None
        self._step = 0
        self.align(t, index)

    def _restarts_schedule(self, t: float, index: int | None) -> bool:
        if not self._schedule:
            return False
        if index is not None:
            return index == 0
        self._choose_map(t)
        return self._nearest(self._on_schedule(t), 0) == 0

    def align(self, t: float, index: int | None = None) -> None:
        """Place the first call of a generation: at its schedule position (img2img starts late), and choose how
        its timesteps map onto the scheduler's scale."""
        if self._schedule:
            self._choose_map(t)
            self._step = index if index is not None else self._nearest(self._on_schedule(t), 0)
        else:
            self._map = "same" if t > 1.0 else "fraction"

    def _place(self, t: float, index: int | None) -> bool:
        """Move to the call's position in the schedule; False when it belongs to a new generation."""
        if index is not None:
            if index == self._step:
                self._call += 1
            elif index > self._step:
                self._step, self._call = index, 0
            else:
                return False
            return True
        u = self._on_schedule(t)  # the mapping was chosen when the generation started (align)
        here = self._nearest(u, self._step)
        limit = self._calls_per_step
        if here == self._step and (limit is None or self._call + 1 < limit):
            self._call += 1
            return True
        if self._calls_per_step is None:
            self._calls_per_step = self._call + 1
        following = self._nearest(u, self._step + 1)
        if following is None:
            return False
        self._step, self._call = following, 0
        return True

    def _follow(self, t: float) -> bool:
        """Count steps by changes of the timestep; False when it moves against the direction of sampling."""
        if abs(t - self._last_t) <= 1e-6:
            self._call += 1
            return True
        direction = 1 if t > self._last_t else -1
        if self._direction and direction != self._direction:
            return False
        if not self._direction:
            self._direction = direction
            if direction > 0 and self._map == "fraction":
                self._map = "rising"
        self._step += 1
        self._call = 0
        return True

    def context(self, t: float, branches: tuple[str, ...], branch_size: int) -> StepContext:
        key = (self.generation, self._step, self._call, t, branches, branch_size)
        ctx = self._contexts.get(key)
        if ctx is None:  # contexts are immutable: one per distinct call of a generation
            ctx = self._contexts[key] = self._new_context(t, branches, branch_size)
        return ctx

    def _new_context(self, t: float, branches: tuple[str, ...], branch_size: int) -> StepContext:
        step = self._step
        num_steps = self.num_steps
        if self._schedule is not None and step < len(self._schedule):
            timestep = self._schedule[step]
        else:
            timestep = self._on_schedule(t)
        if num_steps:
            progress = min(step / num_steps, 1.0)
        else:
            progress = self._progress_from_timestep(timestep)
        return StepContext(self.generation, step, num_steps, timestep, progress, self._call, branches, branch_size)

    def _progress_from_timestep(self, t: float) -> float:
        if not self._warned_progress:
            warnings.warn(
                "cachelab: the number of sampling steps is unknown (the transformer is called without a "
                "pipeline), so progress is estimated as 1 - timestep / num_train_timesteps. Pass num_steps= "
                "to cachelab.apply() or apply to the pipeline for exact progress-based schedules.",
                stacklevel=4,
            )
            self._warned_progress = True
        return min(max(1.0 - t / self.num_train_timesteps, 0.0), 1.0)

    def branches_for_call(self, call: int, batch: int, sample: torch.Tensor | None) -> tuple[str, ...]:
        """Which CFG branches a call holds; decides batched CFG on the first call of a generation."""
        if self.context_name is not None and self.cfg != "off":
            branches = branches_of_context(self.context_name)
            if len(branches) == 1 or batch % len(branches) == 0:
                return branches
        if self.batched is None:
            self.batched = self._detect_batched(batch, sample)
        if self.batched:
            return ("uncond", "cond")
        if self.cfg == "off":
            return ("cond",)
        order = ("cond", "uncond") if self.cfg_order == "cond_first" else ("uncond", "cond")
        return (order[call],) if call < 2 else (f"call{call}",)

    def _detect_batched(self, batch: int, sample: torch.Tensor | None) -> bool:
        if self.cfg in ("off", "sequential"):
            return False
        if self.cfg == "batched":
            if batch % 2:
                raise ValueError(f"cfg='batched' needs an even batch ([uncond, cond]); the denoiser got batch {batch}")
            return True
        # auto: a batched CFG call duplicates the latents: torch.cat([latents] * 2)
        if sample is None or batch % 2 or batch == 0:
            return False
        half = batch // 2
        return bool(torch.equal(sample[:half], sample[half:]))
