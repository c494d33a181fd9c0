"""The equality table of benchmarks/results/2026-12-01-cpu-context-parallel (run from the repository root)."""
import sys
import tempfile

sys.path.insert(0, "tests")
import torch
import cp_ranks
if __name__ == "__main__":
    r0, r1 = cp_ranks.spawn("all_policies", tempfile.mkdtemp())
    single = {m: cp_ranks.run_all(m, None) for m in ("wan", "ltx")}
    print("| model | policy | reused site calls (of all) | ranks decide alike | same decisions as 1 process | max abs difference to 1 process |")
    print("|---|---|---|---|---|---|")
    for m in ("wan", "ltx"):
        for k in ["uncached", *cp_ranks.POLICIES]:
            (a, ea), (b, eb), (s, es) = r0[m][k], r1[m][k], single[m][k]
            reused = f"{sum(r[1] for r in ea.values())} of {sum(r[0] + r[1] for r in ea.values())}" if ea else "-"
            print(f"| {m} | {k} | {reused} | {'yes' if ea == eb and torch.equal(a, b) else 'NO'} | {'yes' if ea == es else 'NO'} | {(a - s).abs().max().item():.1e} |")
