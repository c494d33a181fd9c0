"""Per-instance forward replacement: the only way to *skip* a module (forward hooks cannot).

A hook replaces ``module.forward`` on one instance, never on the class, so other instances are untouched.
Detaching restores the instance exactly as it was, which makes outputs bit-identical to a model that never
had hooks.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

_HOOK_ATTR = "_cachelab_hook"
_MISSING = object()


class ModuleHook:
    """Base class of a forward replacement.

    Subclasses override :meth:`new_forward`; ``original`` is the forward the module had before attaching.
    """

    def new_forward(self, module: nn.Module, original: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        return original(*args, **kwargs)


class _Attachment:
    __slots__ = ("hook", "original", "previous_instance_forward", "wrapper")

    def __init__(self, hook, original, previous_instance_forward, wrapper):
        self.hook = hook
        self.original = original
        self.previous_instance_forward = previous_instance_forward
        self.wrapper = wrapper


def attach(module: nn.Module, hook: ModuleHook) -> None:
    """Wrap ``module.forward`` with ``hook``. A module holds at most one cachelab hook."""
    if getattr(module, _HOOK_ATTR, None) is not None:
        raise RuntimeError(f"{type(module).__name__} already has a cachelab hook")
    previous = module.__dict__.get("forward", _MISSING)
    original = module.forward  # bound method, or an earlier instance-level replacement (another library's)

    def forward(*args, **kwargs):
        return hook.new_forward(module, original, args, kwargs)

    object.__setattr__(module, _HOOK_ATTR, _Attachment(hook, original, previous, forward))
    module.forward = forward


def detach(module: nn.Module) -> None:
    """Undo :func:`attach`. Raises if someone replaced ``forward`` on top of ours (removing would drop theirs)."""
    attachment = getattr(module, _HOOK_ATTR, None)
    if attachment is None:
        return
    if module.__dict__.get("forward") is not attachment.wrapper:
        raise RuntimeError(
            f"cannot detach the cachelab hook of {type(module).__name__}: its forward was replaced again after "
            "cachelab attached; remove that later wrapper first"
        )
    if attachment.previous_instance_forward is _MISSING:
        del module.forward
    else:
        module.forward = attachment.previous_instance_forward
    object.__delattr__(module, _HOOK_ATTR)


def hook_of(module: nn.Module) -> ModuleHook | None:
    attachment = getattr(module, _HOOK_ATTR, None)
    return None if attachment is None else attachment.hook
