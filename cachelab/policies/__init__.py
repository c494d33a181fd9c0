"""Cache policies. Every module in this package registers its policy on import, so a new policy is one file."""

import importlib
import pkgutil

from cachelab.policies.base import Policy, PolicyConfig
from cachelab.policies.composite import Composite
from cachelab.policies.registry import list_policies, load_plugin, policy_class, register_policy
from cachelab.policies.schedule import Window

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Policy", "PolicyConfig", "Composite", "Window", "register_policy", "policy_class", "list_policies", "load_plugin"]
