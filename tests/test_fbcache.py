"""First-Block Cache: never-reuse identity, the reuse formula, and agreement with diffusers' own FirstBlockCache."""

import dataclasses

import pytest
import torch
from diffusers.hooks import FirstBlockCacheConfig
from torch.utils.flop_counter import FlopCounterMode

import cachelab
from tiny_transformers import TINY_TRANSFORMERS
import toy_stack

STEPS = 10
TIMESTEPS = torch.linspace(950, 50, STEPS).tolist()
# more layers than the shared tiny configs, so FBC has blocks between the first and the last (and, in Flux, a
# skipped span that crosses from the double- to the single-stream stack)
DEEPER = {"cogvideox": dict(num_layers=3), "flux": dict(num_layers=2, num_single_layers=2)}
# per model, a threshold at which some steps skip and some do not (the tiny models' residual changes are large)
MIXED = {"cogvideox": 0.2, "flux": 0.3}


def tiny(name):
    spec = TINY_TRANSFORMERS[name]
    spec = dataclasses.replace(spec, config={**spec.config, **DEEPER[name]})
    return spec.build(), spec


def run(model, spec, batch=2):
    with torch.no_grad():
        return [model(**spec.inputs(batch, t))[0] for t in TIMESTEPS]


# -- identity ---------------------------------------------------------------------------------------------------------
def test_threshold_zero_is_identical_remove_restores_and_generations_reset():
    model, spec = tiny("cogvideox")
    reference = run(model, spec)
    with pytest.warns(cachelab.NothingReusedWarning):  # warned on removal: threshold 0 never skips
        with cachelab.apply(model, "fbcache", cfg="batched", num_steps=STEPS, threshold=0.0):
            assert all(torch.equal(a, b) for a, b in zip(run(model, spec), reference))
    with cachelab.apply(model, "fbcache", cfg="batched", num_steps=STEPS, threshold=MIXED["cogvideox"]) as handle:
        first = run(model, spec)
        first_stats = handle.stats()
        second = run(model, spec)  # a new generation: references and decisions start over
        second_stats = handle.stats()
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert {**first_stats.to_dict(), "generation": 1} == second_stats.to_dict()
    assert 0 < first_stats.computed_fraction < 1
    assert not all(torch.equal(a, b) for a, b in zip(first, reference))
    assert all(torch.equal(a, b) for a, b in zip(run(model, spec), reference))  # removed


def test_refuses_a_single_block():
    model, _ = tiny("cogvideox")
    with pytest.raises(cachelab.PolicyError, match="fbcache needs at least 2 blocks in transformer"):
        cachelab.apply(model, "fbcache", sites={"block": r"transformer_blocks\.0"}, num_steps=STEPS)


def test_threshold_is_validated():
    with pytest.raises(cachelab.PolicyError, match="threshold"):
        cachelab.policy_class("fbcache")(threshold=-0.1)


# -- the reuse step ---------------------------------------------------------------------------------------------------
class Toy(toy_stack.Toy):
    """Three residual blocks; the output is the last block's output, unchanged."""


def test_reuse_step_is_first_block_plus_cached_residual():
    model = Toy().eval()
    x0, x1 = torch.randn(1, 4, 6), torch.randn(1, 4, 6)
    t0, t1 = torch.tensor([900.0]), torch.tensor([880.0])
    with torch.no_grad():
        head0 = model.blocks[0](x0, 1 + t0 / 1000)
        full0 = model(x0, t0)
        head1 = model.blocks[0](x1, 1 + t1 / 1000)
        r0, r1 = head0 - x0, head1 - x1
        change = ((r1 - r0).abs().mean() / r0.abs().mean()).item()
        with cachelab.apply(model, "fbcache", sites={"block": r"blocks\.\d"}, cfg="off", num_steps=2,
                            threshold=change * 1.01) as handle:
            out0, out1 = model(x0, t0), model(x1, t1)
            stats = handle.stats()
    assert torch.equal(out0, full0)
    torch.testing.assert_close(out1, head1 + (full0 - head0), rtol=0, atol=0)
    assert stats.computed_steps("blocks.0") == [True, True]
    assert stats.computed_steps("blocks.1") == stats.computed_steps("blocks.2") == [True, False]
    with cachelab.apply(model, "fbcache", sites={"block": r"blocks\.\d"}, cfg="off", num_steps=2,
                        threshold=change * 0.99) as handle, torch.no_grad():
        model(x0, t0), model(x1, t1)
        assert handle.stats().computed_fraction == 1.0  # just over the threshold: everything runs


# -- against diffusers ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", ["batched", "sequential"])
@pytest.mark.parametrize("name", sorted(DEEPER))
def test_matches_diffusers_first_block_cache(name, cfg):
    """The same denoiser calls through diffusers' ``enable_cache(FirstBlockCacheConfig)`` and through ``fbcache``,
    fp32: the outputs are bit-identical and the same calls skip (tolerance 0: same tensors, same operations).

    ``batched``: one ``[uncond, cond]`` call per step; diffusers decides once per call inside one cache context, as
    cachelab does for a call holding both branches. ``sequential``: two calls per step (uncond, then cond), each in
    its own diffusers cache context, each a branch of its own for cachelab."""
    model, spec = tiny(name)
    threshold = MIXED[name]
    if cfg == "batched":
        calls = [(t, "cond_uncond", 2, 0) for t in TIMESTEPS]
    else:  # the two branches see different inputs, so their decisions may differ
        calls = [(t, branch, 1, seed) for t in TIMESTEPS for branch, seed in (("uncond", 1), ("cond", 0))]

    model.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    try:
        theirs, their_ran = toy_stack.run_logged(model, spec, calls, context=model.cache_context)
    finally:
        model.disable_cache()
    with cachelab.apply(model, "fbcache", cfg=cfg, cfg_order="uncond_first", num_steps=STEPS,
                        threshold=threshold) as handle:
        ours, our_ran = toy_stack.run_logged(model, spec, calls)
        stats = handle.stats()

    assert our_ran == their_ran
    assert any(their_ran) and not all(their_ran)  # the threshold gives both kinds of step
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    # stats say the same: the last block is computed exactly on the calls where it ran
    tail = [s.key for s in cachelab.find_sites(model).by_role("block")][-1]
    per_step = stats.site_steps(tail)
    if cfg == "batched":
        assert [per_step[i][0] > 0 for i in range(STEPS)] == their_ran
    else:
        # two calls per step, one sample each: computed samples per step = the calls of that step that ran
        assert [per_step[i][0] for i in range(STEPS)] == [sum(their_ran[2 * i:2 * i + 2]) for i in range(STEPS)]


# -- savings ----------------------------------------------------------------------------------------------------------
def test_skipping_saves_flops():
    model, spec = tiny("cogvideox")

    def flops():
        with FlopCounterMode(display=False) as counter:
            run(model, spec)
        return counter.get_total_flops()

    full = flops()
    with cachelab.apply(model, "fbcache", cfg="batched", num_steps=STEPS, count_macs=False, threshold=0.5) as handle:
        cached = flops()
        skipped = handle.stats().computed_steps("transformer_blocks.2").count(False)
    assert skipped >= STEPS // 2
    assert cached < 0.8 * full


def test_refuses_blocks_that_reshape_tokens_between_them():
    """Latte alternates spatial blocks (frames x tokens) and temporal blocks (tokens x frames): the last block's
    output has another shape than the first's, so no span residual exists (diffusers' hook would subtract them)."""
    spec = TINY_TRANSFORMERS["latte"]
    model = spec.build()
    with cachelab.apply(model, "fbcache", cfg="batched", num_steps=STEPS, threshold=0.5):
        with pytest.raises(cachelab.PolicyError, match=r"fbcache: the last block \(temporal_transformer_blocks\.1\) "
                                                       r"returns hidden_states of shape \(32, 4, 16\)"):
            run(model, spec)
    assert cachelab.handle_of(model) is None


@pytest.mark.parametrize("image_first", [False, True])
def test_a_joined_stack_splits_the_cached_residual_back_into_the_first_blocks_streams(image_first):
    """Text joined before (Flux 2) or after (HiDream) the image tokens between the first block and the last: the
    join is found at the first full step, the last block's joined output is split back into image and text
    streams, and a skipped step adds each to the first block's output. diffusers' FirstBlockCache raises on Flux 2
    (a TypeError in its tail hook), so this is checked against the formula."""
    model = toy_stack.JoinedToy(image_first=image_first).eval()
    xs = [torch.randn(1, 4, 6) for _ in range(2)]
    texts = [torch.randn(1, 3, 6) for _ in range(2)]
    ts = [torch.tensor([900.0]), torch.tensor([880.0])]
    with torch.no_grad():
        full = [model(x, e, t) for x, e, t in zip(xs, texts, ts)]
        heads = [model.double_blocks[0](x, e, 1 + t / 1000)[0] for x, e, t in zip(xs, texts, ts)]
        with cachelab.apply(model, "fbcache", sites={"block": r"(double|single)_blocks\.\d"}, cfg="off",
                            threshold=10.0) as handle:
            out = [model(x, e, t) for x, e, t in zip(xs, texts, ts)]
            stats = handle.stats()
    assert stats.computed_steps("single_blocks.1") == [True, False]
    assert torch.equal(out[0], full[0])
    torch.testing.assert_close(out[1], heads[1] + (full[0] - heads[0]), rtol=0, atol=0)
