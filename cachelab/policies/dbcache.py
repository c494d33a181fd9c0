"""DBCache, Dual Block Cache (cache-dit): the first blocks decide, the middle is cached, the last blocks correct.

Every step runs the first ``fn`` blocks and measures how much the residual they add to ``hidden_states``
(``r = output of block fn - input of block 1``) moved since the last full step: ``mean|r - r_prev| / mean|r_prev|``.
Under ``threshold`` the middle blocks are skipped (each returns its inputs), block ``fn``'s output gets the residual
the middle added at the last full step (``output of the last middle block - output of block fn``, per stream:
``hidden_states`` and, in joint-attention blocks, ``encoder_hidden_states``), and the last ``bn`` blocks run on that
approximation. Otherwise every block runs, and ``r`` and the middle residual become the new references: they are
updated on full steps only, so slow drift accumulates until a full step resets it. The first ``warmup_steps`` steps
always compute, as does a step after ``max_cached_steps`` cached steps of the generation or after
``max_continuous_cached_steps`` cached steps in a row. First-Block Cache (``fbcache``) is this policy with
``fn=1, bn=0``, no warm-up and no caps.

A model that joins text and image tokens into one sequence between the deciding block and the last skipped one
(Flux 2, Chroma, AuraFlow, HiDream, Bria FIBO: single-stream blocks after double-stream ones) is found at the first
full step (:func:`~cachelab.policies.streams.joined_at`); the last skipped block's joined output is split back into
image and text tokens, whose residuals over the deciding block's two streams a skipped step adds before the join.
(diffusers' FirstBlockCache raises on Flux 2.)

One decision per step and per call's branches: a batched ``[uncond, cond]`` call decides once for both (as
cache-dit does with ``enable_separate_cfg=False``), two calls per step decide per branch, with their own
references and counts (cache-dit's separate-CFG buffers with ``cfg_diff_compute_separate=True``). ``stats()``
shows what was decided: skipped steps count the first and last blocks as computed and the middle as reused.

Checked against cache-dit 1.5.3 (``CachedBlocks_Pattern_Base.forward``, ``CachedContextManager.can_cache``).
Differences, by design: the default ``fn`` is 1 (cache-dit's 8 leaves nothing to skip in models of 8 blocks or
fewer, such as the bundled ones); a threshold of 1 or more still compares (cache-dit then caches without
comparing); a zero reference computes (cache-dit divides by it); ``warmup_interval``, ``steps_computation_mask``,
calibrators (TaylorSeer, FoCa) and ``max_accumulated_residual_diff_threshold`` are not provided; a skipped middle
must see the tokens in one layout (alternating spatial/temporal stacks are refused).
"""

from __future__ import annotations

from typing import Optional

import torch
from pydantic import Field

from cachelab.errors import PolicyError
from cachelab.policies.base import Policy, PolicyConfig, require_sites
from cachelab.policies.registry import register_policy
from cachelab.policies.streams import (JoinFinder, block_input, image_tokens, mean_abs, passthrough, rebuild_streams,
                                      split_streams, stream_names, text_tokens)


class DualBlockCacheConfig(PolicyConfig):
    fn: int = Field(
        1,  # cache-dit's default 8 needs more than 8 blocks; 1 (its F1B0) serves any model of 2 blocks or more
        ge=1,
        le=1000,
        description="blocks at the front that always run and whose residual decides (cache-dit's "
        "Fn_compute_blocks)",
        json_schema_extra={"search": {"low": 1, "high": 8}},
    )
    bn: int = Field(
        0,
        ge=0,
        le=1000,
        description="blocks at the back that always run, on the approximated state, to correct it (cache-dit's "
        "Bn_compute_blocks)",
        json_schema_extra={"search": {"low": 0, "high": 4}},
    )
    threshold: float = Field(
        0.08,
        ge=0,
        le=10,
        description="skip the middle blocks while the relative L1 change of the front blocks' residual since the "
        "last full step is under this (cache-dit's residual_diff_threshold; 0 never skips)",
        json_schema_extra={"search": {"low": 0.0, "high": 0.3}},
    )
    warmup_steps: int = Field(
        8,
        ge=0,
        le=1000,
        description="the first steps always compute (cache-dit's max_warmup_steps)",
        json_schema_extra={"search": {"low": 0, "high": 10}},
    )
    max_cached_steps: Optional[int] = Field(
        -1,
        ge=-1,
        le=1000,
        description="at most this many cached steps per generation and branch (cache-dit's max_cached_steps; "
        "-1 or None: no cap)",
    )
    max_continuous_cached_steps: Optional[int] = Field(
        -1,
        ge=-1,
        le=1000,
        description="at most this many cached steps in a row (cache-dit's max_continuous_cached_steps; -1 or "
        "None: no cap)",
    )


@register_policy("dbcache")
class DualBlockCache(Policy):
    """Run the first ``fn`` and last ``bn`` blocks every step; skip the middle while the front residual barely
    changes, adding its cached residual."""

    Config = DualBlockCacheConfig
    history = 0  # everything lives in the deciding block's per-generation state
    static = False  # the decision reads the front blocks' output
    reduces_across_ranks = True  # relative_l1 adds every rank's shard

    @property
    def settings(self) -> DualBlockCacheConfig:
        """The parameters in DBCache's terms (a preset such as ``fbcache`` derives them from its own)."""
        return self.config

    def select(self, sites):
        blocks = require_sites(self, sites, ("block",))
        fn, bn = self.settings.fn, self.settings.bn
        self._heads: dict[str, object] = {}  # per denoiser: block fn, which decides
        self._parts: dict[str, str] = {}  # per block: front, head, middle, tail (the last middle block) or back
        self._first: dict[str, object] = {}
        for denoiser in dict.fromkeys(s.denoiser for s in blocks):
            stack = [s for s in blocks if s.denoiser == denoiser]  # execution order, stack after stack
            if len(stack) < fn + bn + 1:
                raise PolicyError(
                    f"{self.name} needs at least {fn + bn + 1} blocks in {denoiser} (the first fn={fn} decide, the "
                    f"last bn={bn} always run, at least one between is skipped), but it has {len(stack)}; lower fn "
                    "or bn, or name more block sites with sites={'block': regex}"
                )
            middle = stack[fn : len(stack) - bn]
            self._parts.update({s.key: "front" for s in stack[:fn]} | {s.key: "middle" for s in middle})
            self._parts.update({s.key: "back" for s in stack[len(stack) - bn :]})
            self._parts[stack[fn - 1].key], self._parts[middle[-1].key] = "head", "tail"
            self._heads[denoiser], self._first[denoiser] = stack[fn - 1], stack[0]
        self._join = JoinFinder()
        return blocks

    def forward(self, site, call):
        head = self._heads[site.denoiser]
        # the deciding block's slot state: cleared by the runtime at every new generation
        shared = call.runtime.slots[head.key].state.setdefault(call.ctx.branches, {})
        part = self._parts[site.key]
        if site is self._first[site.denoiser]:
            shared["front_input"] = self._input(site, call, "hidden_states")
        if part == "head":
            output = self._head(site, call, shared)
            if not shared["skip"]:
                self._join.ran(site, shared["head_out"], shared)
            return output
        if part in ("front", "back"):
            return call.defer()
        if shared.get("step") == call.ctx.step and shared.get("skip", False):
            return passthrough(self.name, site, call, shared["names"][site.key])
        self._join.check(site, call, shared["head_out"]["hidden_states"], shared)
        output = call.run()
        names = shared.setdefault("names", {})[site.key] = self._names(site, call, output)
        streams = split_streams(output, names)
        shared.setdefault("shapes", {})[site.key] = streams["hidden_states"].shape
        self._join.ran(site, streams, shared)
        if part == "tail":
            self._join.done(site.denoiser, shared)
            self._check_layout(site, shared)
            shared["tail_residual"] = self._tail_residual(site, streams, shared["head_out"])
        return output

    def _tail_residual(self, tail, streams: dict, head_out: dict) -> dict:
        """What the skipped blocks added to each stream of the head's output. Where the model joined text and image
        tokens in between, the tail's joined output is split back into the head's streams (the text tokens count
        for ``encoder_hidden_states`` when they are as many), so a skipped step adds both before the join."""
        joined, image = self._join.get(tail.denoiser), streams["hidden_states"]
        if joined and image.shape != head_out["hidden_states"].shape:
            n = head_out["hidden_states"].shape[1]
            streams = {"hidden_states": image_tokens(image, joined, n), "encoder_hidden_states": text_tokens(image, joined, n)}
        return {n: streams[n] - h for n, h in head_out.items()
                if streams.get(n) is not None and streams[n].shape == h.shape}

    def _head(self, site, call, shared):
        output = call.run()
        names = self._names(site, call, output)
        streams = split_streams(output, names)
        residual = _difference(self, site, streams["hidden_states"], shared.pop("front_input"))
        skip = (
            self._may_skip(call.ctx.step, shared)
            and "tail_residual" in shared
            and relative_l1(residual, shared["residual"], call.runtime) < self.settings.threshold
        )
        shared.update(step=call.ctx.step, skip=skip)
        shared["streak"] = shared.get("streak", 0) + 1 if skip else 0
        shared["cached"] = shared.get("cached", 0) + skip
        if skip:
            cached = shared["tail_residual"]
            return rebuild_streams(output, names, {n: s + cached[n] if n in cached and s is not None else s
                                            for n, s in streams.items()})
        shared["residual"] = residual
        shared["head_out"] = {n: s for n, s in streams.items() if s is not None}
        return output

    def _may_skip(self, step: int, shared: dict) -> bool:
        """Warm-up and the caps on cached steps (cache-dit checks them before comparing)."""
        c = self.settings
        return (
            step >= c.warmup_steps
            and not _reached(shared.get("cached", 0), c.max_cached_steps)
            and not _reached(shared.get("streak", 0), c.max_continuous_cached_steps)
        )

    def _check_layout(self, tail, shared) -> None:
        head_shape = shared["head_out"]["hidden_states"].shape
        skipped = [k for k, part in self._parts.items() if part in ("middle", "tail") and k in shared["shapes"]]
        joined = self._join.get(tail.denoiser) is not None
        for key in [tail.key] + skipped:  # the tail first: fbcache's refusal names it
            shape = shared["shapes"][key]
            if joined and (shape[0], shape[-1]) == (head_shape[0], head_shape[-1]) and len(shape) == 3:
                continue  # a block on the joined sequence
            if shape != head_shape:
                raise PolicyError(
                    f"{self.name}: {self._describe(key)} ({key}) returns hidden_states of shape "
                    f"{tuple(shared['shapes'][key])} but {self._describe('head')} {tuple(head_shape)}, so no "
                    "residual spans them: the model reshapes or joins tokens between its blocks (alternating spatial "
                    "and temporal stacks; text joined to the image tokens before a single-stream stack). Choose the "
                    "blocks of one stack with sites={'block': regex}."
                )

    def _describe(self, key: str) -> str:
        fn, bn = self.settings.fn, self.settings.bn
        if key == "head":
            return "the first block" if fn == 1 else f"block {fn} (the last of the first fn={fn})"
        if self._parts[key] == "tail":
            return "the last block" if bn == 0 else "the last skipped block"
        return "the skipped block"

    def _input(self, site, call, name):
        return block_input(self.name, site, call, name)

    def _names(self, site, call, output):
        return stream_names(self.name, site, call, output)


def relative_l1(current: torch.Tensor, previous: torch.Tensor, runtime) -> float:
    """``mean|current - previous| / mean|previous|`` (inf for a zero reference, so it never skips), over the whole
    sequence when the model is split across ranks (:func:`~cachelab.policies.streams.mean_abs`)."""
    change, scale = mean_abs(runtime, current - previous, previous)
    if scale == 0:
        return float("inf")
    return (change / scale).item()


def _reached(count: int, cap: int | None) -> bool:
    return cap is not None and cap >= 0 and count >= cap


def _difference(policy, site, output: torch.Tensor, front_input: torch.Tensor) -> torch.Tensor:
    if output.shape != front_input.shape:
        raise PolicyError(
            f"{policy.name}: block {site.key} returns hidden_states of shape {tuple(output.shape)} but the first "
            f"block takes {tuple(front_input.shape)}, so no residual spans the first fn={policy.settings.fn} blocks: "
            "the model reshapes tokens between them; lower fn or choose the blocks of one stack with "
            "sites={'block': regex}."
        )
    return output - front_input
