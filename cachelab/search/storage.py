"""Opening an Optuna storage, and failing the trials that dead workers left RUNNING.

Storage URLs: any SQLAlchemy URL Optuna's ``RDBStorage`` takes (``sqlite:///runs/study.db``,
``postgresql+psycopg2://user:password@host/db``, ``mysql+pymysql://...``), ``journal:<path>`` for Optuna's
journal file (``JournalFileBackend``; one file shared by processes of one machine or over NFS), or ``memory``.

Trials left RUNNING by a killed process (SIGKILL, OOM, a lost machine) would block the study's trial count and
never finish. Two mechanisms clean them up, and both mark them FAIL (Optuna's convention for a trial that did not
finish; samplers ignore FAIL trials, and completed trials are untouched):

* every worker process registers itself (host, pid, process start time) in the study's user attrs
  (``cachelab_worker:<host>:<pid>``) before it asks for a trial, and every trial records its worker as the user
  attr ``worker`` first thing. Before each trial, a RUNNING trial whose worker ran on this host and is no longer
  alive is failed at once (so a search killed with ``kill -9`` and restarted immediately resumes without
  waiting). A RUNNING trial without a ``worker`` (killed between Optuna creating it and the objective's first
  line) is failed when every other registered worker is provably gone;
* RDB storages run Optuna's heartbeat (:data:`HEARTBEAT_INTERVAL_S`): a RUNNING trial with no heartbeat for
  :data:`HEARTBEAT_GRACE_S` seconds is failed by any worker of the study, on any machine.

Journal and in-memory storages have no heartbeat; there only the same-host checks apply (and a RUNNING trial without
a worker, while some registered worker may still live, is failed after :data:`ORPHAN_S` seconds).
"""

from __future__ import annotations

import datetime
import os
import socket
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from cachelab.search.errors import StorageError

WORKER_ATTR_PREFIX = "cachelab_worker:"

__all__ = [
    "HEARTBEAT_GRACE_S",
    "HEARTBEAT_INTERVAL_S",
    "ORPHAN_S",
    "WORKER_ATTR_PREFIX",
    "display_url",
    "fail_dead_trials",
    "is_memory",
    "open_storage",
    "register_worker",
    "state_counts",
    "worker_info",
]

HEARTBEAT_INTERVAL_S = 30
HEARTBEAT_GRACE_S = 120
ORPHAN_S = 600
_MEMORY = ("memory", ":memory:", "inmemory", "in-memory")


def is_memory(url: str) -> bool:
    return url.strip().lower() in _MEMORY


def display_url(url: str) -> str:
    """The URL with any password masked, for messages."""
    if "://" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - any URL sqlalchemy cannot parse is shown as given
        return url


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``; :class:`StorageError` naming the URL when it cannot be opened."""
    shown = display_url(url)
    hint = ("give an Optuna storage URL such as sqlite:///runs/study.db, "
            "postgresql+psycopg2://user:password@host/db, journal:runs/study.log or memory")
    if not isinstance(url, str) or not url.strip():
        raise StorageError(f"storage {url!r} is empty; {hint}")
    if is_memory(url):
        return optuna.storages.InMemoryStorage()
    try:
        if url.startswith("journal:"):
            path = Path(url[len("journal:"):]).expanduser()
            if not str(path) or path.is_dir():
                raise OSError(f"{str(path)!r} is not a file path")
            path.parent.mkdir(parents=True, exist_ok=True)
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        if "://" not in url:
            raise ValueError("not a URL")
        engine_kwargs = {}
        if url.startswith("sqlite:"):
            _make_sqlite_dir(url)
            engine_kwargs = {"connect_args": {"timeout": 60}}  # workers wait for each other's writes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_INTERVAL_S,
                grace_period=HEARTBEAT_GRACE_S,
            )
        if url.startswith("sqlite:"):
            _serialise_sqlite(storage.engine)
        return storage
    except Exception as exc:  # noqa: BLE001 - drivers raise anything; all of it means 'cannot open'
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if isinstance(exc, ImportError) or isinstance(exc.__cause__, ImportError):
            cause = exc.__cause__ or exc
            reason += f" ({cause}); install the database driver, e.g. pip install psycopg2-binary for PostgreSQL"
        raise StorageError(f"cannot open the study storage {shown!r}: {reason}; {hint}") from None


def _serialise_sqlite(engine) -> None:
    """Every SQLite transaction takes the write lock when it begins (``BEGIN IMMEDIATE``). Optuna claims a WAITING
    trial (the enqueued baseline) by reading its state and writing RUNNING in one transaction with ``SELECT ... FOR
    UPDATE``, which SQLite ignores: two workers asking at the same moment both read WAITING and both ran the trial."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _manual_transactions(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # the driver's own implicit BEGIN would come first

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while Optuna created its tables predate the listeners


def _make_sqlite_dir(url: str) -> None:
    path = url.split("///", 1)[1] if "///" in url else ""
    path = path.split("?", 1)[0]
    if path and path != ":memory:":
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)


# ------------------------------------------------------------------------------------------------ dead workers


def _process_start(pid: int) -> str | None:
    """The kernel's start time of a process (Linux), to tell a reused pid from the original process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def worker_info() -> dict:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _process_start(pid)}


def register_worker(study: optuna.Study, device: str | None = None) -> dict:
    """Record this process as a worker of ``study`` (before it asks for trials); returns its identity, with the
    device it runs trials on."""
    info = {**worker_info(), "device": device}
    study.set_user_attr(f"{WORKER_ATTR_PREFIX}{info['host']}:{info['pid']}", info)
    return info


def _alive(worker: dict) -> bool | None:
    """Whether the worker process still runs; None when it ran on another host (unknown here)."""
    if worker.get("host") != socket.gethostname():
        return None
    pid = worker.get("pid")
    if not isinstance(pid, int):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = worker.get("start")
    return start is None or _process_start(pid) in (None, start)


def fail_dead_trials(study: optuna.Study, heartbeat: bool) -> list[int]:
    """Mark FAIL the RUNNING trials whose worker is gone; returns their numbers.

    ``heartbeat``: whether the storage runs Optuna's heartbeat (RDB storages opened by :func:`open_storage`).
    """
    failed = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # no-op without a heartbeat
    now = datetime.datetime.now()
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return failed
    me = worker_info()
    # this process's own trials always hold their worker when it gets here (its trials run in this thread)
    others = [w for k, w in study.user_attrs.items() if k.startswith(WORKER_ATTR_PREFIX) and isinstance(w, dict)
              and (w.get("host"), w.get("pid")) != (me["host"], me["pid"])]
    others_may_live = any(_alive(w) is not False for w in others)
    for trial in running:
        worker = trial.user_attrs.get("worker")
        if isinstance(worker, dict):
            dead = _alive(worker) is False
            why = f"its worker (pid {worker.get('pid')} on {worker.get('host')}) is gone"
        elif not others_may_live:
            dead, why = True, "it recorded no worker and every worker that could have started it is gone"
        else:
            age = (now - trial.datetime_start).total_seconds() if trial.datetime_start else 0.0
            dead = not heartbeat and age > ORPHAN_S
            why = f"it recorded no worker in {ORPHAN_S} s"
        if not dead:
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another process finished or failed it meanwhile
        warnings.warn(f"trial {trial.number} was left RUNNING and is marked FAIL: {why}", stacklevel=2)
        failed.append(trial.number)
    return failed


def state_counts(study: optuna.Study) -> dict[str, int]:
    counts = {state.name: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] += 1
    return counts
