"""FasterCache = dynamic feature reuse on attention + CFG-Cache on the denoiser."""

from __future__ import annotations

from pydantic import Field

from cachelab.policies.cfg_cache import CfgCache, CfgCacheConfig
from cachelab.policies.composite import Composite
from cachelab.policies.dynamic import Dynamic, DynamicConfig
from cachelab.policies.base import PolicyConfig
from cachelab.policies.registry import register_policy


class FasterCacheConfig(PolicyConfig):
    dynamic: DynamicConfig = Field(default_factory=DynamicConfig, description="dynamic feature reuse on attention")
    cfg_cache: CfgCacheConfig = Field(default_factory=CfgCacheConfig, description="CFG-Cache on the denoiser output")


@register_policy("fastercache")
class FasterCache(Composite):
    """Dynamic feature reuse (attention) composed with CFG-Cache (unconditional branch)."""

    Config = FasterCacheConfig

    def __init__(self, config: FasterCacheConfig | dict | None = None, **params):
        config = self.make_config(config, **params)
        super().__init__([Dynamic(config.dynamic), CfgCache(config.cfg_cache)])
        self.config = config
