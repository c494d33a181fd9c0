"""Skipping the whole block stack: what ``teacache``, ``magcache`` and their calibration share.

At a full step every block runs and the residual the stack added is kept per stream: the last block's output
minus the first block's input (``hidden_states``, and ``encoder_hidden_states`` where blocks update both). At a
skipped step no block runs: each returns its inputs, except the last, which returns the first block's new input
plus that residual. Whatever the model does between its blocks (Latte's reshapes and temporal position
embedding) is then inside the residual, as in TeaCache's reference code. A subclass decides at the first block,
in :meth:`StackCache.decide`, once per step and per call's branches; skipped calls count as reused in ``stats()``.

What a skipped step adds (:class:`StackForecastConfig`, both stack caches take it): by default the residual of the
last full step, as the published methods do. With ``forecast_order`` 1 or 2 it adds the Taylor forecast of the
residual from its divided differences over the last full steps (the series ``taylorseer`` uses per site, here on
the one residual of the stack), read at ``forecast_scale`` times the steps since the last full step. The residual
changes smoothly but decelerates late in sampling, where these caches skip most, so the plain series overshoots:
on tiny-cogvideox, magcache's decisions at 2.76x gave 39.7 dB with plain reuse, 41.9 undamped and 47.4 at scale
0.7. It is no general gain: teacache at 2.92x there lost 2-3 dB with it, its skips being already far off
(``benchmarks/results/2026-12-01-h200-magcache-forecast``).

Stacks that join the text and image tokens into one sequence part-way (Flux 2, Chroma, AuraFlow, HiDream, Bria
Fibo: double-stream blocks, then single-stream blocks on ``cat([text, image])`` or ``cat([image, text])``) are
found at the first full step: the first block whose ``hidden_states`` is longer than the first block's, and holds the
previous block's ``hidden_states`` at its start or end. The residual is then taken over the image tokens, as
diffusers' MagCache does; at a skipped step the last block returns its joined input with the image tokens replaced
by the first block's new input plus that residual, and the text tokens pass through (these models drop them after
the stack).

Stacks that fold video axes into the batch (``site.folded``: Latte's spatial blocks see ``(batch * frames,
tokens, dim)``, its temporal ones ``(batch * tokens, frames, dim)``) are mapped onto the first block's layout.
"""

from __future__ import annotations

import inspect

import torch
from pydantic import Field

from cachelab.errors import PolicyError
from cachelab.policies.base import Policy, PolicyConfig, require_sites
from cachelab.policies.forecast import taylor_factors, taylor_forecast
from cachelab.policies.streams import (JoinFinder, block_input, image_tokens, passthrough, split_streams,
                                      stream_names, text_tokens)


class StackForecastConfig(PolicyConfig):
    """What a skipped step of a stack cache adds: the stored residual, or its forecast."""

    forecast_order: int = Field(
        0,
        ge=0,
        le=2,
        description="0 adds the stack residual of the last full step (the published method); 1 or 2 add its "
        "Taylor forecast from the divided differences of the last full steps' residuals",
        json_schema_extra={"search": {"low": 0, "high": 1}},
    )
    forecast_scale: float = Field(
        1.0,
        gt=0,
        le=1,
        description="the forecast is read at this fraction of the steps since the last full step (1: the Taylor "
        "series; below 1 damps its extrapolation); unused at forecast_order 0",
        json_schema_extra={"search": {"low": 0.3, "high": 1.0}},
    )


class StackCache(Policy):
    """Base of policies that skip every block of a step and add the stack's cached residual."""

    history = 0  # everything lives in the first block's per-generation state
    static = False  # decisions read the running generation

    def select(self, sites):
        blocks = require_sites(self, sites, ("block",))
        self._heads: dict[str, object] = {}
        self._tails: dict[str, object] = {}
        for denoiser in dict.fromkeys(s.denoiser for s in blocks):
            stack = [s for s in blocks if s.denoiser == denoiser]  # execution order, stack after stack
            head, tail = stack[0], stack[-1]
            if head.folded != tail.folded and {head.folded, tail.folded} != {"frames", "tokens"}:
                raise PolicyError(
                    f"{self.name}: the first block ({head.key}) folds {head.folded or 'nothing'!r} into its batch and "
                    f"the last ({tail.key}) {tail.folded or 'nothing'!r}; no residual spans them. Choose the blocks "
                    "of one stack with sites={'block': regex}."
                )
            self._heads[denoiser], self._tails[denoiser] = head, tail
        self._join = JoinFinder()
        return blocks

    def decide(self, site, call, state: dict) -> bool:
        """At the first block of each step: True to skip the stack. ``state`` belongs to this generation and
        branch set; ``"residual" in state`` once a full step has run (never skip without it)."""
        raise NotImplementedError

    def computed(self, site, call, state: dict) -> None:
        """After the last block of a full step, with ``state["residual"]`` updated. Default: nothing."""

    def forward(self, site, call):
        head, tail = self._heads[site.denoiser], self._tails[site.denoiser]
        state = call.runtime.slots[head.key].state.setdefault(call.ctx.branches, {})
        if site is head:
            state["inputs"] = _stream_inputs(self.name, site, call)
            state.update(step=call.ctx.step, skip=bool(self.decide(site, call, state)))
        names = state.setdefault("names", {})
        if state["skip"]:
            if site is tail:
                return self._rebuilt(site, call, state)
            return passthrough(self.name, site, call, names[site.key])
        if site is not head:
            self._join.check(site, call, state["inputs"]["hidden_states"], state)
        return call.defer(then=lambda output: self._ran(site, call, state, output, tail))

    def _ran(self, site, call, state, output, tail):
        names = state["names"][site.key] = stream_names(self.name, site, call, output)
        if self._join.searching(site.denoiser):  # the next block compares its input with these outputs
            self._join.ran(site, split_streams(output, names), state)
        if site is tail:
            head = self._heads[site.denoiser]
            joined = self._join.done(site.denoiser, state)
            inputs, batch = state["inputs"], _samples(call)
            residual = {}
            for name, out in split_streams(output, names).items():
                if out is None or name not in inputs:
                    continue
                out = _relayout(out, site.folded, head.folded, batch)
                if joined and name == "hidden_states" and out.shape != inputs[name].shape:
                    out = image_tokens(out, joined, inputs[name].shape[1])
                if out.shape != inputs[name].shape:
                    raise PolicyError(
                        f"{self.name}: the last block ({site.key}) returns {name} of shape {tuple(out.shape)} but the "
                        f"first block ({head.key}) takes {tuple(inputs[name].shape)}, so no residual spans them: the "
                        "model joins or reshapes tokens between its blocks. Choose the blocks of one stack with "
                        "sites={'block': regex}."
                    )
                residual[name] = out - inputs[name]
            state["residual"] = residual
            self._remember(call, state)
            self.computed(site, call, state)
        return output

    def _remember(self, call, state):
        """After a full step: its step, and with ``forecast_order`` > 0 the residual's Taylor factors."""
        order = getattr(self.config, "forecast_order", 0)
        last, step = state.get("full_step"), call.ctx.step
        if order:
            # a second full call at the same step (a repeated timestep) has no difference to divide: start over
            previous = state.get("factors") if last is not None and step > last else None
            state["factors"] = taylor_factors(state["residual"], previous, step - last if previous else 0, order)
        state["full_step"] = step

    def _rebuilt(self, tail, call, state):
        """The last block's value at a skipped step: the first block's input plus the cached residual (or its
        forecast)."""
        head = self._heads[tail.denoiser]
        inputs, residual, batch = state["inputs"], state["residual"], _samples(call)
        if "factors" in state:
            offset = self.config.forecast_scale * (call.ctx.step - state["full_step"])
            residual = taylor_forecast(state["factors"], offset)

        joined = self._join.get(tail.denoiser)

        def stream(name):
            if name not in residual:
                return block_input(self.name, tail, call, name)
            image = inputs[name] + residual[name]
            if joined and name == "hidden_states":
                whole = block_input(self.name, tail, call, name)
                if whole.shape != image.shape:  # the joined input with the image tokens replaced
                    text = text_tokens(whole, joined, image.shape[1])
                    return torch.cat([text, image] if joined == "last" else [image, text], 1)
            return _relayout(image, head.folded, tail.folded, batch)

        names = state["names"][tail.key]
        if names is None:
            return stream("hidden_states")
        return tuple(stream(n) if n else None for n in names)


def _samples(call) -> int:
    return len(call.ctx.branches) * call.ctx.branch_size


def _stream_inputs(policy: str, site, call) -> dict[str, torch.Tensor]:
    inputs = {"hidden_states": block_input(policy, site, call, "hidden_states")}
    text = call.argument("encoder_hidden_states")
    if isinstance(text, torch.Tensor):
        inputs["encoder_hidden_states"] = text
    return inputs


def _relayout(x: torch.Tensor, source: str, target: str, batch: int) -> torch.Tensor:
    """``x`` from a block folding ``source`` into its batch to the layout of one folding ``target``: frames and
    tokens swap places, ``(batch * a, b, dim) -> (batch * b, a, dim)``."""
    if source == target:
        return x
    rows, length, dim = x.shape
    return x.reshape(batch, rows // batch, length, dim).transpose(1, 2).reshape(batch * length, rows // batch, dim)


class _Captured(Exception):
    """Raised by the probe hook to stop the first block once its modulated input has been read."""

    def __init__(self, value):
        super().__init__()
        self.value = value


def _parse_probe(probe: str) -> tuple[str, str | None]:
    """``"module[:argument]"`` -> (module name, argument or None)."""
    module, _, argument = probe.partition(":")
    return module, argument or None


def modulated_input(policy: str, model: torch.nn.Module, head, call, probe: str | None) -> torch.Tensor:
    """The timestep-modulated input of the first block at this call, read without running the block past it.

    ``probe`` is ``"module[:argument]"`` (a qualified module name in the denoiser; the argument defaults to
    ``hidden_states``, else the first one); None reads the input of the first attention module inside the first
    block, which is the AdaLN output (normalised, scaled and shifted by the timestep embedding) in every DiT block
    cachelab knows. The block runs up to that module's call, then stops."""
    name, argument = _parse_probe(probe) if probe else (None, None)
    where = f"modulated_input={probe!r}" if probe else f"the first attention of {head.key} (modulated_input unset)"
    if name is None:
        module = _first_attention(policy, head)
    elif name == head.name:
        return _argument(policy, where, head.module, call.args, call.kwargs, argument)
    else:
        module = dict(model.named_modules()).get(name)
        if module is None:
            raise PolicyError(
                f"{policy}: modulated_input={probe!r} names no module of {type(model).__name__}; give a qualified "
                f"module name inside the first block, e.g. '{head.name}.norm1' or '{head.name}.attn1'"
            )

    def capture(mod, args, kwargs):
        raise _Captured(_argument(policy, where, mod, args, kwargs, argument))

    handle = module.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        call.original(*call.args, **call.kwargs)
    except _Captured as captured:
        return captured.value
    finally:
        handle.remove()
    raise PolicyError(
        f"{policy}: modulated_input={probe!r}: that module did not run inside the first block ({head.key}); name a "
        "module the first block calls, e.g. its attention, whose input is the timestep-modulated hidden states"
    )


def _first_attention(policy: str, head) -> torch.nn.Module:
    for name, module in head.module.named_modules():
        if name and (type(module).__name__.endswith("Attention") or hasattr(module, "to_q")):
            return module
    raise PolicyError(
        f"{policy}: the first block ({head.key}, {type(head.module).__name__}) has no attention module whose input "
        "would be its timestep-modulated hidden states; name the module that receives them with "
        f"modulated_input='{head.name}.<module>' (or '<module>:<argument>')"
    )


def _argument(policy: str, where: str, module, args, kwargs, argument: str | None) -> torch.Tensor:
    try:
        bound = inspect.signature(module.forward).bind_partial(*args, **kwargs).arguments
    except TypeError:
        bound = dict(kwargs)
    if argument is None:
        value = bound.get("hidden_states", args[0] if args else None)
    else:
        value = bound.get(argument, kwargs.get(argument))
    if not isinstance(value, torch.Tensor):
        raise PolicyError(
            f"{policy}: {where}: {type(module).__name__} got no tensor "
            f"{argument or 'hidden_states'!r} (its arguments: {', '.join(bound) or 'none by name'})"
        )
    return value
