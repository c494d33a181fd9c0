"""Per step of a profiled generation: kernels launched, the device's busy time, and the step's host range.

Reads the gzipped Chrome traces that ``engine_overhead.py --part steps --device-time --trace-dir DIR`` writes
(one profiled generation, one ``step_NNN`` range per scheduler step, the device synchronised at each step's end).
A step whose range is much longer than its kernels' busy time waited on the host.

usage: python benchmarks/trace_steps.py DIR/trace-tiny-cogvideox-regional-fastercache.json.gz [MORE.json.gz]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_overhead import kernels_per_step, step_ranges  # noqa: E402


def step_rows(events: list[dict]) -> list[dict]:
    ranges = {name: (end - start) / 1e6 for start, end, name in step_ranges(events)}
    steps = len(ranges)
    return [{"step": i, "kernels": count, "busy_ms": busy * 1e3, "range_ms": ranges.get(f"step_{i:03d}", 0.0) * 1e3}
            for i, (count, busy) in enumerate(kernels_per_step(events, steps))]


def table(name: str, rows: list[dict]) -> str:
    lines = [f"### {name}", "", "| step | kernels | busy ms | range ms | busy share |", "|---|---|---|---|---|"]
    for r in rows:
        share = r["busy_ms"] / r["range_ms"] if r["range_ms"] else 0.0
        lines.append(f"| {r['step']} | {r['kernels']} | {r['busy_ms']:.2f} | {r['range_ms']:.2f} | {share:.0%} |")
    busy, span = sum(r["busy_ms"] for r in rows), sum(r["range_ms"] for r in rows)
    lines.append(f"| all | {sum(r['kernels'] for r in rows)} | {busy:.1f} | {span:.1f} | "
                 f"{busy / span if span else 0.0:.0%} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("traces", nargs="+", type=Path)
    args = p.parse_args(argv)
    for path in args.traces:
        events = json.loads(gzip.decompress(path.read_bytes()))["traceEvents"]
        rows = step_rows(events)
        if not rows:
            p.error(f"{path}: no step_NNN ranges (write traces with engine_overhead.py --device-time --trace-dir)")
        print(table(path.name, rows), end="\n\n")


if __name__ == "__main__":
    main()
