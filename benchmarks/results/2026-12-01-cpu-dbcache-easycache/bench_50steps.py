import sys, warnings
warnings.simplefilter("ignore")
from cachelab import bench as B
from cachelab.zoo.registry import create_model
model = create_model("tiny-cogvideox", device="cpu")
steps, n = 50, 2
cases = [B.Case("uncached", "uncached")]
for thr in (0.1, 0.2):
    cases.append(B.Case(f"dbcache F1B0 W8 t={thr}", policy={"policy": "dbcache", "fn": 1, "bn": 0, "threshold": thr}))
for thr in (0.2, 0.3):
    cases.append(B.Case(f"dbcache F2B1 W8 t={thr}", policy={"policy": "dbcache", "fn": 2, "bn": 1, "threshold": thr}))
cases.append(B.Case("fbcache t=0.1", policy={"policy": "fbcache", "threshold": 0.1}))
for thr in (0.05, 0.1, 0.2):
    cases.append(B.Case(f"easycache W5 t={thr}", policy={"policy": "easycache", "threshold": thr}))
report = B.run_bench(model, cases, model.prompts(n), list(range(n)), steps, model.guidance, repeats=1, progress=False)
print(B.markdown_table(report))
report.save_json(f"/tmp/dbbench/report_{steps}_{n}.json")
