"""Find the hook sites of a denoiser: automatically for diffusers transformers, by name patterns otherwise."""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import nn

from cachelab.errors import SiteError
from cachelab.models.adapters import ADAPTERS, COMMON_UNBATCHED, JOINT_STACKS, Adapter, adapter_for
from cachelab.hooks.sites import ATTENTION_ROLES, ROLES, Site, SiteSet


def _attention_types() -> tuple[type, ...]:
    types: list[type] = [nn.MultiheadAttention]
    try:
        from diffusers.models.attention import AttentionModuleMixin
        from diffusers.models.attention_processor import Attention

        types += [Attention, AttentionModuleMixin]
    except ImportError:  # diffusers is a dependency, but site discovery by patterns works without it
        pass
    return tuple(types)


def is_attention(module: nn.Module, types: tuple[type, ...]) -> bool:
    """diffusers attention classes, plus attention modules that subclass neither (MochiAttention): a class named
    ``*Attention`` with query projections."""
    return isinstance(module, types) or (type(module).__name__.endswith("Attention") and hasattr(module, "to_q"))


def _ffn_types() -> tuple[type, ...]:
    try:
        from diffusers.models.attention import FeedForward

        return (FeedForward,)
    except ImportError:
        return ()


def is_diffusers_model(module: nn.Module) -> bool:
    try:
        from diffusers.models.modeling_utils import ModelMixin
    except ImportError:
        return False
    return isinstance(module, ModelMixin)


def find_sites(
    model: nn.Module,
    patterns: Mapping[str, str | list[str]] | None = None,
    denoiser: str = "transformer",
) -> SiteSet:
    """Return the sites of ``model``.

    Args:
        model: a diffusers transformer or any ``torch.nn.Module`` denoiser.
        patterns: ``role -> regex`` (or list of regexes), each matched in full against the qualified module
            names of ``model`` (``re.fullmatch``). When given, they replace automatic discovery for the roles
            they name; the ``denoiser`` site is always the model itself.
        denoiser: the name of this denoiser inside its pipeline (``transformer``, ``transformer_2`` ...).
    """
    adapter = adapter_for(type(model).__name__) or Adapter()
    sites = [
        Site(name="", role="denoiser", module=model, denoiser=denoiser,
             unbatched=tuple(name for name in COMMON_UNBATCHED if name not in adapter.batched_kwargs)
             + tuple(adapter.unbatched_kwargs), batch_dims=dict(adapter.batch_dims),
             batch_sized_tokens=adapter.batch_sized_tokens)
    ]
    auto: list[Site] = []
    if is_diffusers_model(model):
        auto = _discover_diffusers(model, denoiser)
    if patterns:
        matched = _match_patterns(model, patterns, denoiser)
        replaced = set(matched_roles(patterns))
        auto = [s for s in auto if s.role not in replaced]
        auto += matched
        auto.sort(key=lambda s: (s.layer if s.layer is not None else -1, _module_order(model)[id(s.module)]))
    if not auto:
        raise SiteError(_nothing_found_message(model))
    return SiteSet(sites + auto)


def matched_roles(patterns: Mapping[str, str | list[str]]) -> list[str]:
    bad = [role for role in patterns if role not in ROLES or role == "denoiser"]
    if bad:
        allowed = [r for r in ROLES if r != "denoiser"]
        raise SiteError(f"sites: unknown role(s) {bad} in patterns; allowed roles: {allowed}")
    return list(patterns)


def _module_order(model: nn.Module) -> dict[int, int]:
    return {id(m): i for i, (_, m) in enumerate(model.named_modules())}


_INT = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")


def _match_patterns(model: nn.Module, patterns: Mapping[str, str | list[str]], denoiser: str) -> list[Site]:
    matched_roles(patterns)
    named = [(name, module) for name, module in model.named_modules() if name]
    found: list[Site] = []
    taken: dict[str, str] = {}
    for role, pats in patterns.items():
        for pattern in [pats] if isinstance(pats, str) else list(pats):
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                raise SiteError(f"sites[{role!r}]: {pattern!r} is not a valid regular expression ({exc})") from exc
            hits = [(n, m) for n, m in named if regex.fullmatch(n)]
            if not hits:
                examples = ", ".join(n for n, _ in named[:12])
                raise SiteError(
                    f"sites[{role!r}]: pattern {pattern!r} matched no module of {type(model).__name__} "
                    f"(patterns must match whole qualified names). Module names look like: {examples} ..."
                )
            for name, module in hits:
                if name in taken and taken[name] != role:
                    raise SiteError(
                        f"sites: module {name!r} is matched by both {taken[name]!r} and {role!r}; "
                        "give each module one role"
                    )
                if name in taken:
                    continue
                taken[name] = role
                layer_match = _INT.search(name)
                layer = int(layer_match.group(1)) if layer_match else None
                stack = name.split(".")[0] if layer_match else ""
                found.append(Site(name=name, role=role, module=module, layer=layer, stack=stack, denoiser=denoiser,
                                  outputs=_known_outputs(type(module).__name__)))
    return found


def _discover_diffusers(model: nn.Module, denoiser: str) -> list[Site]:
    adapter = adapter_for(type(model).__name__) or Adapter()
    groups = adapter.stacks or _generic_stacks(model)
    attention_types, ffn_types = _attention_types(), _ffn_types()
    sites: list[Site] = []
    layer_offset = 0
    for group in groups:
        lists = [(name, _submodule(model, name)) for name in group]
        lists = [(name, blocks) for name, blocks in lists if isinstance(blocks, nn.ModuleList) and len(blocks)]
        if not lists:
            continue
        depth = max(len(blocks) for _, blocks in lists)
        for i in range(depth):
            for stack, blocks in lists:
                if i >= len(blocks):
                    continue
                block = blocks[i]
                layer = layer_offset + i
                prefix = f"{stack}.{i}"
                outputs = adapter.block_outputs.get(type(block).__name__) or _known_outputs(type(block).__name__)
                sites.append(Site(prefix, "block", block, layer, stack, denoiser, outputs=outputs,
                                  folded=adapter.folded.get(stack, "")))
                for attr, sub in _inner_modules(block, attention_types, ffn_types, adapter):
                    if (type(block).__name__, attr) in adapter.roles or is_attention(sub, attention_types):
                        role = _attention_role(adapter, type(block).__name__, stack, attr, sub)
                    else:
                        role = "ffn"
                    sites.append(Site(f"{prefix}.{attr}", role, sub, layer, stack, denoiser))
        layer_offset += depth
    return sites


def _submodule(model: nn.Module, name: str) -> nn.Module | None:
    """The module at a dotted path (``mode_blocks.image``: a block list inside a ModuleDict), None where absent."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _known_outputs(block_class: str) -> tuple[str, ...] | None:
    """Output streams of a block class any adapter describes (blocks are shared across architectures)."""
    for adapter in ADAPTERS.values():
        if block_class in adapter.block_outputs:
            return tuple(adapter.block_outputs[block_class])
    return None


def _generic_stacks(model: nn.Module) -> tuple[tuple[str, ...], ...]:
    """Top-level module lists whose elements hold attention: the transformer blocks of an unknown DiT."""
    attention_types = _attention_types()
    groups = []
    for name, child in model.named_children():
        if isinstance(child, nn.ModuleList) and len(child):
            if any(is_attention(m, attention_types) for m in child[0].modules()):
                groups.append((name,))
    return tuple(groups)


def _inner_modules(block: nn.Module, attention_types: tuple[type, ...], ffn_types: tuple[type, ...],
                   adapter: Adapter | None = None):
    """Attention and FFN modules inside a block, outermost only (never inside another attention module), and the
    modules the adapter gives a role by name (attention classes of a model's own that subclass no attention type);
    never the modules the adapter says the block never runs."""
    named = {attr for block_class, attr in (adapter.roles if adapter else {}) if block_class == type(block).__name__}
    never_run = set(adapter.never_run.get(type(block).__name__, ())) if adapter else set()
    result = []
    skip_prefixes: list[str] = []
    for name, module in block.named_modules():
        if not name or any(name.startswith(p + ".") for p in skip_prefixes):
            continue
        if name in never_run:
            skip_prefixes.append(name)
            continue
        if name in named or is_attention(module, attention_types) or isinstance(module, ffn_types):
            result.append((name, module))
            skip_prefixes.append(name)
    return result


def _attention_role(adapter: Adapter, block_class: str, stack: str, attr: str, module: nn.Module) -> str:
    role = adapter.roles.get((block_class, attr)) or adapter.stack_roles.get((stack, attr))
    if role:
        return role
    if getattr(module, "is_cross_attention", False):
        return "attn.cross"
    if stack in JOINT_STACKS:
        return "attn.joint"
    if getattr(module, "added_kv_proj_dim", None) is not None or getattr(module, "add_k_proj", None) is not None:
        return "attn.joint"  # text tokens get their own projections and join the visual tokens
    if "temporal" in stack.split("_"):
        return "attn.temporal"
    return "attn.spatial"


def _nothing_found_message(model: nn.Module) -> str:
    lists = [
        f"{name} ({len(child)} x {type(child[0]).__name__})"
        for name, child in model.named_modules()
        if isinstance(child, nn.ModuleList) and len(child) and name
    ]
    found = "; ".join(lists[:10]) or "no module lists"
    return (
        f"cachelab cannot see the sites of {type(model).__name__}: it is not a diffusers transformer with "
        f"recognisable block lists, and no `sites=` patterns were given. Found: {found}. Name the sites with "
        "regular expressions matched against full module names, e.g. cachelab.apply(model, 'pab', "
        "sites={'block': r'blocks\\.\\d+', 'attn.spatial': r'blocks\\.\\d+\\.attn', 'attn.cross': "
        "r'blocks\\.\\d+\\.cross_attn', 'ffn': r'blocks\\.\\d+\\.mlp'}). Roles: "
        + ", ".join(r for r in ROLES if r != "denoiser")
    )


__all__ = ["find_sites", "is_diffusers_model", "ATTENTION_ROLES"]
