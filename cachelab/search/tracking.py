"""Weights & Biases logging of a search (one run per trial, grouped by study, and one summary run) and of an
ablation (one run per arm, grouped by the ablation's name: :meth:`Tracker.log_run`).

Each trial run (``job_type="trial"``, ``group=<study>``) holds the policy dict and sampled parameters as config;
its summary the objective values (``objective/<name>``), ideal speedup, computed fraction overall and per site
kind (``computed_fraction/<kind>``), PSNR/SSIM/LPIPS and latency; its history a step x site reuse map image
(``reuse_map``) and a sample video (``sample``, the first prompt). The summary run (``job_type="summary"``) holds
a table of the Pareto front (``pareto``) and the Pareto plot (``pareto_plot``).

Mode: ``WANDB_MODE`` when set, else online when the user is logged in (``WANDB_API_KEY`` or a netrc entry for
the W&B host) and offline otherwise; nothing ever prompts. Any W&B failure is a warning: the search goes on.
"""

from __future__ import annotations

import netrc
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

__all__ = ["Tracker", "TrackingConfig", "logged_in", "wandb_mode"]

_SUMMARY_ATTRS = ("ideal_speedup", "computed_fraction", "macs", "total_macs", "latency_s", "measured_speedup",
                  "psnr", "ssim", "lpips", "pruned_reason", "error")


def logged_in() -> bool:
    """Whether W&B has an API key here (environment or netrc), without touching the network."""
    if os.environ.get("WANDB_API_KEY", "").strip():
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        auth = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def wandb_mode() -> str:
    """``online``, ``offline`` or ``disabled``."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode in ("online", "offline", "disabled"):
        return mode
    if mode in ("dryrun",):
        return "offline"
    if mode in ("run",):
        return "online"
    return "online" if logged_in() else "offline"


@dataclass
class TrackingConfig:
    enabled: bool = False
    group: str = ""
    out_dir: str = "."
    project: str | None = None
    setup: dict = field(default_factory=dict)


class Tracker:
    """Logs trials and the summary to W&B when enabled; every method is a no-op otherwise and never raises."""

    def __init__(self, config: TrackingConfig | None):
        self.config = config or TrackingConfig()
        self.enabled = self.config.enabled

    def _wandb(self):
        try:
            import wandb
        except ImportError as exc:
            self.enabled = False
            warnings.warn(f"W&B logging is off: wandb cannot be imported ({exc})", stacklevel=3)
            return None
        return wandb

    def _init(self, wandb, name: str, job_type: str, config: dict):
        c = self.config
        kwargs: dict[str, Any] = {
            "project": c.project or os.environ.get("WANDB_PROJECT") or "cachelab",
            "group": c.group,
            "name": name,
            "job_type": job_type,
            "config": config,
            "mode": wandb_mode(),
            "reinit": "create_new",
            "settings": wandb.Settings(console="off", silent=True, x_disable_stats=True),
        }
        # named on every run: wandb's settings outlive a run in a long process, and would keep the first one's dir
        directory = os.environ.get("WANDB_DIR") or str(c.out_dir)
        Path(directory).mkdir(parents=True, exist_ok=True)
        kwargs["dir"] = directory
        return wandb.init(**kwargs)

    def _log(self, wandb, name: str, job_type: str, config: dict, summary: dict, media: dict[str, Path],
             build: Callable[[Any], dict] | None = None) -> None:
        """One run: ``config``, ``summary``, ``media`` files (.png as images, .gif/.mp4 as videos) and what
        ``build(wandb)`` returns (tables and other W&B objects), logged once."""
        logged = {key: wandb.Image(str(path)) if Path(path).suffix == ".png"
                  else wandb.Video(str(path), format=Path(path).suffix[1:]) for key, path in media.items()}
        if build is not None:
            logged.update(build(wandb))
        run = self._init(wandb, name, job_type, config)
        try:
            if logged:
                run.log(logged)
            run.summary.update(summary)
        finally:
            run.finish()

    def log_run(self, name: str, job_type: str, config: dict, summary: dict, media: dict[str, Path] | None = None,
                build: Callable[[Any], dict] | None = None, what: str = "") -> None:
        """One run in the group (an ablation arm, a report); a failure warns that logging ``what`` failed."""
        if not self.enabled:
            return
        try:
            wandb = self._wandb()
            if wandb is not None:
                self._log(wandb, name, job_type, config, summary, media or {}, build)
        except Exception as exc:  # noqa: BLE001 - W&B must never stop the work it logs
            warnings.warn(f"W&B logging of {what or name} failed ({type(exc).__name__}: {exc}); the work goes on",
                          stacklevel=2)

    def log_trial(self, trial, measurement, objective_names) -> None:
        """One run for a finished trial (``optuna.trial.FrozenTrial``); ``measurement`` is None when pruned."""
        if not self.enabled:
            return
        try:
            wandb = self._wandb()
            if wandb is None:
                return
            from cachelab import media

            n = trial.number
            attrs = trial.user_attrs
            media_dir = Path(self.config.out_dir) / "media"
            logged = {}
            if measurement is not None and measurement.reuse:
                logged["reuse_map"] = media.reuse_map(measurement.reuse, media_dir / f"trial_{n}_reuse.png",
                                                      title=f"{self.config.group} trial {n}", roles=measurement.roles)
            if measurement is not None and measurement.sample is not None:
                logged["sample"] = media.save_video(measurement.sample[0], media_dir / f"trial_{n}_sample.gif")
            config = {"trial": n, "policy": attrs.get("policy"), "params": dict(trial.params), **self.config.setup}
            summary: dict[str, Any] = {"trial": n, "state": trial.state.name}
            if trial.values is not None:
                summary.update({f"objective/{k}": v for k, v in zip(objective_names, trial.values)})
            summary.update({k: attrs[k] for k in _SUMMARY_ATTRS if attrs.get(k) is not None})
            for kind, fraction in (attrs.get("computed_fraction_by_kind") or {}).items():
                if fraction is not None:
                    summary[f"computed_fraction/{kind}"] = fraction
            self._log(wandb, f"trial-{n}", "trial", config, summary, logged)
        except Exception as exc:  # noqa: BLE001 - W&B must never stop a search
            warnings.warn(f"W&B logging of trial {trial.number} failed ({type(exc).__name__}: {exc}); "
                          "the search goes on", stacklevel=2)

    def log_summary(self, columns: list[str], rows: list[list], plot_path: Path | None, summary: dict) -> None:
        """The summary run: the Pareto table and plot."""
        if not self.enabled:
            return
        try:
            wandb = self._wandb()
            if wandb is None:
                return
            run = self._init(wandb, f"{self.config.group}-summary", "summary", dict(self.config.setup))
            try:
                logged: dict[str, Any] = {"pareto": wandb.Table(columns=columns, data=rows)}
                if plot_path is not None:
                    logged["pareto_plot"] = wandb.Image(str(plot_path))
                run.log(logged)
                run.summary.update(summary)
            finally:
                run.finish()
        except Exception as exc:  # noqa: BLE001 - W&B must never stop a search
            warnings.warn(f"W&B logging of the search summary failed ({type(exc).__name__}: {exc})", stacklevel=2)
