"""Pyramid Attention Broadcast: reuse attention outputs with an interval per attention kind.

Attention changes at different rates from step to step (cross attention least, then temporal, then spatial),
so each kind gets its own broadcast interval inside a middle window of sampling. Optionally the FFNs of the
first layers are broadcast too.
"""

from __future__ import annotations

from pydantic import Field

from cachelab.hooks.sites import ATTENTION_ROLES
from cachelab.policies.base import Policy, PolicyConfig, require_sites
from cachelab.policies.registry import register_policy
from cachelab.policies.schedule import Window, interval_compute


class PabConfig(PolicyConfig):
    spatial_interval: int = Field(
        2,
        ge=1,
        le=50,
        description="broadcast interval of spatial self-attention",
        json_schema_extra={"search": {"low": 1, "high": 4}},
    )
    temporal_interval: int = Field(
        3,
        ge=1,
        le=50,
        description="broadcast interval of temporal attention",
        json_schema_extra={"search": {"low": 1, "high": 6}},
    )
    cross_interval: int = Field(
        6,
        ge=1,
        le=50,
        description="broadcast interval of cross attention",
        json_schema_extra={"search": {"low": 1, "high": 8}},
    )
    joint_interval: int = Field(
        2,
        ge=1,
        le=50,
        description="broadcast interval of joint text-video attention",
        json_schema_extra={"search": {"low": 1, "high": 4}},
    )
    window: Window = Field(
        Window(start=800, end=100, unit="timestep"),
        description="where broadcasting happens (Latte: t 800 to 100)",
        json_schema_extra={"search": {"start": {"low": 500, "high": 950}, "end": {"low": 0, "high": 400}}},
    )
    mlp_interval: int = Field(1, ge=1, le=50, description="broadcast interval of the FFNs of the first mlp_layers (1 = off)")
    mlp_layers: int = Field(0, ge=0, le=1000, description="how many leading layers broadcast their FFN")


@register_policy("pab")
class Pab(Policy):
    """Broadcast attention outputs with per-kind intervals (spatial < temporal < cross)."""

    Config = PabConfig
    history = 1

    def select(self, sites):
        chosen = require_sites(self, sites, ATTENTION_ROLES)
        c = self.config
        if c.mlp_interval > 1 and c.mlp_layers > 0:
            chosen += [s for s in sites.by_role("ffn") if s.layer is not None and s.layer < c.mlp_layers]
        return chosen

    def interval(self, role: str) -> int:
        c = self.config
        return {
            "attn.spatial": c.spatial_interval,
            "attn.temporal": c.temporal_interval,
            "attn.cross": c.cross_interval,
            "attn.joint": c.joint_interval,
            "ffn": c.mlp_interval,
        }[role]

    def compute_at(self, site, ctx):
        return interval_compute(ctx, self.config.window, self.interval(site.role))
