"""EasyCache (arXiv 2507.02860): reuse the denoiser's last transformation while its estimated effect stays small.

The whole denoiser maps its input ``x`` (the noisy latent) to its output ``v``. At full steps it stores the
transformation ``delta = v - x`` and the transformation rate between the last two full steps,
``k = mean|v - v_prev| / mean|x - x_prev|``. At each later step the relative output change is estimated from the
input change since the previous step as ``k * mean|x_t - x_(t-1)| / mean|v_last|`` (``v_last``: the last computed
output) and accumulated; while the sum stays under ``threshold`` (tau) the denoiser is skipped and returns
``x_t + delta``, otherwise it runs and the sum restarts at 0. No calibration: ``k`` is measured during sampling.

Facts taken from the authors' code (github.com/H-EmbodVis/EasyCache, ``hyvideo_svg_easycache.py`` and
``EasyCache4Wan2.2/easycache_generate.py``): norms are means of absolute values over the whole tensor; ``x_(t-1)``
is the previous step's input whether it was computed or not; ``k`` and ``v_last`` change on full steps only; the
first ``ret_steps`` steps (HunyuanVideo: 5 of 50) and the last step always compute, and reset the sum; a skip needs
the sum strictly under tau (HunyuanVideo 0.025, Wan2.2 0.05-0.06); no skip before ``k`` is known (two full steps).

One decision per step and per call's branches, with its own ``k``, sum and transformation: a batched
``[uncond, cond]`` call decides once from both halves, two calls per step decide per branch. Difference from the
reference, by design: its Wan code decides on the conditional call and lets the unconditional one follow. The sum is
a 0-d tensor in the model's dtype, as in the reference (a zero norm makes it inf or NaN: the step computes).
Inputs and outputs are kept as copies, as in the reference (a pipeline may change its tensors in place).
``stats()`` shows the denoiser computed or reused per step. A denoiser whose output has another shape than its input
(learned-variance channels: Latte, PixArt, DiT; image-conditioning channels in the input: Wan-Animate; the text
tokens in the output: Qwen-Image 2.1) is refused: no transformation ``v - x`` exists. So is one that predicts
several samples in one call (LTX-2's video and audio): a skip would return the last computed values of all but
the first.
"""

from __future__ import annotations

import torch
from pydantic import Field

from cachelab.errors import PolicyError
from cachelab.policies.base import Policy, PolicyConfig, require_sites
from cachelab.policies.registry import register_policy
from cachelab.policies.streams import mean_abs, sample_of, single_sample, with_sample


class EasyCacheConfig(PolicyConfig):
    threshold: float = Field(
        0.05,
        ge=0,
        le=10,
        description="tau: skip while the accumulated estimate of the relative output change stays under this "
        "(reference: 0.025 HunyuanVideo, 0.05-0.06 Wan2.2; 0 never skips)",
        json_schema_extra={"search": {"low": 0.0, "high": 0.3}},
    )
    warmup_steps: int = Field(
        5,
        ge=0,
        le=1000,
        description="the first steps always compute (the reference's ret_steps: 5 of 50 on HunyuanVideo)",
        json_schema_extra={"search": {"low": 0, "high": 10}},
    )


@register_policy("easycache")
class EasyCache(Policy):
    """Skip the whole denoiser while the accumulated estimate of its relative output change stays under tau."""

    Config = EasyCacheConfig
    history = 0  # the references live in the denoiser's per-generation state
    static = False  # the decision reads the denoiser's inputs and outputs
    reduces_across_ranks = True  # its means go through mean_abs; its input is gathered where diffusers split it

    def select(self, sites):
        return require_sites(self, sites, ("denoiser",))

    def forward(self, site, call):
        state = call.state.setdefault(call.ctx.branches, {})
        # kept across steps: the pipeline owns the tensor it passed. Under context parallelism the denoiser's
        # output is whole on every rank, so the input must be too (LTX-Video and Flux receive it split)
        x = call.runtime.whole_input(*_sample_input(site, call)).clone()
        error = self._estimate(call, state, x)
        state["x_prev"] = x
        if error is not None and error < self.config.threshold:
            state["error"] = error
            return with_sample(state["output"], x + (state["v"] - state["x"]))
        state["error"] = 0.0
        return call.defer(then=lambda output: self._keep(call, state, x, output))

    def _estimate(self, call, state: dict, x: torch.Tensor) -> torch.Tensor | None:
        """The accumulated estimate of the relative output change if this step were skipped (a 0-d tensor, inf or
        NaN for a zero norm, which then computes, as in the reference); None when the step must compute."""
        ctx = call.ctx
        last_step = ctx.num_steps is not None and ctx.step >= ctx.num_steps - 1
        if ctx.step < self.config.warmup_steps or last_step or "k" not in state:
            return None
        change, size = mean_abs(call.runtime, x - state["x_prev"], state["v"])
        return state["error"] + state["k"] * (change / size)

    def _keep(self, call, state: dict, x: torch.Tensor, output):
        v = sample_of(self.name, single_sample(self.name, output, "it reuses the transformation output - input"))
        if v.shape != x.shape:
            raise PolicyError(
                f"{self.name}: the denoiser returns a sample of shape {tuple(v.shape)} for an input of shape "
                f"{tuple(x.shape)}, so no transformation (output - input) can be reused (a learned-variance output "
                "has twice the input's channels; an image-conditioned input carries extra ones; an output over the "
                "whole text+image sequence has more tokens)"
            )
        if "v" in state:
            output_change, input_change = mean_abs(call.runtime, v - state["v"], x - state["x"])
            state["k"] = output_change / input_change
        # the output's structure is the template of reused values; its sample is copied, as the pipeline owns it
        state.update(output=output, v=v.clone(), x=x)
        return output


def _sample_input(site, call) -> tuple[str, torch.Tensor]:
    """The name and value of the denoiser's noisy input (the latent it predicts from)."""
    for name in ("hidden_states", "sample", "x", "latents"):
        value = call.argument(name)
        if isinstance(value, torch.Tensor):
            return name, value
    if call.args and isinstance(call.args[0], torch.Tensor):
        return "hidden_states", call.args[0]
    raise PolicyError(f"easycache: the denoiser {site.key or type(site.module).__name__} takes no tensor sample")
