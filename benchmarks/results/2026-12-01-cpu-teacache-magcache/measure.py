import sys, warnings, time
warnings.simplefilter("ignore")
import cachelab
from cachelab import metrics
from cachelab.zoo.registry import create_model
name = sys.argv[1]; policies = sys.argv[2].split(",")
model = create_model(name, device="cpu")
prompts, seeds = model.prompts(2), [0, 1]
t = time.time()
reference = model.generate(prompts, seeds, model.steps, model.guidance)
print(name, "uncached", round(time.time() - t, 1), "s", flush=True)
cases = []
if "teacache" in policies:
    cases += [{"policy": "teacache", "threshold": x} for x in (0.05, 0.1, 0.2, 0.4)]
if "magcache" in policies:
    cases += [{"policy": "magcache", "threshold": x} for x in (0.06, 0.15, 0.3)] + [{"policy": "magcache", "threshold": 0.3, "max_skip_steps": 6}]
if "fbcache" in policies:
    cases += [{"policy": "fbcache", "threshold": 0.05}]
for spec in cases:
    t = time.time()
    try:
        with cachelab.apply(model.target, spec, cfg=model.cfg) as handle:
            videos = model.generate(prompts, seeds, model.steps, model.guidance)
            stats = handle.stats()
        q = metrics.compare_videos(videos, reference)
        print(name, spec, f"ideal {stats.ideal_speedup:.2f}x", f"computed {stats.computed_fraction:.3f}", f"PSNR {q['psnr_mean']:.2f}", f"SSIM {q['ssim_mean']:.4f}", f"{time.time() - t:.0f}s", flush=True)
    except Exception as exc:
        print(name, spec, "ERROR", type(exc).__name__, exc, flush=True)
