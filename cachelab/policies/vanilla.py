"""Vanilla reuse: a site's last computed output stands in for it on the steps between computes."""

from __future__ import annotations

from pydantic import Field

from cachelab.hooks.sites import ATTENTION_ROLES, SiteRole
from cachelab.policies.base import Policy, PolicyConfig
from cachelab.policies.registry import register_policy
from cachelab.policies.schedule import Window, interval_compute


class VanillaConfig(PolicyConfig):
    roles: list[SiteRole] = Field(default=list(ATTENTION_ROLES), min_length=1, description="site kinds to cache")
    interval: int = Field(
        2,
        ge=1,
        le=50,
        description="compute every interval-th step in the window, reuse between",
        json_schema_extra={"search": {"low": 1, "high": 6}},
    )
    window: Window = Field(
        Window(start=0.2, end=0.9),
        description="where reuse may happen",
        json_schema_extra={"search": {"start": {"low": 0.0, "high": 0.5}, "end": {"low": 0.6, "high": 1.0}}},
    )


@register_policy("vanilla")
class Vanilla(Policy):
    """Reuse each selected site's last output for ``interval - 1`` steps inside a window."""

    Config = VanillaConfig
    history = 1  # the last computed output

    def compute_at(self, site, ctx):
        return interval_compute(ctx, self.config.window, self.config.interval)

    def reuse(self, site, call, cached):
        return cached[0]
