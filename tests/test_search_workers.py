"""Several worker processes on one study: SQLite here, PostgreSQL where CI provides a server.

CI runs ``.ci/postgres.sh`` (Debian's postgresql package, a local server, a user and a database), which exports
``CACHELAB_TEST_POSTGRES_URL``; without it the PostgreSQL test is skipped.
"""

from __future__ import annotations

import os
import uuid

import optuna
import pytest

from cachelab.search import run_search

MODEL = "tiny-random-latte"
# 12 steps and 2 prompts make trials slow enough (about 1 s) that both workers take some
WORK = {"model": MODEL, "policy": "fastercache", "steps": 12, "prompts": 2, "progress": False, "seed": 0,
        "objectives": "latency,psnr"}


def check_two_workers(study: optuna.Study, trials: int, result) -> None:
    all_trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in all_trials]
    assert len(numbers) == len(set(numbers)), f"duplicate trial numbers: {numbers}"
    assert sorted(numbers) == list(range(len(numbers)))
    finished = [t for t in all_trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == trials == result.counts["COMPLETE"] + result.counts["PRUNED"]
    assert not [t for t in all_trials if t.state.name == "RUNNING"]
    # any FAIL trial is a surplus one, started by the second worker at the very moment the first took the last trial
    assert all(t.user_attrs.get("error", "").startswith("surplus") for t in all_trials if t.state.name == "FAIL")
    pids = {t.user_attrs["worker"]["pid"] for t in finished}
    assert os.getpid() not in pids, "trials ran in the main process, not in the workers"
    assert len(pids) == 2, f"expected both workers to run trials, got pids {pids}"
    assert result.pareto and all(p.path.is_file() for p in result.pareto)
    # each worker timed the uncached generations itself, with its own threads: speedups compare like with like
    threads = max(1, (os.cpu_count() or 1) // 2)
    for t in finished:
        if t.state.name == "COMPLETE":
            timed_on = t.user_attrs["timed_on"]
            assert (timed_on["pid"], timed_on["threads"]) == (t.user_attrs["worker"]["pid"], threads)


def test_two_workers_share_one_sqlite_study(tmp_path):
    result = run_search(trials=6, workers=2, out_dir=tmp_path, study="two-workers", **WORK)
    study = optuna.load_study(study_name="two-workers", storage=f"sqlite:///{tmp_path / 'study.db'}")
    check_two_workers(study, 6, result)
    assert sorted(p.name for p in (tmp_path / "workers").glob("worker_*.log")) == ["worker_0.log", "worker_1.log"]
    assert not list((tmp_path / "workers").glob("*.error"))


POSTGRES_URL = os.environ.get("CACHELAB_TEST_POSTGRES_URL")


@pytest.mark.skipif(
    not POSTGRES_URL,
    reason="CACHELAB_TEST_POSTGRES_URL is not set; run `source .ci/postgres.sh` to start a local PostgreSQL server",
)
def test_two_workers_share_one_postgres_study(tmp_path):
    name = f"cachelab-test-{uuid.uuid4().hex[:10]}"
    try:
        result = run_search(trials=6, workers=2, storage=POSTGRES_URL, out_dir=tmp_path, study=name, **WORK)
        study = optuna.load_study(study_name=name, storage=POSTGRES_URL)
        check_two_workers(study, 6, result)
        assert result.storage.startswith("postgresql")
    finally:
        try:
            optuna.delete_study(study_name=name, storage=POSTGRES_URL)
        except KeyError:
            pass
