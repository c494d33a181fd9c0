"""TeaCache (arXiv 2411.19108): the timestep-modulated input tells when the whole stack can be skipped.

At every step the first block's modulated input (its AdaLN output: normalised hidden states scaled and shifted
by the timestep embedding) is read, and its relative L1 change since the previous step, ``mean|m_t - m_t-1| /
mean|m_t-1|``, is rescaled by a model-specific polynomial (``coefficients``, highest power first, fitted by
``cachelab calibrate``) into an estimate of how much the stack's output changed. The estimates accumulate; while
the sum stays under ``threshold`` the step skips every block and adds the residual the stack added at the last
full step (last block's output minus first block's input, per stream); a full step resets the sum. The first and
last steps always run. One decision per step and per call's branches, as in :mod:`cachelab.policies.fbcache`.

The modulated input is read generically: the input of the first attention module inside the first block (the
block runs only up to that call), or any module and argument named by ``modulated_input``.

Differences from the reference code, by design: the reference reads a hand-picked tensor per model (CogVideoX:
the timestep embedding ``emb``, which is the same for every prompt; Latte: block 0's modulated input); cachelab
reads the AdaLN output for every model unless ``modulated_input`` says otherwise (``transformer_blocks.0:temb``
gives CogVideoX's reference behaviour), so its coefficients are fitted on that tensor. Reading the modulated
input runs the first block's normalisation once more on full steps; ``stats()`` counts a skipped step's first
block as reused.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, field_validator

from cachelab.errors import PolicyError
from cachelab.policies import calibration
from cachelab.policies.dbcache import relative_l1
from cachelab.policies.registry import register_policy
from cachelab.policies.stack import StackCache, StackForecastConfig, modulated_input


class TeaCacheConfig(StackForecastConfig):
    threshold: float = Field(
        0.1,
        ge=0,
        le=10,
        description="skip while the accumulated rescaled change of the modulated input stays under this "
        "(TeaCache's rel_l1_thresh; 0 never skips when the polynomial is not negative)",
        json_schema_extra={"search": {"low": 0.0, "high": 0.6}},
    )
    coefficients: list[float] | None = Field(
        None,
        min_length=1,
        max_length=10,
        description="the rescaling polynomial, highest power first (numpy.poly1d); default: from calibration",
    )
    calibration: str | None = Field(
        None,
        description="a YAML file written by `cachelab calibrate --policy teacache`; default: the file shipped for a "
        "bundled model",
    )
    modulated_input: str | None = Field(
        None,
        description="where the first block's modulated input is read: 'module' (its hidden_states input) or "
        "'module:argument', qualified names in the denoiser; default: the input of the first block's first attention",
    )

    @field_validator("coefficients")
    @classmethod
    def _finite(cls, value):
        if value is not None and not np.all(np.isfinite(value)):
            raise ValueError("coefficients must be finite numbers")
        return value


@register_policy("teacache")
class TeaCache(StackCache):
    """Skip the block stack while the rescaled change of the first block's modulated input stays small."""

    Config = TeaCacheConfig
    reduces_across_ranks = True  # relative_l1 adds every rank's shard of the modulated input
    steps_bound = True  # a calibration holds for the step count it was made at

    def select(self, sites):
        blocks = super().select(sites)
        self._models = {s.denoiser: s.module for s in sites.by_role("denoiser")}
        self._calibrations = calibration.per_denoiser(self.name, sites, self.config.coefficients,
                                                      self.config.calibration)
        return blocks

    def decide(self, site, call, state):
        ctx = call.ctx
        if ctx.num_steps is None:
            raise PolicyError("teacache needs the number of steps (the last one always runs): run it in a pipeline "
                              "or pass num_steps= to cachelab.apply")
        coefficients = self.config.coefficients
        if site.denoiser in self._calibrations:
            coefficients = calibration.for_steps(self.name, self._calibrations[site.denoiser], ctx.num_steps).values
        current = modulated_input(self.name, self._models[site.denoiser], site, call, self.config.modulated_input)
        previous, state["modulated"] = state.get("modulated"), current
        if ctx.step in (0, ctx.num_steps - 1) or previous is None or "residual" not in state:
            state["distance"] = 0.0
            return False
        state["distance"] = state.get("distance", 0.0) + float(np.poly1d(coefficients)(relative_l1(current, previous, call.runtime)))
        if state["distance"] < self.config.threshold:
            return True
        state["distance"] = 0.0
        return False
