"""cachelab report: one self-contained HTML dashboard of search, ablation and analysis directories or a study.

The inputs are written here in the shared formats (a hand-made study with the user attrs cachelab search records,
finished by the search's own ``write_results``; ablation and analysis directories with real PNGs and GIFs from
cachelab.media), so no search, ablation or analysis runs. The page is rendered once per module and checked as
HTML and in headless Chromium (Debian's package; .ci/run installs it).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from click.testing import CliRunner

from cachelab import media
from cachelab.bench import CaseResult
from cachelab.cli import main
from cachelab.manifest import write_manifest
from cachelab.search import build_space, parse_objectives
from cachelab.search.results import write_results
from cachelab.spec import policy_to_dict, resolve_policy

MODEL = "tiny-random-latte"
STEPS = 6
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
PANELS = ("pareto", "importances", "trials", "reuse-maps", "samples", "analysis")


@pytest.fixture(autouse=True)
def _no_wandb_login(monkeypatch, tmp_path):
    for var in ("WANDB_API_KEY", "WANDB_MODE", "NETRC", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


# ---------------------------------------------------------------------------------------------------- inputs


def make_study(directory: Path, name: str = "tiny-pab", trials: int = 6, model: str | None = MODEL
               ) -> tuple[optuna.Study, str]:
    """A pab study on ``model`` as cachelab search leaves it: setup attr, params, policy and measurements as user
    attrs, MACs and PSNR as values; then the search's own result files. ``model=None``: a study that records no
    model (the report then draws no plans, and builds no model)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    directory.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{directory / 'study.db'}"
    space = build_space("pab")
    objectives = parse_objectives("macs,psnr")
    study = optuna.create_study(study_name=name, storage=url, directions=objectives.directions,
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_user_attr("cachelab_setup", {"policy": "pab", "objectives": objectives.to_dict(),
                                           "workload": {"model": model, "steps": STEPS, "prompts": ["p"],
                                                        "seeds": [0], "guidance": 3.0}})
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        study.set_metric_names(list(objectives.names))
    for i in range(trials):
        trial = study.ask()
        policy = policy_to_dict(resolve_policy(space.policy_spec(space.suggest(trial))))
        fraction = 1.0 - 0.08 * i
        macs, psnr = 1e9 * fraction, 60.0 - 4.0 * i + (5.0 if i == 3 else 0.0)  # 3 dominates 2
        attrs = {"policy": policy, "macs": macs, "total_macs": 1e9, "computed_fraction": fraction,
                 "ideal_speedup": 1 / fraction, "psnr": psnr, "ssim": 0.99 - 0.01 * i, "latency_s": 0.1}
        if i == 0:
            attrs["baseline"] = "policy defaults"
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        study.tell(trial, [macs, psnr])
    write_results(study, objectives, directory, url)
    return study, url


def videos(n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"video {i}": torch.rand(4, 3, 8, 8, generator=g) for i in range(n)}


def make_ablation(directory: Path) -> None:
    """An ablation directory in the shared format: the uncached baseline and two arms."""
    arms_dir = directory / "arms"
    arms_dir.mkdir(parents=True)
    spec = {"name": "pab-intervals", "model": MODEL, "base": "pab"}
    write_manifest(directory, "ablation", name="pab-intervals", model=MODEL, spec=spec)
    (directory / "spec.yaml").write_text("name: pab-intervals\nmodel: tiny-random-latte\nbase: pab\n")
    rows = []
    for arm, fraction, psnr in (("uncached", 1.0, None), ("spatial_2", 0.8, 41.5), ("spatial_4", 0.6, 33.25)):
        result = CaseResult(arm, "uncached" if psnr is None else "cachelab", None if psnr is None else "pab",
                            latency_s=0.5 * fraction, latencies_s=[0.5 * fraction], total_macs=2e9,
                            computed_macs=2e9 * fraction, computed_fraction=fraction, ideal_speedup=1 / fraction,
                            psnr=psnr, ssim=None if psnr is None else psnr / 50)
        row = {"arm": arm, "overrides": {} if psnr is None else {"spatial_interval": int(arm[-1])},
               "policy": None if psnr is None else {"policy": "pab", "spatial_interval": int(arm[-1])},
               "result": dataclasses.asdict(result), "reuse_map": None, "sample": None,
               "finished": "2026-12-01T03:00:00+00:00"}
        if psnr is not None:
            plan = [[s % int(arm[-1]) == 0 for s in range(STEPS)] for _ in range(4)]
            media.reuse_map(plan, arms_dir / f"{arm}-reuse.png", title=arm, roles=["attn.spatial"] * 4)
            media.side_by_side(videos(2, len(rows)), arms_dir / f"{arm}-sample.gif")
            row["reuse_map"], row["sample"] = f"arms/{arm}-reuse.png", f"arms/{arm}-sample.gif"
        (arms_dir / f"{arm}.json").write_text(json.dumps(row))
        rows.append(row)
    table = {"name": "pab-intervals", "model": MODEL, "device": "cpu", "steps": STEPS, "guidance": 3.0,
             "prompts": ["a red circle moving left"], "seeds": [0], "repeats": 1, "rows": rows}
    (directory / "table.json").write_text(json.dumps(table))
    (directory / "table.csv").write_text("case,GMACs\n" + "".join(f"{r['arm']},1\n" for r in rows))


def make_analysis(directory: Path) -> None:
    """An analysis directory in the shared format, with its three plots."""
    from matplotlib.figure import Figure

    directory.mkdir(parents=True)
    write_manifest(directory, "analysis", model=MODEL)
    plots = {"adjacent_change": "adjacent_change.png", "cfg_difference": "cfg_difference.png",
             "cfg_frequency": "cfg_frequency.png"}
    rel = [None, 0.5, 0.25, 0.125, 0.1, 0.05]
    for i, file in enumerate(plots.values()):
        fig = Figure(figsize=(4, 3))
        ax = fig.add_subplot()
        ax.plot(range(STEPS), np.linspace(0, 1, STEPS) ** (i + 1))
        ax.set_title(file)
        fig.savefig(directory / file)
    data = {"model": MODEL, "steps": STEPS, "guidance": 3.0, "prompts": ["p"], "seeds": [0],
            "timesteps": [999.0, 800.0, 600.0, 400.0, 200.0, 0.0],
            "site_kinds": {"attn.spatial": {"adjacent_mse": [None, 4.0, 2.0, 1.0, 0.5, 0.25], "adjacent_rel_l1": rel,
                                            "sites": 2},
                           "attn.cross": {"adjacent_mse": [None, 1.0, 1.0, 1.0, 1.0, 1.0],
                                          "adjacent_rel_l1": [None, 0.01, 0.75, 0.01, 0.01, 0.01], "sites": 2}},
            "cfg": {"rel_diff": [0.5, 0.4, 0.3, 0.2, 0.1, 0.1], "low_freq_share": [0.9] * STEPS,
                    "high_freq_share": [0.1] * STEPS},
            "plots": plots}
    (directory / "analysis.json").write_text(json.dumps(data))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    make_study(root / "search")
    media.save_video(torch.rand(4, 3, 8, 8), root / "search" / "media" / "trial_0_sample.gif")  # as --wandb leaves
    make_ablation(root / "ablation")
    make_analysis(root / "analysis")
    return root


@pytest.fixture(scope="module")
def page(inputs) -> tuple[Path, str, str]:
    res = CliRunner().invoke(main, ["report", str(inputs)])
    assert res.exit_code == 0, res.output
    path = inputs / "report.html"
    return path, path.read_text(), res.output


# ------------------------------------------------------------------------------------------------------ HTML


def test_search_writes_a_manifest(inputs):
    manifest = json.loads((inputs / "search" / "manifest.json").read_text())
    assert manifest["kind"] == "search" and manifest["version"] == 1 and manifest["study"] == "tiny-pab"
    assert manifest["storage"].startswith("sqlite:///") and manifest["objectives"] == ["macs", "psnr"]
    assert manifest["directions"] == ["minimize", "maximize"] and manifest["cachelab_version"]


def test_report_holds_every_panel_and_nothing_from_the_network(page):
    path, html, output = page
    assert f"wrote {path}" in output and "ablation pab-intervals" in output and "analysis tiny-random-latte" in output
    for panel in PANELS:
        assert f'id="{panel}"' in html
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "<link" not in html and not re.search(r"<script[^>]+src", html)
    assert html.count("data:image/png;base64,") >= 1 + 1 + 2 + 3 + 3  # fronts, maps, analysis plots
    assert html.count("data:image/gif;base64,") == 3  # two arms' side-by-sides, one trial's sample
    assert "importance for macs" in html and "importance for psnr" in html and "reaching the Pareto front" in html
    assert "tiny-pab: 6 trials" in html and "pab-intervals on tiny-random-latte: 3 arms" in html
    for arm in ("uncached", "spatial_2", "spatial_4"):
        assert f">{arm}<" in html
    assert "policy defaults" in html  # the baseline trial is named
    assert "max at step" in html and "relative difference" in html


def test_report_lists_the_front_and_plans_each_front_trials_reuse(page):
    _, html, _ = page
    rows = re.findall(r"<tr( class=\"front\")?><td data-v=\"(\d+)\">", html)
    front = {int(n) for cls, n in rows if cls}
    assert front == {0, 1, 3, 4, 5}  # trial 2 is dominated
    planned = {int(n) for n in re.findall(r"trial (\d+) \(plan on tiny-random-latte\)", html)}
    assert planned == front  # no search media held a reuse map: each is the policy's plan on the model
    assert "trial 0 (first prompt)" in html  # the sample W&B tracking left


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (.ci/run installs Debian's package)")
def test_report_renders_in_headless_chromium(page, tmp_path):
    from PIL import Image

    path = page[0]
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND",  # no name resolves: no network
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000"]
    shot = tmp_path / "shot.png"
    # one run: the screenshot, and the DOM after the load event (virtual time lets the page's script finish)
    dom = subprocess.run([*flags, "--virtual-time-budget=5000", f"--screenshot={shot}", "--dump-dom",
                          path.resolve().as_uri()], check=True, capture_output=True, text=True, timeout=120).stdout
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(np.int64)
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels.std() > 20  # not a blank page
    colours = pixels[..., 0] << 16 | pixels[..., 1] << 8 | pixels[..., 2]
    assert len(np.unique(colours)) > 200  # text, plots and colours
    for panel in PANELS:
        assert f'id="{panel}"' in dom
    images = re.search(r'<body[^>]*data-images="(\d+)"[^>]*data-images-broken="(\d+)"', dom)
    assert images is not None, dom[:500]
    assert int(images.group(1)) == page[1].count("<img ") >= 13 and images.group(2) == "0"  # all decoded


# ------------------------------------------------------------------------------------------------------ studies


def test_report_of_a_study_by_name_or_by_url(tmp_path):
    _, url = make_study(tmp_path / "s", trials=3)
    out = tmp_path / "by-name.html"
    res = CliRunner().invoke(main, ["report", "tiny-pab", "--storage", url, "--out", str(out), "--reuse-maps", "0"])
    assert res.exit_code == 0, res.output
    html = out.read_text()
    assert "tiny-pab: 3 trials" in html and 'id="pareto"' in html and "plan on" not in html
    out2 = tmp_path / "by-url.html"
    res = CliRunner().invoke(main, ["report", url, "--out", str(out2), "--reuse-maps", "0"])
    assert res.exit_code == 0, res.output
    assert "tiny-pab: 3 trials" in out2.read_text()


def test_a_study_cachelab_did_not_make_gets_its_table_and_importances(tmp_path):
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    study = optuna.create_study(study_name="plain", storage=url, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1) ** 2 + t.suggest_int("y", 0, 3), n_trials=8)
    res = CliRunner().invoke(main, ["report", url, "--out", str(tmp_path / "plain.html")])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "plain.html").read_text()
    assert "plain: not a cachelab search (objectives [&#39;value_0&#39;]); no Pareto plot" in html
    assert "plain: 8 trials" in html and "plain: importance for value_0" in html and "logged no sample" not in html


def test_unknown_study_lists_the_studies(tmp_path):
    _, url = make_study(tmp_path / "s", trials=2)
    optuna.create_study(study_name="other", storage=url)
    res = CliRunner().invoke(main, ["report", "nope", "--storage", url])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "no study 'nope' in sqlite:///" in res.output and "'other', 'tiny-pab'" in res.output
    res = CliRunner().invoke(main, ["report", url])
    assert res.exit_code == 1 and "holds 2 studies ('other', 'tiny-pab'); name one" in res.output


def test_importances_say_why_they_cannot_be_computed(tmp_path):
    _, url = make_study(tmp_path / "s", trials=1)
    out = tmp_path / "one.html"
    res = CliRunner().invoke(main, ["report", url, "--out", str(out), "--reuse-maps", "0"])
    assert res.exit_code == 0, res.output
    assert "not computable: 1 complete trial(s); Optuna needs at least 2" in out.read_text()


def test_search_dir_without_manifest_or_study_reads_trials_csv(tmp_path):
    make_study(tmp_path / "old", trials=3)
    for name in ("manifest.json", "study.db"):
        (tmp_path / "old" / name).unlink()
    res = CliRunner().invoke(main, ["report", str(tmp_path / "old"), "--out", str(tmp_path / "old.html")])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "old.html").read_text()
    assert "old: 3 trials (trials.csv)" in html and "importances need the study" in html
    assert "data:image/png;base64," in html  # its pareto.png


# ------------------------------------------------------------------------------------------------------ errors


def test_a_directory_without_results_is_a_clear_error(tmp_path):
    (tmp_path / "empty" / "child").mkdir(parents=True)
    res = CliRunner().invoke(main, ["report", str(tmp_path / "empty")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert f"nothing to report in '{tmp_path / 'empty'}'" in res.output
    assert "manifest.json of kind search, ablation, analysis" in res.output and "trials.csv" in res.output
    res = CliRunner().invoke(main, ["report", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "is no directory" in res.output and "--storage" in res.output


def test_a_storage_file_that_is_not_there_is_named_not_created(tmp_path):
    res = CliRunner().invoke(main, ["report", f"sqlite:///{tmp_path / 'typo.db'}"])
    assert res.exit_code == 1 and f"no file '{tmp_path / 'typo.db'}'" in res.output
    assert not (tmp_path / "typo.db").exists()


def test_missing_files_and_absent_panels_are_said(tmp_path):
    make_ablation(tmp_path / "ablation")
    (tmp_path / "ablation" / "arms" / "spatial_4-sample.gif").unlink()
    make_analysis(tmp_path / "analysis")
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "report.html").read_text()
    missing = tmp_path / "ablation" / "arms" / "spatial_4-sample.gif"
    assert f"pab-intervals on tiny-random-latte: spatial_4 (uncached vs arm): {missing} is missing" in html
    importances = html[html.index('id="importances"'):html.index('id="trials"')]
    assert "Nothing of this kind in the inputs (it comes from a search study" in importances


def test_two_ablations_of_one_name_keep_their_own_pareto_plots(tmp_path):
    # one spec run on two models: same ablation name, other numbers; each must get its own drawn figure
    make_ablation(tmp_path / "model_a")
    make_ablation(tmp_path / "model_b")
    row_file = tmp_path / "model_b" / "arms" / "spatial_4.json"
    row = json.loads(row_file.read_text())
    row["result"]["psnr"] = 20.0
    row_file.write_text(json.dumps(row))
    table = json.loads((tmp_path / "model_b" / "table.json").read_text())
    table["rows"][2]["result"]["psnr"] = 20.0
    (tmp_path / "model_b" / "table.json").write_text(json.dumps(table))
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "report.html").read_text()
    pareto = html[html.index('id="pareto"'):html.index('id="importances"')]
    plots = re.findall(r'src="(data:image/png;base64,[^"]+)"', pareto)
    assert len(plots) == 2 and plots[0] != plots[1]


def test_a_manifest_of_unknown_kind_is_named(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"kind": "bench", "version": 1}))
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 1 and "kind 'bench' is not one cachelab report reads" in res.output


# ------------------------------------------------------------------------------------------------------ W&B


def test_wandb_gets_the_same_panels_offline(inputs, tmp_path, monkeypatch):
    from wandb_offline import read_runs

    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    (tmp_path / "wb").mkdir()
    res = CliRunner().invoke(main, ["report", str(inputs), "--out", str(tmp_path / "r.html"), "--reuse-maps", "1",
                                    "--wandb"])
    assert res.exit_code == 0, res.output
    (run,) = read_runs(tmp_path / "wb")
    assert run.job_type == "report" and run.config["sources"][0]["kind"] == "ablation"
    logged = {k: v for row in run.history for k, v in row.items() if isinstance(v, dict) and "_type" in v}
    types = {key.split("/")[0]: set() for key in logged}
    for key, value in logged.items():
        types[key.split("/")[0]].add(value["_type"])
        if "path" in value:
            assert (run.path.parent / "files" / value["path"]).is_file()
    assert types["pareto"] == {"image-file"} and types["reuse_maps"] == {"image-file"}
    assert types["trials"] == {"table-file"} and types["importances"] == {"table-file"}
    assert types["samples"] == {"video-file"} and types["analysis"] == {"image-file", "table-file"}
    arms = json.loads((run.path.parent / "files" / logged["trials/pab-intervals on tiny-random-latte: 3 arms"]["path"]).read_text())
    assert [row[0] for row in arms["data"]] == ["uncached", "spatial_2", "spatial_4"]


def test_data_dependent_policies_have_no_plan_to_draw(tmp_path):
    from cachelab.report import Section, _planned_maps

    policies = ({"policy": "fbcache"}, [{"policy": "fbcache"}, {"policy": "cfg_cache"}])
    trials = [optuna.trial.create_trial(values=[1.0, 2.0], user_attrs={"policy": p}) for p in policies]
    for number, trial in enumerate(trials):
        trial.number = number
    section = Section("search", "s", "test")
    _planned_maps(section, trials, {"model": MODEL, "steps": STEPS}, tmp_path)
    assert [f.title for f in section.reuse_maps] == [f"s: trial 1 (plan on {MODEL})"]  # cfg_cache's sites
    notes = section.notes["reuse-maps"]
    assert "trial 0: fbcache decide(s) while running (data-dependent): no plan ahead" in notes[0]
    assert "trial 1: fbcache decide(s) while running (data-dependent): the map shows only the other sites" in notes[1]


def test_wandb_failures_warn_and_the_report_is_written(tmp_path, monkeypatch):
    import wandb

    def broken(*args, **kwargs):
        raise RuntimeError("no W&B today")

    monkeypatch.setattr(wandb, "init", broken)
    make_ablation(tmp_path / "ablation")
    with pytest.warns(UserWarning, match=r"W&B logging of .* \(report\) failed \(RuntimeError: no W&B today\)"):
        res = CliRunner().invoke(main, ["report", str(tmp_path), "--wandb"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "report.html").is_file()
