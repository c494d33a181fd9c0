"""The ``cachelab`` command (click)."""

from __future__ import annotations

import sys

import click
import yaml
from rich.console import Console
from rich.table import Table

import cachelab
from cachelab.describe import describe_config
from cachelab.errors import CachelabError

console = Console(width=160)


def parse_params(items: tuple[str, ...]) -> dict:
    """``("window.start=0.3", "interval=3")`` -> ``{"window": {"start": 0.3}, "interval": 3}`` (YAML values)."""
    params: dict = {}
    for item in items:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} is not of the form key=value", param_hint="--param")
        key, raw = item.split("=", 1)
        if not key:
            raise click.BadParameter(f"{item!r} has an empty key", param_hint="--param")
        value = yaml.safe_load(raw) if raw else ""
        node = params
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise click.BadParameter(f"{key!r} sets a field inside a value that is not a mapping", param_hint="--param")
        node[parts[-1]] = value
    return params


class _Group(click.Group):
    """Turns cachelab's own errors into one clear line instead of a traceback, and keeps the arguments it was
    given (``ctx.meta["argv"]``) for the files that record the command that made them."""

    def parse_args(self, ctx, args):
        ctx.meta["argv"] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CachelabError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group)
@click.version_option(cachelab.__version__, prog_name="cachelab")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE", envvar="CACHELAB_PLUGINS",
              help="import a module (dotted name or .py file) whose policies join the registry; repeatable "
                   "(also $CACHELAB_PLUGINS, space-separated). Installed packages can declare an entry point in "
                   "the group 'cachelab.policies' instead.")
def main(plugins: tuple[str, ...]) -> None:
    """cachelab: cache policies that make diffusion transformers generate faster without retraining."""
    from cachelab.policies.registry import load_plugin

    for module in plugins:
        load_plugin(module)


@main.command()
@click.argument("pattern", default="*")
def policies(pattern: str) -> None:
    """List registered policies with every parameter, its default, allowed range and meaning."""
    names = cachelab.list_policies(pattern)
    if not names:
        raise click.ClickException(f"no policy matches {pattern!r}; known: {', '.join(cachelab.list_policies())}")
    for name in names:
        cls = cachelab.policy_class(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        table = Table(title=f"[bold]{name}[/bold] — {doc}", title_justify="left", show_lines=False)
        for column in ("parameter", "type", "default", "allowed", "meaning"):
            table.add_column(column, overflow="fold")
        for row in describe_config(cls.Config):
            table.add_row(row.name, row.type, repr(row.default), row.allowed, row.meaning)
        console.print(table)


# -- models: run and bench ---------------------------------------------------------------------------------------
def _device_option(fn):
    return click.option("--device", default=None, help="cuda, cuda:1, cpu ... (default: cuda when available)")(fn)


def _load_model(name: str, device: str | None):
    from cachelab.zoo.registry import create_model

    model = create_model(name, device=device)
    if not model.trained:
        console.print(f"[yellow]{name} has random weights: latency and MACs are real, quality numbers are meaningless.[/yellow]")
    return model


def _check_generation(model, steps: int, frames: int | None, size: int | None) -> None:
    from cachelab.zoo.registry import ModelError

    if not 1 <= steps <= 1000:
        raise ModelError(f"--steps {steps}: give between 1 and 1000 sampling steps")
    for option, value in (("frames", frames), ("size", size)):
        fixed = model.limits.get(option)
        if value is not None and fixed is not None and value != fixed:
            raise ModelError(f"--{option} {value}: {model.name} generates {model.limits['frames']} frames of "
                             f"{model.limits['size']}x{model.limits['size']} (its training size); omit --{option} or give {fixed}")
        if value is not None and fixed is None:
            raise ModelError(f"--{option}: {model.name} has a fixed generation size; omit --{option}")


def _policy_from(policy: str | None, params: tuple[str, ...], config: str | None):
    from cachelab.spec import resolve_policy

    if policy and config:
        raise click.UsageError("give --policy (with --param) or --config, not both")
    if config:
        if params:
            raise click.UsageError("--param goes with --policy; edit the --config file instead")
        return resolve_policy(config)
    if policy:
        return resolve_policy(policy, **parse_params(params))
    if params:
        raise click.UsageError("--param needs --policy")
    return None


@main.command()
@click.option("--model", "model_name", required=True, help="a registered model (cachelab models)")
@click.option("--prompt", required=True)
@click.option("--policy", default=None, help="a policy name (cachelab policies); none = uncached")
@click.option("--param", "params", multiple=True, help="policy parameter key=value (dotted keys for nested ones)")
@click.option("--config", default=None, type=click.Path(), help="a policy YAML/JSON file (e.g. written by search)")
@click.option("--out", required=True, type=click.Path(), help="video file to write: .gif or .mp4")
@click.option("--steps", default=None, type=int, help="sampling steps (default: the model's)")
@click.option("--guidance", default=None, type=float, help="guidance scale (default: the model's)")
@click.option("--seed", default=0, type=int)
@click.option("--frames", default=None, type=int, help="must match the model's frame count")
@click.option("--size", default=None, type=int, help="must match the model's frame size")
@click.option("--compare", is_flag=True, help="also run uncached: print speedup, PSNR and SSIM against it")
@_device_option
def run(model_name, prompt, policy, params, config, out, steps, guidance, seed, frames, size, compare, device):
    """Generate one video with a policy and report latency and MACs."""
    from cachelab import media, metrics
    from cachelab.timing import timed, warmup_steps

    chosen = _policy_from(policy, params, config)
    media.check_writable(out, media.VIDEO_SUFFIXES)
    model = _load_model(model_name, device)
    steps = model.steps if steps is None else steps
    guidance = model.guidance if guidance is None else guidance
    _check_generation(model, steps, frames, size)
    model.check_prompt(prompt)
    dev = next(model.transformer.parameters()).device

    def warm_then_time(handle=None):  # cached and uncached alike; the policy's MAC profiling runs in the warm-up
        warmup = warmup_steps(steps, handle)
        model.generate([prompt], [seed], warmup, guidance)
        return (*timed(lambda: model.generate([prompt], [seed], steps, guidance), dev), warmup)

    stats = None
    if chosen is not None:
        with cachelab.apply(model.target, chosen, cfg=model.cfg) as handle:
            video, latency, warmup = warm_then_time(handle)
            stats = handle.stats()  # of the timed generation
    else:
        video, latency, warmup = warm_then_time()
    path = media.save_video(video[0], out)
    label = chosen.name if chosen is not None and getattr(chosen, "name", "") else ("composition" if chosen else "uncached")
    console.print(f"{model.name} | {label} | {steps} steps, guidance {guidance}, seed {seed}")
    console.print(f"latency {latency:.3f} s on {dev} (after a {warmup}-step warm-up)")
    if stats is not None:
        console.print(stats.table())
    if compare and chosen is not None:
        reference, base_latency, base_warmup = warm_then_time()
        quality = metrics.compare_videos(video, reference)
        warmups = (f"both after a {warmup}-step warm-up" if warmup == base_warmup
                   else f"after warm-ups of {warmup} and {base_warmup} steps")
        console.print(f"uncached latency {base_latency:.3f} s -> speedup {base_latency / latency:.2f}x (one timed run "
                      f"each, {warmups})")
        console.print(metrics.format_comparison(quality))
    console.print(f"wrote {path}" + ("" if model.trained else " (three latent channels of a random-weight model)"))


def _print_report(report, title: str, extra_lines: list[str] = ()) -> None:
    """The bench's table of ``report`` on the console, then ``extra_lines`` and a legend of the columns.

    A refusing or failing row's reason goes under the table, where it has the width to be read; columns no row has
    a value in (peak memory off CUDA, LPIPS without its weights, the spread of one run) are said once under the
    table instead of filling it."""
    from cachelab import bench as benchmod

    rows = benchmod.format_table(report)
    shown = [i for i in range(len(rows[0])) if i < 2 or any(
        row[i] not in benchmod.NO_VALUE for row, result in zip(rows[1:], report.results) if not result.error)]
    table = Table(title=title, title_justify="left")
    for i in shown:
        table.add_column(rows[0][i], overflow="fold")
    notes = []
    for row, result in zip(rows[1:], report.results):
        if result.error:
            notes.append(f"[{len(notes) + 1}] {result.name}: {result.error}")
            row = [row[0], f"{'refuses' if result.refused else 'failed'} [{len(notes)}]"] + row[2:]
        table.add_row(*(row[i] for i in shown))
    console.print(table)
    for line in notes + list(extra_lines):
        console.print(line)
    hidden = [rows[0][i] for i in range(len(rows[0])) if i not in shown]
    console.print(benchmod.legend(report, hidden), style="dim")


@main.command()
@click.option("--model", "model_name", required=True, help="a registered model (cachelab models)")
@click.option("--policies", default=None,
              help="comma-separated policy names (default: every registered policy; 'none' for no policy rows)")
@click.option("--steps", default=None, type=int,
              help="sampling steps (default: 50 on a GPU; on the CPU the fewest at which the model's videos read "
                   "well: 20 for tiny-cogvideox, 50 for tiny-latte)")
@click.option("--prompts", "num_prompts", default=None, type=int, help="prompts (default: 16 on a GPU, 4 on the CPU)")
@click.option("--guidance", default=None, type=float, help="guidance scale (default: the model's)")
@click.option("--repeats", default=None, type=int, help="timed generations per case (default: 3 on a GPU, 1 on the CPU)")
@click.option("--diffusers/--no-diffusers", "with_diffusers", default=False,
              help="also time diffusers' own PAB and FasterCache at the same schedule as cachelab's")
@click.option("--overhead/--no-overhead", default=True, help="include hooks that never reuse (framework overhead)")
@click.option("--json", "json_path", default=None, type=click.Path(), help="write the full report as JSON")
@click.option("--samples/--no-samples", default=True, help="write a side-by-side GIF of the first prompt")
@click.option("--out-dir", default="bench-out", show_default=True, type=click.Path(),
              help="where the markdown table and the side-by-side sample go")
@_device_option
def bench(model_name, policies, steps, num_prompts, guidance, repeats, with_diffusers, overhead, json_path, samples,
          out_dir, device):
    """Uncached baseline and every policy on the same prompts and seeds: cost, speed, memory and quality."""
    import warnings
    from pathlib import Path

    from cachelab import bench as benchmod
    from cachelab import media

    if policies is None:
        names = cachelab.list_policies()
    elif policies.strip().lower() == "none":
        names = []
    else:
        names = [p.strip() for p in policies.split(",") if p.strip()]
    for name in names:
        cachelab.policy_class(name)  # unknown names fail before any work
    model = _load_model(model_name, device)
    on_gpu = next(model.transformer.parameters()).device.type == "cuda"
    steps = (50 if on_gpu else model.quick_steps) if steps is None else steps
    num_prompts = (16 if on_gpu else 4) if num_prompts is None else num_prompts
    repeats = repeats or (3 if on_gpu else 1)
    guidance = model.guidance if guidance is None else guidance
    _check_generation(model, steps, None, None)
    if num_prompts < 1:
        raise click.BadParameter("give at least one prompt", param_hint="--prompts")
    cases = [benchmod.Case("uncached", "uncached")]
    if overhead:
        cases.append(benchmod.Case(benchmod.OVERHEAD_CASE, "cachelab", benchmod.NEVER_REUSE))
    cases += benchmod.policy_cases(names)
    if with_diffusers:
        cases += benchmod.diffusers_cases(model, steps)
    prompts = model.prompts(num_prompts)
    seeds = list(range(num_prompts))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sample_videos: dict[str, object] = {}

    def keep_sample(result, videos):
        sample_videos[result.name] = videos[0]

    with warnings.catch_warnings():
        # a policy that reused nothing is named once under the table (legend) instead of a warning per case
        warnings.simplefilter("ignore", cachelab.NothingReusedWarning)
        report = benchmod.run_bench(model, cases, prompts, seeds, steps, guidance, repeats,
                                    on_result=keep_sample if samples else None)
    _print_report(report, f"{model.name} on {report.device}: {steps} steps, guidance {guidance}, {num_prompts} "
                          f"prompts, {repeats} timed run(s) per case", benchmod.pair_comparisons(report))
    if not model.trained:
        console.print("[yellow]random weights: PSNR/SSIM/prompt following are meaningless here[/yellow]")
    (out / f"{model.name}.md").write_text(benchmod.markdown_table(report) + "\n")
    written = [out / f"{model.name}.md"]
    if json_path:
        report.save_json(json_path)
        written.append(Path(json_path))
    console.print("wrote " + ", ".join(str(p) for p in written))
    if sample_videos:
        gif = media.side_by_side(sample_videos, out / f"{model.name}-sample.gif")
        console.print(f"sample {gif}: {prompts[0]!r} (seed {seeds[0]}), uncached and each case side by side")
    # a policy that refuses the model says why in the table; only cachelab cases that broke fail the command
    broken = [r.name for r in report.results if r.error and not r.refused and r.kind != "diffusers"]
    if broken:
        raise click.ClickException(f"cases failed: {', '.join(broken)} (see the table)")


@main.command()
@click.option("--model", "model_name", required=True, help="a registered model (cachelab models)")
@click.option("--policy", required=True, type=click.Choice(["magcache", "teacache"]), help="the policy to calibrate")
@click.option("--prompts", "num_prompts", default=4, show_default=True, type=int,
              help="how many of the model's prompts (seeds 0..K-1), one uncached generation each")
@click.option("--steps", default=None, type=int, help="sampling steps (default: the model's); the policy then runs "
              "at this step count")
@click.option("--guidance", default=None, type=float, help="guidance scale (default: the model's)")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="YAML file to write")
@click.option("--progress/--no-progress", default=True, help="show a progress bar")
@_device_option
def calibrate(model_name, policy, num_prompts, steps, guidance, out, progress, device):
    """Fit a policy's per-model values from uncached generations (teacache: its rescaling polynomial; magcache:
    its per-step magnitude ratios) and write them as a YAML file the policy takes with calibration=FILE."""
    import warnings

    from tqdm.auto import tqdm

    from cachelab.policies.calibration import Calibration, Recorder, identity

    model = _load_model(model_name, device)
    steps = model.steps if steps is None else steps
    guidance = model.guidance if guidance is None else guidance
    _check_generation(model, steps, None, None)
    if num_prompts < 1:
        raise click.BadParameter("give at least one prompt", param_hint="--prompts")
    prompts = model.prompts(num_prompts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cachelab.NothingReusedWarning)  # recording never reuses
        with cachelab.apply(model.target, Recorder(policy), cfg=model.cfg, count_macs=False) as handle:
            for seed, prompt in enumerate(tqdm(prompts, desc=f"calibrate {policy} on {model.name}", disable=not progress)):
                model.generate([prompt], [seed], steps, guidance)
            values = handle.policy.fit(steps)
    model_class, fingerprint = identity(model.transformer)
    found = Calibration(policy, model.name, model_class, fingerprint, steps, values, prompts, cachelab.__version__)
    path = found.save(out)
    console.print(f"{policy} on {model.name} ({model_class}, fingerprint {fingerprint}), {steps} steps, "
                  f"{num_prompts} prompts: {', '.join(f'{v:.4g}' for v in values)}")
    console.print(f"wrote {path}; use it with --param calibration={path} (cachelab.apply(..., '{policy}', "
                  f"calibration='{path}'))")


@main.command()
@click.option("--model", "model_name", required=True, help="a registered model (cachelab models)")
@click.option("--prompts", "num_prompts", default=None, type=int, help="prompts (default: 8 on a GPU, 2 on the CPU)")
@click.option("--steps", default=None, type=int, help="sampling steps (default: 50 on a GPU, 20 on the CPU)")
@click.option("--guidance", default=None, type=float, help="guidance scale (default: the model's; 1 = no CFG)")
@click.option("--seed", default=0, show_default=True, type=int, help="seed of the first prompt (prompt i: seed + i)")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="output directory [default: analysis/MODEL]")
@click.option("--progress/--no-progress", default=True, help="show a progress bar")
@_device_option
def analyze(model_name, num_prompts, steps, guidance, seed, out_dir, progress, device):
    """Measure the redundancy caches exploit, on uncached generations: per site kind, how much outputs change
    between adjacent steps; per step, the conditional vs unconditional difference and its frequency shares."""
    from pathlib import Path

    from cachelab.analysis import analyze as run_analysis

    model = _load_model(model_name, device)
    on_gpu = next(model.transformer.parameters()).device.type == "cuda"
    steps = (50 if on_gpu else 20) if steps is None else steps
    num_prompts = (8 if on_gpu else 2) if num_prompts is None else num_prompts
    guidance = model.guidance if guidance is None else guidance
    _check_generation(model, steps, None, None)
    if num_prompts < 1:
        raise click.BadParameter("give at least one prompt", param_hint="--prompts")
    out = Path(out_dir) if out_dir else Path("analysis") / model.name
    result = run_analysis(model, num_prompts, steps=steps, guidance=guidance, seed=seed, progress=progress)
    command = ["cachelab", "analyze", "--model", model.name, "--prompts", str(num_prompts), "--steps", str(steps),
               "--guidance", f"{guidance:g}", "--seed", str(seed), "--out", str(out)]
    if device:
        command += ["--device", device]
    written = result.save(out, command)
    for table in result.tables():
        console.print(table)
    for line in result.summary_lines():
        console.print(line)
    console.print("wrote " + ", ".join(str(p) for p in written))


@main.command()
@click.argument("pattern", default="*")
def models(pattern: str) -> None:
    """List registered models."""
    from cachelab.zoo.registry import list_models, model_entry

    table = Table(title="cachelab models", title_justify="left")
    for column in ("model", "weights", "description"):
        table.add_column(column, overflow="fold")
    for name in list_models(pattern):
        entry = model_entry(name)
        table.add_row(name, "trained" if entry.trained else "random (latency only)", entry.description)
    console.print(table)


# ------------------------------------------------------------------------------------------------ cachelab search


@main.command()
@click.option("--model", default="tiny-latte", show_default=True, help="registered model name")
@click.option("--policy", "policy", multiple=True, metavar="NAME",
              help="policy to tune [default: fastercache]; compose with + or by repeating: --policy pab+cfg_cache")
@click.option("--trials", type=int, default=40, show_default=True,
              help="finished trials the study should hold; a resumed study runs the rest")
@click.option("--objectives", default="macs,psnr", show_default=True,
              help="a cost (macs, latency) and quality metrics (psnr, ssim, lpips), comma-separated; "
              "or one objective with --floor / --ceiling")
@click.option("--prompts", type=int, default=4, show_default=True, help="how many of the model's prompts (seeds 0..K-1)")
@click.option("--storage", default=None,
              help="Optuna storage URL, e.g. postgresql+psycopg2://user:pw@host/db, journal:FILE or memory "
              "[default: sqlite:///OUT/study.db]")
@click.option("--study", "study", default=None, help="study name [default: MODEL-POLICY]; an existing study resumes")
@click.option("--workers", type=int, default=None,
              help="worker processes on the study [default: one per GPU when several are visible, else 1]")
@click.option("--wandb/--no-wandb", "use_wandb", default=False,
              help="log every trial and a summary to Weights & Biases (offline unless logged in)")
@click.option("--wandb-project", default=None, help="W&B project [default: $WANDB_PROJECT or cachelab]")
@click.option("--space", type=click.Path(dir_okay=False), default=None,
              help="YAML file fixing or overriding parameters of the policy's search space")
@click.option("--floor", multiple=True, metavar="METRIC=VALUE",
              help="quality floor, e.g. psnr=28 (for lpips an upper bound); repeatable")
@click.option("--ceiling", multiple=True, metavar="COST=VALUE",
              help="cost ceiling: macs=0.5 (fraction of the uncached MACs) or latency=2.5 (seconds)")
@click.option("--steps", type=int, default=None, help="sampling steps [default: the model's]")
@click.option("--guidance", type=float, default=None, help="guidance scale [default: the model's]")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="output directory for references, pareto_<i>.yaml, pareto.png, trials.csv [default: runs/STUDY]")
@click.option("--seed", type=int, default=None, help="sampler seed [default: random]")
@click.option("--progress/--no-progress", default=True, help="show a progress bar")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="run the policy's default configuration as the first trial, to compare against")
def search(model, policy, trials, objectives, prompts, storage, study, workers, use_wandb, wandb_project, space, floor,
           ceiling, steps, guidance, out_dir, seed, progress, baseline) -> None:
    """Search a policy's schedule for the best cost/quality trade-offs (Optuna; resumable, parallel, W&B)."""
    from cachelab.search import run_search

    names = [n.strip() for item in policy for n in item.replace(",", "+").split("+") if n.strip()] or ["fastercache"]
    result = run_search(
        model=model, policy=names[0] if len(names) == 1 else names, trials=trials, objectives=objectives,
        prompts=prompts, storage=storage, study=study, workers=workers, wandb=use_wandb, space=space,
        floor=list(floor) or None, ceiling=list(ceiling) or None, steps=steps, guidance=guidance, out_dir=out_dir,
        seed=seed, progress=progress, wandb_project=wandb_project, baseline=baseline,
    )
    console.print(result.table())
    if result.baseline_line():
        console.print(result.baseline_line())
    if not result.pareto:
        console.print("[yellow]no complete trial meets the bounds: nothing on the Pareto front[/yellow]")
    for path in result.yaml_paths:
        console.print(f"policy   {path}")
    if result.plot_path is not None:
        console.print(f"plot     {result.plot_path}")
    console.print(f"trials   {result.csv_path}")
    console.print(f"study    {result.study_name!r} in {result.storage}")


@main.command()
@click.argument("spec_path", metavar="SPEC.yaml", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="output directory [default: ablations/<spec file stem>]; finished arms there are skipped")
@click.option("--model", "model_name", default=None, help="run the spec on this model instead of its own")
@click.option("--prompts", "num_prompts", type=int, default=None, help="how many of the model's prompts, "
              "instead of the spec's")
@click.option("--steps", type=int, default=None, help="sampling steps, instead of the spec's")
@click.option("--repeats", type=int, default=None, help="timed generations per arm, instead of the spec's")
@click.option("--restart", is_flag=True, help="discard the arms in the output directory and run every one again")
@click.option("--wandb/--no-wandb", "use_wandb", default=True, show_default=True,
              help="one W&B run per arm, grouped by the ablation's name (offline unless logged in)")
@click.option("--wandb-project", default=None, help="W&B project [default: $WANDB_PROJECT or cachelab]")
@click.option("--samples/--no-samples", default=True, show_default=True,
              help="a side-by-side GIF (uncached vs arm, first prompt) per arm")
@click.option("--progress/--no-progress", default=True, help="show a progress bar over the arms")
@_device_option
def ablate(spec_path, out_dir, model_name, num_prompts, steps, repeats, restart, use_wandb, wandb_project, samples,
           progress, device) -> None:
    """Run an ablation: a base policy and named arms on the same prompts and seeds (resumable; W&B; table)."""
    from pathlib import Path

    from cachelab.ablation import load_spec, run_ablation

    spec = load_spec(spec_path, model=model_name, prompts=num_prompts, steps=steps, repeats=repeats)
    out = Path(out_dir) if out_dir else Path("ablations") / Path(spec_path).stem
    result = run_ablation(spec, out, device=device, wandb=use_wandb, wandb_project=wandb_project, restart=restart,
                          samples=samples, progress=progress, command=["cachelab", *click.get_current_context().meta["argv"]],
                          echo=console.print)
    report = result.report
    _print_report(report, f"ablation {spec.name!r}: {report.model} on {report.device}, {report.steps} steps, "
                          f"guidance {report.guidance}, {len(report.prompts)} prompts, {report.repeats} timed run(s) "
                          "per arm")
    for arm, finding in spec.paper.items():
        console.print(f"paper, {arm}: {finding}")
    if spec.expected:
        console.print(f"expected: {spec.expected}")
    if not result.report.trained:
        console.print("[yellow]random weights: PSNR/SSIM/prompt following are meaningless here[/yellow]")
    if result.skipped:
        console.print(f"finished before, skipped: {', '.join(result.skipped)}")
    json_path, csv_path = result.table_paths
    console.print(f"wrote {json_path}, {csv_path} and arms/ in {result.out_dir}")
    if result.failed:
        raise click.ClickException(f"arms failed: {', '.join(result.failed)} (see above); run the command again "
                                   "to retry them, the finished arms are kept")


# ------------------------------------------------------------------------------------------------ cachelab report


@main.command()
@click.argument("source")
@click.option("--storage", default=None,
              help="Optuna storage URL holding the study named by SOURCE (e.g. sqlite:///runs/x/study.db)")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="HTML file to write [default: SOURCE/report.html for a directory, reports/STUDY.html for a study]")
@click.option("--reuse-maps", type=click.IntRange(min=0), default=6, show_default=True,
              help="Pareto trials of a search that get a reuse map (0: none)")
@click.option("--title", default=None, help="page title [default: from the input]")
@click.option("--wandb/--no-wandb", "use_wandb", default=False,
              help="also log the panels to one W&B run, job_type report (offline unless logged in)")
@click.option("--wandb-project", default=None, help="W&B project [default: $WANDB_PROJECT or cachelab]")
def report(source, storage, out, reuse_maps, title, use_wandb, wandb_project) -> None:
    """One self-contained HTML dashboard (opens without a network) of SOURCE: a directory written by search,
    ablate or analyze (or holding such directories), a study name with --storage, or an Optuna storage URL."""
    from cachelab.report import summary_lines, write_report

    path, dashboard = write_report(source, out, storage, reuse_maps, title, use_wandb, wandb_project)
    for line in summary_lines(dashboard):
        console.print(line, highlight=False, markup=False)
    console.print(f"wrote {path}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
