"""Per-instance forward replacement: the only way to *skip* a module (forward hooks cannot).

Each module carries at most one cachelab *entry*: a function that runs the module's chain of named
:class:`ModuleHook` s (attached later = called first) and then the forward beneath them. The entry sits directly
above the module's own forward, beneath other libraries' hooks:

* with a diffusers ``HookRegistry`` on the module, the entry replaces the innermost forward of its chain (the one
  its first hook calls), so diffusers' hooks keep wrapping everything, and removing them in any order puts the
  entry back where ``module.forward`` is;
* with an accelerate hook (``_old_forward``), the entry replaces ``_old_forward``, which accelerate's wrapper reads
  on every call and restores on removal;
* otherwise the entry becomes ``module.forward`` (on the instance, never on the class), and hooks added later by
  other libraries wrap it.

Detaching replaces every reference to the entry (``module.forward``, diffusers' chain, accelerate's
``_old_forward``) with what it wrapped, which makes outputs bit-identical to a model that never had hooks. If a
wrapper that cachelab cannot see (a plain function assigned to ``module.forward``) was put on top of the entry,
no reference is left to replace: :func:`detach` and :func:`detach_all` refuse and change nothing.

The entry carries the wrapped forward's signature (``functools.update_wrapper``), so ``inspect.signature``,
``torch.export`` and diffusers' signature checks see the module's own parameters. Its body is one call into a
chain of closures rebuilt on every attach/detach: no per-call lookups of mutable state, easy for dynamo to trace.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Iterator

from torch import nn

from cachelab.errors import HookStackError

_CHAIN_ATTR = "_cachelab_hooks"
_MISSING = object()


class ModuleHook:
    """Base class of a forward replacement.

    Subclasses override :meth:`new_forward`; ``original`` is the forward beneath this hook (the next hook of the
    chain, or the module's forward as it was when cachelab first attached).
    """

    def new_forward(self, module: nn.Module, original: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        return original(*args, **kwargs)


class _Chain:
    """The cachelab hooks of one module and the entry function that runs them."""

    __slots__ = ("hooks", "base", "entry", "at_forward", "previous")

    def __init__(self, base: Callable, at_forward: bool, previous: Any):
        self.hooks: dict[str, ModuleHook] = {}  # innermost first
        self.base = base  # what the entry wraps
        self.entry: Callable | None = None
        self.at_forward = at_forward  # installed as module.forward (not beneath another library's hooks)
        self.previous = previous  # module.__dict__["forward"] before, when at_forward


# -- the places a forward can be referenced from ---------------------------------------------------------------
def _get(holder: Any, attr: str) -> Any:
    return holder.get(attr, _MISSING) if isinstance(holder, dict) else getattr(holder, attr, _MISSING)


def _set(holder: Any, attr: str, value: Any) -> None:
    if isinstance(holder, dict):
        holder[attr] = value
    else:
        setattr(holder, attr, value)


def _slots(module: nn.Module) -> Iterator[tuple[Any, str]]:
    """Every ``(holder, attribute)`` where a hook system keeps a forward it calls or restores later."""
    state = module.__dict__
    yield state, "forward"
    yield state, "_old_forward"  # accelerate
    for ref in getattr(state.get("_diffusers_hook"), "_fn_refs", ()):  # diffusers' HookRegistry
        yield ref, "forward"
        yield ref, "original_forward"


def _innermost(module: nn.Module) -> tuple[Any, str]:
    """The slot holding the forward closest to the module's own: where the entry goes."""
    state = module.__dict__
    slot: tuple[Any, str] = (state, "forward")
    refs = getattr(state.get("_diffusers_hook"), "_fn_refs", None)
    if refs:
        first = refs[0]
        slot = (first, "original_forward" if first.original_forward is not None else "forward")
    if "_old_forward" in state:  # accelerate: beneath diffusers' chain if that chain wraps accelerate's wrapper
        if not refs or getattr(_get(*slot), "__wrapped__", None) is state["_old_forward"]:
            slot = (state, "_old_forward")
    return slot


def _references(module: nn.Module, target: Callable) -> list[tuple[Any, str]]:
    return [(holder, attr) for holder, attr in _slots(module) if _get(holder, attr) is target]


def _describe(fn: Any) -> str:
    if fn is _MISSING:
        return "the class's forward"
    name = getattr(fn, "__qualname__", None) or getattr(getattr(fn, "func", None), "__qualname__", None)
    where = getattr(fn, "__module__", None) or getattr(getattr(fn, "func", None), "__module__", None)
    return f"{where}.{name}" if name and where else repr(fn)


# -- building and swapping the entry ------------------------------------------------------------------------------
def _link(hook: ModuleHook, module: nn.Module, inner: Callable) -> Callable:
    new_forward = hook.new_forward

    def forward(*args, **kwargs):
        return new_forward(module, inner, args, kwargs)

    return forward


def _build(module: nn.Module, chain: _Chain) -> Callable:
    fn = chain.base
    for hook in chain.hooks.values():
        fn = functools.update_wrapper(_link(hook, module, fn), chain.base)
    return fn


def _swap(module: nn.Module, chain: _Chain, old: Callable, new: Callable | None) -> None:
    """Point every reference to ``old`` at ``new`` (``None``: at what the entry wrapped, restoring exactly)."""
    state = module.__dict__
    for holder, attr in _references(module, old):
        if new is None and holder is state and attr == "forward":
            if chain.at_forward:
                restored = chain.previous
            else:  # another library put the entry back here when it removed its hooks
                restored = _MISSING if _is_class_forward(module, chain.base) else chain.base
            if restored is _MISSING:
                del state["forward"]
            else:
                state["forward"] = restored
        else:
            _set(holder, attr, chain.base if new is None else new)
    for holder, attr in _slots(module):  # wrappers above keep their signature source current
        value = _get(holder, attr)
        if getattr(value, "__wrapped__", None) is old:
            try:
                value.__wrapped__ = chain.base if new is None else new
            except (AttributeError, TypeError):
                pass


def _is_class_forward(module: nn.Module, fn: Any) -> bool:
    return getattr(fn, "__self__", None) is module and getattr(fn, "__func__", None) is type(module).forward


def _problem(module: nn.Module, name: str) -> str | None:
    """Why the hook ``name`` cannot be detached from ``module`` now, or ``None``."""
    chain = module.__dict__.get(_CHAIN_ATTR)
    if chain is None or name not in chain.hooks:
        return None  # nothing to detach
    if _references(module, chain.entry):
        return None
    top = module.__dict__.get("forward", _MISSING)
    return (
        f"{type(module).__name__} (cachelab hook {name!r}): its forward is now {_describe(top)}, which wraps "
        "cachelab's hook without a reference cachelab can restore; remove that wrapper first (restore the "
        "forward it replaced), then detach"
    )


# -- public API -------------------------------------------------------------------------------------------------------
def attach(module: nn.Module, hook: ModuleHook, name: str = "cachelab") -> None:
    """Add ``hook`` to the module's cachelab chain, outermost (it runs first and calls the hooks beneath)."""
    chain = module.__dict__.get(_CHAIN_ATTR)
    if chain is None:
        holder, attr = _innermost(module)
        previous = _get(holder, attr)
        base = module.forward if previous is _MISSING else previous
        chain = _Chain(base, at_forward=holder is module.__dict__ and attr == "forward", previous=previous)
        chain.hooks[name] = hook
        chain.entry = _build(module, chain)
        _set(holder, attr, chain.entry)
        object.__setattr__(module, _CHAIN_ATTR, chain)
        return
    if name in chain.hooks:
        raise ValueError(f"{type(module).__name__} already has a cachelab hook named {name!r}; detach it first")
    if not _references(module, chain.entry):
        raise HookStackError(_problem_for_attach(module, name))
    old = chain.entry
    chain.hooks[name] = hook
    chain.entry = _build(module, chain)
    _swap(module, chain, old, chain.entry)


def _problem_for_attach(module: nn.Module, name: str) -> str:
    top = module.__dict__.get("forward", _MISSING)
    return (
        f"cannot add the cachelab hook {name!r} to {type(module).__name__}: its forward is now {_describe(top)}, "
        "which wraps cachelab's hooks without a reference cachelab can update; remove that wrapper first"
    )


def detach(module: nn.Module, name: str = "cachelab") -> None:
    """Remove the hook ``name``; with the last one, the module is exactly as before :func:`attach`.

    Raises :class:`HookStackError` (and changes nothing) if a wrapper cachelab cannot unwrap sits on top."""
    detach_all([(module, name)])


def detach_all(items: Iterable[tuple[nn.Module, str]]) -> None:
    """Detach every ``(module, hook name)``, or none: all are checked before any is removed."""
    items = list(items)
    problems = [p for p in (_problem(m, n) for m, n in items) if p is not None]
    if problems:
        raise HookStackError("cannot detach cachelab's hooks, nothing was detached:\n  " + "\n  ".join(problems))
    for module, name in items:
        chain = module.__dict__.get(_CHAIN_ATTR)
        if chain is None or name not in chain.hooks:
            continue
        old = chain.entry
        del chain.hooks[name]
        if chain.hooks:
            chain.entry = _build(module, chain)
            _swap(module, chain, old, chain.entry)
        else:
            _swap(module, chain, old, None)
            object.__delattr__(module, _CHAIN_ATTR)


def hooks_of(module: nn.Module) -> dict[str, ModuleHook]:
    """The module's cachelab hooks by name, innermost first."""
    chain = module.__dict__.get(_CHAIN_ATTR)
    return {} if chain is None else dict(chain.hooks)


def hook_of(module: nn.Module, name: str | None = None) -> ModuleHook | None:
    """The hook ``name`` of the module (default: the outermost), or ``None``."""
    hooks = hooks_of(module)
    if name is not None:
        return hooks.get(name)
    return next(reversed(hooks.values()), None)
