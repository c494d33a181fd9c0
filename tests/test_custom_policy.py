"""A policy written in a user's own file registers with one decorator and runs with no edit elsewhere."""

import torch
from click.testing import CliRunner
from pydantic import Field

import cachelab
from cachelab.cli import main
from cachelab.hooks.history import tree_map2
from cachelab.policies import Policy, PolicyConfig, register_policy
from stdit import STDIT_SITES, make_stdit, sample


class ResidualSkipConfig(PolicyConfig):
    every: int = Field(3, ge=1, le=20, description="compute blocks on every n-th step, reuse residuals between")
    min_step: int = Field(2, ge=0, description="never reuse before this step")


@register_policy("residual_skip_test")
class ResidualSkip(Policy):
    """Reuse each block's last residual (output - input) between full steps."""

    Config = ResidualSkipConfig

    def select(self, sites):
        return sites.by_role("block")

    def compute_at(self, site, ctx):
        return ctx.step < self.config.min_step or ctx.step % self.config.every == 0

    def remember(self, site, call, output):
        return output - call.args[0]

    def reuse(self, site, call, cached):
        return tree_map2(torch.add, call.args[0], cached[0])


def test_user_policy_registers_and_runs():
    assert "residual_skip_test" in cachelab.list_policies()
    model = make_stdit()
    reference = sample(model, 12)
    with cachelab.apply(model, "residual_skip_test", sites=STDIT_SITES, num_steps=12, every=3) as handle:
        out = sample(model, 12)
        stats = handle.stats()
        plan = handle.plan(12)
    assert not torch.equal(out, reference)
    assert (out - reference).abs().max() < 1.0  # residual reuse perturbs, it does not wreck
    assert stats.by_kind()["block"]["reused"] == 4 * 7  # 4 blocks x steps 2, 4, 5, 7, 8, 10, 11
    assert all(stats.computed_steps(key) == row for key, row in plan.items())
    with cachelab.apply(model, "residual_skip_test", sites=STDIT_SITES, num_steps=12, every=1):
        assert torch.equal(sample(model, 12), reference)


def test_user_policy_is_described_by_the_cli():
    result = CliRunner().invoke(main, ["policies", "residual_skip*"])
    assert result.exit_code == 0, result.output
    assert "residual_skip_test" in result.output
    assert "every" in result.output and "[1, 20]" in result.output and "min_step" in result.output


def test_policy_file_round_trip(tmp_path):
    policy = cachelab.resolve_policy("fastercache", dynamic={"interval": 3, "weight": 0.3}, cfg_cache={"interval": 4})
    path = tmp_path / "chosen.yaml"
    cachelab.save_policy_file(policy, path)
    loaded = cachelab.resolve_policy(str(path))
    assert loaded.config == policy.config
    composed = cachelab.resolve_policy({"policies": [{"policy": "pab", "cross_interval": 8}, "cfg_cache"]})
    cachelab.save_policy_file(composed, tmp_path / "composed.yaml")
    again = cachelab.resolve_policy(tmp_path / "composed.yaml")
    assert [m.config for m in again.members] == [m.config for m in composed.members]
