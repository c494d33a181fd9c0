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


class StepTracker:
    """Turns a stream of denoiser calls into step contexts.

    A new generation starts when :meth:`begin` was called (by the pipeline wrapper or the user), on the first
    call ever, or when the timestep rises above the previous call's (an interrupted or finished generation
    followed by a new one). Calls that repeat the previous timestep are further calls of the same step, which
    is how pipelines that run CFG as two calls per step are recognised.
    """

    def __init__(
        self,
        cfg: CfgMode = "auto",
        cfg_order: CfgOrder = "cond_first",
        num_steps: int | None = None,
        num_train_timesteps: int = 1000,
    ):
        self.cfg = cfg
        self.cfg_order = cfg_order
        self.fixed_num_steps = num_steps
        self.num_train_timesteps = num_train_timesteps
        self.generation = -1
        self._pending_begin = True
        self._schedule: list[float] | None = None
        self._schedule_tensor: torch.Tensor | None = None
        #: calls whose timestep had to be read from the device (not a view of the known schedule)
        self.host_reads = 0
        self._num_steps: int | None = None
        self._last_t: float | None = None
        self._step = 0
        self._call = 0
        self.batched: bool | None = None  # batched CFG in this generation; decided on its first call
        self._warned_progress = False
        self._t_scale = float(num_train_timesteps)

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
        if timesteps is None:
            self._schedule = None
        elif isinstance(timesteps, torch.Tensor):
            self._schedule = [float(t) for t in timesteps.tolist()]  # one device sync per generation
            self._schedule_tensor = timesteps if timesteps.ndim == 1 else None
        else:
            self._schedule = [float(t) for t in timesteps]

    def timestep_value(self, t) -> float:
        """The timestep of a call as a Python number.

        Pipelines pass ``scheduler.timesteps[i]`` (expanded to the batch), a view of the schedule tensor: its
        position in that storage gives the step's value without reading the device. Reading it (``.item()``)
        would synchronise the host with the device on every call and stop the CPU from queueing the next
        step's kernels while the GPU works, which costs small models much of their speed.
        """
        if not isinstance(t, torch.Tensor):
            return float(t)
        sched = self._schedule_tensor
        if (
            sched is not None
            and t.device == sched.device
            and t.dtype == sched.dtype
            and t.untyped_storage().data_ptr() == sched.untyped_storage().data_ptr()
        ):
            index = (t.storage_offset() - sched.storage_offset()) // max(sched.stride(0), 1)
            if 0 <= index < len(self._schedule):
                return self._schedule[index]
        self.host_reads += 1
        # per-token timesteps (Wan 2.2 TI2V, LTX conditioning) hold 0 for clean tokens: the step is the max
        return float(t.max().item()) if t.numel() > 1 else float(t.item())

    @property
    def num_steps(self) -> int | None:
        return self._num_steps if self._num_steps is not None else self.fixed_num_steps

    @property
    def schedule(self) -> list[float] | None:
        return self._schedule

    def align(self, t: float) -> None:
        """Start the step count where the first call's timestep sits in the known schedule (img2img starts late)."""
        if not self._schedule:
            return
        scale = self.num_train_timesteps if (t <= 1.0 and max(self._schedule) > 1.0) else 1.0
        target = t * scale
        self._step = min(range(len(self._schedule)), key=lambda i: abs(self._schedule[i] - target))

    # -- per call ------------------------------------------------------------------------------------------
    def advance(self, t: float) -> tuple[bool, int]:
        """Register a call at timestep ``t``. Returns (starts a new generation?, call index within the step)."""
        new_generation = self._pending_begin or self._last_t is None or t > self._last_t + 1e-6
        if new_generation:
            self.generation += 1
            if not self._pending_begin:
                self._schedule, self._schedule_tensor, self._num_steps = None, None, None
            self._pending_begin = False
            self._step, self._call = 0, 0
            self.batched = None
            # pipelines that pass timesteps scaled to [0, 1] (Flux) start at or below 1
            self._t_scale = 1.0 if t <= 1.0 else float(self.num_train_timesteps)
        elif abs(t - self._last_t) <= 1e-6:
            self._call += 1
        else:
            self._step += 1
            self._call = 0
        self._last_t = t
        return new_generation, self._call

    def context(self, t: float, branches: tuple[str, ...], branch_size: int) -> StepContext:
        step = self._step
        num_steps = self.num_steps
        timestep = t
        if self._schedule is not None and step < len(self._schedule):
            timestep = self._schedule[step]
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
        return min(max(1.0 - t / self._t_scale, 0.0), 1.0)

    def branches_for_call(self, call: int, batch: int, sample: torch.Tensor | None) -> tuple[str, ...]:
        """Which CFG branches a call holds; decides batched CFG on the first call of a generation."""
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
