"""MagCache (arXiv 2506.09045; diffusers' ``MagCacheConfig``): residual magnitudes follow a stable curve.

The ratio of the stack residual's magnitude between successive steps (``mag_ratios``, one per step, from one
calibration run: ``cachelab calibrate --policy magcache``) is nearly the same for every prompt. After the first
``retention_ratio`` of the steps, each step multiplies the ratios since the last full step and adds
``|1 - product|`` to an accumulated error; while that error stays at or under ``threshold`` and at most
``max_skip_steps`` steps in a row were skipped, the step skips every block and adds the residual the stack added
at the last full step (last block's output minus first block's input, per stream). Otherwise every block runs and
the accumulators reset. Decisions are per step and per call's branches: a batched ``[uncond, cond]`` call decides
once, two calls per step keep a state each, as diffusers' hook does per cache context.

Differences from diffusers, by design: the residual covers every stream the blocks update (diffusers adds it to
``hidden_states`` only and passes ``encoder_hidden_states`` through) and is added by the last block, so models
that reshape tokens between blocks (Latte) work; ratios for another number of steps are refused unless
``interpolate=True``, which resamples them as diffusers does (nearest neighbour).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from cachelab.errors import PolicyError
from cachelab.policies import calibration
from cachelab.policies.registry import register_policy
from cachelab.policies.stack import StackCache, StackForecastConfig


class MagCacheConfig(StackForecastConfig):
    threshold: float = Field(
        0.06,
        ge=0,
        le=10,
        description="skip while the accumulated magnitude error stays at or under this (diffusers' default 0.06)",
        json_schema_extra={"search": {"low": 0.0, "high": 0.5}},
    )
    max_skip_steps: int = Field(
        3,
        ge=0,
        le=1000,
        description="most steps skipped in a row (K in the paper; 0 never skips)",
        json_schema_extra={"search": {"low": 1, "high": 6}},
    )
    retention_ratio: float = Field(
        0.2,
        ge=0,
        le=1,
        description="the first fraction of steps always runs (int(ratio * steps + 0.5) steps, as diffusers)",
        json_schema_extra={"search": {"low": 0.05, "high": 0.5}},
    )
    mag_ratios: list[float] | None = Field(
        None,
        min_length=1,
        description="magnitude ratio of successive residuals, one per step; default: from calibration",
    )
    calibration: str | None = Field(
        None,
        description="a YAML file written by `cachelab calibrate --policy magcache`; default: the file shipped for "
        "a bundled model",
    )
    interpolate: bool = Field(
        False,
        description="resample mag_ratios of another step count to the generation's (nearest neighbour, as "
        "diffusers does); off: such ratios are an error",
    )


@register_policy("magcache")
class MagCache(StackCache):
    """Skip the block stack while the calibrated residual magnitude ratios say it barely changes."""

    Config = MagCacheConfig
    reduces_across_ranks = True  # decisions read the calibrated ratios and the step only, never the shard
    steps_bound = True  # a calibration holds for the step count it was made at

    def select(self, sites):
        blocks = super().select(sites)
        self._calibrations = calibration.per_denoiser(self.name, sites, self.config.mag_ratios,
                                                      self.config.calibration)
        return blocks

    def ratios(self, denoiser: str, steps: int) -> list[float]:
        ratios = self.config.mag_ratios
        if denoiser in self._calibrations:
            found = self._calibrations[denoiser]
            if self.config.interpolate:  # the one made for these steps, else the one with most steps, resampled
                ratios = next((c for c in found if c.steps == steps), found[0]).values
            else:
                ratios = calibration.for_steps(self.name, found, steps, ", or set interpolate=True to resample its "
                                               "ratios").values
        if len(ratios) == steps:
            return ratios
        if not self.config.interpolate:
            raise PolicyError(f"magcache: mag_ratios has {len(ratios)} values but this generation has {steps} steps; "
                              "give one per step, or set interpolate=True to resample them")
        if steps == 1:  # diffusers' nearest_interp, in float32 as it computes it
            return ratios[-1:]
        scale = np.float32((len(ratios) - 1) / (steps - 1))
        return [ratios[i] for i in np.round(np.arange(steps, dtype=np.float32) * scale).astype(int)]

    def decide(self, site, call, state):
        ctx = call.ctx
        if ctx.num_steps is None:
            raise PolicyError("magcache needs the number of steps (ratios are per step): run it in a pipeline or pass "
                              "num_steps= to cachelab.apply")
        if "ratios" not in state:
            state.update(ratios=self.ratios(site.denoiser, ctx.num_steps), product=1.0, skipped=0, error=0.0)
        c = self.config
        retained = int(c.retention_ratio * ctx.num_steps + 0.5)
        # the steps since this state's last decision: all of them when this branch set runs every step, several when
        # it does not (cfg_cache runs [uncond, cond] every few steps only and cond alone in between), whose ratios
        # and skips count as if it had decided at each of them, since the stored residual is that much older
        last = state.get("last_step")
        first = max((ctx.step - 1 if last is None or last >= ctx.step else last) + 1, retained)
        state["last_step"] = ctx.step
        if ctx.step < retained:
            return False
        for step in range(first, ctx.step + 1):
            state["product"] *= state["ratios"][step]
            state["skipped"] += 1
            state["error"] += abs(1.0 - state["product"])
        if "residual" in state and state["error"] <= c.threshold and state["skipped"] <= c.max_skip_steps:
            return True
        state.update(product=1.0, skipped=0, error=0.0)
        return False
