"""MagCache: never-reuse identity, the reuse formula, bad input, and agreement with diffusers' own MagCache."""


import pytest
import torch
from diffusers.hooks import MagCacheConfig

import cachelab
from tiny_transformers import TINY_TRANSFORMERS
import toy_stack

STEPS = 10
TIMESTEPS = torch.linspace(950, 50, STEPS).tolist()
# per-step ratios and a threshold under which some steps skip and some run (retention: the first 2 steps run)
RATIOS = [1.0, 1.1, 1.02, 0.99, 1.01, 1.0, 0.97, 1.03, 0.96, 1.0]
MIXED = dict(threshold=0.06, max_skip_steps=2, retention_ratio=0.2)


tiny = toy_stack.tiny_transformer


def run(model, spec, batch=2):
    return toy_stack.run_steps(model, spec, TIMESTEPS, batch)


def test_never_reuse_is_identical_and_generations_reset():
    model, spec = tiny()
    reference = run(model, spec)
    with pytest.warns(cachelab.NothingReusedWarning):
        with cachelab.apply(model, "magcache", cfg="batched", num_steps=STEPS, mag_ratios=RATIOS, max_skip_steps=0):
            assert all(torch.equal(a, b) for a, b in zip(run(model, spec), reference))
    with cachelab.apply(model, "magcache", cfg="batched", num_steps=STEPS, mag_ratios=RATIOS, **MIXED) as handle:
        first, first_stats = run(model, spec), handle.stats()
        second, second_stats = run(model, spec), handle.stats()
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert {**first_stats.to_dict(), "generation": 1} == second_stats.to_dict()
    assert 0 < first_stats.computed_fraction < 1
    assert not all(torch.equal(a, b) for a, b in zip(first, reference))


class Toy(toy_stack.Toy):
    """Three residual blocks, a scale after them (so the denoiser's output is not the last block's)."""

    def __init__(self):
        super().__init__(scale=2)


def test_skipped_step_adds_the_stack_residual_of_the_last_full_step():
    model = Toy().eval()
    xs = [torch.randn(1, 4, 6) for _ in range(3)]
    ts = [torch.tensor([900.0]), torch.tensor([880.0]), torch.tensor([860.0])]
    ratios = [1.0, 1.05, 1.0]  # step 1: error 0.05; step 2: product 1.05, error 0.1
    with torch.no_grad():
        full = [model(x, t) for x, t in zip(xs, ts)]
        with cachelab.apply(model, "magcache", sites={"block": r"blocks\.\d"}, cfg="off", num_steps=3,
                            mag_ratios=ratios, threshold=0.07, retention_ratio=0) as handle:
            out = [model(x, t) for x, t in zip(xs, ts)]
            stats = handle.stats()
    assert torch.equal(out[0], full[0])
    torch.testing.assert_close(out[1], 2 * (xs[1] + (full[0] / 2 - xs[0])), rtol=0, atol=0)
    assert torch.equal(out[2], full[2])  # the error passed the threshold: a full step
    assert stats.computed_steps("blocks.0") == stats.computed_steps("blocks.2") == [True, False, True]


def test_bad_input_names_field_value_and_fix(tmp_path):
    magcache = cachelab.policy_class("magcache")
    with pytest.raises(cachelab.PolicyError, match=r"threshold: Input should be greater than or equal to 0"):
        magcache(threshold=-0.1)
    with pytest.raises(cachelab.PolicyError, match=r"retention_ratio: Input should be less than or equal to 1 \(got 2"):
        magcache(retention_ratio=2)
    model, spec = tiny()
    with pytest.raises(cachelab.PolicyError, match="give mag_ratios=.* or calibration=PATH, not both"):
        cachelab.apply(model, "magcache", mag_ratios=RATIOS, calibration="x.yaml")
    with pytest.raises(cachelab.PolicyError, match=r"magcache needs a calibration of this CogVideoXTransformer3DModel "
                                                   r"\(fingerprint \w+\).*`cachelab calibrate --model <model> "
                                                   r"--policy magcache"):
        cachelab.apply(model, "magcache")
    with cachelab.apply(model, "magcache", cfg="batched", num_steps=STEPS, mag_ratios=RATIOS[:4]):
        with pytest.raises(cachelab.PolicyError, match="mag_ratios has 4 values but this generation has 10 steps"):
            run(model, spec)
    with cachelab.apply(model, "magcache", cfg="batched", num_steps=STEPS, mag_ratios=RATIOS[::2] * 2,
                        interpolate=True, **MIXED) as handle:
        run(model, spec)  # resampled, as diffusers does
        assert handle.stats().computed_fraction < 1


@pytest.mark.parametrize("cfg", ["batched", "sequential"])
def test_matches_diffusers_mag_cache(cfg):
    """The same denoiser calls through diffusers' ``enable_cache(MagCacheConfig)`` and through ``magcache`` at the
    same ratios and parameters, fp32, on a tiny CogVideoX: bit-identical outputs and the same skipped calls.

    ``batched``: one ``[uncond, cond]`` call per step, one diffusers cache context, one cachelab state.
    ``sequential``: two calls per step, each in its own diffusers context (its own step counter and accumulators),
    each a branch of its own for cachelab. diffusers adds the residual to ``hidden_states`` only; CogVideoX drops the
    text stream after its blocks, so the outputs still agree exactly. (diffusers accumulates in float32 tensors,
    cachelab in Python floats: decisions could differ only within float32 rounding of the threshold.)"""
    model, spec = tiny()
    if cfg == "batched":
        calls = [(t, "cond_uncond", 2, 0) for t in TIMESTEPS]
    else:
        calls = [(t, branch, 1, seed) for t in TIMESTEPS for branch, seed in (("uncond", 1), ("cond", 0))]
    model.enable_cache(MagCacheConfig(mag_ratios=RATIOS, num_inference_steps=STEPS, **MIXED))
    try:
        theirs, their_ran = toy_stack.run_logged(model, spec, calls, context=model.cache_context)
    finally:
        model.disable_cache()
    with cachelab.apply(model, "magcache", cfg=cfg, cfg_order="uncond_first", num_steps=STEPS, mag_ratios=RATIOS,
                        **MIXED) as handle:
        ours, our_ran = toy_stack.run_logged(model, spec, calls)
        stats = handle.stats()
    assert our_ran == their_ran
    assert any(their_ran) and not all(their_ran)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    per_step = stats.site_steps("transformer_blocks.2")  # stats say the same: computed exactly where it ran
    if cfg == "batched":
        assert [per_step[i][0] > 0 for i in range(STEPS)] == their_ran
    else:
        assert [per_step[i][0] for i in range(STEPS)] == [sum(their_ran[2 * i:2 * i + 2]) for i in range(STEPS)]


def test_latte_skipped_step_rebuilds_the_stack_output_across_its_folded_layouts():
    """Latte's spatial blocks see (batch * frames, tokens, dim), its temporal ones (batch * tokens, frames, dim):
    at a skipped step the last (temporal) block returns, in its own layout, the first block's new input plus the
    residual of the last full step, checked here with Latte's own reshape from temporal to spatial layout."""
    spec = TINY_TRANSFORMERS["latte"]
    model = spec.build()
    heads, tails = [], []
    pre = model.transformer_blocks[0].register_forward_pre_hook(lambda m, args: heads.append(args[0]))
    post = model.temporal_transformer_blocks[-1].register_forward_hook(lambda m, args, out: tails.append(out))
    batch = 2

    def spatial(out):
        return out.reshape(batch, -1, out.shape[-2], out.shape[-1]).permute(0, 2, 1, 3).reshape(-1, heads[0].shape[1],
                                                                                                 out.shape[-1])

    try:
        # count_macs=False: no extra measuring call, so the hooks see exactly one call per step
        with cachelab.apply(model, "magcache", cfg="batched", num_steps=3, count_macs=False, mag_ratios=[1.0],
                            interpolate=True, threshold=1.0, max_skip_steps=10, retention_ratio=0) as handle, \
                torch.no_grad():
            for t in (900.0, 600.0, 300.0):
                model(**spec.inputs(batch, t))
            per_step = handle.stats().site_steps("temporal_transformer_blocks.1")
    finally:
        pre.remove()
        post.remove()
    computed = [per_step[i][0] > 0 for i in range(3)]
    assert computed == [True, False, False]
    assert heads[1].shape != tails[1].shape  # the two layouts really differ
    for step in (1, 2):
        torch.testing.assert_close(spatial(tails[step]), heads[step] + (spatial(tails[0]) - heads[0]), rtol=0, atol=0)


def test_a_branch_set_that_skips_steps_counts_their_ratios():
    """With cfg_cache, [uncond, cond] runs every few steps only: its state must count the ratios (and the skips)
    of the steps in between, since its stored residual is that much older (it once counted one step a call)."""
    from types import SimpleNamespace

    policy = cachelab.policy_class("magcache")(threshold=0.06, max_skip_steps=2, retention_ratio=0,
                                               mag_ratios=[1.0] * 2 + [1.02] * 8)
    policy._calibrations = {}
    site = SimpleNamespace(denoiser="transformer")

    def decisions(steps):
        state, out = {}, []
        for step in steps:
            skip = policy.decide(site, SimpleNamespace(ctx=SimpleNamespace(step=step, num_steps=10)), state)
            if not skip:
                state["residual"] = object()
            out.append(skip)
        return out

    # every step: step 1 error 0, step 2 0.02 (skips), step 3 0.02 + 0.0404 over the threshold (runs), and so on
    assert decisions(range(10)) == [False, True, True, False, True, False, True, False, True, False]
    # every 3rd step: each call comes 3 steps after the last, 3 skips in a row > max_skip_steps: every call runs
    assert decisions([0, 3, 6, 9]) == [False, False, False, False]
    # every 2nd step: step 2 counts steps 1-2 (error 0.02, skips); step 4 adds steps 3-4 (0.1216), step 6 counts
    # steps 5-6 (0.0604): both run
    assert decisions([0, 2, 4, 6, 8]) == [False, True, False, False, False]


@pytest.mark.parametrize("order", [1, 2])
def test_forecast_adds_the_damped_taylor_forecast_of_the_stack_residual(order):
    """``forecast_order``: a skipped step adds ``r_s + scale * k * (r_s - r_p) / (s - p)`` (order 1) where ``r_s``,
    ``r_p`` are the stack residuals of the last two full steps ``s``, ``p`` and ``k`` the steps since ``s``; with
    one full step only, ``r_s`` (nothing to difference). Order 2 has only two full steps here, so it is order 1."""
    model = Toy().eval()
    xs = [torch.randn(1, 4, 6) for _ in range(4)]
    ts = [torch.tensor([900.0 - 20 * i]) for i in range(4)]
    ratios = [1.0, 1.0, 1.2, 1.0]  # step 1 skips (error 0), step 2 runs (error 0.2), step 3 skips again
    with torch.no_grad():
        full = [model(x, t) for x, t in zip(xs, ts)]
        with cachelab.apply(model, "magcache", sites={"block": r"blocks\.\d"}, cfg="off", num_steps=4,
                            mag_ratios=ratios, threshold=0.07, retention_ratio=0, forecast_order=order,
                            forecast_scale=0.7) as handle:
            out = [model(x, t) for x, t in zip(xs, ts)]
            stats = handle.stats()
    assert stats.computed_steps("blocks.0") == [True, False, True, False]
    residual = [f / 2 - x for f, x in zip(full, xs)]
    assert torch.equal(out[0], full[0]) and torch.equal(out[2], full[2])
    torch.testing.assert_close(out[1], 2 * (xs[1] + residual[0]), rtol=0, atol=0)
    forecast = residual[2] + (residual[2] - residual[0]) / 2 * 0.7
    torch.testing.assert_close(out[3], 2 * (xs[3] + forecast), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(out[3], 2 * (xs[3] + residual[2]))  # not the plain reuse


def test_forecast_order_zero_is_the_published_reuse_and_bad_scales_are_refused():
    model, spec = tiny()
    with cachelab.apply(model, "magcache", cfg="batched", num_steps=STEPS, mag_ratios=RATIOS, **MIXED):
        plain = run(model, spec)
    with cachelab.apply(model, "magcache", cfg="batched", num_steps=STEPS, mag_ratios=RATIOS, forecast_order=0,
                        forecast_scale=0.5, **MIXED):
        assert all(torch.equal(a, b) for a, b in zip(run(model, spec), plain))
    with cachelab.apply(model, "magcache", cfg="batched", num_steps=STEPS, mag_ratios=RATIOS, forecast_order=1,
                        **MIXED):
        assert not all(torch.equal(a, b) for a, b in zip(run(model, spec), plain))
    with pytest.raises(cachelab.PolicyError, match=r"forecast_scale: Input should be greater than 0 \(got 0"):
        cachelab.policy_class("magcache")(forecast_scale=0)
    with pytest.raises(cachelab.PolicyError, match=r"forecast_order: Input should be less than or equal to 2 \(got 3"):
        cachelab.policy_class("teacache")(forecast_order=3)


def test_forecast_state_is_counted_once_in_the_cache_footprint():
    """The forecast's factors hold the stored residual itself plus one derivative: the cache needed (state counted
    whole) equals the storage held, 1.5x plain reuse's here (residual + derivative over residual + block inputs)."""
    model, spec = tiny()
    peaks = {}
    for order in (0, 1):
        with cachelab.apply(model, "magcache", cfg="batched", num_steps=STEPS, mag_ratios=RATIOS, forecast_order=order,
                            **MIXED) as handle:
            handle.runtime.track_cache = True
            run(model, spec)
            peaks[order] = handle.runtime.cache_peaks()
    held, needed = peaks[1]
    assert held == needed > peaks[0][0] == peaks[0][1]


def test_matches_diffusers_mag_cache_on_a_stack_that_joins_text_and_image():
    """Flux 2 joins ``[text, image]`` before its single-stream blocks, so the last block's output is longer than the
    first block's input. Both implementations take the residual over the image tokens (the end of the joined
    sequence) and add it there at a skipped step: bit-identical outputs and the same skipped calls."""
    model, spec = toy_stack.tiny_transformer("flux2", layers=2)
    calls = [(t, "cond_uncond", 2, 0) for t in TIMESTEPS]
    model.enable_cache(MagCacheConfig(mag_ratios=RATIOS, num_inference_steps=STEPS, **MIXED))
    try:
        theirs, their_ran = toy_stack.run_logged(model, spec, calls, context=model.cache_context)
    finally:
        model.disable_cache()
    with cachelab.apply(model, "magcache", cfg="batched", num_steps=STEPS, mag_ratios=RATIOS, **MIXED):
        ours, our_ran = toy_stack.run_logged(model, spec, calls)
    assert our_ran == their_ran
    assert any(their_ran) and not all(their_ran)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


@pytest.mark.parametrize("image_first", [False, True])
@pytest.mark.parametrize("policy", ["magcache", "teacache"])
def test_a_joined_stack_adds_the_residual_to_the_image_tokens_where_they_are(policy, image_first):
    """Text joined before (Flux 2) or after (HiDream) the image tokens: the join is found at the first full step,
    and a skipped step returns the image tokens' new input plus their residual of the last full step."""
    model = toy_stack.JoinedToy(image_first=image_first).eval()
    xs = [torch.randn(1, 4, 6) for _ in range(3)]
    texts = [torch.randn(1, 3, 6) for _ in range(3)]
    ts = [torch.tensor([900.0]), torch.tensor([880.0]), torch.tensor([860.0])]
    decisions = dict(mag_ratios=[1.0, 1.05, 1.0], threshold=0.07, retention_ratio=0) if policy == "magcache" else \
        dict(coefficients=[1.0, 0.0], threshold=10.0, modulated_input="double_blocks.0.image")  # the last step runs
    with torch.no_grad():
        full = [model(x, e, t) for x, e, t in zip(xs, texts, ts)]
        with cachelab.apply(model, policy, sites={"block": r"(double|single)_blocks\.\d"}, cfg="off", num_steps=3,
                            **decisions) as handle:
            out = [model(x, e, t) for x, e, t in zip(xs, texts, ts)]
            stats = handle.stats()
    assert stats.computed_steps("single_blocks.1") == [True, False, True]
    assert torch.equal(out[0], full[0]) and torch.equal(out[2], full[2])
    torch.testing.assert_close(out[1], xs[1] + (full[0] - xs[0]), rtol=0, atol=0)
