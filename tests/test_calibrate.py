"""`cachelab calibrate`: fits from uncached runs, writes a YAML file the policy takes, reproducibly; calibration
files are checked against the model and the step count; the bundled models' files are found by themselves."""

import pytest
import yaml
from click.testing import CliRunner

import cachelab
from cachelab.cli import main
from cachelab.zoo.registry import create_model


def calibrate(policy, out, steps):
    result = CliRunner().invoke(main, ["calibrate", "--model", "tiny-random-cogvideox", "--policy", policy, "--prompts",
                                       "2", "--steps", str(steps), "--out", str(out), "--no-progress", "--device", "cpu"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return yaml.safe_load(out.read_text())


@pytest.mark.parametrize("policy, values, steps", [("magcache", "mag_ratios", 4), ("teacache", "coefficients", 5)])
def test_calibrate_writes_a_file_the_policy_takes_and_a_second_run_reproduces_it(tmp_path, policy, values, steps):
    first = calibrate(policy, tmp_path / "a.yaml", steps)
    assert calibrate(policy, tmp_path / "b.yaml", steps) == first
    assert (tmp_path / "a.yaml").read_text() == (tmp_path / "b.yaml").read_text()
    assert first["policy"] == policy and first["model"] == "tiny-random-cogvideox" and first["steps"] == steps
    assert first["model_class"] == "CogVideoXTransformer3DModel" and len(first["prompts"]) == 2
    assert len(first[values]) == (steps if policy == "magcache" else 5) and first[values] != [1.0] * len(first[values])
    model = create_model("tiny-random-cogvideox", device="cpu")
    prompts = model.prompts(1)
    with cachelab.apply(model.target, policy, cfg=model.cfg, calibration=str(tmp_path / "a.yaml")):
        model.generate(prompts, [0], steps, model.guidance)
        with pytest.raises(cachelab.PolicyError, match=rf"is for {steps} steps but this generation has {steps + 1}; "
                                                       rf"recalibrate with `cachelab calibrate --model "
                                                       rf"tiny-random-cogvideox --policy {policy} --prompts 4 "
                                                       rf"--steps {steps + 1}"):
            model.generate(prompts, [0], steps + 1, model.guidance)
    other = create_model("tiny-random-latte", device="cpu")
    with pytest.raises(cachelab.PolicyError, match=rf"{policy}: calibration=.* was made for tiny-random-cogvideox "
                                                   r"\(CogVideoXTransformer3DModel, fingerprint \w+\), not for this "
                                                   r"LatteTransformer3DModel"):
        cachelab.apply(other.target, policy, calibration=str(tmp_path / "a.yaml"))


@pytest.mark.parametrize("policy", ["teacache", "magcache"])
@pytest.mark.parametrize("name", ["tiny-cogvideox", "tiny-latte"])
def test_bundled_models_find_their_shipped_calibrations(name, policy):
    model = create_model(name, device="cpu")
    with cachelab.apply(model.target, policy, cfg=model.cfg):  # no calibration given: the shipped ones are used
        with pytest.raises(cachelab.PolicyError, match=rf"calibration .*weights/{name}/{policy}-50steps.calibration.yaml, "
                                                       rf".*weights/{name}/{policy}-20steps.calibration.yaml is for 50, 20 "
                                                       rf"steps but this generation has 2; recalibrate with "
                                                       rf"`cachelab calibrate --model {name} --policy {policy}"):
            model.generate(model.prompts(1), [0], 2, model.guidance)


def test_magcache_resamples_shipped_ratios_only_when_asked():
    model = create_model("tiny-cogvideox", device="cpu")
    with cachelab.apply(model.target, "magcache", cfg=model.cfg, interpolate=True, retention_ratio=0,
                        threshold=1.0) as handle:
        model.generate(model.prompts(1), [0], 4, model.guidance)  # the 50-step ratios, resampled to 4 steps
        assert handle.stats().computed_fraction < 1


def test_bench_warms_up_a_step_bound_policy_at_the_real_step_count():
    """bench warms up with 2-step generations; ratios made for 4 steps refuse those, so the warm-up runs 4."""
    from cachelab import bench

    model = create_model("tiny-random-cogvideox", device="cpu")
    case = bench.Case("magcache", policy={"policy": "magcache", "mag_ratios": [1.0] * 4, "retention_ratio": 0})
    report = bench.run_bench(model, [bench.Case("uncached", "uncached"), case], model.prompts(1), [0], 4,
                             model.guidance, progress=False)
    result = report.results[1]
    assert result.error is None and result.ideal_speedup > 1
