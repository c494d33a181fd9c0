"""cachelab's fastercache at diffusers' schedule beside diffusers' FasterCache on CogVideoX-2b (random weights, bf16,
one prompt, 50 steps): the same work and how close the outputs are. Prints each row as it finishes.

    python benchmarks/fastercache_2b.py
"""

import torch

from cachelab import bench, metrics
from cachelab.zoo.registry import create_model


def main() -> None:
    model = create_model("cogvideox-2b")
    ours, theirs = bench.diffusers_cases(model, 50)[2:4]
    cases = [bench.Case("uncached", "uncached"), ours, theirs]
    outputs = {}

    def show(result, videos):
        outputs[result.name] = videos
        print(f"{result.name}: latency {result.latency_s:.3f} s, speedup {result.speedup:.3f}x, "
              f"GMACs {result.computed_macs * 1e-9 if result.computed_macs else float('nan'):.1f}, "
              f"PSNR vs uncached {result.psnr}", flush=True)

    report = bench.run_bench(model, cases, model.prompts(1), [0], 50, model.guidance, 1, on_result=show,
                             progress=False)
    if len(outputs) == 3:
        gap = metrics.compare_videos(outputs[ours.name], outputs[theirs.name])
        print(f"ours vs diffusers: PSNR {gap['psnr_mean']}", flush=True)
    print(bench.markdown_table(report))


if __name__ == "__main__":
    with torch.no_grad():
        main()
