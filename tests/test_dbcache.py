"""DBCache: never-reuse identity, the reuse formula, warm-up and caps, and agreement with cache-dit's own DBCache."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cachelab
from tiny_transformers import TINY_TRANSFORMERS
import toy_stack

STEPS = 10
TIMESTEPS = torch.linspace(950, 50, STEPS).tolist()


def tiny_cogvideox(num_layers=5):
    spec = TINY_TRANSFORMERS["cogvideox"]
    spec = dataclasses.replace(spec, config={**spec.config, "num_layers": num_layers})
    return spec.build(), spec


def run(model, spec, batch=2):
    with torch.no_grad():
        return [model(**spec.inputs(batch, t))[0] for t in TIMESTEPS]


# -- identity, reset, bad input ---------------------------------------------------------------------------------------
def test_threshold_zero_is_identical_and_generations_reset():
    model, spec = tiny_cogvideox()
    reference = run(model, spec)
    settings = dict(fn=2, bn=1, warmup_steps=0)
    with pytest.warns(cachelab.NothingReusedWarning):  # threshold 0 never skips
        with cachelab.apply(model, "dbcache", cfg="batched", num_steps=STEPS, threshold=0.0, **settings):
            assert all(torch.equal(a, b) for a, b in zip(run(model, spec), reference))
    with cachelab.apply(model, "dbcache", cfg="batched", num_steps=STEPS, threshold=0.5, **settings) as handle:
        first, first_stats = run(model, spec), handle.stats()
        second, second_stats = run(model, spec), handle.stats()  # a new generation: references and counts restart
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert {**first_stats.to_dict(), "generation": 1} == second_stats.to_dict()
    skipped = first_stats.computed_steps("transformer_blocks.2")
    assert any(skipped) and not all(skipped)
    assert not all(torch.equal(a, b) for a, b in zip(first, reference))
    # the front and back blocks run at every step, only the middle is reused
    for block in (0, 1, 4):
        assert all(first_stats.computed_steps(f"transformer_blocks.{block}"))
    assert first_stats.computed_steps("transformer_blocks.3") == skipped


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(fn=0), "fn: Input should be greater than or equal to 1 (got 0)"),
        (dict(bn=-1), "bn: Input should be greater than or equal to 0 (got -1)"),
        (dict(threshold=-0.1), "threshold: Input should be greater than or equal to 0"),
        (dict(max_cached_steps=-2), "max_cached_steps: Input should be greater than or equal to -1 (got -2)"),
        (dict(Fn_compute_blocks=2), "Fn_compute_blocks: unknown parameter"),
    ],
)
def test_bad_parameters_name_the_field(params, message):
    with pytest.raises(cachelab.PolicyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cachelab.policy_class("dbcache")(**params)


def test_refuses_too_few_blocks():
    model, _ = tiny_cogvideox(num_layers=3)
    with pytest.raises(cachelab.PolicyError, match=r"dbcache needs at least 4 blocks in transformer \(the first fn=2 "
                                                   r"decide, the last bn=1 always run.*but it has 3; lower fn or bn"):
        cachelab.apply(model, "dbcache", num_steps=STEPS, fn=2, bn=1)


def test_refuses_a_middle_in_other_token_layouts():
    """Latte alternates spatial and temporal blocks: with bn=1 the first and last skipped blocks are both spatial,
    but the temporal block between them sees the tokens in another layout, so no residual spans the middle."""
    spec = TINY_TRANSFORMERS["latte"]
    model = spec.build()
    with cachelab.apply(model, "dbcache", cfg="batched", num_steps=STEPS, fn=1, bn=1, warmup_steps=0):
        with pytest.raises(cachelab.PolicyError, match=r"dbcache: the skipped block \(temporal_transformer_blocks\.0\) "
                                                       r"returns hidden_states of shape \(32, 4, 16\) but the first"):
            run(model, spec)


# -- the reuse step, warm-up and caps -----------------------------------------------------------------------------
class Chain(toy_stack.Toy):
    """Four residual blocks; the output is the last block's output, unchanged."""

    def __init__(self):
        super().__init__(blocks=4)


def apply_chain(model, steps, **params):
    return cachelab.apply(model, "dbcache", sites={"block": r"blocks\.\d"}, cfg="off", num_steps=steps, **params)


def test_reuse_step_adds_the_middle_residual_and_runs_the_back_blocks():
    model = Chain().eval()
    x0, x1 = torch.randn(1, 4, 6), torch.randn(1, 4, 6)
    t0, t1 = torch.tensor([900.0]), torch.tensor([880.0])
    b = model.blocks
    with torch.no_grad():
        e0, e1 = 1 + t0 / 1000, 1 + t1 / 1000
        front0, front1 = b[1](b[0](x0, e0), e0), b[1](b[0](x1, e1), e1)
        middle0 = b[2](front0, e0)
        r0, r1 = front0 - x0, front1 - x1
        change = ((r1 - r0).abs().mean() / r0.abs().mean()).item()
        with apply_chain(model, 2, fn=2, bn=1, warmup_steps=0, threshold=change * 1.01) as handle:
            out0, out1 = model(x0, t0), model(x1, t1)
            stats = handle.stats()
        expected1 = b[3](front1 + (middle0 - front0), e1)
    assert torch.equal(out0, model(x0, t0))
    torch.testing.assert_close(out1, expected1, rtol=0, atol=0)
    computed = [stats.computed_steps(f"blocks.{i}") for i in range(4)]
    assert computed == [[True, True], [True, True], [True, False], [True, True]]
    with apply_chain(model, 2, fn=2, bn=1, warmup_steps=0, threshold=change * 0.99) as handle, torch.no_grad():
        model(x0, t0), model(x1, t1)
        assert handle.stats().computed_fraction == 1.0  # just over the threshold: everything runs


@pytest.mark.parametrize(
    "caps, computed",
    [
        (dict(), [True, True] + [False] * 6),
        (dict(max_continuous_cached_steps=2), [True, True, False, False, True, False, False, True]),
        (dict(max_cached_steps=3, max_continuous_cached_steps=2), [True, True, False, False, True, False, True, True]),
        (dict(max_cached_steps=None, max_continuous_cached_steps=-1), [True, True] + [False] * 6),
        (dict(max_cached_steps=0), [True] * 8),
    ],
)
def test_warmup_and_caps_decide_which_steps_compute(caps, computed):
    """cache-dit's rules: no cache in the first max_warmup_steps steps, none once max_cached_steps were cached,
    none right after max_continuous_cached_steps cached steps in a row (a computed step restarts the run)."""
    model = Chain().eval()
    inputs = [torch.randn(1, 4, 6) for _ in range(8)]
    with apply_chain(model, 8, fn=1, bn=1, warmup_steps=2, threshold=10.0, **caps) as handle, torch.no_grad():
        for step, x in enumerate(inputs):
            model(x, torch.tensor([900.0 - 100 * step]))
        stats = handle.stats()
    assert stats.computed_steps("blocks.2") == computed
    assert stats.computed_steps("blocks.0") == stats.computed_steps("blocks.3") == [True] * 8


# -- against cache-dit ------------------------------------------------------------------------------------------------
#: (pipeline, cache-dit DBCacheConfig, our parameters, a skipped block): CogVideoX (CFG batched in one call) at F1B0
#: without warm-up or caps and at F2B1 with both; Wan (CFG as two calls per step, cache-dit's enable_separate_cfg)
#: at F1B0; each at a threshold at which the pipeline caches some steps and computes others
SETTINGS = [
    ("cogvideox", dict(Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=0.3, max_warmup_steps=0),
     dict(fn=1, bn=0, threshold=0.3, warmup_steps=0), "transformer_blocks.1"),
    ("cogvideox", dict(Fn_compute_blocks=2, Bn_compute_blocks=1, residual_diff_threshold=0.4, max_warmup_steps=2,
                       max_cached_steps=4, max_continuous_cached_steps=2),
     dict(fn=2, bn=1, threshold=0.4, warmup_steps=2, max_cached_steps=4, max_continuous_cached_steps=2),
     "transformer_blocks.2"),
    ("wan", dict(Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=0.1, max_warmup_steps=0),
     dict(fn=1, bn=0, threshold=0.1, warmup_steps=0), "blocks.1"),
]
PROMPT = "a red circle moving left"


def pipeline(family):
    """The tiny pipeline of ``family``; CogVideoX's with a five-block transformer, so that F2B1 skips two."""
    from tiny_pipelines import tiny_pipeline

    pipe = tiny_pipeline(family)
    if family == "cogvideox":
        pipe.register_modules(transformer=tiny_cogvideox()[0])
    return pipe


def generate(pipe, family):
    from tiny_pipelines import CALL_DEFAULTS

    generator = torch.Generator().manual_seed(0)
    return pipe(prompt=PROMPT, negative_prompt="", num_inference_steps=STEPS, output_type="latent",
                generator=generator, **CALL_DEFAULTS[family]).frames


def cache_dit_outputs(path: str) -> None:
    """Run in a subprocess (cache-dit patches the pipeline class): per setting, the latents and the steps cached in
    the first (or only) branch and in the second (cache-dit's separate CFG branch)."""
    import cache_dit
    from cache_dit import DBCacheConfig

    results = []
    for family, theirs, _, _ in SETTINGS:
        pipe = pipeline(family)
        cache_dit.enable_cache(pipe, cache_config=DBCacheConfig(**theirs))
        latents = generate(pipe, family)
        (context,) = pipe._context_manager._cached_context_manager.values()
        results.append((latents, list(context.cached_steps), list(context.cfg_cached_steps)))
        cache_dit.disable_cache(pipe)
    torch.save(results, path)


def test_matches_cache_dit_dbcache(tmp_path):
    """The same pipeline calls (fp32) through cache-dit 1.5.3's ``enable_cache(DBCacheConfig(...))`` and through
    ``dbcache``: latents bit-identical (tolerance 0: the same tensors meet the same operations) and the same steps
    cached in each branch, for both CFG conventions, F1B0, and F2B1 with warm-up and caps."""
    pytest.importorskip("cache_dit")
    path = tmp_path / "cache_dit.pt"
    tests = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")])}
    code = f"import test_dbcache; test_dbcache.cache_dit_outputs({json.dumps(str(path))})"
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tests.parent, capture_output=True)
    for (their_latents, cached, cfg_cached), (family, _, ours, skipped) in zip(torch.load(path), SETTINGS):
        pipe = pipeline(family)
        with cachelab.apply(pipe, "dbcache", **ours) as handle:
            latents = generate(pipe, family)
            per_step = handle.stats().site_steps(skipped)
        # reused calls per step: the batched call, or each branch's call (cond first, then uncond in Wan)
        assert [per_step[i][1] for i in range(STEPS)] == [(i in cached) + (i in cfg_cached) for i in range(STEPS)]
        assert 0 < len(cached) < STEPS - 1  # the threshold gives both kinds of step
        assert bool(cfg_cached) == (family == "wan")
        assert torch.equal(latents, their_latents)
