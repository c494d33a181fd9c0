"""CFG-Cache (FasterCache): skip the unconditional branch on most steps and rebuild it from the conditional one.

On full steps both branches run and their difference ``delta = uncond - cond`` is stored. On cached steps only
the conditional branch runs and ``uncond = IFFT(LF(cond) + a_low * LF(delta) + HF(cond) + a_high * HF(delta))``,
with LF/HF a centred disk of radius ``min(H, W) // radius_divisor`` in the shifted per-frame 2-D spectrum.
By linearity this equals ``cond + a_low * delta_LF + a_high * delta_HF`` in pixel space, which is how it is
computed (one FFT of the delta instead of two, and none when ``a_low == a_high``). The weights ``a`` start at 1
after each full step and are multiplied by ``low_freq_weight`` / ``high_freq_weight`` on every cached step
inside their windows (``compound=True``, the reference behaviour) or set to them (``compound=False``).

Works for CFG batched in one call (``[uncond, cond]``) and for CFG as two calls per step (conditional first).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from cachelab.errors import LayoutError
from cachelab.hooks.history import tree_map
from cachelab.policies.base import Policy, PolicyConfig, require_sites
from cachelab.policies.registry import register_policy
from cachelab.policies.schedule import Window, interval_compute
from cachelab.policies.streams import sample_of, single_sample, with_sample

Layout = Literal["auto", "BCHW", "BCFHW", "BFCHW", "flat"]


class CfgCacheConfig(PolicyConfig):
    interval: int = Field(
        5,
        ge=1,
        le=50,
        description="run both CFG branches every interval-th step in the window",
        json_schema_extra={"search": {"low": 1, "high": 8}},
    )
    window: Window = Field(
        Window(start=641, end=0, unit="timestep"),
        description="where the unconditional branch may be skipped",
        json_schema_extra={"search": {"start": {"low": 300, "high": 950}, "end": {"low": 0, "high": 250}}},
    )
    low_freq_weight: float = Field(
        1.1,
        ge=0.0,
        le=3.0,
        description="a_low: boost of the low-frequency delta",
        json_schema_extra={"search": {"low": 0.8, "high": 1.5}},
    )
    low_freq_window: Window = Field(
        Window(start=901, end=99, unit="timestep"),
        description="steps where the low-frequency boost applies",
        json_schema_extra={"search": {"start": {"low": 600, "high": 1000}, "end": {"low": 0, "high": 300}}},
    )
    high_freq_weight: float = Field(
        1.1,
        ge=0.0,
        le=3.0,
        description="a_high: boost of the high-frequency delta",
        json_schema_extra={"search": {"low": 0.8, "high": 1.5}},
    )
    high_freq_window: Window = Field(
        Window(start=301, end=0, unit="timestep"),
        description="steps where the high-frequency boost applies",
        json_schema_extra={"search": {"start": {"low": 150, "high": 600}, "end": {"low": 0, "high": 100}}},
    )
    compound: bool = Field(True, description="multiply the boost in on every cached step (reference) or apply it once")
    radius_divisor: int = Field(5, ge=1, le=64, description="low frequencies: disk of radius min(H, W) // radius_divisor")
    layout: Layout = Field(
        "auto",
        description="denoiser output layout; H, W are the last two dims. flat: no frequency split (token outputs)",
    )


def low_frequency_mask(height: int, width: int, radius_divisor: int, device=None) -> torch.Tensor:
    """Boolean mask of the low frequencies in an ``fftshift``-ed (H, W) spectrum."""
    radius = min(height, width) // radius_divisor
    ys = torch.arange(height, device=device).view(-1, 1) - height // 2
    xs = torch.arange(width, device=device).view(1, -1) - width // 2
    return ys * ys + xs * xs <= radius * radius


def split_frequencies(x: torch.Tensor, radius_divisor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shifted spectra of the low and high frequencies of ``x`` over its last two dims (per frame)."""
    spectrum = torch.fft.fftshift(torch.fft.fft2(x.float()), dim=(-2, -1))
    mask = low_frequency_mask(x.shape[-2], x.shape[-1], radius_divisor, x.device)
    return spectrum * mask, spectrum * ~mask


def splits_into_frequencies(sample: torch.Tensor, layout: str = "auto") -> bool:
    """Whether ``layout`` reads ``sample`` (a denoiser output) as frames with H, W as its last two dims: ``auto``
    takes any 4-D (B, C, H, W) or 5-D (B, C, F, H, W) / (B, F, C, H, W) tensor; ``flat`` (token sequences) none."""
    if layout == "flat":
        return False
    expected = {"BCHW": 4, "BCFHW": 5, "BFCHW": 5}.get(layout)
    return sample.ndim in (4, 5) if expected is None else sample.ndim == expected


def high_pass(x: torch.Tensor, radius_divisor: int) -> torch.Tensor:
    """The high-frequency part of ``x`` in pixel space (float32, its own storage: the real part of the complex
    inverse FFT would keep the complex buffer, twice its size, alive wherever it is stored)."""
    _, high = split_frequencies(x, radius_divisor)
    return torch.fft.ifft2(torch.fft.ifftshift(high, dim=(-2, -1))).real.contiguous()


def rebuild_uncond(cond, delta, low_weight: float, high_weight: float, radius_divisor: int, split: bool,
                   high: torch.Tensor | None = None):
    """``cond + low_weight * LF(delta) + high_weight * HF(delta)`` in pixel space. ``high`` is
    ``high_pass(delta, radius_divisor)`` where the caller keeps it (it changes only when ``delta`` does)."""
    if not split or low_weight == high_weight:
        return cond + delta * low_weight
    if high is None:
        high = high_pass(delta, radius_divisor)
    correction = delta.float() * low_weight + high * (high_weight - low_weight)
    return cond + correction.to(cond.dtype)


@register_policy("cfg_cache")
class CfgCache(Policy):
    """Run the unconditional CFG branch every few steps only; rebuild it from the conditional one in between."""

    Config = CfgCacheConfig
    history = 1  # the stored delta
    label = "cfg_cache"  # the policy its refusals name

    def select(self, sites):
        return require_sites(self, sites, ("denoiser",))

    def compute_at(self, site, ctx):
        return interval_compute(ctx, self.config.window, self.config.interval)

    def forward(self, site, call):
        branches = call.ctx.branches
        if branches == ("uncond", "cond"):
            return self._batched(call)
        if branches == ("cond",):
            return call.defer(then=lambda output: self._keep_first(call, output))
        if branches == ("uncond",):
            return self._second_call(call)
        return call.defer()

    # -- the two CFG styles ------------------------------------------------------------------------------------
    def _full(self, call) -> bool:
        return call.planned_compute() or "delta" not in call.state

    def _batched(self, call):
        if self._full(call):
            if call.should_store():
                return call.defer(then=lambda output: self._keep_batched(call, output))
            return call.defer(then=self._one_sample)
        n = call.ctx.branch_size
        args, kwargs = _cond_half(call.args, call.kwargs, 2 * n, call.site.unbatched, call.site.batch_dims)
        return call.defer(args, kwargs, branches=("cond",), then=lambda output: self._with_rebuilt_uncond(call, output))

    def _one_sample(self, output):
        return single_sample(self.label, output, "CFG-Cache rebuilds the unconditional branch")

    def _keep_batched(self, call, output):
        uncond, cond = sample_of("cfg_cache", self._one_sample(output)).chunk(2)
        self._store(call.state, uncond, cond)
        return output

    def _with_rebuilt_uncond(self, call, output):
        cond = sample_of("cfg_cache", output)
        return with_sample(output, torch.cat([self._rebuild(call, cond), cond]))

    def _keep_first(self, call, output):
        call.state["cond"] = (call.ctx.step, self._one_sample(output))
        return output

    def _second_call(self, call):
        # Rebuilt from the step's first call; the formula is symmetric in which branch comes first.
        state = call.state
        step, first_output = state.get("cond", (None, None))
        if step != call.ctx.step or self._full(call):
            if step == call.ctx.step and call.should_store():
                return call.defer(then=lambda output: self._keep_second(call, output, first_output))
            return call.defer()
        return with_sample(first_output, self._rebuild(call, sample_of("cfg_cache", first_output)))

    def _keep_second(self, call, output, first_output):
        self._store(call.state, sample_of("cfg_cache", output), sample_of("cfg_cache", first_output))
        return output

    # -- the math ----------------------------------------------------------------------------------------------
    def _store(self, state: dict, uncond: torch.Tensor, cond: torch.Tensor) -> None:
        self._check_layout(uncond)
        state["delta"] = uncond - cond
        state["scales"] = (1.0, 1.0)
        state.pop("delta_high", None)

    def _check_layout(self, sample: torch.Tensor) -> None:
        layout = self.config.layout
        if layout != "flat" and not splits_into_frequencies(sample, layout):
            raise LayoutError(
                f"cfg_cache: one CFG branch of the denoiser output has shape {tuple(sample.shape)}, which layout={layout!r} cannot "
                "split into frequencies: it needs (B, C, H, W), (B, C, F, H, W) or (B, F, C, H, W) with H, W last. "
                "For token-sequence outputs (packed latents) pass layout='flat' (no frequency split: the whole "
                "delta gets the low-frequency weight)."
            )

    def _rebuild(self, call, cond: torch.Tensor) -> torch.Tensor:
        c, ctx, state = self.config, call.ctx, call.state
        low = c.low_freq_weight if c.low_freq_window.contains(ctx) else 1.0
        high = c.high_freq_weight if c.high_freq_window.contains(ctx) else 1.0
        if c.compound:
            low, high = state["scales"][0] * low, state["scales"][1] * high
            state["scales"] = (low, high)
        split = c.layout != "flat"
        high_part = None
        if split and low != high:
            # the delta's high-pass (two FFTs) is computed once per stored delta, not at every rebuilt step: on
            # small workloads those FFTs outweighed the half batch they save
            high_part = state.get("delta_high")
            if high_part is None:
                high_part = state["delta_high"] = high_pass(state["delta"], c.radius_divisor)
        return rebuild_uncond(cond, state["delta"], low, high, c.radius_divisor, split=split, high=high_part)


def _cond_half(
    args: tuple, kwargs: dict, batch: int, unbatched: tuple[str, ...], batch_dims: dict[str, int]
) -> tuple[tuple, dict]:
    """The conditional half of every batched input ([uncond, cond] along dim 0, or along the dimension
    ``batch_dims`` names for an input); ``unbatched`` inputs as they are."""

    def half(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
        return x.narrow(dim, batch // 2, batch - batch // 2) if x.ndim > dim and x.shape[dim] == batch else x

    def half_of(name: str, value):
        if name in unbatched:
            return value
        dim = batch_dims.get(name, 0)
        return tree_map(lambda x: half(x, dim), value)

    args = tuple(tree_map(half, a) for a in args)
    kwargs = {k: half_of(k, v) for k, v in kwargs.items()}
    return args, kwargs
