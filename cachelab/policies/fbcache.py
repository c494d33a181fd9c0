"""First-Block Cache (ParaAttention; diffusers' ``FirstBlockCacheConfig``): let the first block decide.

Every step runs block 0 and measures how much its residual ``r = out - in`` (the ``hidden_states`` stream) moved
since the last full step: ``mean|r - r_prev| / mean|r_prev|``. Under ``threshold`` the other blocks are skipped
(each returns its inputs) and block 0's output gets the residual the skipped span added at the last full step
(``output of the last block - output of block 0``, per stream). Otherwise every block runs, and ``r`` and that
span residual become the new references: they are updated on full steps only, so slow drift accumulates until
a full step resets it. The first step of a generation, and of each branch set, always runs in full.

One decision per step and per call's branches: a batched ``[uncond, cond]`` call decides once for both (as
diffusers does inside one ``cache_context``), two calls per step decide per branch. ``stats()`` shows what was
decided: skipped steps count block 0 as computed and every other block as reused.

Differences from diffusers, by design: a skip needs the change strictly under the threshold (diffusers also
skips when it equals it), so ``threshold=0`` never reuses; a zero reference (``mean|r_prev| = 0``) computes.
"""

from __future__ import annotations

import torch
from pydantic import Field

from cachelab.errors import PolicyError
from cachelab.policies.base import Policy, PolicyConfig, require_sites
from cachelab.policies.registry import register_policy
from cachelab.policies.streams import block_input, passthrough, rebuild_streams, split_streams, stream_names


class FirstBlockCacheConfig(PolicyConfig):
    threshold: float = Field(
        0.05,
        ge=0,
        le=10,
        description="skip the blocks after the first while the relative L1 change of its residual since the last "
        "full step is under this (diffusers' FirstBlockCacheConfig.threshold; 0 never skips)",
        json_schema_extra={"search": {"low": 0.0, "high": 0.3}},
    )


@register_policy("fbcache")
class FirstBlockCache(Policy):
    """Run block 0 every step; skip the rest while its residual barely changes, adding their cached residual."""

    Config = FirstBlockCacheConfig
    history = 0  # everything lives in the head block's per-generation state
    static = False  # the decision reads block 0's output

    def select(self, sites):
        blocks = require_sites(self, sites, ("block",))
        self._heads: dict[str, object] = {}
        self._tails: dict[str, object] = {}
        for denoiser in dict.fromkeys(s.denoiser for s in blocks):
            stack = [s for s in blocks if s.denoiser == denoiser]  # execution order, stack after stack
            if len(stack) < 2:
                raise PolicyError(
                    f"fbcache needs at least 2 blocks in {denoiser} (block 0 decides, the others are skipped), "
                    f"but it has {len(stack)}; name more block sites with sites={{'block': regex}}"
                )
            self._heads[denoiser], self._tails[denoiser] = stack[0], stack[-1]
        return blocks

    def forward(self, site, call):
        head = self._heads[site.denoiser]
        # the head block's slot state: cleared by the runtime at every new generation
        shared = call.runtime.slots[head.key].state.setdefault(call.ctx.branches, {})
        if site is head:
            return self._head(site, call, shared)
        skip = shared.get("step") == call.ctx.step and shared.get("skip", False)
        if skip:
            return passthrough("fbcache", site, call, shared["names"][site.key])
        output = call.run()
        shared.setdefault("names", {})[site.key] = _names(site, call, output)
        if site is self._tails[site.denoiser]:
            tail = split_streams(output, shared["names"][site.key])
            shared["tail_residual"] = {
                n: _span_residual(site, tail[n], h, n) for n, h in shared["head_out"].items() if tail.get(n) is not None
            }
        return output

    def _head(self, site, call, shared):
        output = call.run()
        names = _names(site, call, output)
        streams = split_streams(output, names)
        residual = streams["hidden_states"] - _input(site, call, "hidden_states")
        change = None
        if shared.get("residual") is not None and "tail_residual" in shared:
            change = relative_l1(residual, shared["residual"])
        skip = change is not None and change < self.config.threshold
        shared.update(step=call.ctx.step, skip=skip, change=change)
        if skip:
            cached = shared["tail_residual"]
            return rebuild_streams(output, names, {n: s + cached[n] if n in cached and s is not None else s
                                                   for n, s in streams.items()})
        shared.setdefault("names", {})[site.key] = names
        shared["residual"] = residual
        shared["head_out"] = {n: s for n, s in streams.items() if s is not None}
        return output


def relative_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    """``mean|current - previous| / mean|previous|`` (inf for a zero reference, so it never skips)."""
    scale = previous.abs().mean()
    if scale == 0:
        return float("inf")
    return ((current - previous).abs().mean() / scale).item()


def _span_residual(tail, tail_out: torch.Tensor, head_out: torch.Tensor, stream: str) -> torch.Tensor:
    if tail_out.shape != head_out.shape:
        raise PolicyError(
            f"fbcache: the last block ({tail.key}) returns {stream} of shape {tuple(tail_out.shape)} but the first "
            f"block {tuple(head_out.shape)}, so no residual spans them: the model reshapes or joins tokens between "
            "its blocks (alternating spatial and temporal stacks; text joined to the image tokens before a "
            "single-stream stack). Choose the blocks of one stack with sites={'block': regex}."
        )
    return tail_out - head_out


def _input(site, call, name):
    return block_input("fbcache", site, call, name)


def _names(site, call, output):
    return stream_names("fbcache", site, call, output)
