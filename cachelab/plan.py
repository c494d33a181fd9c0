"""A schedule's plan: compute (True) or reuse (False) per site and step, built before a run."""

from __future__ import annotations

from collections import defaultdict


class Plan(dict):
    """``site key -> [compute?] * num_steps``, with summaries per site kind."""

    def __init__(self, rows: dict[str, list[bool]], roles: dict[str, str]):
        super().__init__(rows)
        self.roles = roles

    @property
    def num_steps(self) -> int:
        return max((len(v) for v in self.values()), default=0)

    def by_kind(self) -> dict[str, list[int]]:
        """kind -> per step, how many sites of that kind compute."""
        out: dict[str, list[int]] = defaultdict(lambda: [0] * self.num_steps)
        for key, row in self.items():
            counts = out[self.roles.get(key, "?")]
            for step, compute in enumerate(row):
                counts[step] += int(compute)
        return dict(out)

    def reuse_fraction(self) -> dict[str, float]:
        """kind -> fraction of (site, step) pairs that reuse."""
        out = {}
        for kind in sorted({self.roles.get(k, "?") for k in self}):
            rows = [row for key, row in self.items() if self.roles.get(key, "?") == kind]
            cells = sum(len(r) for r in rows)
            out[kind] = sum(not c for r in rows for c in r) / cells if cells else 0.0
        return out

    def table(self, max_sites: int | None = None) -> str:
        """One line per site: ``#`` computes, ``.`` reuses."""
        keys = list(self)[:max_sites] if max_sites else list(self)
        width = max((len(k) for k in keys), default=4)
        ruler = "".join(str(s % 10) for s in range(self.num_steps))
        lines = [f"{'site':<{width}}  {'role':<13}  {ruler}"]
        for key in keys:
            cells = "".join("#" if c else "." for c in self[key])
            lines.append(f"{key:<{width}}  {self.roles.get(key, '?'):<13}  {cells}")
        if max_sites and len(self) > max_sites:
            lines.append(f"... {len(self) - max_sites} more sites")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()
