"""Δ-DiT: cache the deviation a span of blocks adds, and add it to the span's fresh input at reuse steps.

Front blocks shape outlines and rear blocks details, so before the boundary (outline stage) the rear span is
cached and after it the front span; every ``interval``-th step computes everything. The span deviation is kept
per block (``output - input`` of each block): adding each block's residual in turn equals adding the span's
deviation, also across the reshapes and position embeddings a parent model applies between blocks (Latte).
"""

from __future__ import annotations

from typing import Union

from pydantic import Field, field_validator

from cachelab.errors import PolicyError
from cachelab.hooks.history import tree_map2
from cachelab.policies.base import Policy, PolicyConfig, require_sites
from cachelab.policies.registry import register_policy
from cachelab.policies.schedule import Unit
from cachelab.policies.streams import block_input, stream_names

import torch

class DeltaDitConfig(PolicyConfig):
    interval: int = Field(
        2,
        ge=1,
        le=50,
        description="full compute every interval-th step (N)",
        json_schema_extra={"search": {"low": 1, "high": 6}},
    )
    span: Union[int, float] = Field(
        0.25,
        description="cached span N_c: a number of layers or a fraction of the layers",
        json_schema_extra={
            "allowed": "int >= 1 (layers) or float in (0, 1) (fraction)",
            # a fraction of the layers; a space file may search layer counts instead ({low: 1, high: 4})
            "search": {"low": 0.1, "high": 0.5},
        },
    )
    boundary: float = Field(
        0.6,
        ge=0,
        description="b: rear span cached before it, front span after it",
        # the range is in the default boundary_unit (progress); fixing another unit needs a range in that unit
        json_schema_extra={"search": {"low": 0.2, "high": 0.8, "unit_field": "boundary_unit"}},
    )
    boundary_unit: Unit = Field("progress", description="unit of boundary: progress, step or timestep")

    @field_validator("span")
    @classmethod
    def _check_span(cls, v):
        if isinstance(v, bool) or (isinstance(v, int) and v < 1) or (isinstance(v, float) and not 0 < v < 1):
            raise ValueError(f"span={v!r}: give a layer count (int >= 1) or a fraction of the layers (0 < span < 1)")
        return v


@register_policy("delta_dit")
class DeltaDit(Policy):
    """Cache block-span deviations: rear span before the boundary, front span after it."""

    Config = DeltaDitConfig
    history = 1

    def select(self, sites):
        blocks = require_sites(self, sites, ("block",))
        self._layers: dict[str, int] = {}
        for s in blocks:
            self._layers[s.denoiser] = max(self._layers.get(s.denoiser, 0), s.layer + 1)
        for denoiser, layers in self._layers.items():
            if self.span_layers(layers) >= layers:
                raise PolicyError(
                    f"delta_dit span={self.config.span!r} covers all {layers} layers of {denoiser}; "
                    f"the span must leave layers to compute (at most {layers - 1})"
                )
        return blocks

    def span_layers(self, layers: int) -> int:
        span = self.config.span
        return span if isinstance(span, int) else max(1, round(span * layers))

    @property
    def needs_timesteps(self) -> bool:
        return self.config.boundary_unit == "timestep"

    def before_boundary(self, ctx) -> bool:
        c = self.config
        if c.boundary_unit == "progress":
            return ctx.progress < c.boundary
        if c.boundary_unit == "step":
            return ctx.step < c.boundary
        return ctx.timestep > c.boundary

    def compute_at(self, site, ctx):
        if ctx.step % self.config.interval == 0:
            return True
        layers = self._layers[site.denoiser]
        span = self.span_layers(layers)
        if self.before_boundary(ctx):
            return site.layer < layers - span  # outline stage: the rear (detail) span is cached
        return site.layer >= span  # detail stage: the front (outline) span is cached

    reads_inputs = True  # it stores and adds the deviation from the block's inputs

    def remember(self, site, call, output):
        return tree_map2(torch.sub, output, block_inputs(site, call, output))

    def reuse(self, site, call, cached):
        inputs = block_inputs(site, call, cached[0])
        return tree_map2(lambda residual, x: x + residual, cached[0], inputs)


def block_inputs(site, call, output):
    """The inputs each output of a block updates, in the output's structure."""
    names = stream_names("delta_dit", site, call, output)
    if names is None:
        return _input(site, call, "hidden_states")
    # outputs that are None (SD3's last block returns no text stream) have nothing to add to
    return type(output)(None if out is None else _input(site, call, n) for out, n in zip(output, names))


def _input(site, call, name):
    return block_input("delta_dit", site, call, name, " to add its cached deviation to")
