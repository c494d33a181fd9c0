"""`cachelab run`, `cachelab bench` and the same-schedule comparison with diffusers' own caches."""

import json

import pytest
import torch
from click.testing import CliRunner

import cachelab

from cachelab.bench import Case, _attached, diffusers_cases, run_bench
from cachelab.bench import same_settings_cases as bench_same_settings
from cachelab.hooks.engine import counting_macs
from cachelab.timing import warmup_steps
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
    pab_ours, pab_theirs, fc_ours, fc_theirs = diffusers_cases(model, 20)[:4]
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


def test_same_settings_reproduce_diffusers_data_dependent_and_forecasting_caches():
    """diffusers' FirstBlockCache, TaylorSeer (blocks named) and MagCache (the shipped 20-step calibration) beside
    ours at the same settings in the bundled CogVideoX pipeline: equal outputs, and equal MACs counted on each side;
    TaylorSeer with diffusers' default modules hooks nothing on CogVideoX (its attention is attn1) and does the
    uncached work."""
    model = create_model("tiny-cogvideox", device="cpu")  # trained: random weights change too much to ever skip
    cases = diffusers_cases(model, 20)[4:]
    assert cases[0].policy == cases[1].policy == {"policy": "fbcache", "threshold": 0.1}
    assert cases[2].policy == cases[3].policy and cases[2].policy["policy"] == "taylorseer"
    assert cases[5].policy == cases[6].policy == {"policy": "magcache", "threshold": 0.12}
    model.generate(model.prompts(1), [0], 2, 5.0)
    outputs, macs = {}, {}
    for case in [Case("uncached", "uncached"), *cases]:
        with _attached(model, case) as handle:
            if handle is not None:  # the MAC measuring pass of the first generation runs before counting
                model.generate(model.prompts(1), [0], warmup_steps(20, handle), 5.0)
            with counting_macs(model.transformer) as counted:
                outputs[case.name] = model.generate(model.prompts(1), [0], 20, 5.0)
            macs[case.name] = counted[0]
    names = [c.name for c in cases]
    for ours, theirs in (names[0:2], names[2:4], names[5:7]):
        assert torch.equal(outputs[ours], outputs[theirs])
        assert macs[ours] == pytest.approx(macs[theirs], rel=1e-3) and macs[ours] < 0.9 * macs["uncached"]
    assert torch.equal(outputs[names[4]], outputs["uncached"]) and macs[names[4]] == macs["uncached"]


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
    # diffusers' rows count their own MACs (one more generation under FlopCounterMode), and so does the baseline:
    # the same schedule must then show the same work, which fails if either side skips something else
    assert rows["uncached"]["total_macs"] == pytest.approx(rows["pab"]["total_macs"], rel=1e-6)
    for ours, theirs in (("pab (diffusers schedule)", "diffusers PAB"),
                         ("fastercache (diffusers schedule)", "diffusers FasterCache")):
        assert rows[theirs]["computed_macs"] == pytest.approx(rows[ours]["computed_macs"], rel=0.01)
        assert rows[theirs]["ideal_speedup"] > 1.1
    table = (out / "tiny-random-latte.md").read_text()
    assert "- pab (diffusers schedule) vs diffusers PAB: MACs" in table and "one timed run each" in table
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


def test_cache_needed_counts_only_what_later_calls_read():
    """FasterCache on diffusers' schedule stores whole batched attention outputs but extrapolates only on steps whose
    unconditional half is skipped, so the uncond slices it keeps are mostly never read: needed < held. cachelab's
    own default reads more of what it keeps (not all: the values stored on the last steps are never read, and the
    peak held comes at the end, where its CFG state, the delta and the delta's high-pass, is held beside them)."""
    model = create_model("tiny-random-cogvideox", device="cpu")
    diffusers_schedule = diffusers_cases(model, 12)[2].policy
    peaks = {}
    for name, spec in (("diffusers schedule", diffusers_schedule), ("default", "fastercache")):
        with cachelab.apply(model.target, spec, cfg=model.cfg) as handle:
            model.generate(model.prompts(1), [0], 2, 5.0)
            handle.runtime.track_cache = True
            model.generate(model.prompts(1), [0], 12, 5.0)
            handle.runtime.track_cache = False
            peaks[name] = handle.runtime.cache_peaks()
    share = {name: needed / held for name, (held, needed) in peaks.items()}
    assert share["diffusers schedule"] < 0.7 and share["default"] > share["diffusers schedule"] + 0.05, share


def test_cache_dit_dbcache_row_matches_dbcache_and_leaves_no_patch():
    """cache-dit's DBCache (installed with the test extra) beside ``dbcache`` at the same settings in one bench: equal
    outputs and MACs counted on each side, and a row after it runs the unpatched pipeline (its output equals the
    uncached one)."""
    pytest.importorskip("cache_dit")
    model = create_model("tiny-cogvideox", device="cpu")
    never = Case("after cache-dit", "cachelab", {"policy": "fbcache", "threshold": 0.0})
    cases = [Case("uncached", "uncached"), *bench_same_settings(model, "dbcache", 20, threshold=0.12), never]
    assert [c.kind for c in cases] == ["uncached", "cachelab", "cache-dit", "cachelab"]
    report = run_bench(model, cases, model.prompts(1), [0], 20, model.guidance, progress=False)
    rows = {r.name: r for r in report.results}
    ours, theirs = rows["dbcache (threshold 0.12)"], rows["cache-dit DBCache (threshold 0.12)"]
    assert theirs.error is None and ours.ideal_speedup > 1.1
    assert theirs.computed_macs == pytest.approx(ours.computed_macs, rel=1e-3)
    assert theirs.psnr == ours.psnr
    assert rows["after cache-dit"].psnr is None and rows["after cache-dit"].psnr_identical
