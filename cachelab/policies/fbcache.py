"""First-Block Cache (ParaAttention; diffusers' ``FirstBlockCacheConfig``): let the first block decide.

Every step runs block 0 and measures how much its residual ``r = out - in`` (the ``hidden_states`` stream) moved
since the last full step: ``mean|r - r_prev| / mean|r_prev|``. Under ``threshold`` the other blocks are skipped
(each returns its inputs) and block 0's output gets the residual the skipped span added at the last full step
(``output of the last block - output of block 0``, per stream). Otherwise every block runs, and ``r`` and that
span residual become the new references: they are updated on full steps only, so slow drift accumulates until
a full step resets it. The first step of a generation, and of each branch set, always runs in full.

This is DBCache (``dbcache``) with ``fn=1, bn=0``, no warm-up and no caps: one implementation serves both.

One decision per step and per call's branches: a batched ``[uncond, cond]`` call decides once for both (as
diffusers does inside one ``cache_context``), two calls per step decide per branch. ``stats()`` shows what was
decided: skipped steps count block 0 as computed and every other block as reused.

Differences from diffusers, by design: a skip needs the change strictly under the threshold (diffusers also
skips when it equals it), so ``threshold=0`` never reuses; a zero reference (``mean|r_prev| = 0``) computes.
"""

from __future__ import annotations

from functools import cached_property

from pydantic import Field

from cachelab.policies.base import PolicyConfig
from cachelab.policies.dbcache import DualBlockCache, DualBlockCacheConfig
from cachelab.policies.registry import register_policy


class FirstBlockCacheConfig(PolicyConfig):
    threshold: float = Field(
        0.05,
        ge=0,
        le=10,
        description="skip the blocks after the first while the relative L1 change of its residual since the last "
        "full step is under this (diffusers' FirstBlockCacheConfig.threshold; 0 never skips)",
        json_schema_extra={"search": {"low": 0.0, "high": 0.3}},
    )


@register_policy("fbcache")
class FirstBlockCache(DualBlockCache):
    """Run block 0 every step; skip the rest while its residual barely changes, adding their cached residual."""

    Config = FirstBlockCacheConfig

    @cached_property
    def settings(self) -> DualBlockCacheConfig:
        return DualBlockCacheConfig(fn=1, bn=0, threshold=self.config.threshold, warmup_steps=0)
