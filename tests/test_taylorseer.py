"""TaylorSeer: the forecast formula, never-forecast identity, resets, agreement with diffusers' TaylorSeerCacheConfig,
and why diffusers' default config forecasts nothing on CogVideoX."""

import re

import pytest
import torch
from diffusers import TaylorSeerCacheConfig
from torch.utils.flop_counter import FlopCounterMode

import cachelab
from cachelab.policies.taylorseer import taylor_factors, taylor_forecast
from tiny_pipelines import CALL_DEFAULTS, tiny_pipeline
from tiny_transformers import TINY_TRANSFORMERS
import toy_stack

STEPS = 12
TIMESTEPS = torch.linspace(950, 50, STEPS).tolist()
# full steps 0, 1, 2, 4, 7, 10 (diffusers' counting): forecasts at 3, 5-6, 8-9, 11 from gaps of 1, 2 and 3 steps
SETTINGS = dict(interval=3, warmup_steps=3)
FULL_STEPS = [True, True, True, False, True, False, False, True, False, False, True, False]


def run(model, spec, batch=2):
    with torch.no_grad():
        return [model(**spec.inputs(batch, t))[0] for t in TIMESTEPS]


# -- the formula ------------------------------------------------------------------------------------------------------
def test_forecast_formula_on_hand_made_tensors():
    """diffusers' recursive divided differences, over uneven gaps: F' = (F_c - F_b) / (c - b), F'' = (F'_c - F'_b) /
    (c - b) with F'_b = (F_b - F_a) / (b - a); the forecast at c + k is F_c + F' k + F'' k^2 / 2."""
    torch.manual_seed(0)
    (a, fa), (b, fb), (c, fc) = [(s, torch.randn(3, 4)) for s in (0, 1, 4)]
    first = taylor_factors(fa, None, 0, max_order=2)
    second = taylor_factors(fb, first, b - a, max_order=2)
    third = taylor_factors(fc, second, c - b, max_order=2)
    assert len(first) == 1 and len(second) == 2 and len(third) == 3  # one more order per full step
    d1_b, d1_c = (fb - fa) / (b - a), (fc - fb) / (c - b)
    d2_c = (d1_c - d1_b) / (c - b)
    for k in (1, 2, 5):
        torch.testing.assert_close(taylor_forecast(third, k), fc + d1_c * k + d2_c * (k * k / 2), rtol=1e-6, atol=1e-6)
        assert torch.equal(taylor_forecast(second, k), fb + d1_b * k)
        assert torch.equal(taylor_forecast(first, k), fa)
    # capped at max_order; order 0 reuses the last full step
    assert len(taylor_factors(fc, third, 2, max_order=2)) == 3
    assert torch.equal(taylor_forecast(taylor_factors(fc, third, 2, max_order=0), 3), fc)


def test_forecast_of_polynomial_features():
    """Both orders extrapolate a linear feature exactly over any gaps. The differences are backward ones (diffusers,
    the paper): over equal gaps h, order 2 forecasts ``a s^2`` k steps on with an error of exactly ``-a h k``."""
    base, slope, curve = torch.randn(3, 2, 5, dtype=torch.float64)

    def factors_at(steps, feature, order):
        factors, last = None, None
        for s in steps:
            factors, last = taylor_factors(feature(s), factors, 0 if last is None else s - last, order), s
        return factors

    def linear(s):
        return base + slope * s

    def quadratic(s):
        return base + slope * s + curve * s * s

    for order in (1, 2):
        torch.testing.assert_close(taylor_forecast(factors_at([0, 1, 4], linear, order), 3), linear(7))
    torch.testing.assert_close(taylor_forecast(factors_at([0, 3, 6], quadratic, 2), 2), quadratic(8) - curve * 3 * 2)


def test_a_change_of_shape_starts_over_at_order_zero():
    """Tokens added or dropped between full steps (diffusers: Qwen-Image's prefill step): no difference exists."""
    before = taylor_factors(torch.randn(1, 5, 3), None, 0, 2)
    after = torch.randn(1, 4, 3)
    factors = taylor_factors(after, before, 1, 2)
    assert len(factors) == 1 and torch.equal(taylor_forecast(factors, 2), after)


def test_tuple_outputs_are_forecast_per_tensor_and_none_passes_through():
    x0, x1, e0, e1 = torch.randn(4, 2, 3)
    factors = taylor_factors((x1, e1, None), taylor_factors((x0, e0, None), None, 0, 1), 2, 1)
    x, e, nothing = taylor_forecast(factors, 3)
    assert torch.equal(x, x1 + (x1 - x0) / 2 * 3.0) and torch.equal(e, e1 + (e1 - e0) / 2 * 3.0) and nothing is None


# -- through the engine: each forecast step follows the formula -------------------------------------------------------
class Toy(toy_stack.Toy):
    """Three residual blocks; the output is the last block's output, unchanged."""


def test_bad_parameters_name_the_field():
    cls = cachelab.policy_class("taylorseer")
    for params, field in [({"interval": 0}, "interval"), ({"max_order": 5}, "max_order"),
                          ({"warmup_steps": -1}, "warmup_steps"), ({"end_step": 0}, "end_step"),
                          ({"roles": ["attention"]}, "roles.0"), ({"cache_interval": 5}, "cache_interval")]:
        with pytest.raises(cachelab.PolicyError, match=rf"invalid parameters for policy 'taylorseer':\n  {field}:"):
            cls(**params)


def test_refuses_a_model_without_the_roles():
    spec = TINY_TRANSFORMERS["cogvideox"]
    with pytest.raises(cachelab.PolicyError, match=r"'taylorseer' works on sites with roles \['attn.cross'\], but"):
        cachelab.apply(spec.build(), "taylorseer", roles=["attn.cross"], num_steps=STEPS)


def test_branches_with_different_full_steps_forecast_each_from_its_own():
    """When another policy runs one branch alone (here the pipeline names a cond-only call), the branches' last full
    steps differ; a batched forecast then extrapolates each branch from its own full steps."""
    spec = TINY_TRANSFORMERS["cogvideox"]
    model = spec.build()
    # step 2 runs the conditional branch alone; warm-up 3 with interval 2: steps 0-2 compute, 3 forecasts, 4 computes
    calls = [("cond_uncond", 2), ("cond_uncond", 2), ("cond", 1), ("cond_uncond", 2), ("cond_uncond", 2)]
    timesteps = TIMESTEPS[:len(calls)]

    def outputs():
        with torch.no_grad():
            out = []
            for (context, batch), t in zip(calls, timesteps):
                with model.cache_context(context):
                    out.append(model(**spec.inputs(batch, t))[0])
            return out

    uncached = outputs()
    with cachelab.apply(model, "taylorseer", roles=["denoiser"], num_steps=len(calls), interval=2, warmup_steps=3):
        cached = outputs()
    uncond = uncached[1][:1] + (uncached[1][:1] - uncached[0][:1]) * 2.0  # full steps 0, 1: two steps on
    cond = uncached[2] + (uncached[2] - uncached[1][1:]) * 1.0  # full steps 1, 2 (step 2 alone)
    assert torch.equal(cached[3], torch.cat([uncond, cond]))
    assert torch.equal(cached[4], uncached[4])


# -- against diffusers ------------------------------------------------------------------------------------------------
# the modules both forecast, as cachelab roles and as diffusers' cache_identifiers (None: diffusers' default)
IDENTIFIERS = {
    ("cogvideox", "block"): [r"transformer_blocks\.\d+"],
    ("cogvideox", "attn.joint"): [r"transformer_blocks\.\d+\.attn1"],
    ("flux", "block"): [r"(single_)?transformer_blocks\.\d+"],
    ("flux", "attn.joint"): None,  # diffusers' default: transformer_blocks.0.attn, single_transformer_blocks.0.attn
}


def calls_for(cfg):
    if cfg == "batched":
        return [(t, "cond_uncond", 2, 0) for t in TIMESTEPS]
    # two calls per step (uncond, then cond) on different inputs, each in its own diffusers cache context
    return [(t, branch, 1, seed) for t in TIMESTEPS for branch, seed in (("uncond", 1), ("cond", 0))]


def run_calls(model, spec, calls):
    with torch.no_grad():
        out = []
        for t, context, batch, seed in calls:
            with model.cache_context(context):
                out.append(model(**spec.inputs(batch, t, seed=seed))[0])
        return out


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("cfg", ["batched", "sequential"])
@pytest.mark.parametrize("name, role", sorted(IDENTIFIERS))
def test_matches_diffusers_taylorseer(name, role, cfg, order):
    """The same denoiser calls through diffusers' ``enable_cache(TaylorSeerCacheConfig)`` (factors in float32) and
    through ``taylorseer`` forecasting the same modules, fp32: bit-identical outputs (tolerance 0: same tensors,
    same operations in the same order), over uneven gaps between full steps.

    diffusers counts the calls of each hooked module per cache context: one context per step (``cond_uncond``) for
    batched CFG, one per branch (``uncond``, ``cond``) for two calls per step, so its count is the step index."""
    spec = TINY_TRANSFORMERS[name]
    model = spec.build()
    calls = calls_for(cfg)
    uncached = run_calls(model, spec, calls)
    model.enable_cache(TaylorSeerCacheConfig(cache_interval=3, disable_cache_before_step=3, max_order=order,
                                             taylor_factors_dtype=torch.float32,
                                             cache_identifiers=IDENTIFIERS[(name, role)]))
    try:
        theirs = run_calls(model, spec, calls)
    finally:
        model.disable_cache()
    with cachelab.apply(model, "taylorseer", cfg=cfg, cfg_order="uncond_first", num_steps=STEPS, roles=[role],
                        max_order=order, **SETTINGS) as handle:
        ours = run_calls(model, spec, calls)
        stats = handle.stats()
    per_call = len(calls) // STEPS
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert [torch.equal(a, b) for a, b in zip(ours, uncached)] == [f for f in FULL_STEPS for _ in range(per_call)]
    site = cachelab.find_sites(model).by_role(role)[-1].key
    assert stats.computed_steps(site) == FULL_STEPS


@pytest.mark.parametrize("name", ["cogvideox", "flux"])
def test_denoiser_role_matches_diffusers_lite_mode(name):
    """diffusers' lite mode returns zeros from every block on forecast steps and forecasts ``proj_out``; only
    reshapes follow ``proj_out`` in CogVideoX and Flux, so forecasting the denoiser's output gives the same values
    while skipping the whole forward."""
    spec = TINY_TRANSFORMERS[name]
    model = spec.build()
    calls = calls_for("batched")
    model.enable_cache(TaylorSeerCacheConfig(cache_interval=3, disable_cache_before_step=3, max_order=2,
                                             taylor_factors_dtype=torch.float32, use_lite_mode=True))
    try:
        theirs = run_calls(model, spec, calls)
    finally:
        model.disable_cache()
    with cachelab.apply(model, "taylorseer", cfg="batched", num_steps=STEPS, roles=["denoiser"], max_order=2,
                        **SETTINGS) as handle:
        ours = run_calls(model, spec, calls)
        assert handle.stats().computed_steps("<denoiser>") == FULL_STEPS
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def hooked_by_diffusers(model):
    return [n for n, m in model.named_modules()
            if getattr(m, "_diffusers_hook", None) is not None and m._diffusers_hook.get_hook("taylorseer_cache")]


def test_diffusers_default_forecasts_nothing_on_cogvideox():
    """Why diffusers' TaylorSeer ran at 1.00x with uncached outputs on CogVideoX: without ``cache_identifiers`` it
    hooks the modules whose names fullmatch ``^transformer_blocks.*attn`` (and the like), i.e. end in ``attn``.
    CogVideoX's attention is ``transformer_blocks.N.attn1``: no module matches, nothing is hooked and every step
    runs in full, silently. Flux's ``transformer_blocks.N.attn`` match. cachelab forecasts CogVideoX's blocks at the
    same interval and order, and skips their FLOPs."""
    spec = TINY_TRANSFORMERS["cogvideox"]
    model = spec.build()
    calls = calls_for("batched")
    uncached = run_calls(model, spec, calls)
    model.enable_cache(TaylorSeerCacheConfig(cache_interval=3, max_order=2))  # defaults otherwise
    try:
        assert hooked_by_diffusers(model) == []
        theirs = run_calls(model, spec, calls)
    finally:
        model.disable_cache()
    assert all(torch.equal(a, b) for a, b in zip(theirs, uncached))
    assert not any(re.fullmatch(r"^transformer_blocks.*attn", n) for n, _ in model.named_modules())
    flux = TINY_TRANSFORMERS["flux"].build()
    flux.enable_cache(TaylorSeerCacheConfig(cache_interval=3, max_order=2))
    assert hooked_by_diffusers(flux) == ["transformer_blocks.0.attn", "single_transformer_blocks.0.attn"]
    flux.disable_cache()

    def flops():
        with FlopCounterMode(display=False) as counter:
            outputs = run_calls(model, spec, calls)
        return outputs, counter.get_total_flops()

    _, full = flops()
    with cachelab.apply(model, "taylorseer", cfg="batched", num_steps=STEPS, count_macs=False, interval=3,
                        max_order=2) as handle:
        ours, cached = flops()
        forecasts = handle.stats().computed_steps("transformer_blocks.1").count(False)
    assert forecasts == 6
    assert cached < 0.7 * full
    assert sum(torch.equal(a, b) for a, b in zip(ours, uncached)) == STEPS - forecasts


def test_through_the_cogvideox_pipeline():
    """The same in the real sampling loop: CogVideoX's pipeline names its batched call ``cond_uncond`` and resets
    diffusers' hooks after each generation. With default identifiers diffusers' latents equal the uncached ones;
    with the blocks named, diffusers and cachelab give the same latents, generation after generation."""
    pipe = tiny_pipeline("cogvideox")

    def generate():
        return pipe(prompt="a red circle moving left", negative_prompt="", num_inference_steps=STEPS, guidance_scale=5.0,
                    generator=torch.Generator().manual_seed(0), output_type="latent", **CALL_DEFAULTS["cogvideox"]).frames

    uncached = generate()
    for identifiers in (None, [r"transformer_blocks\.\d+"]):
        pipe.transformer.enable_cache(TaylorSeerCacheConfig(cache_interval=3, max_order=2, cache_identifiers=identifiers,
                                                            taylor_factors_dtype=torch.float32))
        try:
            theirs = [generate(), generate()]
        finally:
            pipe.transformer.disable_cache()
        if identifiers is None:
            assert torch.equal(theirs[0], uncached) and torch.equal(theirs[1], uncached)
    with cachelab.apply(pipe, "taylorseer", interval=3, max_order=2) as handle:
        ours = generate()
        assert handle.stats().computed_steps("transformer_blocks.1") == FULL_STEPS
    assert torch.equal(ours, theirs[0]) and torch.equal(ours, theirs[1])
    assert not torch.equal(ours, uncached)


@pytest.mark.parametrize("warmup, interval, end", [(3, 5, None), (0, 4, None), (1, 2, 7), (5, 3, 9)])
def test_plan_is_diffusers_schedule(warmup, interval, end):
    """Full steps where diffusers' hook computes (its own decision function, one call per step), except that a step
    with nothing stored computes here where diffusers raises (``warmup_steps=0``)."""
    from diffusers.hooks.hooks import CacheContext, StateManager
    from diffusers.hooks.taylorseer_cache import TaylorSeerCacheHook, TaylorSeerState

    states = StateManager(TaylorSeerState)
    states.set_context(CacheContext("cond"))
    hook = TaylorSeerCacheHook(interval, warmup, torch.float32, states, disable_cache_after_step=end)
    theirs = [hook._measure_should_compute()[0] for _ in range(STEPS)]
    policy = cachelab.policy_class("taylorseer")(interval=interval, warmup_steps=warmup, end_step=end)
    with cachelab.apply(Toy(), policy, sites={"block": r"blocks\.1"}, cfg="off") as handle:
        ours = handle.plan(STEPS)["blocks.1"]
    assert ours == [theirs[0] or warmup == 0] + theirs[1:]
    assert not all(ours)
