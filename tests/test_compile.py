"""torch.compile over hooked models: graphs compile in the first generation only, break only at cachelab's
decisions, and give the eager cached outputs bit for bit. CPU, ``aot_eager`` backend (dynamo and AOT autograd
without code generation), counting graphs and breaks with dynamo's counters."""

import pytest
import torch
import torch._dynamo as dynamo
from torch._dynamo.utils import counters

import cachelab
from tiny_transformers import TINY_TRANSFORMERS

STEPS = 6
TIMESTEPS = torch.linspace(950, 50, STEPS).tolist()
EVERYWHERE = {"window": [0, 1]}
POLICIES = {
    "vanilla": {"interval": 2, **EVERYWHERE},
    "dynamic": {"interval": 2, **EVERYWHERE},
    "pab": {"spatial_interval": 2, "joint_interval": 2, **EVERYWHERE},
    "delta_dit": {"interval": 2, "span": 1},
    "cfg_cache": {"interval": 2, **EVERYWHERE},
    "fastercache": {"dynamic": {"interval": 2, **EVERYWHERE}, "cfg_cache": {"interval": 2, **EVERYWHERE}},
    "taylorseer": {"interval": 2, "warmup_steps": 1, "max_order": 2},  # forecasts at steps 1, 3, 5
}
# the functions cachelab keeps outside compiled graphs; a break anywhere else would be a bug of ours
DECISIONS = ("_decide", "_finish", "_enter", "_eager", "_abandon", "_exit")


def batched_cfg_inputs(spec) -> list[dict]:
    """One call's inputs per step, batched CFG: [uncond, cond] with the same latents."""
    inputs = [spec.inputs(2, t) for t in TIMESTEPS]
    for kw in inputs:
        kw["hidden_states"] = torch.cat([kw["hidden_states"][:1]] * 2)
    return inputs


@pytest.fixture(scope="module")
def cogvideox():
    spec = TINY_TRANSFORMERS["cogvideox"]
    return spec, batched_cfg_inputs(spec)


def generate(model, inputs):
    with torch.no_grad():
        return torch.stack([model(**kw)[0] for kw in inputs])


def compile_model(model, how):
    if how == "whole":
        model.compile(backend="aot_eager")
    else:  # regional: the repeated blocks, as diffusers' compile_repeated_blocks does
        for block in model.transformer_blocks:
            block.compile(backend="aot_eager")


def break_reasons() -> list[str]:
    return list(counters["graph_break"])


@pytest.mark.parametrize(
    "policy,how",
    [(p, "whole") for p in POLICIES] + [("fastercache", "regional"), ("pab", "regional")],
)
def test_compiled_cached_model_compiles_once_and_equals_eager(cogvideox, policy, how):
    spec, inputs = cogvideox
    reference = spec.build()  # the same weights, cached eagerly
    with cachelab.apply(reference, policy, num_steps=STEPS, **POLICIES[policy]):
        eager = generate(reference, inputs)
    model = spec.build()
    with cachelab.apply(model, policy, num_steps=STEPS, **POLICIES[policy]) as handle:
        compile_model(model, how)
        dynamo.reset()
        counters.clear()
        first = generate(model, inputs)  # compiles, and measures MACs on its first call, as users run it
        graphs = counters["stats"]["unique_graphs"]
        reasons = break_reasons()
        assert graphs > 0, "nothing was compiled"
        assert all(any(name in reason for name in DECISIONS) for reason in reasons), reasons
        counters.clear()
        later = [generate(model, inputs) for _ in range(2)]
        assert counters["stats"]["unique_graphs"] == 0, "recompiled in a later generation"
        for out in [first, *later]:
            assert torch.equal(out, eager)
        assert handle.stats().computed_fraction < 1.0  # the compiled runs skip the same work
    dynamo.reset()


def test_compiled_model_without_a_cache_has_no_breaks_and_hooks_leave_no_trace(cogvideox):
    spec, inputs = cogvideox
    model = spec.build()
    reference = generate(model, inputs)
    handle = cachelab.apply(model, "pab", num_steps=STEPS, **POLICIES["pab"])
    generate(model, inputs)
    handle.remove()
    compile_model(model, "whole")
    dynamo.reset()
    counters.clear()
    assert torch.equal(generate(model, inputs), reference)
    assert break_reasons() == []
    dynamo.reset()


@pytest.mark.parametrize("how", ["whole", "regional"])
def test_static_policies_decide_at_the_denoisers_entry_once_compiled(cogvideox, how, monkeypatch):
    """Under torch.compile, the calls of a static policy whose reused values come from stored ones alone are
    decided at the denoiser's entry, so a compiled region has no graph break at their sites: the per-site decision
    (``_decide``, kept outside graphs) never runs, in the first generation or later ones. A policy that reads the
    call's inputs to reuse (Δ-DiT adds its cached deviation to them) still decides at the site."""
    from cachelab.hooks import engine

    spec, inputs = cogvideox
    decided = []
    original = engine._SiteHook._decide
    def counting(self, *args):
        if self.runtime.flop_counter is None:  # not the first call's MAC-counting pass, which runs eagerly
            decided.append(self)
        return original(self, *args)

    monkeypatch.setattr(engine._SiteHook, "_decide", counting)
    for policy, expect_site_decisions in (("pab", False), ("fastercache", False), ("delta_dit", True)):
        model = spec.build()
        with cachelab.apply(model, policy, num_steps=STEPS, **POLICIES[policy]) as handle:
            compile_model(model, how)
            dynamo.reset()
            counters.clear()
            decided.clear()
            generate(model, inputs)
            generate(model, inputs)
            assert bool(decided) == expect_site_decisions, policy
            if not expect_site_decisions:
                assert not any("_decide" in reason for reason in break_reasons()), policy
            assert handle.stats().computed_fraction < 1.0
        dynamo.reset()


@pytest.mark.parametrize(
    "name,policy",
    [("cogvideox", p) for p in (None, "pab", "fastercache", "vanilla")] + [("pixart", "pab"), ("wan", "fastercache")],
)
def test_regionally_compiled_blocks_run_compiled_at_every_call(name, policy):
    """Every call of a regionally compiled block runs a compiled graph, in the first generation and later ones,
    with as many blocks as real models have graphs per kind of decision (six here). The first call's MAC-measuring
    pass runs under a dispatch mode, which makes dynamo refuse a frame and never compile its code again: were that
    pass not kept away from dynamo, the blocks would run eagerly from then on, all of them or those whose decision
    came after it. PixArt and Wan blocks hold two hooked sites each (self- and cross-attention)."""
    import dataclasses

    from torch._dynamo.backends.debugging import aot_eager

    base = TINY_TRANSFORMERS[name]
    spec = dataclasses.replace(base, config={**base.config, "num_layers": 6})
    inputs = batched_cfg_inputs(spec)
    graph_calls = [0]

    def counting_backend(graph, example_inputs):
        compiled = aot_eager(graph, example_inputs)

        def run(*args):
            graph_calls[0] += 1
            return compiled(*args)

        return run

    reference = spec.build()  # the same weights, run eagerly
    if policy is None:
        expected = generate(reference, inputs)
    else:
        with cachelab.apply(reference, policy, num_steps=STEPS, **POLICIES[policy]):
            expected = generate(reference, inputs)
    model = spec.build()
    handle = cachelab.apply(model, policy, num_steps=STEPS, **POLICIES[policy]) if policy else None
    blocks = next(child for child in model.children() if isinstance(child, torch.nn.ModuleList))
    for block in blocks:
        block.compile(backend=counting_backend)
    dynamo.reset()
    for _ in range(2):
        graph_calls[0] = 0
        assert torch.equal(generate(model, inputs), expected)
        assert graph_calls[0] == 6 * STEPS, f"{graph_calls[0]} of {6 * STEPS} block calls ran compiled"
    if handle is not None:
        assert handle.stats().computed_fraction < 1.0
        handle.remove()
    dynamo.reset()


@pytest.mark.parametrize("how", ["regional", "whole"])
def test_recompile_limit_is_raised_for_hooked_blocks_and_restored(cogvideox, how):
    """All blocks of a regionally compiled list share dynamo's recompile limit; a block whose hooked site computes
    or reuses needs twice the graphs of the block alone, so cachelab raises the limit while its hooks are on (and
    puts it back on removal). A whole compiled model has a code object of its own and keeps the limit."""
    spec, inputs = cogvideox
    before = dynamo.config.recompile_limit
    model = spec.build()
    handle = cachelab.apply(model, "pab", num_steps=STEPS, **POLICIES["pab"])
    compile_model(model, how)
    dynamo.reset()
    generate(model, inputs)
    assert dynamo.config.recompile_limit == (max(before, 16) if how == "regional" else before)
    handle.remove()
    assert dynamo.config.recompile_limit == before
    dynamo.reset()
