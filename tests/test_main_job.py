"""The README's main job on a CPU: per-model step counts where the videos read well, enough prompts for prompt
following to mean something, a console a new user can read, and no false alarm from the warm-up."""

import json
import warnings

from click.testing import CliRunner

import cachelab
from cachelab.bench import BenchReport, Case, CaseResult, legend, run_bench
from cachelab.cli import main
from cachelab.models.pipeline import load_pipeline
from cachelab.zoo import bundled
from cachelab.zoo.registry import create_model


def test_cpu_defaults_are_the_models_quick_steps_and_four_prompts(tmp_path):
    result = CliRunner().invoke(main, ["bench", "--model", "tiny-random-cogvideox", "--policies", "none", "--no-overhead",
                                       "--no-samples", "--json", str(tmp_path / "r.json"), "--out-dir", str(tmp_path),
                                       "--device", "cpu"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["steps"], len(report["prompts"]), report["repeats"]) == (20, 4, 1)
    output = " ".join(result.output.split())  # rich wraps long lines
    assert "Not shown, no case has a value: spread (one timed run per case); peak mem (measured on CUDA" in output
    assert "NothingReusedWarning" not in output


def test_bundled_models_run_on_the_cpu_where_their_videos_read_well():
    # measured on 96 videos (see bundled.QUICK_STEPS): tiny-latte needs 50 steps, tiny-cogvideox reads well at 20
    assert create_model("tiny-cogvideox", device="cpu").quick_steps == 20
    assert create_model("tiny-latte", device="cpu").quick_steps == 50


def test_tiny_latte_samples_with_leading_spacing_in_the_shipped_and_the_exported_pipeline():
    shipped = load_pipeline(bundled.WEIGHTS_DIR / "tiny-latte").scheduler
    shipped.set_timesteps(20)
    assert shipped.timesteps[0] == 951 and shipped.timesteps[-1] == 1
    exported = bundled.scheduler_for("latte")  # what training writes next to new weights
    assert (exported.config.timestep_spacing, exported.config.steps_offset) == ("leading", 1)


def test_legend_says_what_the_columns_mean_and_why_some_are_missing():
    follow = {"colour": 1.0, "shape": 0.75, "motion": 1.0, "found": 1.0, "consistency": 0.9}
    results = [CaseResult("uncached", "uncached", None, 1.0, [1.0], prompt_following=follow, lpips_reason="no weights")]
    report = BenchReport("tiny-cogvideox", True, "CPU", 20, 3.0, ["p"] * 4, [0, 1, 2, 3], 1, results)
    text = legend(report, ["spread", "LPIPS"])
    assert "the share of the 4 videos in which the checks find the prompt's colour, shape and direction" in text
    assert "(each video counts 0.25)" in text and "--repeats 3" in text
    assert text.endswith("Not shown, no case has a value: spread (one timed run per case); LPIPS (no weights).")
    report.repeats = 3
    assert "--repeats" not in legend(report)
    report.results += [CaseResult("hooks, never reuse", "cachelab", None, 1.0, [1.0], computed_fraction=1.0),
                       CaseResult("fbcache", "cachelab", None, 1.0, [1.0], computed_fraction=1.0),
                       CaseResult("pab", "cachelab", None, 1.0, [1.0], computed_fraction=0.7)]
    assert "never let them skip): fbcache." in legend(report)


def test_a_warm_up_that_reuses_nothing_raises_no_warning():
    """bench warms up with 2 steps; a policy whose window starts later reuses nothing there, which is no news.
    The timed generation that reuses nothing still warns."""
    model = create_model("tiny-random-cogvideox", device="cpu")
    late = {"policy": "vanilla", "interval": 2, "window": [0.5, 1.0]}
    never = {"policy": "vanilla", "interval": 2, "window": [0.9, 1.0]}
    for policy, warns in ((late, False), (never, True)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run_bench(model, [Case("uncached", "uncached"), Case("policy", policy=policy)], model.prompts(1), [0], 4,
                      model.guidance, warmup_steps=2, progress=False)
        assert any(issubclass(w.category, cachelab.NothingReusedWarning) for w in caught) == warns

