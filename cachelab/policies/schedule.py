"""Step windows in progress, steps or timesteps, so one config serves 20 or 100 sampling steps."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cachelab.hooks.context import StepContext

Unit = Literal["progress", "timestep", "step"]


class Window(BaseModel):
    """A span of sampling where a policy may reuse.

    ``unit="progress"``: ``start <= step / num_steps < end`` with ``0 <= start < end <= 1``.
    ``unit="step"``: ``start <= step < end`` (step indices).
    ``unit="timestep"``: ``start >= timestep >= end``; sampling runs from high to low timesteps, so
    ``start`` is the larger number (PAB's Latte window is ``start=800, end=100``).

    Written as a mapping (``{start: 0.3, end: 1.0}``) or a list (``[800, 100, timestep]``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: float = Field(
        description="where the window opens",
        json_schema_extra={"allowed": "progress: [0, 1); step: >= 0; timestep: >= end"},
    )
    end: float = Field(
        description="where the window closes",
        json_schema_extra={"allowed": "progress: (start, 1]; step: > start; timestep: <= start"},
    )
    unit: Unit = Field("progress", description="progress (0..1), step (index) or timestep")

    @model_validator(mode="before")
    @classmethod
    def _from_sequence(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            if len(value) not in (2, 3):
                raise ValueError(f"a window is [start, end] or [start, end, unit]; got {list(value)}")
            return dict(zip(("start", "end", "unit"), value))
        return value

    @model_validator(mode="after")
    def _check_order(self) -> "Window":
        s, e = self.start, self.end
        if self.unit == "progress":
            if not (0.0 <= s <= 1.0 and 0.0 <= e <= 1.0):
                raise ValueError(f"progress window start={s}, end={e}: both must lie in [0, 1]")
            if s >= e:
                raise ValueError(f"window start={s} is not before end={e}; progress windows need start < end")
        elif self.unit == "step":
            if s < 0 or s >= e:
                raise ValueError(f"window start={s} is not before end={e}; step windows need 0 <= start < end")
        else:
            if s < e:
                raise ValueError(
                    f"window start={s} is after end={e} in sampling order: timesteps fall during sampling, so a "
                    f"timestep window needs start >= end (e.g. start={e}, end={s})"
                )
        return self

    def contains(self, ctx: StepContext) -> bool:
        if self.unit == "progress":
            return self.start <= ctx.progress < self.end
        if self.unit == "step":
            return self.start <= ctx.step < self.end
        return self.start >= ctx.timestep >= self.end

    def fraction(self, ctx: StepContext) -> float:
        """How far into the window a step is, 0 at its start and 1 at its end (for weight ramps)."""
        if self.unit == "progress":
            value = ctx.progress
        elif self.unit == "step":
            value = float(ctx.step)
        else:
            value = ctx.timestep
        span = self.end - self.start
        return min(max((value - self.start) / span, 0.0), 1.0) if span else 0.0

    def __str__(self) -> str:
        return f"[{self.start:g}, {self.end:g}] {self.unit}"


def interval_compute(ctx: StepContext, window: Window, interval: int) -> bool:
    """Compute on every ``interval``-th step (counted from step 0) inside the window and on every step outside."""
    if interval <= 1 or not window.contains(ctx):
        return True
    return ctx.step % interval == 0
