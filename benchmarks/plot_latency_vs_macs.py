"""Plot what a latency-cost search measured against what MACs predict: measured vs ideal speedup per trial.

    python benchmarks/plot_latency_vs_macs.py TRIALS_CSV OUT_PNG
"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(trials_csv: str, out_png: str) -> None:
    rows = [r for r in csv.DictReader(open(trials_csv)) if r["state"] == "COMPLETE"]
    ideal = [float(r["user_attrs_ideal_speedup"]) for r in rows]
    measured = [float(r["user_attrs_measured_speedup"]) for r in rows]
    psnr = [float(r["user_attrs_psnr"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4.6))
    points = ax.scatter(ideal, measured, c=psnr, cmap="viridis")
    top = max(ideal + measured) * 1.05
    ax.plot([0.6, top], [0.6, top], "k--", lw=1, label="measured = ideal (MACs)")
    ax.axhline(1.0, color="grey", lw=0.8)
    for r, x, y in zip(rows, ideal, measured):
        ax.annotate(f"#{r['number']}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("ideal speedup (uncached MACs / computed MACs)")
    ax.set_ylabel("measured speedup (wall clock)")
    ax.set_title(f"{len(rows)} trials: latency vs MACs")
    fig.colorbar(points, label="PSNR vs uncached (dB)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:3])
