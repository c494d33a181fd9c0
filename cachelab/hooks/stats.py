"""Counting what ran: per site and step, samples computed vs reused, and the MACs that implies.

MACs per sample of every site are measured once per input shape (``torch.utils.flop_counter``) on a call where
every site computes; the MACs of a generation then follow from the counts. All DiT sites are linear in the batch,
so per-sample costs times sample counts are exact.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any


@dataclass
class GenerationRecord:
    """Raw counts of one generation."""

    generation: int
    #: (site key, step) -> [computed calls, reused calls, computed samples, reused samples]
    events: dict[tuple[str, int], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0, 0]))
    #: (denoiser key, step) -> samples the pipeline asked for (both CFG branches, even when one was skipped)
    logical_samples: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))
    #: MACs per sample of each site for this generation's input shape (None until profiled)
    macs_per_sample: dict[str, float] | None = None
    num_steps: int | None = None

    def record(self, site_key: str, step: int, computed_samples: int, reused_samples: int) -> None:
        row = self.events[(site_key, step)]
        if computed_samples:
            row[0] += 1
            row[2] += computed_samples
        if reused_samples:
            row[1] += 1
            row[3] += reused_samples


class Stats:
    """What a generation computed and reused, per site, site kind and step.

    ``computed_fraction`` is MACs actually computed over MACs an uncached run computes; its inverse is the
    ideal speedup of the schedule.
    """

    def __init__(self, record: GenerationRecord, roles: dict[str, str], denoiser_of: dict[str, str]):
        self.record = record
        self.roles = roles  # site key -> role
        self.denoiser_of = denoiser_of  # site key -> key of the denoiser site it lives in

    # -- counts --------------------------------------------------------------------------------------------
    @property
    def steps(self) -> list[int]:
        return sorted({step for (_, step) in self.record.events} | {s for (_, s) in self.record.logical_samples})

    def site_steps(self, site_key: str) -> dict[int, tuple[int, int]]:
        """step -> (computed calls, reused calls) for one site."""
        return {s: (r[0], r[1]) for (k, s), r in sorted(self.record.events.items(), key=lambda x: x[0][1]) if k == site_key}

    def computed_steps(self, site_key: str) -> list[bool]:
        """Per step, whether the site computed (every call of the step computed); for comparison with plans."""
        rows = self.site_steps(site_key)
        n = (max(rows) + 1) if rows else 0
        return [rows.get(s, (0, 1))[1] == 0 for s in range(n)]

    def by_kind(self) -> dict[str, dict[str, float]]:
        """kind -> computed / reused forward calls and computed fraction of that kind's MACs."""
        per_site = self._per_site_macs()
        out: dict[str, dict[str, float]] = {}
        for (key, _step), (cc, rc, _cs, _rs) in self.record.events.items():
            kind = self.roles.get(key, "?")
            row = out.setdefault(kind, {"sites": 0, "computed": 0, "reused": 0, "macs": 0.0, "macs_computed": 0.0})
            row["computed"] += cc
            row["reused"] += rc
        for key, (possible, computed) in per_site.items():
            kind = self.roles.get(key, "?")
            if kind in out:
                out[kind]["sites"] += 1
                out[kind]["macs"] += possible
                out[kind]["macs_computed"] += computed
        for row in out.values():
            row["computed_fraction"] = row["macs_computed"] / row["macs"] if row["macs"] else float("nan")
        return out

    def by_step(self) -> dict[int, dict[str, tuple[int, int]]]:
        """step -> kind -> (computed calls, reused calls)."""
        out: dict[int, dict[str, list[int]]] = {}
        for (key, step), (cc, rc, _cs, _rs) in self.record.events.items():
            kind = self.roles.get(key, "?")
            row = out.setdefault(step, {}).setdefault(kind, [0, 0])
            row[0] += cc
            row[1] += rc
        return {s: {k: tuple(v) for k, v in kinds.items()} for s, kinds in sorted(out.items())}

    # -- MACs ------------------------------------------------------------------------------------------------
    def _logical(self) -> dict[str, int]:
        per_denoiser: dict[str, int] = defaultdict(int)
        for (denoiser, _step), samples in self.record.logical_samples.items():
            per_denoiser[denoiser] += samples
        return per_denoiser

    def _per_site_macs(self) -> dict[str, tuple[float, float]]:
        """site -> (MACs an uncached run spends there, MACs spent)."""
        macs = self.record.macs_per_sample or {}
        logical = self._logical()
        computed_samples: dict[str, int] = defaultdict(int)
        for (key, _step), row in self.record.events.items():
            computed_samples[key] += row[2]
        out = {}
        for key in self.roles:
            per = macs.get(key)
            if per is not None:
                out[key] = (per * logical.get(self.denoiser_of[key], 0), per * computed_samples.get(key, 0))
        return out

    @property
    def total_macs(self) -> float:
        """MACs of the same generation without any reuse."""
        macs = self.record.macs_per_sample or {}
        return sum(macs.get(d, 0.0) * n for d, n in self._logical().items())

    @property
    def saved_macs(self) -> float:
        macs = self.record.macs_per_sample or {}
        return sum(macs.get(key, 0.0) * row[3] for (key, _step), row in self.record.events.items())

    @property
    def computed_macs(self) -> float:
        return self.total_macs - self.saved_macs

    @property
    def computed_fraction(self) -> float:
        total = self.total_macs
        return self.computed_macs / total if total else float("nan")

    @property
    def ideal_speedup(self) -> float:
        fraction = self.computed_fraction
        return 1.0 / fraction if fraction and fraction == fraction else float("nan")

    # -- presentation ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "generation": self.record.generation,
            "num_steps": self.record.num_steps,
            "total_macs": self.total_macs,
            "computed_macs": self.computed_macs,
            "computed_fraction": self.computed_fraction,
            "ideal_speedup": self.ideal_speedup,
            "by_kind": self.by_kind(),
            "by_step": {str(s): {k: list(v) for k, v in kinds.items()} for s, kinds in self.by_step().items()},
        }

    def table(self) -> str:
        lines = [f"{'site kind':<14} {'sites':>5} {'computed':>9} {'reused':>7} {'MACs computed':>14}"]
        for kind, row in sorted(self.by_kind().items()):
            lines.append(
                f"{kind:<14} {int(row['sites']):>5} {int(row['computed']):>9} {int(row['reused']):>7} "
                f"{row['computed_fraction']:>13.1%}"
            )
        lines.append(
            f"whole model: {self.computed_macs / 1e9:.3f} of {self.total_macs / 1e9:.3f} GMACs computed "
            f"({self.computed_fraction:.1%}), ideal speedup {self.ideal_speedup:.2f}x"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.table()
