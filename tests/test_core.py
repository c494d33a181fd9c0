"""The engine on a custom ST-DiT called directly: bit-identity, removal, state reset, plans vs stats."""

import pytest
import torch

import cachelab
from configs import NEVER_REUSE
from stdit import STDIT_SITES, make_stdit, sample

POLICIES = ["vanilla", "dynamic", "cfg_cache", "pab", "delta_dit", "fastercache"]


STEPS = 12
TIMESTEPS = torch.linspace(999, 1, STEPS).tolist()


@pytest.fixture(scope="module")
def model():
    return make_stdit()


@pytest.fixture(scope="module")
def reference(model):
    return {cfg: sample(model, STEPS, cfg=cfg) for cfg in ("batched", "sequential", "off")}


def test_all_seed_policies_registered():
    assert set(POLICIES) <= set(cachelab.list_policies())
    assert cachelab.list_policies("*cache") == [
        "cfg_cache", "dbcache", "easycache", "fastercache", "fbcache", "magcache", "teacache"
    ]


def test_custom_dit_sites_from_patterns(model):
    sites = cachelab.find_sites(model, STDIT_SITES)
    roles = sites.roles()
    assert roles == {"denoiser": 1, "block": 4, "attn.spatial": 2, "attn.temporal": 2, "attn.cross": 4, "ffn": 4}
    temporal = [s for s in sites if s.role == "attn.temporal"]
    assert [s.name for s in temporal] == ["temporal_blocks.0.attn", "temporal_blocks.1.attn"]
    assert [s.layer for s in sites.by_role("block")] == [0, 0, 1, 1]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("cfg", ["batched", "sequential", "off"])
def test_never_reusing_config_is_bit_identical(model, reference, policy, cfg):
    with cachelab.apply(model, policy, sites=STDIT_SITES, num_steps=STEPS, **NEVER_REUSE[policy]) as handle:
        out = sample(model, STEPS, cfg=cfg)
        stats = handle.stats()
    assert torch.equal(out, reference[cfg])
    assert stats.computed_fraction == 1.0


@pytest.mark.parametrize("policy", POLICIES)
def test_remove_restores_bit_identical_outputs(model, reference, policy):
    forwards = {name: m.__dict__.get("forward") for name, m in model.named_modules()}
    handle = cachelab.apply(model, policy, sites=STDIT_SITES, num_steps=STEPS)
    cached = sample(model, STEPS)
    handle.remove()
    assert not torch.equal(cached, reference["batched"])  # the policy did something
    assert torch.equal(sample(model, STEPS), reference["batched"])
    assert {name: m.__dict__.get("forward") for name, m in model.named_modules()} == forwards
    handle.remove()  # removing twice is harmless


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("cfg", ["batched", "sequential"])
def test_second_generation_never_sees_the_first(model, policy, cfg):
    with cachelab.apply(model, policy, sites=STDIT_SITES, num_steps=STEPS):
        first = sample(model, STEPS, cfg=cfg, seed=1, prompt_seed=2)
        second = sample(model, STEPS, cfg=cfg, seed=3, prompt_seed=4)
    with cachelab.apply(model, policy, sites=STDIT_SITES, num_steps=STEPS):
        fresh_second = sample(model, STEPS, cfg=cfg, seed=3, prompt_seed=4)
    with cachelab.apply(model, policy, sites=STDIT_SITES, num_steps=STEPS):
        fresh_first = sample(model, STEPS, cfg=cfg, seed=1, prompt_seed=2)
    assert torch.equal(first, fresh_first)
    assert torch.equal(second, fresh_second)


def test_interrupted_generation_resets_state(model):
    with cachelab.apply(model, "vanilla", sites=STDIT_SITES, num_steps=STEPS) as handle:
        x = torch.randn(1, 4, 3, 8, 8)
        y = torch.randn(1, 5, 16)
        with torch.no_grad():
            for t in TIMESTEPS[:7]:  # stop mid-way, after reuse has started
                model(x, torch.tensor([t]), y)
        assert handle.stats().record.events  # something was recorded
        out = sample(model, STEPS, seed=5, prompt_seed=6, cfg="off")
        assert handle.stats().record.generation == 1
    with cachelab.apply(model, "vanilla", sites=STDIT_SITES, num_steps=STEPS):
        fresh = sample(model, STEPS, seed=5, prompt_seed=6, cfg="off")
    assert torch.equal(out, fresh)


@pytest.mark.parametrize("policy", POLICIES)
def test_default_schedules_reuse_and_match_the_plan(model, policy):
    steps = 20
    with cachelab.apply(model, policy, sites=STDIT_SITES, num_steps=steps) as handle:
        sample(model, steps, cfg="batched")
        stats = handle.stats()
        plan = handle.plan(steps, timesteps=torch.linspace(999, 1, steps).tolist())
    assert stats.computed_fraction < 1.0
    assert stats.ideal_speedup > 1.0
    for key, row in plan.items():
        assert stats.computed_steps(key) == row, key
    for kind, row in stats.by_kind().items():
        assert 0 < row["computed_fraction"] <= 1.0, kind


def test_stats_macs_are_consistent(model):
    with cachelab.apply(model, "pab", sites=STDIT_SITES, num_steps=STEPS) as handle:
        sample(model, STEPS, cfg="batched")
        stats = handle.stats()
    # MACs of an uncached run: measured independently with torch's flop counter
    from torch.utils.flop_counter import FlopCounterMode

    from cachelab.hooks.engine import _EXTRA_FLOP_FORMULAS

    with FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS) as counter:
        sample(model, STEPS, cfg="batched")
    assert stats.total_macs == pytest.approx(counter.get_total_flops() / 2, rel=1e-6)
    kinds = stats.by_kind()
    saved = sum(row["macs"] - row["macs_computed"] for row in kinds.values())
    assert stats.computed_macs == pytest.approx(stats.total_macs - saved, rel=1e-9)
    # spatial attention reuses every other step inside the window: between 40 % and 100 % computed
    assert 0.4 < kinds["attn.spatial"]["computed_fraction"] < 1.0
    assert kinds["attn.cross"]["computed_fraction"] < kinds["attn.spatial"]["computed_fraction"]


def test_batch_size_two_per_branch(model):
    ref = sample(model, STEPS, batch=2)
    with cachelab.apply(model, "fastercache", sites=STDIT_SITES, num_steps=STEPS, **NEVER_REUSE["fastercache"]):
        assert torch.equal(sample(model, STEPS, batch=2), ref)
    with cachelab.apply(model, "fastercache", sites=STDIT_SITES, num_steps=STEPS) as handle:
        out = sample(model, STEPS, batch=2)
        assert handle.stats().computed_fraction < 1
    # the first sample of the batch (same noise and prompt as a batch of 1) comes out as it does alone:
    # branch halves of a [uncond x2, cond x2] batch are split right
    with cachelab.apply(model, "fastercache", sites=STDIT_SITES, num_steps=STEPS):
        single = sample(model, STEPS, batch=1)
    torch.testing.assert_close(out[:1], single, rtol=1e-4, atol=1e-5)


def test_context_manager_and_double_apply(model):
    handle = cachelab.apply(model, "pab", sites=STDIT_SITES)
    with pytest.raises(cachelab.AlreadyAppliedError, match="already has cachelab hooks"):
        cachelab.apply(model, "vanilla", sites=STDIT_SITES)
    replaced = cachelab.apply(model, "vanilla", sites=STDIT_SITES, replace=True)
    assert not handle.active and replaced.active
    assert cachelab.handle_of(model) is replaced
    with replaced:
        pass
    assert cachelab.handle_of(model) is None
    # every module is back to its class forward: no double hooks are left behind
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_direct_calls_without_num_steps_estimate_progress(model):
    with pytest.warns(UserWarning, match="progress is estimated"):
        with cachelab.apply(model, "vanilla", sites=STDIT_SITES) as handle:
            sample(model, STEPS, cfg="off")
            assert handle.stats().computed_fraction < 1


def test_policy_descriptions_name_optional_types_plainly():
    from cachelab.describe import describe_config

    rows = {row.name: row for row in describe_config(cachelab.policy_class("dbcache").Config)}
    assert rows["max_cached_steps"].type == "int | None"
    assert rows["threshold"].type == "float" and rows["threshold"].allowed == "[0, 10]"
