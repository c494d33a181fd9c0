"""`cachelab run`, `cachelab bench` and the same-schedule comparison with diffusers' own caches."""

import json

import pytest
import torch
from click.testing import CliRunner

from cachelab.bench import _attached, diffusers_cases
from cachelab.cli import main
from cachelab.zoo.registry import create_model

RANDOM = ["tiny-random-latte", "tiny-random-cogvideox"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("name", RANDOM)
def test_same_schedule_reproduces_diffusers_caches(name):
    model = create_model(name, device="cpu")
    prompts = model.prompts(2)
    baseline = model.generate(prompts, [0, 1], 20, 5.0)
    pab_ours, pab_theirs, fc_ours, fc_theirs = diffusers_cases(model)
    outputs = {}
    for case in (pab_ours, pab_theirs, fc_ours, fc_theirs):
        with _attached(model, case):
            outputs[case.name] = model.generate(prompts, [0, 1], 20, 5.0)
    # PAB: the same work in the same order, bit for bit
    assert torch.equal(outputs[pab_ours.name], outputs[pab_theirs.name])
    assert not torch.equal(outputs[pab_ours.name], baseline)
    # FasterCache: the same schedule; the frequency rebuild is written differently (one FFT of the delta instead of
    # two), so results agree to float rounding, far below the effect of caching itself
    effect = (outputs[fc_theirs.name] - baseline).abs().max()
    gap = (outputs[fc_ours.name] - outputs[fc_theirs.name]).abs().max()
    assert effect > 1e-3 and gap < effect / 20


def test_bench_command_writes_table_json_and_sample(tmp_path):
    out = tmp_path / "bench"
    result = invoke("bench", "--model", "tiny-random-latte", "--steps", 6, "--prompts", 1, "--policies", "pab,cfg_cache",
                    "--diffusers", "--json", tmp_path / "r.json", "--out-dir", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    names = [r["name"] for r in report["results"]]
    assert names[:4] == ["uncached", "hooks, never reuse", "pab", "cfg_cache"] and "diffusers FasterCache" in names
    rows = {r["name"]: r for r in report["results"]}
    assert rows["hooks, never reuse"]["computed_fraction"] == 1.0 and rows["hooks, never reuse"]["psnr_identical"] == 1
    assert 0 < rows["pab"]["computed_fraction"] < 1 and rows["pab"]["ideal_speedup"] > 1
    assert rows["cfg_cache"]["cache_bytes_held"] == rows["cfg_cache"]["cache_bytes_needed"] > 0
    assert rows["diffusers PAB"]["ideal_speedup"] == rows["pab (diffusers schedule)"]["ideal_speedup"]
    assert (out / "tiny-random-latte.md").read_text().startswith("| case |")
    assert (out / "tiny-random-latte-sample.gif").stat().st_size > 0
    assert "random weights" in result.output


def test_a_policy_that_refuses_the_model_is_a_row_not_a_failure(tmp_path):
    # Latte's blocks alternate spatial and temporal stacks, which fbcache refuses (no residual spans them)
    result = invoke("bench", "--model", "tiny-random-latte", "--steps", 4, "--prompts", 1, "--policies", "fbcache,pab",
                    "--no-samples", "--json", tmp_path / "r.json", "--out-dir", tmp_path, "--device", "cpu")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads((tmp_path / "r.json").read_text())["results"]}
    assert rows["fbcache"]["refused"] and rows["fbcache"]["error"].startswith("PolicyError: fbcache: the last block")
    assert not rows["pab"]["error"]
    assert "| fbcache | refuses: PolicyError: fbcache:" in (tmp_path / "tiny-random-latte.md").read_text()


def test_run_command_with_compare(tmp_path):
    result = invoke("run", "--model", "tiny-random-cogvideox", "--prompt", "a red circle moving left", "--policy",
                    "fastercache", "--param", "cfg_cache.interval=2", "--out", tmp_path / "v.gif", "--steps", 8,
                    "--compare", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "ideal speedup" in result.output and "PSNR" in result.output and "speedup" in result.output
    assert (tmp_path / "v.gif").stat().st_size > 0


def test_run_compare_times_cached_and_uncached_runs_alike(tmp_path, monkeypatch):
    import cachelab.timing
    from cachelab.zoo import registry

    block_calls, timed_regions = [0], []
    create, timed = registry.create_model, cachelab.timing.timed

    def create_counting(*args, **kwargs):  # counts every run of the first block, the MAC-profiling pass's too
        model = create(*args, **kwargs)
        block = next(m for m in model.transformer.modules() if type(m).__name__.endswith("Block"))
        block.register_forward_pre_hook(lambda *_: block_calls.__setitem__(0, block_calls[0] + 1))
        return model

    def timed_counting(fn, device):
        before = block_calls[0]
        result = timed(fn, device)
        timed_regions.append(block_calls[0] - before)
        return result

    monkeypatch.setattr(registry, "create_model", create_counting)
    monkeypatch.setattr(cachelab.timing, "timed", timed_counting)
    result = invoke("run", "--model", "tiny-random-cogvideox", "--prompt", "a red circle moving left", "--policy",
                    "pab", "--out", tmp_path / "v.gif", "--steps", 4, "--compare", "--device", "cpu")
    assert result.exit_code == 0, result.output
    # batched CFG: one denoiser call per step in each timed run; none for profiling, which ran in the warm-up
    assert timed_regions == [4, 4] and block_calls[0] == 4 + 4 + 2 + 2 + 1
    assert "ideal speedup" in result.output and "both after a 2-step warm-up" in result.output


def test_run_with_the_trained_model(tmp_path):
    result = invoke("run", "--model", "tiny-cogvideox", "--prompt", "a green square moving up", "--policy", "pab",
                    "--steps", 6, "--out", tmp_path / "v.gif", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "attn.joint" in result.output and (tmp_path / "v.gif").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "tiny-vae"], "unknown model 'tiny-vae'; known models: cogvideox-2b, latte-1, tiny-cogvideox"),
        (["--prompt", "a purple circle moving left"], "unknown word.*purple.*vocabulary"),
        (["--steps", 0], r"--steps 0: give between 1 and 1000"),
        (["--steps", 5000], r"--steps 5000: give between 1 and 1000"),
        (["--frames", 24], r"--frames 24: tiny-latte generates 16 frames of 32x32"),
        (["--size", 64], r"--size 64: tiny-latte generates 16 frames of 32x32"),
        (["--out", "/proc/cachelab/v.gif"], "cannot write '/proc/cachelab/v.gif'"),
        (["--out", "video.avi"], r"unknown suffix '.avi'; allowed: .gif, .mp4"),
        (["--policy", "pab", "--param", "interval=3"], r"interval: unknown parameter.*'pab' takes: spatial_interval"),
        (["--policy", "pab", "--param", "spatial_interval"], "is not of the form key=value"),
        (["--policy", "pab", "--config", "x.yaml"], "not both"),
    ],
)
def test_run_errors(tmp_path, args, message):
    base = {"--model": "tiny-latte", "--prompt": "a red circle moving left", "--out": str(tmp_path / "v.gif"), "--steps": "2"}
    argv = list(args)
    for key, value in base.items():
        if key not in argv:
            argv += [key, value]
    result = CliRunner().invoke(main, ["run", "--device", "cpu", *map(str, argv)])
    assert result.exit_code != 0
    import re

    assert re.search(message, result.output, re.S), result.output


def test_models_and_policies_listing():
    result = invoke("models")
    assert result.exit_code == 0
    for name in ("tiny-latte", "tiny-cogvideox", "cogvideox-2b", "latte-1"):
        assert name in result.output
    result = invoke("policies")
    for name in ("vanilla", "dynamic", "cfg_cache", "pab", "delta_dit", "fastercache"):
        assert name in result.output
    assert "low_freq_weight" in result.output and "[1, 50]" in result.output
