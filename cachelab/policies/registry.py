"""The policy registry: one decorator registers a policy class under a name."""

from __future__ import annotations

import fnmatch
from typing import Callable, TypeVar

from cachelab.errors import PolicyError

_REGISTRY: dict[str, type] = {}
P = TypeVar("P", bound=type)


def register_policy(name: str) -> Callable[[P], P]:
    """Class decorator: make a :class:`~cachelab.policies.base.Policy` subclass available as ``name``."""
    if not name.isidentifier():
        raise ValueError(f"policy name {name!r} must be a Python identifier (letters, digits, underscores)")

    def decorate(cls: P) -> P:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"policy name {name!r} is already registered by {existing.__module__}.{existing.__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def policy_class(name: str) -> type:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise PolicyError(f"unknown policy {name!r}; known policies: {', '.join(sorted(_REGISTRY))}") from None


def list_policies(pattern: str = "*") -> list[str]:
    """Registered policy names matching a shell-style pattern, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))
