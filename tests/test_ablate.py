"""`cachelab ablate`: spec validation, resuming after a kill, changed specs, W&B runs, the table files, the shipped
FasterCache Table 3 spec."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from cachelab.ablation import load_spec, resolve_arms
from cachelab.cli import main

ROOT = Path(__file__).resolve().parents[1]
TABLE3 = ROOT / "examples" / "ablations" / "fastercache_table3.yaml"
SPEC = {
    "name": "tiny",
    "model": "tiny-random-cogvideox",
    "prompts": 1,
    "steps": 4,
    "base": {"policy": "pab", "spatial_interval": 2, "window": {"start": 0.0, "end": 1.0}},
    "arms": {"pab3": {"spatial_interval": 3}, "cfg": {"policy": "cfg_cache", "interval": 2,
                                                      "window": {"start": 0.0, "end": 1.0}}},
    "paper": {"pab3": "cheaper than pab2"},
}


@pytest.fixture(autouse=True)
def _no_wandb_login(monkeypatch, tmp_path):
    """No W&B key or netrc: tracking must pick offline mode by itself."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "NETRC", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def write_spec(path: Path, **changes) -> Path:
    paper = {} if "arms" in changes else SPEC["paper"]  # the paper's notes are about the default arms
    path.write_text(yaml.safe_dump({**SPEC, "paper": paper, **changes}, sort_keys=False))
    return path


def ablate(*args):
    return CliRunner().invoke(main, ["ablate", *map(str, args), "--device", "cpu", "--no-progress"],
                              catch_exceptions=False)


def arm_file(out: Path, arm: str) -> dict:
    return json.loads((out / "arms" / f"{arm}.json").read_text())


# ------------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("changes, message", [
    ({"arms": {}}, "arms: Value error, a spec needs at least one arm"),
    ({"arms": None}, "arms: Input should be a valid dictionary"),
    ({"arms": {"x": {"intervall": 3}}},
     "arms.x: invalid parameters for policy 'pab':\n  intervall: unknown parameter (value 3); 'pab' takes: "),
    ({"arms": {"x": {"spatial_interval": 0}}},
     "arms.x: invalid parameters for policy 'pab':\n  spatial_interval: Input should be greater than or equal to 1 (got 0)"),
    ({"arms": {"x": {"policy": "nope"}}}, "arms.x: unknown policy 'nope'; known policies: cfg_cache"),
    ({"base": {"policies": ["pab", "cfg_cache"]}, "arms": {"x": {"dynamic": {"interval": 3}}}},
     "arms.x.dynamic: the base composition has no member 'dynamic'; its members: pab, cfg_cache"),
    ({"base": {"policy": "pab", "spatial_intervall": 2}}, "base: invalid parameters for policy 'pab'"),
    ({"arms": {"uncached": {}}}, "arm name 'uncached' is reserved for the uncached baseline"),
    ({"arms": {"a/b": {}}}, "arm name 'a/b': use letters, digits"),
    ({"stepz": 3}, "stepz: unknown parameter (value 3); 'ablation spec' takes: name, description, model, base, arms"),
    ({"steps": 0}, "steps: Input should be greater than or equal to 1 (got 0)"),
    ({"paper": {"pab9": "x"}}, "paper names arms the spec does not have: pab9; arms: pab3, cfg"),
    ({"seeds": [1, 2]}, "seeds: Value error, 2 seeds for 1 prompts"),
])
def test_bad_specs_fail_before_any_work(tmp_path, changes, message):
    spec = write_spec(tmp_path / "bad.yaml", **changes)
    result = CliRunner().invoke(main, ["ablate", str(spec), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_composition_members_take_overrides_by_name(tmp_path):
    spec = load_spec(write_spec(tmp_path / "s.yaml", base=["pab", {"policy": "cfg_cache", "params": {"interval": 3}}],
                                arms={"x": {"cfg_cache": {"low_freq_weight": 1.0}}, "same": None}))
    policies = resolve_arms(spec)
    cfg = policies["x"]["policies"][1]["params"]
    assert (cfg["interval"], cfg["low_freq_weight"]) == (3, 1.0)
    assert policies["same"]["policies"][1]["params"]["low_freq_weight"] == 1.1


def test_fastercache_table3_spec_validates_with_distinct_arms():
    spec = load_spec(TABLE3)
    policies = resolve_arms(spec)
    assert len({json.dumps(p, sort_keys=True) for p in policies.values()}) == len(policies) == 7
    vanilla, dynamic = (policies[a]["params"] for a in ("vanilla_feature_reuse", "dynamic_feature_reuse"))
    for key in ("roles", "interval", "window"):  # the same schedule: only the reuse rule differs
        assert vanilla[key] == dynamic[key]
    weights = {arm: (p["params"]["low_freq_weight"], p["params"]["high_freq_weight"])
               for arm, p in policies.items() if p.get("policy") == "cfg_cache"}
    assert weights == {"cfg_cache_no_enhancement": (1.0, 1.0), "cfg_cache_low_freq_only": (1.1, 1.0),
                       "cfg_cache_high_freq_only": (1.0, 1.1), "cfg_cache_full": (1.1, 1.1)}
    cfg_rest = [{k: v for k, v in policies[a]["params"].items() if not k.endswith("_weight")} for a in weights]
    assert all(rest == cfg_rest[0] for rest in cfg_rest)
    assert set(spec.paper) == set(spec.arms) and "dynamic" in spec.expected
    # one spec serves both bundled models and the GPU's 60 prompts
    assert load_spec(TABLE3, model="tiny-latte", prompts=60).prompts == 60


# ------------------------------------------------------------------------------------------------ running
def test_resume_after_sigkill_skips_finished_arms(tmp_path):
    spec = write_spec(tmp_path / "s.yaml", arms={
        "pab3": {"spatial_interval": 3}, "pab4": {"spatial_interval": 4}, "pab5": {"spatial_interval": 5}})
    out = tmp_path / "out"
    # the resumed run below is in this process: the killed one must see the same device (its thread count too)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-m", "cachelab.cli", "ablate", str(spec), "--out", str(out),
                             "--no-wandb", "--no-progress", "--device", "cpu"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "arms" / "pab3.json"
    try:
        deadline = time.monotonic() + 120
        while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert first.exists(), "the first arm never finished"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (out / "arms" / "pab5.json").exists(), "killed too late to test resuming"
    before = {arm: arm_file(out, arm)["finished"] for arm in ("uncached", "pab3")}
    assert (out / "arms" / "uncached-videos.pt").is_file()

    result = ablate(spec, "--out", out, "--no-wandb")
    assert result.exit_code == 0, result.output
    assert "finished before, skipped: uncached, pab3" in result.output
    assert {arm: arm_file(out, arm)["finished"] for arm in before} == before  # not recomputed
    table = json.loads((out / "table.json").read_text())
    assert [row["arm"] for row in table["rows"]] == ["uncached", "pab3", "pab4", "pab5"]
    assert all(row["result"]["psnr"] for row in table["rows"][1:])


def test_changed_arm_reruns_and_changed_settings_are_refused(tmp_path):
    spec = write_spec(tmp_path / "s.yaml")
    out = tmp_path / "out"
    assert ablate(spec, "--out", out, "--no-wandb", "--no-samples").exit_code == 0
    first = {arm: arm_file(out, arm)["finished"] for arm in ("uncached", "pab3", "cfg")}

    write_spec(spec, arms={**SPEC["arms"], "pab3": {"spatial_interval": 4}})
    result = ablate(spec, "--out", out, "--no-wandb", "--no-samples")
    assert result.exit_code == 0, result.output
    assert "arm pab3: policy.params.spatial_interval: 3 -> 4 since it ran; running it again" in result.output
    second = {arm: arm_file(out, arm)["finished"] for arm in first}
    assert second["pab3"] != first["pab3"] and second["cfg"] == first["cfg"] and second["uncached"] == first["uncached"]
    assert arm_file(out, "pab3")["policy"]["params"]["spatial_interval"] == 4

    result = ablate(spec, "--out", out, "--no-wandb", "--steps", 5)
    assert result.exit_code == 1
    assert "holds arms run with other settings (steps: 4 -> 5)" in result.output and "--restart" in result.output
    assert {arm: arm_file(out, arm)["finished"] for arm in first} == second  # nothing lost

    result = ablate(spec, "--out", out, "--no-wandb", "--no-samples", "--steps", 5, "--restart")
    assert result.exit_code == 0, result.output
    assert arm_file(out, "cfg")["depends"]["steps"] == 5 and arm_file(out, "cfg")["finished"] != second["cfg"]


def test_files_and_wandb_runs_of_an_ablation(tmp_path, monkeypatch):
    from wandb_offline import read_runs

    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    (tmp_path / "wb").mkdir()
    out = tmp_path / "out"
    result = ablate(write_spec(tmp_path / "s.yaml"), "--out", out)
    assert result.exit_code == 0, result.output
    assert "paper, pab3: cheaper than pab2" in result.output and "│ pab3 " in result.output

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "ablation" and manifest["version"] == 1 and manifest["name"] == "tiny"
    assert manifest["spec"]["arms"]["pab3"] == {"spatial_interval": 3} and manifest["command"] == [
        "cachelab", "ablate", str(tmp_path / "s.yaml"), "--out", str(out), "--device", "cpu", "--no-progress"]
    assert yaml.safe_load((out / "spec.yaml").read_text()) == manifest["spec"]
    table = json.loads((out / "table.json").read_text())
    assert {k: table[k] for k in ("name", "model", "steps", "seeds", "repeats")} == {
        "name": "tiny", "model": "tiny-random-cogvideox", "steps": 4, "seeds": [0], "repeats": 1}
    rows = {row["arm"]: row for row in table["rows"]}
    assert list(rows) == ["uncached", "pab3", "cfg"] and rows["uncached"]["policy"] is None
    assert rows["pab3"]["paper"] == "cheaper than pab2" and rows["pab3"]["overrides"] == {"spatial_interval": 3}
    for arm in ("pab3", "cfg"):
        assert rows[arm] == {**arm_file(out, arm), "paper": rows[arm]["paper"]}
        assert rows[arm]["result"]["ideal_speedup"] > 1 and rows[arm]["result"]["psnr"] > 0
        assert (out / rows[arm]["reuse_map"]).is_file() and (out / rows[arm]["sample"]).is_file()
    with open(out / "table.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["arm"] for r in csv_rows] == ["uncached", "pab3", "cfg"]
    assert float(csv_rows[1]["ideal_speedup"]) == rows["pab3"]["result"]["ideal_speedup"]

    runs = {r.name: r for r in read_runs(tmp_path / "wb")}
    assert set(runs) == {"uncached", "pab3", "cfg"}
    assert {(r.group, r.job_type) for r in runs.values()} == {("tiny", "arm")}
    for arm in ("pab3", "cfg"):
        run = runs[arm]
        assert run.summary["psnr"] == rows[arm]["result"]["psnr"]
        assert run.summary["ideal_speedup"] == rows[arm]["result"]["ideal_speedup"]
        assert run.config["policy"] == rows[arm]["policy"] and run.config["steps"] == 4
        media = {k: v for row in run.history for k, v in row.items() if isinstance(v, dict)}
        assert media["reuse_map"]["_type"] == "image-file" and media["sample"]["_type"] == "video-file"


def test_an_arm_the_model_refuses_is_a_row_and_wandb_failures_warn(tmp_path, monkeypatch):
    import wandb

    def broken(*args, **kwargs):
        raise RuntimeError("no W&B today")

    monkeypatch.setattr(wandb, "init", broken)
    # Latte's blocks alternate spatial and temporal stacks, which fbcache refuses
    spec = write_spec(tmp_path / "s.yaml", model="tiny-random-latte", steps=3, arms={"fb": {"policy": "fbcache"}})
    with pytest.warns(UserWarning) as record:
        result = ablate(spec, "--out", tmp_path / "out", "--no-samples")
    assert result.exit_code == 0, result.output
    assert {str(w.message) for w in record} >= {
        f"W&B logging of arm {arm} failed (RuntimeError: no W&B today); the work goes on" for arm in ("uncached", "fb")}
    row = arm_file(tmp_path / "out", "fb")
    assert row["result"]["refused"] and row["result"]["error"].startswith("PolicyError: fbcache")
    assert "refuses [1]" in result.output
