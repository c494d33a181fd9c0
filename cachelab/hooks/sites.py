"""What a hook site is: one module of a denoiser with a role that policies select by."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator, Literal

from torch import nn

#: Every role a site can have. ``attn.spatial`` is self-attention over the tokens of a frame or over all
#: video tokens at once (full 3-D attention); ``attn.temporal`` attends along time only; ``attn.cross``
#: attends from visual tokens to text; ``attn.joint`` attends over concatenated text and visual tokens.
ROLES = (
    "denoiser",
    "block",
    "attn.spatial",
    "attn.temporal",
    "attn.cross",
    "attn.joint",
    "ffn",
)
ATTENTION_ROLES = ("attn.spatial", "attn.temporal", "attn.cross", "attn.joint")

#: A role as a type, for policy configs (pydantic lists the allowed values in its errors).
SiteRole = Literal[ROLES]


@dataclass(eq=False)
class Site:
    """One hookable module.

    Attributes:
        name: the module's qualified name inside the denoiser (``""`` for the denoiser itself).
        role: one of :data:`ROLES`.
        module: the module whose ``forward`` gets wrapped.
        layer: depth index of the transformer layer the site belongs to (``None`` for the denoiser). Sites of
            Latte's spatial block *i* and temporal block *i* share layer *i*.
        stack: name of the block list the site lives in (e.g. ``transformer_blocks``), ``""`` for the denoiser.
        denoiser: name of the denoiser the site belongs to, for pipelines with several transformers.
        outputs: for a block that returns several streams, the input each output updates, in order
            (``("hidden_states", "encoder_hidden_states")``), when discovery knows the block class; else None.
        unbatched: keyword inputs of the call that carry no batch dimension (rotary tables, position ids), which
            a policy must not split by CFG branch.
        batch_dims: keyword inputs whose batch dimension is not the first (HiDream's Llama features: 1).
        batch_sized_tokens: why the token count of a denoiser's blocks depends on which samples share a call
            (text padded to the longest prompt of the call), empty when it does not.
        folded: for a block, what its batch dimension holds besides the samples: ``"frames"`` (Latte's spatial
            blocks see ``(batch * frames, tokens, dim)``), ``"tokens"`` (its temporal blocks see
            ``(batch * tokens, frames, dim)``), ``""`` when it holds the samples only.
    """

    name: str
    role: str
    module: nn.Module = field(repr=False)
    layer: int | None = None
    stack: str = ""
    denoiser: str = "transformer"
    outputs: tuple[str, ...] | None = None
    unbatched: tuple[str, ...] = ()
    batch_dims: dict[str, int] = field(default_factory=dict)
    batch_sized_tokens: str = ""
    folded: str = ""

    @property
    def kind(self) -> str:
        return self.role

    #: unique name across denoisers, used in stats and plans (set once: it is read on every hooked call)
    key: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.name:
            self.key = denoiser_key(self.denoiser)
        else:
            self.key = self.name if self.denoiser == "transformer" else f"{self.denoiser}:{self.name}"


def denoiser_key(denoiser: str) -> str:
    """The key of a denoiser's own site (``<denoiser>``, or ``transformer_2:<denoiser>`` for a second one)."""
    return "<denoiser>" if denoiser == "transformer" else f"{denoiser}:<denoiser>"


class SiteSet:
    """The sites of one or more denoisers, in execution order within each block stack."""

    def __init__(self, sites: Iterable[Site]):
        self._sites = list(sites)

    def __iter__(self) -> Iterator[Site]:
        return iter(self._sites)

    def __len__(self) -> int:
        return len(self._sites)

    def __getitem__(self, index: int) -> Site:
        return self._sites[index]

    def by_role(self, *roles: str) -> list[Site]:
        unknown = [r for r in roles if r not in ROLES]
        if unknown:
            raise ValueError(f"unknown site role(s) {unknown}; allowed roles: {list(ROLES)}")
        return [s for s in self._sites if s.role in roles]

    def roles(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for site in self._sites:
            counts[site.role] = counts.get(site.role, 0) + 1
        return counts

    def num_layers(self, denoiser: str | None = None) -> int:
        layers = {s.layer for s in self._sites if s.layer is not None and (denoiser is None or s.denoiser == denoiser)}
        return max(layers) + 1 if layers else 0

    def table(self) -> str:
        """A plain-text listing: one line per site."""
        width = max((len(s.key) for s in self._sites), default=10)
        lines = [f"{'site':<{width}}  {'role':<13}  layer  module"]
        for s in self._sites:
            layer = "-" if s.layer is None else str(s.layer)
            lines.append(f"{s.key:<{width}}  {s.role:<13}  {layer:>5}  {type(s.module).__name__}")
        return "\n".join(lines)
