"""`cachelab analyze`: observation leaves outputs bit-identical; the adjacent-step change, the CFG difference and its
frequency shares follow their formulas on hand-made values; bundled models and other pipelines; files and errors."""

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import cachelab
from cachelab.analysis import AnalysisError, adjacent_change, analyze, cfg_difference
from cachelab.cli import main
from cachelab.zoo.registry import create_model
from tiny_pipelines import CALL_DEFAULTS, FAMILIES, tiny_pipeline


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


# -- the formulas on hand-made values --------------------------------------------------------------------------------
def test_adjacent_change_takes_a_site_s_output_tensors_as_one():
    now = [torch.tensor([1.0, 2.0]), torch.tensor([3.0])]
    before = [torch.tensor([0.0, 0.0]), torch.tensor([1.0])]
    mse, rel_l1 = adjacent_change(now, before).tolist()
    assert mse == pytest.approx((1 + 4 + 4) / 3) and rel_l1 == pytest.approx((1 + 2 + 2) / 1)


def test_frequency_shares_of_a_purely_low_or_purely_high_frequency_difference():
    cond = torch.rand(1, 2, 3, 16, 16) + 0.5  # (B, F, C, H, W)
    rows, cols = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    slow = torch.cos(2 * torch.pi * rows / 16) * 0.2  # one period over the frame: inside the disk of radius 16 // 5
    checkerboard = ((rows + cols) % 2 * 2 - 1) * 0.2  # the Nyquist frequency: outside it
    for diff, low in ((torch.full((16, 16), 0.3), 1.0), (slow, 1.0), (checkerboard, 0.0)):
        rel, low_share, high_share = cfg_difference(cond + diff, cond).tolist()
        assert low_share == pytest.approx(low, abs=1e-5) and high_share == pytest.approx(1 - low, abs=1e-5)
        assert rel == pytest.approx(diff.abs().mean().item() / cond.abs().mean().item(), rel=1e-5)
    rel, low_share, high_share = cfg_difference(torch.ones(1, 6, 4) * 2, torch.ones(1, 6, 4)).tolist()
    assert rel == 1.0 and low_share != low_share and high_share != high_share  # token sequences: NaN, no (H, W)


class Emit(nn.Module):
    """Returns the value given for the call's timestep, whatever its input: site outputs under the test's control."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def forward(self, hidden_states, timestep):
        return self.values[int(timestep)].clone()


@dataclasses.dataclass
class Output:
    sample: torch.Tensor


class Controlled(nn.Module):
    """One Emit block; returns its output in an object with ``.sample``, as diffusers transformers can."""

    def __init__(self, values):
        super().__init__()
        self.blocks = nn.ModuleList([Emit(values)])

    def forward(self, hidden_states, timestep):
        for block in self.blocks:
            hidden_states = block(hidden_states, timestep)
        return Output(hidden_states)


def test_adjacent_change_per_branch_and_cfg_difference_on_controlled_site_outputs():
    """Rows are [uncond, cond] of a batched CFG call. uncond: 1 -> 2 -> 2, cond: 2 -> 2 -> 5, so step 1 has MSE
    (1 + 0) / 2 and relative L1 (1/1 + 0) / 2; step 2 MSE (0 + 9) / 2 and relative L1 (0 + 3/2) / 2 (per branch, then
    averaged: the whole batch at once would give 4/12 at step 1). CFG: |u - c| / |c| = 1/2, 0, 3/5."""
    values = {900: torch.tensor([[1.0] * 4, [2.0] * 4]), 600: torch.full((2, 4), 2.0),
              300: torch.tensor([[2.0] * 4, [5.0] * 4])}
    model = Controlled(values)

    def generate(prompt, seed):
        for t in (900.0, 600.0, 300.0):
            model(torch.zeros(2, 4), torch.tensor(t))

    with pytest.warns(UserWarning, match="number of sampling steps is unknown"):
        result = analyze(model, ["first", "second"], generate=generate, cfg="batched", sites={"block": r"blocks\.\d+"})
    assert result.steps == 3 and result.timesteps == [900.0, 600.0, 300.0] and result.seeds == [0, 1]
    for kind in ("block", "denoiser"):  # the denoiser returns the block's output
        row = result.site_kinds[kind]
        assert row["sites"] == 1
        assert row["adjacent_mse"] == pytest.approx([None, 0.5, 4.5])
        assert row["adjacent_rel_l1"] == pytest.approx([None, 0.5, 0.75])
    assert result.cfg["rel_diff"] == pytest.approx([0.5, 0.0, 0.6])
    assert result.cfg["delta_adjacent_rel_l1"] == pytest.approx([None, 1.0, None])  # u - c: -1, 0, -3 (0 / 0 at 2)
    assert result.cfg["low_freq_share"] == [None] * 3 and "token sequence" in result.cfg_note
    assert result.smallest_cfg_difference() == (1, 0.0)


# -- observation changes nothing -------------------------------------------------------------------------------------
def test_an_analyzed_generation_equals_the_uncached_one_bit_for_bit():
    model = create_model("tiny-random-cogvideox", device="cpu")
    prompts = model.prompts(2)
    uncached = model.generate(prompts[:1], [0], 4, model.guidance)
    observed = []
    result = analyze(model.target, prompts[:1], generate=lambda p, s: observed.append(model.generate([p], [s], 4, 3.0)),
                     cfg="batched", guidance=3.0)
    assert torch.equal(observed[0], uncached)
    assert result.cfg is not None and set(result.site_kinds) == {"denoiser", "block", "attn.joint", "ffn"}
    assert cachelab.handle_of(model.transformer) is None  # detached afterwards


def wan_latents(pipe, prompt, seed, steps=3):
    kwargs = {**CALL_DEFAULTS["wan"], **FAMILIES["wan"].cfg_kwargs}
    return pipe(prompt=prompt, num_inference_steps=steps, generator=torch.manual_seed(seed), output_type="latent",
                **kwargs).frames


def test_two_calls_per_step_wan_pairs_each_step_s_branches_and_changes_nothing():
    pipe = tiny_pipeline("wan")
    uncached = wan_latents(pipe, "a red ball", 0)
    calls = []  # the transformer's outputs in call order: cond, then uncond, at every step
    hook = pipe.transformer.register_forward_hook(lambda module, args, output: calls.append(output[0].clone()))
    try:
        observed = []
        result = analyze(pipe, ["a red ball"], generate=lambda p, s: observed.append(wan_latents(pipe, p, s)))
    finally:
        hook.remove()
    assert torch.equal(observed[0], uncached)
    expected = [((u - c).abs().mean() / c.abs().mean()).item() for c, u in zip(calls[0::2], calls[1::2])]
    assert len(expected) == 3 and result.cfg["rel_diff"] == pytest.approx(expected, rel=1e-5)
    assert all(0 < share < 1 for share in result.cfg["low_freq_share"])
    assert {"attn.spatial", "attn.cross", "ffn", "block"} <= set(result.site_kinds)


def test_a_guidance_distilled_flux_pipeline_has_no_cfg_and_says_so():
    pipe = tiny_pipeline("flux")
    result = analyze(pipe, ["a red ball"], generate=lambda p, s: pipe(
        prompt=p, num_inference_steps=3, generator=torch.manual_seed(s), output_type="latent", **CALL_DEFAULTS["flux"]))
    assert result.cfg is None and "guidance-distilled" in result.cfg_note and "attn.joint" in result.site_kinds
    assert result.site_kinds["block"]["adjacent_rel_l1"][0] is None
    assert all(v > 0 for v in result.site_kinds["block"]["adjacent_rel_l1"][1:])


@pytest.mark.parametrize("name, kinds", [("tiny-cogvideox", {"attn.joint"}),
                                         ("tiny-latte", {"attn.spatial", "attn.temporal", "attn.cross"})])
def test_bundled_models(name, kinds):
    result = analyze(name, 1, steps=3, device="cpu")
    assert kinds | {"denoiser", "block", "ffn"} == set(result.site_kinds)
    assert result.timesteps == sorted(result.timesteps, reverse=True) and len(result.timesteps) == 3
    for row in result.site_kinds.values():
        assert row["adjacent_mse"][0] is None and all(v > 0 for v in row["adjacent_mse"][1:])
    for low, high in zip(result.cfg["low_freq_share"], result.cfg["high_freq_share"]):
        assert low + high == pytest.approx(1.0)


# -- the command -------------------------------------------------------------------------------------------------------
def test_cli_writes_the_analysis_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default directory: analysis/<model>
    result = invoke("analyze", "--model", "tiny-random-cogvideox", "--steps", 3, "--prompts", 2, "--seed", 5,
                    "--no-progress", "--device", "cpu")
    assert result.exit_code == 0, result.output
    out = tmp_path / "analysis" / "tiny-random-cogvideox"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "analysis" and manifest["version"] == 1 and manifest["model"] == "tiny-random-cogvideox"
    assert manifest["command"][:2] == ["cachelab", "analyze"] and "--steps" in manifest["command"]
    data = json.loads((out / "analysis.json").read_text())
    assert data["model"] == "tiny-random-cogvideox" and data["steps"] == 3 and data["seeds"] == [5, 6]
    assert len(data["prompts"]) == 2 and len(data["timesteps"]) == 3 and data["guidance"] == 3.0
    assert set(data["site_kinds"]["attn.joint"]) >= {"adjacent_mse", "adjacent_rel_l1", "sites"}
    assert set(data["cfg"]) >= {"rel_diff", "low_freq_share", "high_freq_share"}
    assert data["plots"] == {"adjacent_change": "adjacent_change.png", "cfg_difference": "cfg_difference.png",
                             "cfg_frequency": "cfg_frequency.png"}
    for name in data["plots"].values():
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "attn.joint" in result.output and "CFG difference smallest at step" in result.output


def test_cli_without_guidance_writes_cfg_null(tmp_path):
    result = invoke("analyze", "--model", "tiny-random-latte", "--steps", 2, "--prompts", 1, "--guidance", 1,
                    "--out", tmp_path, "--no-progress", "--device", "cpu")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "analysis.json").read_text())
    assert data["cfg"] is None and "without classifier-free guidance" in data["cfg_note"]
    assert data["plots"]["cfg_difference"] is None and not (tmp_path / "cfg_difference.png").exists()
    assert "CFG: none measured" in result.output


def test_errors_name_what_is_wrong():
    result = CliRunner().invoke(main, ["analyze", "--model", "no-such-model"])
    assert result.exit_code == 1 and "unknown model 'no-such-model'; known models:" in result.output
    with pytest.raises(cachelab.SiteError, match="analyze: cachelab cannot see the sites of Linear"):
        analyze(nn.Linear(4, 4), ["a"], generate=lambda p, s: None)
    with pytest.raises(AnalysisError, match="generate: a Linear needs generate="):
        analyze(nn.Linear(4, 4), ["a"])
    with pytest.raises(AnalysisError, match="prompts=0: give at least one prompt"):
        analyze("tiny-random-latte", 0, device="cpu")
