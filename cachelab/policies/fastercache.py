"""FasterCache = dynamic feature reuse on attention + CFG-Cache on the denoiser."""

from __future__ import annotations

from pydantic import Field

from cachelab.errors import PolicyError
from cachelab.policies.cfg_cache import CfgCache, CfgCacheConfig
from cachelab.policies.composite import Composite
from cachelab.policies.dynamic import Dynamic, DynamicConfig
from cachelab.policies.base import PolicyConfig
from cachelab.policies.registry import register_policy


class FasterCacheConfig(PolicyConfig):
    dynamic: DynamicConfig = Field(default_factory=DynamicConfig, description="dynamic feature reuse on attention")
    cfg_cache: CfgCacheConfig = Field(default_factory=CfgCacheConfig, description="CFG-Cache on the denoiser output")


class _FasterCfgCache(CfgCache):
    """CFG-Cache inside FasterCache: refuses batched CFG on models whose token count depends on the batch.

    On a cached step CFG-Cache runs the conditional half of a batched call alone. Where the blocks' token count
    depends on which samples share a call, that half has fewer tokens than a full call, and the attention outputs
    dynamic feature reuse extrapolates between (one of each kind of call) cannot be combined."""

    label = "fastercache"  # its refusals name the policy the user applied

    def __init__(self, config, refusal: dict[str, str]):
        super().__init__(config)
        self.refusal = refusal  # denoiser name -> why its token count depends on the batch

    def fresh(self):
        return type(self)(self.config, self.refusal)

    def forward(self, site, call):
        why = self.refusal.get(site.denoiser)
        if why and call.ctx.branches == ("uncond", "cond"):
            raise PolicyError(
                f"fastercache cannot serve {type(site.module).__name__} with CFG batched in one call: {why}, so "
                "CFG-Cache's conditional-only calls have fewer tokens than full calls and dynamic feature reuse "
                "cannot extrapolate attention outputs between them. Run CFG as two calls (cfg='sequential', as "
                "the model's pipeline does), or use dynamic and cfg_cache separately"
            )
        return super().forward(site, call)


@register_policy("fastercache")
class FasterCache(Composite):
    """Dynamic feature reuse (attention) composed with CFG-Cache (unconditional branch)."""

    Config = FasterCacheConfig

    def __init__(self, config: FasterCacheConfig | dict | None = None, **params):
        config = self.make_config(config, **params)
        self.refusal: dict[str, str] = {}
        super().__init__([Dynamic(config.dynamic), _FasterCfgCache(config.cfg_cache, self.refusal)])
        self.config = config

    def select(self, sites):
        for site in sites.by_role("denoiser"):
            if site.batch_sized_tokens:
                self.refusal[site.denoiser] = site.batch_sized_tokens
        return super().select(sites)
