"""Print the README's coverage table: every tiny diffusers transformer x every seed policy.

    python scripts/coverage_table.py > table.md

Runs the checks of ``tests/test_coverage.py`` (``tests/coverage_checks.py``): a cell is ✓ with the fraction of
FLOPs the policy's aggressive test parameters skip over 4 batched-CFG calls (latents that move a little each step), or ``refuses:`` and why. Classes
with no tiny config follow the table with their reason. ``tests/test_coverage.py`` checks that the README's
copy has the same rows, cells and uncovered classes.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's cachelab, not an installed one

from coverage_checks import SEED_POLICIES, cell, check  # noqa: E402
from tiny_transformers import NOT_COVERED, TINY_TRANSFORMERS  # noqa: E402


def table_cell(name: str, policy: str) -> str:
    try:
        return cell(check(name, policy))
    except Exception as exc:  # a failing pair is shown, not hidden: the test fails on it too
        return f"fails: {type(exc).__name__}"


def main() -> None:
    print("| model class | " + " | ".join(SEED_POLICIES) + " |")
    print("|---|" + "---|" * len(SEED_POLICIES))
    for name in sorted(TINY_TRANSFORMERS, key=lambda n: TINY_TRANSFORMERS[n].model_class):
        cells = [table_cell(name, policy) for policy in SEED_POLICIES]
        print(f"| `{TINY_TRANSFORMERS[name].model_class}` | " + " | ".join(cells) + " |")
    print()
    print("Not covered:")
    print()
    for cls, why in sorted(NOT_COVERED.items()):
        print(f"- `{cls}`: {why}")


if __name__ == "__main__":
    main()
