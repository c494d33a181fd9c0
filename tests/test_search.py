"""cachelab.search: spaces declared on policy configs, objectives, resumable Optuna studies, W&B, the CLI command.

Searches run the tiny random-weight Latte pipeline (milliseconds per step) with 6 steps and 2-4 trials.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import optuna
import pytest
import torch
import yaml
from click.testing import CliRunner

import cachelab
from cachelab import metrics
from cachelab.cli import main
from cachelab.zoo.registry import create_model
from cachelab.search import (
    SearchError,
    SearchSpaceError,
    StorageError,
    StudyMismatchError,
    build_space,
    parse_objectives,
    run_search,
)
from cachelab.search.objectives import as_rgb_videos
from cachelab.search.tracking import wandb_mode
from cachelab.spec import policy_to_dict, resolve_policy
from cachelab.timing import device_model

MODEL = "tiny-random-latte"
FAST = {"model": MODEL, "steps": 6, "progress": False}


@pytest.fixture(autouse=True)
def _quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.ERROR)


@pytest.fixture(autouse=True)
def _no_wandb_login(monkeypatch, tmp_path):
    """No W&B key or netrc: tracking must pick offline mode by itself."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "NETRC", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))


def study_of(result) -> optuna.Study:
    return optuna.load_study(study_name=result.study_name, storage=f"sqlite:///{result.out_dir / 'study.db'}")


# ------------------------------------------------------------------------------------------------------ spaces

DECLARED = {
    "vanilla": {"interval": (1, 6), "window.start": (0.0, 0.5), "window.end": (0.6, 1.0)},
    "dynamic": {"interval": (1, 6), "window.start": (0.1, 0.6), "window.end": (0.7, 1.0), "weight": (0.0, 1.0)},
    "cfg_cache": {
        "interval": (1, 8),
        "window.start": (300, 950),
        "window.end": (0, 250),
        "low_freq_weight": (0.8, 1.5),
        "low_freq_window.start": (600, 1000),
        "low_freq_window.end": (0, 300),
        "high_freq_weight": (0.8, 1.5),
        "high_freq_window.start": (150, 600),
        "high_freq_window.end": (0, 100),
    },
    "pab": {
        "spatial_interval": (1, 4),
        "temporal_interval": (1, 6),
        "cross_interval": (1, 8),
        "joint_interval": (1, 4),
        "window.start": (500, 950),
        "window.end": (0, 400),
    },
    "delta_dit": {"interval": (1, 6), "span": (0.1, 0.5), "boundary": (0.2, 0.8)},
    "taylorseer": {"interval": (2, 8), "max_order": (1, 2), "warmup_steps": (1, 6)},
    "fbcache": {"threshold": (0.0, 0.3)},
    "dbcache": {"fn": (1, 8), "bn": (0, 4), "threshold": (0.0, 0.3), "warmup_steps": (0, 10)},
    "easycache": {"threshold": (0.0, 0.3), "warmup_steps": (0, 10)},
}


@pytest.mark.parametrize("policy", sorted(DECLARED))
def test_policies_declare_their_search_ranges(policy):
    space = build_space(policy)
    assert {n: (p.low, p.high) for n, p in space.params.items()} == DECLARED[policy]
    # the defaults lie inside the declared ranges and are unchanged by the declarations
    defaults = cachelab.policy_class(policy).Config().model_dump()
    for name, p in space.params.items():
        value = defaults
        for key in name.split("."):
            value = value[key]
        assert p.low <= value <= p.high, (name, value)
        assert p.default == value


def test_composed_policies_search_the_union_with_dotted_names():
    fc = build_space("fastercache")
    cfg = {f"cfg_cache.{n}" for n in DECLARED["cfg_cache"]}
    assert set(fc.params) == {f"dynamic.{n}" for n in DECLARED["dynamic"]} | cfg
    listed = build_space(["pab", "cfg_cache"])
    assert set(listed.params) == {f"pab.{n}" for n in DECLARED["pab"]} | cfg
    spec = listed.policy_spec({"pab.spatial_interval": 3, "cfg_cache.interval": 7})
    policy = resolve_policy(spec)
    assert [m.config.spatial_interval if m.name == "pab" else m.config.interval for m in policy.members] == [3, 7]
    assert build_space("pab+cfg_cache").fingerprint() == listed.fingerprint()
    assert set(build_space("fbcache+cfg_cache").params) == {"fbcache.threshold"} | cfg  # data-dependent members too


@pytest.mark.parametrize("policy", [*DECLARED, "fastercache", ("pab", "cfg_cache")])
def test_every_sampled_schedule_is_a_valid_policy(policy):
    space = build_space(list(policy) if isinstance(policy, tuple) else policy)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(150):
        trial = study.ask()
        values = space.suggest(trial)
        resolved = resolve_policy(space.policy_spec(values))  # Window validators run here
        for name, p in space.params.items():
            assert p.low <= values[name] <= p.high
        study.tell(trial, 0.0)
        assert resolved is not None


def test_window_end_is_sampled_after_its_start_when_ranges_overlap():
    space = build_space("dynamic", {"window.start": {"low": 0.3, "high": 0.8}, "window.end": {"low": 0.4, "high": 1.0}})
    ts = build_space("pab", {"window.start": {"low": 100, "high": 900}, "window.end": {"low": 0, "high": 800}})
    progress, timesteps = (optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)) for _ in range(2))
    for _ in range(200):
        a, b = progress.ask(), timesteps.ask()
        v, t = space.suggest(a), ts.suggest(b)
        assert v["window.end"] >= v["window.start"] + 0.05 - 1e-12
        assert t["window.start"] >= t["window.end"]
        resolve_policy(space.policy_spec(v))
        resolve_policy(ts.policy_spec(t))
        progress.tell(a, 0.0)
        timesteps.tell(b, 0.0)


def test_space_file_fixes_overrides_and_adds_choices(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({
        "dynamic.interval": 3,                                   # fixed
        "dynamic": {"weight": {"low": 0.1, "high": 0.6}},          # nested form, new range
        "fastercache.cfg_cache.interval": {"choices": [3, 5, 7]},  # the policy's own name as prefix
        "cfg_cache.compound": {"choices": [True, False]},          # a parameter the policy does not declare
        "cfg_cache.window": [700, 0],                              # a whole window, fixed (default unit)
    }))
    space = build_space("fastercache", path)
    assert space.fixed["dynamic.interval"] == 3
    assert "dynamic.interval" not in space.params
    assert (space.params["dynamic.weight"].low, space.params["dynamic.weight"].high) == (0.1, 0.6)
    assert space.params["cfg_cache.interval"].choices == (3, 5, 7)
    assert space.params["cfg_cache.compound"].kind == "choice"
    assert "cfg_cache.window.start" not in space.params and space.fixed["cfg_cache.window.start"] == 700
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    policy = resolve_policy(space.policy_spec(space.suggest(trial)))
    dyn, cfg = policy.config.dynamic, policy.config.cfg_cache
    assert dyn.interval == 3 and 0.1 <= dyn.weight <= 0.6 and cfg.interval in (3, 5, 7)
    assert (cfg.window.start, cfg.window.end, cfg.window.unit) == (700, 0, "timestep")
    assert space.fingerprint() != build_space("fastercache").fingerprint()
    # a space for one policy may use the policy's name as prefix
    assert build_space("dynamic", {"dynamic.interval": 4}).fixed["interval"] == 4
    # span as layers instead of a fraction
    assert build_space("delta_dit", {"span": {"low": 1, "high": 3}}).params["span"].kind == "int"


@pytest.mark.parametrize("space, expected", [
    ({"dynamic.nope": 3}, ["unknown parameter 'dynamic.nope'", "dynamic.weight", "cfg_cache.interval"]),
    ({"dynamic.interval": {"low": 5, "high": 2}}, ["dynamic.interval", "low=5 is above high=2"]),
    ({"dynamic.weight": {"low": 0.1, "high": 3.0}}, ["dynamic.weight", "high 3.0 is not allowed", "[0.0, 2.0]"]),
    ({"cfg_cache.interval": {"low": 0, "high": 4}}, ["cfg_cache.interval", "low 0 is not allowed", "[1, 50]"]),
    ({"dynamic.interval": {"low": 1.5, "high": 4}}, ["dynamic.interval takes whole numbers"]),
    ({"dynamic.interval": 0}, ["dynamic.interval", "value 0 is not allowed"]),
    ({"dynamic.roles": {"low": 1, "high": 2}}, ["dynamic.roles", "not a range"]),
    ({"dynamic.weight": {"lo": 0.1}}, ["dynamic.weight", "neither a value, a range"]),
    ({"dynamic.weight": {"choices": []}}, ["dynamic.weight", "non-empty list"]),
    ({"dynamic.window.start": {"low": 0.2, "high": 1.2}}, ["dynamic.window.start", "1.2 is outside [0, 1]"]),
    ({"dynamic.window.start": {"low": 0.5, "high": 0.99}}, ["dynamic.window", "not valid in progress", "start=0.99"]),
    ({"cfg_cache.window.start": {"choices": [100, 300]}, "cfg_cache.window.end": {"choices": [0, 200]}},
     ["cfg_cache.window", "start >= end"]),
    ({"dynamic.window.unit": "timestep"}, ["dynamic.window.start", "fixed to 'timestep'", "range in progress"]),
    ({"dynamic.window.unit": {"choices": ["progress", "step"]}}, ["dynamic.window.unit cannot be searched"]),
    ({"dynamic.window": "soon"}, ["dynamic.window", "not a window"]),
    ({"dynamic.interval": 2, "dynamic.weight": 0.5, "dynamic.window": [0.3, 1.0], "cfg_cache.interval": 5,
      "cfg_cache.window": [641, 0], "cfg_cache.low_freq_weight": 1.1, "cfg_cache.low_freq_window": [901, 99],
      "cfg_cache.high_freq_weight": 1.1, "cfg_cache.high_freq_window": [301, 0]},
     ["search space of fastercache is empty"]),
    ({"policy": "pab"}, ["is for policy 'pab'", "'fastercache'"]),
])
def test_bad_space_is_a_clear_error(space, expected):
    with pytest.raises(SearchSpaceError) as info:
        build_space("fastercache", space)
    for text in expected:
        assert text in str(info.value)


def test_bad_space_input_names_the_problem(tmp_path):
    with pytest.raises(SearchSpaceError, match="does not exist"):
        build_space("dynamic", tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("interval: [1, 2\n")
    with pytest.raises(SearchSpaceError, match="not valid YAML"):
        build_space("dynamic", tmp_path / "bad.yaml")
    with pytest.raises(cachelab.PolicyError, match="unknown policy 'nope'"):
        build_space("nope")
    with pytest.raises(SearchSpaceError, match="boundary_unit is fixed to 'timestep'"):
        build_space("delta_dit", {"boundary_unit": "timestep"})


def test_a_policy_without_declarations_has_an_empty_space():
    @cachelab.register_policy("search_test_plain")
    class Plain(cachelab.Policy):
        class Config(cachelab.PolicyConfig):
            interval: int = 2

    with pytest.raises(SearchSpaceError, match="declares no searchable parameters"):
        build_space("search_test_plain")
    assert build_space("search_test_plain", {"interval": {"low": 1, "high": 3}}).params["interval"].kind == "int"


# -------------------------------------------------------------------------------------------------- objectives


@pytest.mark.parametrize("kwargs, expected", [
    ({"objectives": "macs,foo"}, "unknown objective 'foo'; allowed: macs, latency, psnr, ssim, lpips"),
    ({"objectives": ()}, "no objective given"),
    ({"objectives": "macs"}, "needs a quality floor"),
    ({"objectives": "psnr"}, "needs a cost ceiling"),
    ({"objectives": "psnr,ssim"}, "needs one cost"),
    ({"objectives": "macs,macs"}, "twice"),
    ({"objectives": "macs", "floor": "psnr"}, "metric=value"),
    ({"objectives": "macs", "floor": {"speed": 2}}, "unknown quality metric"),
    ({"objectives": "psnr", "ceiling": "psnr=30"}, "unknown cost"),
    ({"objectives": "macs", "floor": "psnr=abc"}, "not a number"),
    ({"objectives": "macs", "floor": "ssim=2"}, "outside [-1, 1]"),
    ({"objectives": "psnr", "ceiling": "macs=-1"}, "must be positive"),
])
def test_bad_objectives_are_clear_errors(kwargs, expected):
    with pytest.raises(SearchError) as info:
        parse_objectives(kwargs.pop("objectives"), **kwargs)
    assert expected in str(info.value)


def test_objective_directions_and_bounds():
    o = parse_objectives("latency,psnr,lpips")
    assert o.directions == ["minimize", "maximize", "minimize"] and o.needs_latency
    o = parse_objectives(["macs"], floor=["psnr=28", "lpips=0.2"])
    assert o.floor == {"psnr": 28.0, "lpips": 0.2} and o.qualities == ["psnr", "lpips"]


def test_lpips_without_weights_fails_before_any_trial(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "lpips_available", lambda net="alex": (False, "AlexNet weights not found (test)"))
    with pytest.raises(SearchError, match="'lpips' is unavailable: AlexNet weights not found"):
        run_search(objectives="macs,lpips", out_dir=tmp_path / "out", trials=2, **FAST)
    assert not (tmp_path / "out").exists()


def test_non_rgb_videos_become_grey_frames():
    latents = torch.rand(2, 4, 3, 8, 8)
    assert as_rgb_videos(latents) is not None and as_rgb_videos(latents).shape == (2, 4, 3, 8, 8)
    grey = as_rgb_videos(torch.rand(1, 4, 5, 8, 8))  # (B, C, F, H, W) latents with 4 channels
    assert grey.shape == (1, 20, 3, 8, 8) and torch.equal(grey[:, :, 0], grey[:, :, 2])


# ------------------------------------------------------------------------------------------ storage, workers


def test_reference_videos_are_kept_per_device_model(tmp_path, monkeypatch):
    from cachelab.search import objectives
    from cachelab.search.objectives import Workload, load_references

    model = create_model(MODEL, device="cpu")
    workload = Workload(MODEL, tuple(model.prompts(1)), (0,), 2, model.guidance)
    generated = []
    generate = model.generate
    monkeypatch.setattr(model, "generate", lambda *a: generated.append(a) or generate(*a))
    first = load_references(model, workload, tmp_path)
    assert load_references(model, workload, tmp_path)[0].equal(first[0]) and len(generated) == 1  # from disk
    monkeypatch.setattr(objectives, "device_model", lambda device: "another CPU")
    load_references(model, workload, tmp_path)
    assert len(generated) == 2 and len(list(tmp_path.glob("*.pt"))) == 2


def test_storage_that_cannot_be_opened_is_named(tmp_path):
    with pytest.raises(StorageError) as info:
        run_search(storage="nosuchdb://host/db", out_dir=tmp_path, trials=1, **FAST)
    assert "cannot open the study storage 'nosuchdb://host/db'" in str(info.value)
    with pytest.raises(StorageError) as info:
        run_search(storage="postgresql+psycopg2://user:secret@127.0.0.1:1/db", out_dir=tmp_path, trials=1, **FAST)
    assert "postgresql+psycopg2://user:***@127.0.0.1:1/db" in str(info.value) and "secret" not in str(info.value)


@pytest.mark.parametrize("kwargs, expected", [
    ({"workers": 3, "trials": 2}, "workers=3 is more than trials=2"),
    ({"workers": 2, "trials": 4, "storage": "memory"}, "in-memory study lives in one process"),
    ({"workers": 0, "trials": 4}, "workers=0"),
    ({"workers": 2 * (os.cpu_count() or 1) + 1, "trials": 100}, "more than twice the"),
    ({"trials": 0}, "trials=0"),
])
def test_bad_workers_and_trials_are_clear_errors(tmp_path, kwargs, expected):
    with pytest.raises(SearchError) as info:
        run_search(out_dir=tmp_path, **{**FAST, **kwargs})
    assert expected in str(info.value)


# ------------------------------------------------------------------------------------------------ a search


def test_search_end_to_end(tmp_path):
    out = tmp_path / "out"
    result = run_search(policy="fastercache", trials=3, prompts=2, objectives=("macs", "psnr"), out_dir=out, seed=0,
                        **FAST)
    assert result.counts["COMPLETE"] == 3 and result.objectives == ("macs", "psnr")
    study = study_of(result)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]

    # the Pareto trials are exactly the non-dominated ones (cost down, PSNR up), cheapest first
    def dominated(t):
        return any(o.values[0] <= t.values[0] and o.values[1] >= t.values[1] and o.values != t.values for o in complete)

    assert {p.number for p in result.pareto} == {t.number for t in complete if not dominated(t)}
    assert [p.values["macs"] for p in result.pareto] == sorted(p.values["macs"] for p in result.pareto)

    for t in complete:
        a = t.user_attrs
        assert t.values[0] == a["macs"] and t.values[1] == pytest.approx(a["psnr"])
        assert a["ideal_speedup"] == pytest.approx(1 / a["computed_fraction"])
        assert set(a["computed_fraction_by_kind"]) == {"attn.spatial", "attn.temporal", "denoiser"}
        assert 0 < a["ssim"] <= 1 and len(a["psnr_per_prompt"]) == 2 and a["latency_s"] > 0
        assert resolve_policy(a["policy"]).name == "fastercache"
        assert a["worker"]["pid"] == os.getpid()

    # the YAML of the cheapest Pareto trial reproduces its MACs and quality through cachelab.apply
    best = result.pareto[0]
    assert result.yaml_paths[0] == out / "pareto_0.yaml" and len(result.yaml_paths) == len(result.pareto)
    assert policy_to_dict(resolve_policy(str(result.yaml_paths[0]))) == best.policy
    model = create_model(MODEL, device="cpu")
    prompt = model.prompts(1)
    reference = model.generate(prompt, [0], 6, model.guidance)
    with cachelab.apply(model.target, str(result.yaml_paths[0]), cfg=model.cfg) as handle:
        video = model.generate(prompt, [0], 6, model.guidance)
        assert handle.stats().computed_macs == best.values["macs"]
    psnr = min(float(metrics.psnr(as_rgb_videos(video), as_rgb_videos(reference))[0]), 100.0)
    assert psnr == pytest.approx(best.attrs["psnr_per_prompt"][0], rel=1e-5)

    assert result.plot_path == out / "pareto.png" and result.plot_path.stat().st_size > 0
    rows = result.csv_path.read_text().splitlines()
    assert rows[0].startswith("number,state,values_macs,values_psnr,params_") and len(rows) == 4

    # references are cached per prompt and reused by a resumed search, which adds trials up to the new total
    refs = sorted((out / "references").glob("*.pt"))
    assert len(refs) == 2
    stamps = [p.stat().st_mtime_ns for p in refs]
    before = {t.number: t.values for t in complete}
    again = run_search(policy="fastercache", trials=4, prompts=2, out_dir=out, seed=0, **FAST)
    assert again.counts["COMPLETE"] == 4
    assert [p.stat().st_mtime_ns for p in refs] == stamps
    assert {t.number: t.values for t in study_of(again).trials if t.number in before} == before


@pytest.mark.parametrize("policy", ["fbcache", "fbcache+cfg_cache"])
def test_data_dependent_policies_are_searched_on_the_macs_they_computed(tmp_path, policy):
    model_name = "tiny-random-cogvideox"  # fbcache skips its blocks from a threshold of about 1 (6 steps)
    threshold = {"low": 1.0, "high": 2.0}
    space = {"threshold": threshold} if policy == "fbcache" else {"fbcache.threshold": threshold}
    result = run_search(model=model_name, policy=policy, trials=1, prompts=2, objectives="psnr", ceiling="macs=0.3",
                        space=space, steps=6, progress=False, out_dir=tmp_path, seed=0, baseline=False)
    # a first prompt above the MACs ceiling prunes a static policy; a data-dependent one may reuse more later
    assert result.counts["COMPLETE"] == 1 and result.counts["PRUNED"] == 0
    model = create_model(model_name, device="cpu")
    for t in study_of(result).trials:
        a = t.user_attrs
        computed = []
        for seed, prompt in enumerate(model.prompts(2)):
            with cachelab.apply(model.target, resolve_policy(a["policy"]), cfg=model.cfg) as handle:
                model.generate([prompt], [seed], 6, model.guidance)
                computed.append(handle.stats().computed_fraction)
        assert a["computed_fraction_per_prompt"] == pytest.approx(computed)  # what the runtime counted
        assert a["computed_fraction_by_kind"]["block"] < 1  # fbcache's skipped blocks count as reused
        assert a["ideal_speedup"] == pytest.approx(1 / a["computed_fraction"]) and a["ideal_speedup"] > 1
        assert a["feasible"] == (a["computed_fraction"] <= 0.3)


def test_costs_of_a_data_dependent_policy_are_means_over_the_prompts():
    from cachelab.search.objectives import Measurement, PromptResult, prune_reason

    kinds = [{"block": (80.0, 40.0), "denoiser": (20.0, 20.0)}, {"block": (80.0, 0.0), "denoiser": (20.0, 20.0)}]
    prompts = [PromptResult(0, 60.0, 100.0, 1.0, {"psnr": 30.0}, False, kinds[0]),
               PromptResult(1, 20.0, 100.0, 1.0, {"psnr": 20.0}, False, kinds[1])]
    m = Measurement(prompts, reuse={}, roles={}, sample=None)
    assert (m.macs, m.computed_fraction, m.ideal_speedup) == (40.0, 0.4, 2.5)
    assert m.by_kind == {"block": 0.25, "denoiser": 1.0}
    assert m.attrs()["computed_fraction_per_prompt"] == [0.6, 0.2]
    # the first prompt's 60% misses a 50% ceiling the mean (40%) meets: only a static policy's is its mean
    ceiling = parse_objectives("psnr", ceiling="macs=0.5")
    assert "above the ceiling 0.5" in prune_reason(ceiling, prompts[0], static=True)
    assert prune_reason(ceiling, prompts[0], static=False) is None
    assert m.constraints(ceiling) == {"ceiling_macs": pytest.approx(-0.1)}


def test_first_trial_runs_the_policy_defaults(tmp_path):
    result = run_search(policy="fastercache", trials=2, prompts=1, out_dir=tmp_path, seed=3, **FAST)
    first = study_of(result).trials[0]
    assert first.user_attrs["baseline"] == "policy defaults"
    assert resolve_policy(first.user_attrs["policy"]).config == cachelab.policy_class("fastercache").Config()
    assert result.baseline is not None and result.baseline.number == 0
    line = result.baseline_line()
    assert line.startswith("policy defaults (trial 0): macs ")
    dominating = {t.number for t in study_of(result).trials[1:]
                  if t.values[0] <= first.values[0] and t.values[1] >= first.values[1] and t.values != first.values}
    assert set(result.dominating) == dominating
    none = run_search(policy="pab", trials=1, prompts=1, out_dir=tmp_path / "nb", seed=3, baseline=False, **FAST)
    assert "baseline" not in study_of(none).trials[0].user_attrs and none.baseline is None


def test_floor_prunes_a_trial_far_below_it_on_the_first_prompt(tmp_path):
    result = run_search(policy="dynamic", trials=2, prompts=2, objectives="macs", floor="psnr=1000", out_dir=tmp_path,
                        **FAST)
    assert result.counts["PRUNED"] == 2 and result.pareto == [] and result.yaml_paths == []
    assert result.plot_path is None and not (tmp_path / "pareto_0.yaml").exists()
    for t in study_of(result).trials:
        assert "below the floor 1000 dB by more than 3 dB" in t.user_attrs["pruned_reason"]
        assert "psnr_per_prompt" not in t.user_attrs  # the second prompt never ran
        assert t.user_attrs["first_prompt"]["psnr"] < 997


def test_single_objective_with_floor_and_ceiling(tmp_path):
    ok = run_search(policy="dynamic", trials=2, prompts=1, objectives="macs", floor={"psnr": 1.0},
                    out_dir=tmp_path / "floor", **FAST)
    assert ok.counts["COMPLETE"] == 2 and len(ok.pareto) == 1 and len(ok.yaml_paths) == 1
    study = study_of(ok)
    assert ok.pareto[0].values["macs"] == min(t.values[0] for t in study.trials)
    assert all(t.user_attrs["feasible"] for t in study.trials)
    # every schedule that computes everything misses a MACs ceiling of 50%: pruned after the first prompt
    full = run_search(policy="dynamic", trials=2, prompts=2, objectives="psnr", ceiling="macs=0.5",
                      space={"interval": 1}, out_dir=tmp_path / "ceiling", **FAST)
    assert full.counts["PRUNED"] == 2 and full.pareto == []
    assert "above the ceiling 0.5" in study_of(full).trials[0].user_attrs["pruned_reason"]


def test_reopening_a_study_with_another_search_is_an_error(tmp_path):
    run_search(policy="dynamic", trials=1, prompts=1, out_dir=tmp_path, study="s", **FAST)
    cases = [
        ({"policy": "pab"}, ["policy: the study tunes 'dynamic', this search 'pab'"]),
        ({"policy": "dynamic", "space": {"interval": {"low": 2, "high": 4}}}, ["search space of 'dynamic'",
                                                                               "interval differs ([1, 6] vs [2, 4])"]),
        ({"policy": "dynamic", "objectives": "macs,ssim"}, ["objectives"]),
        ({"policy": "dynamic", "steps": 5}, ["steps: 6 vs 5"]),
    ]
    for kwargs, expected in cases:
        with pytest.raises(StudyMismatchError) as info:
            run_search(trials=2, prompts=1, out_dir=tmp_path, study="s", **{**FAST, **kwargs})
        assert "study 's' in sqlite:///" in str(info.value)
        for text in expected:
            assert text in str(info.value)


def test_trials_of_dead_workers_are_failed_and_live_ones_kept():
    from cachelab.search.storage import WORKER_ATTR_PREFIX, fail_dead_trials, worker_info

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead_worker = {"host": worker_info()["host"], "pid": gone.pid, "start": None}
    study = optuna.create_study()
    alive, dead, ownerless = study.ask(), study.ask(), study.ask()
    alive.set_user_attr("worker", worker_info())
    dead.set_user_attr("worker", dead_worker)
    with pytest.warns(UserWarning, match="left RUNNING and is marked FAIL") as record:
        assert fail_dead_trials(study, heartbeat=False) == [dead.number, ownerless.number]
    assert "every worker that could have started it is gone" in str(record[-1].message)
    assert [t.state.name for t in study.trials] == ["RUNNING", "FAIL", "FAIL"]
    # while a worker on another host may still be creating it, an owner-less trial is left alone
    study.set_user_attr(f"{WORKER_ATTR_PREFIX}elsewhere:1", {"host": "elsewhere", "pid": 1, "start": None})
    study.ask()
    assert fail_dead_trials(study, heartbeat=False) == []


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_two_workers_asking_at_once_never_both_claim_the_enqueued_trial(tmp_path, monkeypatch):
    import threading

    from optuna.storages._rdb import models

    from cachelab.search.storage import open_storage

    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="s", storage=open_storage(url)).enqueue_trial({})
    studies = [optuna.load_study(study_name="s", storage=open_storage(url)) for _ in range(2)]
    read = models.TrialModel.find_or_raise_by_id

    def slow_read(*args, **kwargs):  # both workers read the trial's state before either writes RUNNING
        trial = read(*args, **kwargs)
        time.sleep(0.3)
        return trial

    monkeypatch.setattr(models.TrialModel, "find_or_raise_by_id", slow_read)
    numbers = []
    threads = [threading.Thread(target=lambda st=st: numbers.append(st.ask().number)) for st in studies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(numbers) == [0, 1]


def test_the_sampler_steers_away_from_running_trials_and_one_worker_samples_as_plain_tpe():
    from cachelab.search.study import _sampler

    def objective(trial):
        return (trial.suggest_float("x", -10, 10) - 3) ** 2

    history = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    history.optimize(objective, n_trials=12)
    # two workers whose samplers happen to be in the same state: the second sees the first's trial RUNNING
    study = optuna.create_study()
    study.add_trials(history.trials)
    study.sampler = _sampler(5, 0, 0)
    first = study.ask()
    first.suggest_float("x", -10, 10)
    study.sampler = _sampler(5, 0, 0)
    second = study.ask()
    assert second.suggest_float("x", -10, 10) != first.params["x"]  # without the constant liar: the same x
    # alone on a study, a worker samples exactly what TPE without the liar samples
    runs = []
    for sampler in (_sampler(5, 0, 0), optuna.samplers.TPESampler(seed=5, constant_liar=False)):
        alone = optuna.create_study(sampler=sampler)
        alone.optimize(objective, n_trials=15)
        runs.append([t.params for t in alone.trials])
    assert runs[0] == runs[1]


def test_latency_objective_and_identical_videos(tmp_path):
    # interval 1 everywhere: nothing is reused, the videos equal the references (PSNR counts as 100 dB)
    result = run_search(policy="dynamic", trials=2, prompts=1, objectives="latency,psnr", space={"interval": 1},
                        out_dir=tmp_path, **FAST)
    for t in study_of(result).trials:
        a = t.user_attrs
        assert t.values == [a["latency_s"], 100.0] and a["latency_s"] > 0
        assert a["identical_videos"] == 1 and a["ideal_speedup"] == 1.0 and a["measured_speedup"] > 0
        # the uncached latency was timed here, under the trial's threads, not read from a file another process wrote
        assert a["measured_speedup"] == pytest.approx(a["reference_latency_s"] / a["latency_s"])
        assert a["timed_on"] == {"pid": os.getpid(), "device": "cpu", "device_model": device_model(torch.device("cpu")),
                                 "threads": torch.get_num_threads()}
    for path in (tmp_path / "references").glob("*.pt"):
        assert set(torch.load(path, weights_only=True)) == {"key", "video"}  # no latency on disk


def test_a_trial_started_after_the_study_is_full_is_a_surplus_failure(tmp_path, monkeypatch):
    """Two workers may both see one trial left and both start one; the later one must not count."""
    import cachelab.search.study as study_module

    run_search(policy="pab", trials=2, prompts=1, out_dir=tmp_path, **FAST)
    # the worker's view of the counts is stale (as in that race): it starts a third trial
    monkeypatch.setattr(study_module, "state_counts", lambda st: {s.name: 0 for s in optuna.trial.TrialState})
    result = run_search(policy="pab", trials=2, prompts=1, out_dir=tmp_path, **FAST)
    assert result.counts["COMPLETE"] == 2 and result.counts["FAIL"] == 1
    (surplus,) = [t for t in study_of(result).trials if t.state.name == "FAIL"]
    assert surplus.number == 2 and surplus.user_attrs["error"].startswith("surplus")


def test_schedules_the_model_cannot_run_fail_and_too_many_stop_the_search(tmp_path):
    # delta_dit with a span of 2 layers covers both blocks of the tiny model: apply refuses every schedule
    with (
        pytest.warns(UserWarning, match=r"trial \d+ failed: PolicyError: delta_dit span=2 covers all 2 layers"),
        pytest.raises(SearchError, match="10 trials in a row failed; the last: PolicyError: delta_dit span=2"),
    ):
        run_search(policy="delta_dit", space={"span": 2}, trials=2, prompts=1, out_dir=tmp_path, **FAST)
    trials = optuna.load_study(study_name=f"{MODEL}-delta_dit", storage=f"sqlite:///{tmp_path / 'study.db'}").trials
    assert [t.state.name for t in trials] == ["FAIL"] * 10


def test_journal_and_memory_storages(tmp_path):
    journal = f"journal:{tmp_path / 'study.log'}"
    first = run_search(policy="pab", trials=1, prompts=1, storage=journal, out_dir=tmp_path, **FAST)
    second = run_search(policy="pab", trials=2, prompts=1, storage=journal, out_dir=tmp_path, **FAST)
    assert first.counts["COMPLETE"] == 1 and second.counts["COMPLETE"] == 2
    memory = run_search(policy="pab", trials=2, prompts=1, storage="memory", out_dir=tmp_path / "m", **FAST)
    assert memory.counts["COMPLETE"] == 2 and memory.storage == "memory"


def test_resume_after_sigkill_keeps_completed_trials(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cachelab.cli", "search", "--model", MODEL, "--policy", "dynamic", "--trials", "500",
           "--prompts", "1", "--steps", "6", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    db = out / "study.db"
    storage, name = f"sqlite:///{db.resolve()}", f"{MODEL}-dynamic"
    deadline = time.monotonic() + 90
    complete = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            if not db.is_file():
                continue
            try:  # read-only: opening it through Optuna would create tables beside the search's own process
                with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
                    complete = con.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
            except sqlite3.OperationalError:  # tables not created yet
                continue
            if complete >= 2:
                break
        assert proc.poll() is None, f"the search ended before it could be killed: {proc.stderr.read()}"
        assert complete >= 2, "no two trials completed in time"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    killed = optuna.load_study(study_name=name, storage=storage).trials
    kept = {t.number: (t.values, t.params) for t in killed if t.state.name == "COMPLETE"}
    running = [t.number for t in killed if t.state.name == "RUNNING"]
    target = len(kept) + 2
    with pytest.warns(UserWarning, match="left RUNNING and is marked FAIL") if running else contextlib.nullcontext():
        result = run_search(policy="dynamic", trials=target, prompts=1, out_dir=out, **FAST)
    trials = optuna.load_study(study_name=name, storage=storage).trials
    assert {t.number: (t.values, t.params) for t in trials if t.number in kept} == kept
    assert result.counts["COMPLETE"] + result.counts["PRUNED"] == target
    assert result.counts["RUNNING"] == 0
    assert sorted(t.number for t in trials if t.state.name == "FAIL") == running
    assert sorted(t.number for t in trials) == list(range(len(trials)))


# ---------------------------------------------------------------------------------------------------------- W&B


def test_wandb_mode_follows_login(monkeypatch, tmp_path):
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode() == "online"
    monkeypatch.delenv("WANDB_API_KEY")
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "y" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"


def test_each_run_goes_to_the_wandb_dir_of_its_time(tmp_path, monkeypatch):
    # wandb keeps its settings for the life of the process: a later run must still land where WANDB_DIR says now
    from wandb_offline import read_runs

    from cachelab.search.tracking import Tracker, TrackingConfig

    for name in ("first", "second"):
        monkeypatch.setenv("WANDB_DIR", str(tmp_path / name))
        Tracker(TrackingConfig(True, "dirs", str(tmp_path / "out"))).log_run(name, "arm", {"n": name}, {"done": 1})
    assert [r.name for r in read_runs(tmp_path / "first")] == ["first"]
    assert [r.name for r in read_runs(tmp_path / "second")] == ["second"]


def test_wandb_offline_runs_hold_the_logged_values(tmp_path, monkeypatch):
    from wandb_offline import read_runs

    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    (tmp_path / "wb").mkdir()
    result = run_search(policy="fastercache", trials=2, prompts=1, wandb=True, out_dir=tmp_path / "out", **FAST)
    study = study_of(result)
    runs = read_runs(tmp_path / "wb")
    trials = {r.name: r for r in runs if r.job_type == "trial"}
    assert set(trials) == {"trial-0", "trial-1"} and {r.group for r in runs} == {result.study_name}
    for t in study.trials:
        run = trials[f"trial-{t.number}"]
        assert run.summary["objective/macs"] == t.values[0]
        assert run.summary["objective/psnr"] == t.values[1]
        assert run.summary["ideal_speedup"] == t.user_attrs["ideal_speedup"]
        for kind, fraction in t.user_attrs["computed_fraction_by_kind"].items():
            assert run.summary[f"computed_fraction/{kind}"] == fraction
        assert run.config["policy"] == t.user_attrs["policy"] and run.config["params"] == t.params
        media = {k: v for row in run.history for k, v in row.items() if isinstance(v, dict)}
        assert media["reuse_map"]["_type"] == "image-file" and media["sample"]["_type"] == "video-file"
        for item in media.values():
            assert (run.path.parent / "files" / item["path"]).is_file()
    (summary,) = [r for r in runs if r.job_type == "summary"]
    logged = {k: v for row in summary.history for k, v in row.items() if isinstance(v, dict)}
    assert logged["pareto_plot"]["_type"] == "image-file"
    table = json.loads((summary.path.parent / "files" / logged["pareto"]["path"]).read_text())
    trial_column = table["columns"].index("trial")
    assert [row[trial_column] for row in table["data"]] == [p.number for p in result.pareto]
    assert summary.summary["trials/complete"] == 2


def test_wandb_failures_warn_and_the_search_goes_on(tmp_path, monkeypatch):
    import wandb

    def broken(*args, **kwargs):
        raise RuntimeError("no W&B today")

    monkeypatch.setattr(wandb, "init", broken)
    with pytest.warns(UserWarning) as record:
        result = run_search(policy="pab", trials=2, prompts=1, wandb=True, out_dir=tmp_path, **FAST)
    assert result.counts["COMPLETE"] == 2 and result.yaml_paths
    messages = [str(w.message) for w in record]
    assert "W&B logging of trial 0 failed (RuntimeError: no W&B today); the search goes on" in messages
    assert "W&B logging of the search summary failed (RuntimeError: no W&B today)" in messages


# ---------------------------------------------------------------------------------------------------------- CLI


def test_cli_search_prints_the_pareto_table_and_writes_files(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("pab.window: [800, 100]\ncfg_cache.interval: {choices: [2, 3]}\n")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["search", "--model", MODEL, "--policy", "pab", "--policy", "cfg_cache",
                                    "--trials", "2", "--prompts", "1", "--steps", "6", "--space", str(space),
                                    "--out", str(out), "--no-progress", "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert "Pareto front of study 'tiny-random-latte-pab+cfg_cache'" in res.output
    assert str(out / "pareto_0.yaml") in res.output and str(out / "trials.csv") in res.output
    policy = resolve_policy(str(out / "pareto_0.yaml"))
    assert [m.name for m in policy.members] == ["pab", "cfg_cache"]
    assert (policy.members[0].config.window.start, policy.members[0].config.window.end) == (800, 100)
    assert policy.members[1].config.interval in (2, 3)


@pytest.mark.parametrize("args, expected", [
    (["--objectives", "macs,foo"], "unknown objective 'foo'"),
    (["--floor", "psnr"], "write it as metric=value"),
    (["--policy", "nope"], "unknown policy 'nope'"),
    (["--model", "nope"], "unknown model 'nope'"),
    (["--workers", "5", "--trials", "2"], "workers=5 is more than trials=2"),
])
def test_cli_search_errors_are_one_line(tmp_path, args, expected):
    res = CliRunner().invoke(main, ["search", "--out", str(tmp_path), "--no-progress", *args])
    assert res.exit_code == 1 and expected in res.output and "Traceback" not in res.output
