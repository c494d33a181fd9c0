"""The GPU benchmark scripts of context parallelism and search workers, on their CPU path (gloo, a shrunk Wan
preset, one or two steps), so they are known to run before a GPU machine runs them; and where search workers go
when two GPUs are visible."""

from __future__ import annotations

import json

import optuna
import pytest
import torch

from benchmark_scripts import benchmark_module, run_script
from cachelab.search import study as search_study


def test_context_parallel_table_on_two_cpu_ranks(tmp_path):
    # the README's command
    run_script("context_parallel.py", "--nproc", "2", "--shrink", "--steps", "2", "--policies", "pab,fbcache",
               "--param", "fbcache.threshold=0.5", "--out", str(tmp_path))
    report = json.loads((tmp_path / "table.json").read_text())
    rows = {r["row"]: r for r in report["rows"]}
    assert list(rows) == ["1gpu", "cp", "fbcache", "pab"]
    assert [rows[r]["gpus"] for r in rows] == [1, 2, 2, 2]
    assert rows["1gpu"]["speedup"] == 1.0
    assert all(r["ranks_agree"] and r["steps"] == 2 and r["latency_s"] > 0 for r in rows.values())
    assert rows["fbcache"]["params"] == {"threshold": 0.5}
    assert rows["pab"]["computed_fraction"] < 1.0  # it reused something
    assert report["commit"] == "test-commit" and report["device"] == "cpu"
    table = (tmp_path / "table.md").read_text()
    assert "| 2 | pab |" in table and "2 steps" in table and "command: `python benchmarks/context_parallel.py --nproc 2" in table


def test_search_workers_throughput_and_accounting(tmp_path):
    run_script("search_workers.py", "--out", str(tmp_path), "--model", "tiny-random-latte", "--trials", "2",
               "--prompts", "1", "--steps", "2")
    report = json.loads((tmp_path / "workers.json").read_text())
    one, two = report["runs"]
    assert (one["workers"], two["workers"]) == (1, 2)
    for run in (one, two):
        assert run["problems"] == [] and run["finished"] == 2 and run["trials_per_hour"] > 0
        assert run["per_device"] == {"cpu": 2}
    assert len(two["per_worker"]) == 2  # each worker took a trial
    table = (tmp_path / "workers.md").read_text()
    assert "none lost, none duplicated" in table and "command: `python benchmarks/search_workers.py" in table


def test_two_search_workers_go_to_two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert search_study._plan_workers(2, 10, "sqlite:///x.db", False) == (2, ["cuda:0", "cuda:1"])
    assert search_study._plan_workers(None, 10, "sqlite:///x.db", False) == (2, ["cuda:0", "cuda:1"])


def test_search_accounting_finds_lost_and_duplicated_trials():
    account = benchmark_module("search_workers").account
    study = optuna.create_study(directions=["minimize"])
    worker = {"host": "h", "pid": 1, "device": "cuda:0"}
    for value in (1.0, 2.0):
        study.add_trial(optuna.trial.create_trial(
            params={"x": 1}, distributions={"x": optuna.distributions.IntDistribution(0, 3)}, values=[value],
            user_attrs={"worker": worker}))
    study.ask()  # a trial left RUNNING: lost
    result = account(study, 3)
    assert result["repeated_parameter_sets"] == 1
    assert result["per_device"] == {"cuda:0": 2}
    assert any("RUNNING" in p for p in result["problems"]) and any("2 finished" in p for p in result["problems"])


@pytest.mark.parametrize("rows,expected", [("base", ["1gpu", "cp"]), ("cached,cp", ["pab", "cp"])])
def test_context_parallel_rows(rows, expected):
    module = benchmark_module("context_parallel")
    assert module.expand_rows(module.parse(["--out", "x", "--rows", rows, "--policies", "pab"])) == expected
