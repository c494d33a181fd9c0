"""Dynamic feature reuse (FasterCache): extrapolate a site's output from its two latest computed outputs.

At a reuse step ``F = F_last + w * (F_last - F_prev)``; ``w`` is fixed or ramps linearly across the window.
"""

from __future__ import annotations

from pydantic import Field

from cachelab.hooks.history import tree_map2
from cachelab.hooks.sites import SiteRole
from cachelab.policies.base import Policy, PolicyConfig
from cachelab.policies.registry import register_policy
from cachelab.policies.schedule import Window, interval_compute


class DynamicConfig(PolicyConfig):
    roles: list[SiteRole] = Field(
        default=["attn.spatial", "attn.temporal", "attn.joint"], min_length=1, description="site kinds to cache"
    )
    interval: int = Field(
        2,
        ge=1,
        le=50,
        description="compute every interval-th step in the window, extrapolate between",
        json_schema_extra={"search": {"low": 1, "high": 6}},
    )
    window: Window = Field(
        Window(start=0.32, end=1.0),
        description="where extrapolation may happen (Latte: step 16 of 50 on)",
        json_schema_extra={"search": {"start": {"low": 0.1, "high": 0.6}, "end": {"low": 0.7, "high": 1.0}}},
    )
    weight: float = Field(
        0.5,
        ge=0.0,
        le=2.0,
        description="extrapolation weight w at the window's start",
        json_schema_extra={"search": {"low": 0.0, "high": 1.0}},
    )
    weight_end: float | None = Field(
        None, ge=0.0, le=2.0, description="if set, w ramps linearly to this value at the window's end"
    )
    only_when_uncond_skipped: bool = Field(
        False,
        description="extrapolate only on steps where CFG-Cache skips the unconditional branch (diffusers' "
        "FasterCache does this; batched CFG only)",
    )


@register_policy("dynamic")
class Dynamic(Policy):
    """Extrapolate skipped outputs from the two latest computed ones (FasterCache's dynamic feature reuse)."""

    Config = DynamicConfig
    history = 2  # F_last and F_prev

    @property
    def static(self) -> bool:
        # coupled to CFG-Cache, the decision reads which branches a call holds: known only while running
        return not self.config.only_when_uncond_skipped

    def compute_at(self, site, ctx):
        if self.config.only_when_uncond_skipped and ctx.branches != ("cond",):
            return True
        return interval_compute(ctx, self.config.window, self.config.interval)

    def weight(self, ctx) -> float:
        c = self.config
        if c.weight_end is None:
            return c.weight
        return c.weight + (c.weight_end - c.weight) * c.window.fraction(ctx)

    def reuse(self, site, call, cached):
        last, prev = cached
        w = self.weight(call.ctx)
        return tree_map2(lambda a, b: extrapolate(a, b, w), last, prev)


def extrapolate(last, prev, w: float):
    """``last + w * (last - prev)``, computed in one fused op."""
    return last.lerp(prev, -w) if last.is_floating_point() else last + w * (last - prev)
