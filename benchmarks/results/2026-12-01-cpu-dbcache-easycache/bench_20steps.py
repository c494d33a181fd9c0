import sys, json, warnings
warnings.simplefilter("ignore")
import cachelab
from cachelab import bench as B
from cachelab.zoo.registry import create_model
model = create_model("tiny-cogvideox", device="cpu")
steps = int(sys.argv[1]); n = int(sys.argv[2])
cases = [B.Case("uncached", "uncached")]
for thr in (0.1, 0.2, 0.3):
    cases.append(B.Case(f"dbcache F1B0 W4 t={thr}", policy={"policy": "dbcache", "fn": 1, "bn": 0, "threshold": thr, "warmup_steps": 4}))
for thr in (0.2, 0.3, 0.4):
    cases.append(B.Case(f"dbcache F2B1 W4 t={thr}", policy={"policy": "dbcache", "fn": 2, "bn": 1, "threshold": thr, "warmup_steps": 4}))
cases.append(B.Case("fbcache t=0.2", policy={"policy": "fbcache", "threshold": 0.2}))
for thr in (0.05, 0.1, 0.2, 0.4):
    cases.append(B.Case(f"easycache W4 t={thr}", policy={"policy": "easycache", "threshold": thr, "warmup_steps": 4}))
prompts = model.prompts(n); seeds = list(range(n))
report = B.run_bench(model, cases, prompts, seeds, steps, model.guidance, repeats=1, progress=False)
print(B.markdown_table(report))
report.save_json(f"/tmp/dbbench/report_{steps}_{n}.json")
