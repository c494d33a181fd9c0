"""Bad input gets a clear error that names the problem, the value and what is allowed."""

import warnings

import pytest
import torch
from torch import nn

import cachelab
from cachelab import AlreadyAppliedError, PolicyError, SiteError, TargetError
from cachelab.policies import Window
from stdit import STDIT_SITES, make_stdit


@pytest.fixture(scope="module")
def model():
    return make_stdit()


def test_unknown_policy_lists_known(model):
    with pytest.raises(PolicyError, match=r"unknown policy 'teacache2'.*cfg_cache.*delta_dit.*vanilla"):
        cachelab.apply(model, "teacache2", sites=STDIT_SITES)


@pytest.mark.parametrize(
    "policy, params, pattern",
    [
        ("pab", {"spatial_interval": 0}, r"spatial_interval: Input should be greater than or equal to 1 \(got 0\)"),
        ("pab", {"cross_interval": "often"}, r"cross_interval: Input should be a valid integer.*\(got 'often'\)"),
        ("vanilla", {"interval": 2.5}, r"interval: .*integer.*\(got 2.5\)"),
        ("dynamic", {"weight": 7}, r"weight: Input should be less than or equal to 2"),
        ("cfg_cache", {"layout": "NCHW"}, r"layout: Input should be 'auto', 'BCHW', 'BCFHW', 'BFCHW' or 'flat'"),
        ("vanilla", {"roles": ["attn.sideways"]}, r"roles.0: Input should be 'denoiser', 'block'"),
        ("delta_dit", {"span": 1.5}, r"span=1.5: give a layer count"),
        ("pab", {"interval": 2}, r"interval: unknown parameter \(value 2\); 'pab' takes: spatial_interval"),
        ("fastercache", {"dynamic": {"intervall": 3}}, r"dynamic.intervall: unknown parameter"),
    ],
)
def test_bad_parameters(model, policy, params, pattern):
    with pytest.raises(PolicyError, match=pattern):
        cachelab.apply(model, policy, sites=STDIT_SITES, **params)


@pytest.mark.parametrize(
    "window, pattern",
    [
        ({"start": 0.9, "end": 0.3}, r"start=0.9 is not before end=0.3"),
        ({"start": 0.2, "end": 1.5}, r"must lie in \[0, 1\]"),
        ({"start": 100, "end": 800, "unit": "timestep"}, r"start=100.0 is after end=800.0 in sampling order"),
        ({"start": 10, "end": 5, "unit": "step"}, r"start=10.0 is not before end=5.0"),
        ([0.1, 0.2, 0.3, 0.4], r"a window is \[start, end\] or \[start, end, unit\]"),
        ({"start": 0.1, "end": 0.5, "unit": "seconds"}, r"unit: Input should be 'progress', 'timestep' or 'step'"),
    ],
)
def test_bad_windows(model, window, pattern):
    with pytest.raises(PolicyError, match=pattern):
        cachelab.apply(model, "vanilla", sites=STDIT_SITES, window=window)
    if isinstance(window, dict) and window.get("unit") != "seconds":
        with pytest.raises(ValueError):
            Window(**window)


def test_patterns_that_match_nothing(model):
    with pytest.raises(SiteError, match=r"sites\['attn.temporal'\]: pattern '.*time_blocks.*' matched no module of STDiT"):
        cachelab.apply(model, "pab", sites={"attn.temporal": r"time_blocks\.\d+\.attn"})


def test_bad_pattern_role_and_regex(model):
    with pytest.raises(SiteError, match=r"unknown role\(s\) \['attention'\].*allowed roles"):
        cachelab.apply(model, "pab", sites={"attention": r"spatial_blocks\.\d+\.attn"})
    with pytest.raises(SiteError, match=r"not a valid regular expression"):
        cachelab.apply(model, "pab", sites={"attn.spatial": r"spatial_blocks\.(\d+"})


def test_model_without_visible_sites_says_how_to_name_them():
    class Mystery(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])

        def forward(self, x, timestep):
            return x

    with pytest.raises(SiteError, match=r"cannot see the sites of Mystery.*layers \(3 x Linear\).*sites=\{'block'"):
        cachelab.apply(Mystery(), "pab")


@pytest.mark.parametrize("target", ["a pipeline name", 42, None])
def test_target_neither_module_nor_pipeline(target):
    with pytest.raises(TargetError, match=r"needs a torch.nn.Module .* or a diffusers pipeline; got"):
        cachelab.apply(target, "pab")


def test_pipeline_without_transformer():
    class FakePipe:
        components = {"unet": nn.Linear(2, 2), "scheduler": object()}

    with pytest.raises(TargetError, match=r"no transformer component .*unet \(Linear\)"):
        cachelab.apply(FakePipe(), "pab")


def test_applying_twice_is_an_error_not_double_hooks(model):
    with cachelab.apply(model, "pab", sites=STDIT_SITES):
        with pytest.raises(AlreadyAppliedError, match="call handle.remove\\(\\) first, or pass replace=True"):
            cachelab.apply(model, "pab", sites=STDIT_SITES)


def test_composition_conflict_and_roles_missing(model):
    with pytest.raises(PolicyError, match=r"policies 'pab' and 'vanilla' both claim site spatial_blocks.0.attn"):
        cachelab.apply(model, ["pab", "vanilla"], sites=STDIT_SITES)
    with pytest.raises(PolicyError, match=r"roles \['attn.joint'\], but the model has none \(it has: denoiser x1"):
        cachelab.apply(model, "dynamic", sites=STDIT_SITES, roles=["attn.joint"])
    with pytest.raises(PolicyError, match=r"span=4 covers all 2 layers"):
        cachelab.apply(model, "delta_dit", sites=STDIT_SITES, span=4)


def test_bad_apply_options(model):
    with pytest.raises(ValueError, match=r"cfg='twice' is not allowed; choose one of auto, batched, sequential, off"):
        cachelab.apply(model, "pab", sites=STDIT_SITES, cfg="twice")
    with pytest.raises(ValueError, match=r"num_steps=0"):
        cachelab.apply(model, "pab", sites=STDIT_SITES, num_steps=0)


def test_policy_files_and_mappings(tmp_path, model):
    with pytest.raises(PolicyError, match="does not exist"):
        cachelab.apply(model, str(tmp_path / "nope.yaml"), sites=STDIT_SITES)
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy: [pab\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        cachelab.apply(model, str(bad), sites=STDIT_SITES)
    with pytest.raises(PolicyError, match="needs a 'policy' key"):
        cachelab.apply(model, {"spatial_interval": 2}, sites=STDIT_SITES)
    with pytest.raises(PolicyError, match="cannot build a policy from a float"):
        cachelab.apply(model, 2.5, sites=STDIT_SITES)


def test_denoiser_without_a_timestep_parameter_is_refused_with_how_to_name_it(model):
    class NoTimestep(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(4, 4)])

        def forward(self, hidden_states, noise_scale=None):
            return self.blocks[0](hidden_states)

    net = NoTimestep()
    with pytest.raises(ValueError, match=r"cannot find the timestep argument of NoTimestep.forward\(hidden_states, "
                       r"noise_scale\).*timestep, timesteps, t, .*timestep_arg="):
        cachelab.apply(net, "vanilla", sites={"block": r"blocks\.0"}, roles=["block"])
    assert "forward" not in net.__dict__  # nothing stays attached
    with pytest.raises(ValueError, match=r"timestep_arg='sigma_level': NoTimestep.forward has no such parameter"):
        cachelab.apply(net, "vanilla", sites={"block": r"blocks\.0"}, roles=["block"], timestep_arg="sigma_level")
    with cachelab.apply(net, "vanilla", sites={"block": r"blocks\.0"}, roles=["block"], timestep_arg="noise_scale"):
        with pytest.raises(ValueError, match=r"called without its timestep \(looked for 'noise_scale'\)"):
            net(torch.randn(1, 4))
        net(torch.randn(1, 4), noise_scale=torch.tensor([500.0]))


def test_a_policy_that_reuses_nothing_says_so():
    from tiny_transformers import TINY_TRANSFORMERS

    spec = TINY_TRANSFORMERS["flux"]
    model = spec.build()
    schedule = torch.linspace(1000, 100, 4)
    # a window no step of this schedule falls in: the policy attaches, runs, and saves nothing
    with cachelab.apply(model, "pab", window={"start": 60, "end": 20, "unit": "timestep"}) as handle:
        with pytest.warns(cachelab.NothingReusedWarning, match=r"generation 0 \(4 steps, timesteps 1000 to 100\) "
                          r"reused nothing at any of the policy's \d+ sites"):
            for _ in range(2):  # the warning comes when the next generation starts
                handle.begin(timesteps=schedule)
                with torch.no_grad():
                    for t in schedule.tolist():
                        model(**spec.inputs(1, t))
    with cachelab.apply(model, "pab", window={"start": 950, "end": 50, "unit": "timestep"}, joint_interval=2) as handle:
        with warnings.catch_warnings():
            warnings.simplefilter("error", cachelab.NothingReusedWarning)
            handle.begin(timesteps=schedule)
            with torch.no_grad():
                for t in schedule.tolist():
                    model(**spec.inputs(1, t))
            handle.remove()  # checked again on removal: this one reused
