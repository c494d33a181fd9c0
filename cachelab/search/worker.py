"""A search worker process: ``python -m cachelab.search.worker PAYLOAD.json INDEX DEVICE`` (started by
:func:`cachelab.search.run_search`). It loads the model, reads the reference videos the main process computed, and
runs trials on the shared study until the study holds its trials. On failure it writes the reason to
``<out>/workers/worker_<INDEX>.error`` and exits with status 1."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path


def main(argv: list[str]) -> int:
    payload_path, index, device = Path(argv[0]), int(argv[1]), argv[2]
    error_path = payload_path.parent / f"worker_{index}.error"
    try:
        import optuna
        import torch

        from cachelab.policies.registry import load_plugin
        from cachelab.zoo.registry import create_model
        from cachelab.search.errors import SearchError
        from cachelab.search.objectives import Evaluator, Workload, load_references, parse_objectives
        from cachelab.search.space import build_space
        from cachelab.search.storage import open_storage
        from cachelab.search.study import _optimize, _sampler
        from cachelab.search.tracking import Tracker, TrackingConfig

        payload = json.loads(payload_path.read_text())
        for module in payload.get("plugins", []):
            load_plugin(module)
        if payload["threads"] and not os.environ.get("OMP_NUM_THREADS"):
            torch.set_num_threads(payload["threads"])
        if device.startswith("cuda"):
            torch.cuda.set_device(device)
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        space = build_space(payload["policy"], payload["space"])
        if space.fingerprint() != payload["space_hash"]:
            raise SearchError("the search space built in a worker differs from the main process's")
        o = payload["objectives"]
        objs = parse_objectives(o["names"], o["floor"] or None, o["ceiling"] or None)
        w = payload["workload"]
        workload = Workload(w["model"], tuple(w["prompts"]), tuple(w["seeds"]), w["steps"], w["guidance"])
        model = create_model(workload.model, device=device)
        # the main process computed them, unless this worker's device is of another model
        references = load_references(model, workload, Path(payload["out_dir"]) / "references")
        study = optuna.load_study(study_name=payload["study"], storage=open_storage(payload["storage"]))
        study.sampler = _sampler(payload["seed"], index + 1, len(study.get_trials(deepcopy=False)))
        tracker = Tracker(TrackingConfig(**payload["tracking"]))
        _wait_for_the_others(payload_path.parent, index, payload.get("n_workers", 1))
        _optimize(study, space, objs, Evaluator(model, workload, references, objs), tracker, payload["trials"],
                  payload["heartbeat"], device=device)
        return 0
    except BaseException as exc:  # noqa: BLE001 - everything (KeyboardInterrupt too) goes to the main process
        from cachelab.errors import CachelabError

        text = str(exc) if isinstance(exc, CachelabError) else traceback.format_exc()
        error_path.write_text(text)
        print(text, file=sys.stderr)
        return 1


def _wait_for_the_others(run_dir: Path, index: int, n_workers: int, timeout: float = 120.0) -> None:
    """Start trials together: a worker that loaded its model first would otherwise take every trial of a short
    study before the others are ready. Gives up waiting after ``timeout`` seconds (a slow worker only loses work)."""
    import time

    (run_dir / f"worker_{index}.ready").touch()
    deadline = time.monotonic() + timeout
    while len(list(run_dir.glob("worker_*.ready"))) < n_workers and time.monotonic() < deadline:
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
