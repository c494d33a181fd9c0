"""The policy registry: one decorator registers a policy class under a name.

Policies outside this package arrive two ways, like timm's models: an installed distribution declares an entry
point in the group ``cachelab.policies`` (``name = "module"`` or ``name = "module:PolicyClass"``; loaded on the
first lookup), or the user names a module with :func:`load_plugin` (``cachelab --plugin MODULE``). Loaded plugin
modules are remembered so worker processes load the same ones.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import sys
import warnings
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable, TypeVar

from cachelab.errors import PolicyError

ENTRY_POINT_GROUP = "cachelab.policies"

_REGISTRY: dict[str, type] = {}
_PLUGINS: list[str] = []  # modules given to load_plugin, in order
_BROKEN: dict[str, str] = {}  # entry point name -> why it failed to load
_entry_points_loaded = False
P = TypeVar("P", bound=type)


def register_policy(name: str, *, replace: bool = False) -> Callable[[P], P]:
    """Class decorator: make a :class:`~cachelab.policies.base.Policy` subclass available as ``name``.

    A name that is taken raises, unless ``replace=True`` (re-running the same class definition, as a reloaded
    module does, is not a conflict)."""
    if not name.isidentifier():
        raise ValueError(f"policy name {name!r} must be a Python identifier (letters, digits, underscores)")

    def decorate(cls: P) -> P:
        existing = _REGISTRY.get(name)
        same = existing is not None and (existing.__module__, existing.__qualname__) == (cls.__module__, cls.__qualname__)
        if existing is not None and not same and not replace:
            raise PolicyError(
                f"policy name {name!r} is already registered by {existing.__module__}.{existing.__qualname__}; "
                f"choose another name or pass register_policy({name!r}, replace=True) to replace it"
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def policy_class(name: str) -> type:
    _load_entry_points()
    try:
        return _REGISTRY[name]
    except KeyError:
        if name in _BROKEN:
            raise PolicyError(f"policy {name!r} comes from a plugin that failed to load: {_BROKEN[name]}") from None
        raise PolicyError(f"unknown policy {name!r}; known policies: {', '.join(sorted(_REGISTRY))}") from None


def list_policies(pattern: str = "*") -> list[str]:
    """Registered policy names matching a shell-style pattern, sorted."""
    _load_entry_points()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def load_plugin(module: str) -> None:
    """Import a module (a dotted name, or a path to a ``.py`` file) whose ``@register_policy`` classes join the
    registry. Loading the same module twice does nothing."""
    if module in _PLUGINS:
        return
    if module.endswith(".py") or "/" in module:
        path = Path(module).resolve()
        if not path.is_file():
            raise PolicyError(f"plugin {module!r}: no such file")
        spec = importlib.util.spec_from_file_location(f"cachelab_plugin_{path.stem}", path)
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = loaded
        try:
            spec.loader.exec_module(loaded)
        except BaseException:
            del sys.modules[spec.name]
            raise
    else:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                raise PolicyError(f"plugin {module!r}: no module named {exc.name!r} on the Python path "
                                  f"({', '.join(sys.path[:3])}, ...)") from None
            raise
    _PLUGINS.append(module)


def loaded_plugins() -> list[str]:
    """The modules given to :func:`load_plugin` so far (worker processes load the same)."""
    return list(_PLUGINS)


def _load_entry_points() -> None:
    """Import every ``cachelab.policies`` entry point once. A plugin that fails to load warns and is remembered, so
    asking for its policy by name gives the reason instead of 'unknown policy'."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = point.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break every other policy
            _BROKEN[point.name] = f"{point.value}: {type(exc).__name__}: {exc}"
            warnings.warn(f"cachelab policy plugin {point.name!r} ({point.value}) failed to load: {exc}", stacklevel=3)
            continue
        if isinstance(loaded, type) and point.name not in _REGISTRY:
            register_policy(point.name)(loaded)  # "name = module:Class" without a decorator in the module
        elif point.name not in _REGISTRY:
            _BROKEN[point.name] = f"{point.value} loaded, but registered no policy named {point.name!r}"
            warnings.warn(f"cachelab policy plugin {point.name!r}: {_BROKEN[point.name]}", stacklevel=3)
