"""Each policy's speed/quality curve beside the other implementations of the same method, in one run.

    python benchmarks/policy_frontier.py --model tiny-cogvideox --prompts 60 --steps 50 --out OUT_DIR

Every row is measured on its own in one `cachelab bench` run (same prompts, seeds, steps and machine): cachelab's
policies at a sweep of their main parameter, diffusers' FirstBlockCache, MagCache and TaylorSeer and cache-dit's
DBCache at the same settings where the library is installed, pab and fastercache at their defaults and beside
diffusers' PAB and FasterCache at the schedule of diffusers' docs, plus any searched schedules given with --configs.
Writes OUT_DIR/frontier.json (the bench report plus device, command, date, commit), frontier.md (the table and the
same-settings pairs) and frontier.png (measured speedup against PSNR, one colour per method).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cachelab import bench  # noqa: E402
from cachelab.policies import list_policies  # noqa: E402
from cachelab.spec import load_policy_file  # noqa: E402
from cachelab.zoo.registry import create_model  # noqa: E402
from provenance import commit  # noqa: E402

#: policy -> the values of its main parameter swept here
SWEEPS = {
    "fbcache": ("threshold", [0.05, 0.1, 0.2]),
    "dbcache": ("threshold", [0.08, 0.12, 0.2, 0.3]),
    "magcache": ("threshold", [0.06, 0.12, 0.24]),
    "teacache": ("threshold", [0.1, 0.2, 0.4]),
    "easycache": ("threshold", [0.05, 0.1, 0.2]),
    "taylorseer": ("interval", [3, 5, 8]),
}
#: where diffusers_cases puts each seed policy's pair (cachelab at diffusers' docs schedule, then diffusers' own)
SEED_PAIRS = {"pab": slice(0, 2), "fastercache": slice(2, 4)}


def frontier_cases(model, families: list[str], steps: int, sweeps: dict | None = None) -> list[bench.Case]:
    cases = [bench.Case("uncached", "uncached")]
    for family in families:
        if family in ("pab", "fastercache"):
            # its defaults, and the pair of diffusers' docs schedule: cachelab's row and diffusers' own
            cases.append(bench.Case(f"{family} (defaults)", "cachelab", family))
            cases += bench.diffusers_cases(model, steps)[SEED_PAIRS[family]]
            continue
        parameter, values = (sweeps or {}).get(family, SWEEPS[family])
        for value in values:
            cases += bench.same_settings_cases(model, family, steps, **{parameter: value})
    return cases


def plot(report: bench.BenchReport, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 5))
    families: dict[str, list] = {}
    for r in report.results:
        if r.kind == "uncached" or r.error or r.psnr is None:
            continue
        family = r.name.split(" (")[0]
        families.setdefault(family, []).append(r)
    for i, (family, rows) in enumerate(sorted(families.items())):
        rows.sort(key=lambda r: r.speedup)
        ours = rows[0].kind == "cachelab"
        ax.plot([r.speedup for r in rows], [r.psnr for r in rows], marker="o" if ours else "s",
                fillstyle="full" if ours else "none", linestyle="-" if ours else "--", color=f"C{i % 10}",
                label=family)
    ax.set_xlabel("measured speedup over uncached (wall clock)")
    ax.set_ylabel("PSNR against uncached (dB)")
    ax.set_title(f"{report.model} on {report.device}: {len(report.prompts)} prompts, {report.steps} steps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-cogvideox")
    p.add_argument("--prompts", type=int, default=60)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--families", default="fbcache,dbcache,teacache,magcache,taylorseer,easycache,pab,fastercache")
    p.add_argument("--sweep", action="append", default=[], metavar="POLICY=V1,V2",
                   help="other values of a policy's swept parameter (e.g. taylorseer=3,5)")
    p.add_argument("--configs", nargs="*", default=[], type=Path,
                   help="policy YAML files (e.g. a search's pareto_*.yaml) measured as extra rows")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    families = [f for f in args.families.split(",") if f in list_policies()]
    model = create_model(args.model)
    sweeps = {}
    for item in args.sweep:
        name, values = item.split("=", 1)
        sweeps[name] = (SWEEPS[name][0], [type(SWEEPS[name][1][0])(v) for v in values.split(",")])
    cases = frontier_cases(model, families, args.steps, sweeps)
    cases += [bench.Case(f"searched ({path.stem})", "cachelab", load_policy_file(path)) for path in args.configs]
    report = bench.run_bench(model, cases, model.prompts(args.prompts), list(range(args.prompts)), args.steps,
                             model.guidance, args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    data = report.to_dict()
    data["command"] = "python benchmarks/policy_frontier.py " + " ".join(sys.argv[1:] if argv is None else argv)
    data["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    data["commit"] = commit()
    (args.out / "frontier.json").write_text(json.dumps(data, indent=1, default=str))
    (args.out / "frontier.md").write_text(bench.markdown_table(report) + "\n")
    plot(report, args.out / "frontier.png")
    print(bench.markdown_table(report))


if __name__ == "__main__":
    main()
