"""cachelab: pluggable cache policies that make diffusion transformers generate faster without retraining."""

from cachelab.api import CacheHandle, apply, handle_of
from cachelab.errors import (
    AlreadyAppliedError,
    CachelabError,
    HookStackError,
    LayoutError,
    NothingReusedWarning,
    ParallelError,
    PolicyError,
    SiteError,
    TargetError,
)
from cachelab.hooks.context import StepContext
from cachelab.models.discovery import find_sites
from cachelab.policies import Policy, PolicyConfig, Window, list_policies, load_plugin, policy_class, register_policy
from cachelab.spec import resolve_policy, save_policy_file

__version__ = "0.1.0"

__all__ = [
    "apply",
    "CacheHandle",
    "handle_of",
    "find_sites",
    "list_policies",
    "load_plugin",
    "policy_class",
    "register_policy",
    "resolve_policy",
    "save_policy_file",
    "Policy",
    "PolicyConfig",
    "StepContext",
    "Window",
    "CachelabError",
    "PolicyError",
    "SiteError",
    "TargetError",
    "AlreadyAppliedError",
    "LayoutError",
    "NothingReusedWarning",
    "ParallelError",
    "HookStackError",
]
