"""TaylorSeer (arXiv 2503.06923; diffusers' ``TaylorSeerCacheConfig``): forecast features instead of reusing them.

Features change smoothly across steps, so between full steps a site's output is predicted by a Taylor series
around the last full step: ``F(s + k) = sum_i F^(i)(s) k^i / i!`` for ``i <= max_order``, with the derivatives
taken as divided differences of the full steps, updated recursively at each one (diffusers' formula):
``F^(0) = F(s)``, ``F^(i+1) = (F^(i)(s) - F^(i)(s_prev)) / (s - s_prev)``; ``k`` and the gaps are in steps. The
first ``warmup_steps`` steps compute, then step ``warmup_steps + 1 + n * interval`` computes for every ``n`` and
the others forecast (diffusers' counting: the step just after the warm-up is already a forecast); steps from
``end_step`` on compute. Forecasts are per CFG branch: a batched ``[uncond, cond]`` call forecasts both at once,
two calls per step forecast each from its own full steps. ``stats()`` counts a forecast site as reused.

Differences from diffusers, by design:

- The step is the denoising step of the sampling schedule. diffusers counts the calls of each hooked module in
  the current ``cache_context`` (the same where a pipeline names one context per branch; it raises without one).
- Block outputs are forecast by default (``roles``). diffusers hooks the modules whose name fullmatches
  ``^(single_|temporal_)?transformer_blocks.*attn`` or ``^blocks.*attn``: names ending in ``attn`` (Flux, SD3,
  HunyuanVideo, Qwen-Image). CogVideoX, Latte, Wan, PixArt, LTX, Mochi and Allegro name theirs ``attn1`` /
  ``attn2``: diffusers hooks nothing there and silently runs uncached. ``roles=["attn.joint"]`` on Flux matches
  its default; ``cache_identifiers=[r"transformer_blocks\\.\\d+"]`` makes it forecast CogVideoX's blocks as here.
- Lite mode: ``roles=["denoiser"]`` forecasts the denoiser's output and skips its whole forward. diffusers'
  ``use_lite_mode`` makes every block return zeros on forecast steps and forecasts ``proj_out``, so the embeddings
  and output norms still run; the values are the same wherever only reshapes follow ``proj_out``.
- Factors are kept in the feature's dtype (diffusers: ``taylor_factors_dtype``, default bfloat16).
- A site forecasts only once it has a full step to forecast from (with ``warmup_steps=0`` diffusers raises).
"""

from __future__ import annotations

from pydantic import Field

from cachelab.hooks.history import branch_slice, tree_cat
from cachelab.hooks.sites import SiteRole
from cachelab.policies.base import Policy, PolicyConfig
from cachelab.policies.forecast import taylor_factors, taylor_forecast
from cachelab.policies.registry import register_policy


class TaylorSeerConfig(PolicyConfig):
    roles: list[SiteRole] = Field(
        default=["block"], min_length=1, description="site kinds to forecast (['denoiser']: diffusers' lite mode)"
    )
    interval: int = Field(
        5,
        ge=1,
        le=50,
        description="a full step every interval-th step after the warm-up, forecasts between (diffusers' "
        "cache_interval; 1 never forecasts)",
        json_schema_extra={"search": {"low": 2, "high": 8}},
    )
    max_order: int = Field(
        1,
        ge=0,
        le=4,
        description="highest order of the Taylor series (0 reuses the last full step; diffusers' max_order)",
        json_schema_extra={"search": {"low": 1, "high": 2}},
    )
    warmup_steps: int = Field(
        3,
        ge=0,
        le=1000,
        description="first steps that always compute (diffusers' disable_cache_before_step)",
        json_schema_extra={"search": {"low": 1, "high": 6}},
    )
    end_step: int | None = Field(
        None, ge=1, description="steps from this one on always compute (diffusers' disable_cache_after_step)"
    )


@register_policy("taylorseer")
class TaylorSeer(Policy):
    """Forecast each selected site's output by a Taylor series from the finite differences of its full steps."""

    Config = TaylorSeerConfig
    history = 1  # one entry per branch: the Taylor factors of the last full step

    def compute_at(self, site, ctx):
        c = self.config
        if ctx.step < c.warmup_steps or (c.end_step is not None and ctx.step >= c.end_step):
            return True
        return (ctx.step - c.warmup_steps - 1) % c.interval == 0

    def forward(self, site, call):
        # every full step updates the factors (the plan's own storing keeps only the last one before a forecast)
        if call.should_compute():
            return call.defer(then=lambda output: self._update(call, output))
        parts = [taylor_forecast(call.history.get(group, 1)[0], call.ctx.step - last) for group, last in _groups(call)]
        return parts[0] if len(parts) == 1 else tree_cat(parts)

    def _update(self, call, output):
        branches, step = call.ctx.branches, call.ctx.step
        for group, last in _groups(call):
            value = output if group == branches else branch_slice(output, branches, group[0])
            previous = None if last is None else call.history.get(group, 1)[0]
            gap = 0 if last is None else step - last
            call.history.push(taylor_factors(value, previous, gap, self.config.max_order), group, step)
        return output


def _groups(call) -> list[tuple[tuple[str, ...], int | None]]:
    """The call's branches with the step of their last full step (None before the first): all together when
    they share it, else one by one (another policy ran some branches alone, e.g. CFG-Cache's conditional half)."""
    branches = call.ctx.branches
    last = [(call.history.steps(b) or [None])[-1] for b in branches]
    if len(set(last)) == 1:
        return [(branches, last[0])]
    return [((b,), s) for b, s in zip(branches, last)]
