"""Two CPU processes over gloo running cachelab on diffusers' context parallelism: the rank side of
tests/test_context_parallel.py (and of the CPU check of benchmarks/context_parallel.py).

Facts found by running diffusers 0.42 on the CPU:

* ``enable_parallelism`` places rank r on ``device(accelerator, r % torch.accelerator.device_count())``, which
  divides by zero on a CPU-only torch; :func:`cpu_context_parallel` answers 1 for the call (diffusers then
  uses ``cpu:0``, which is the CPU).
* gloo has ``all_to_all``: Ulysses attention runs with diffusers' ``native`` backend. Ring attention needs the
  log-sum-exp of each partial attention, which ``native`` does not return (``return_lse=True`` is refused), and
  the backends that return it (flash, cuDNN, sage) are CUDA-only: Ring runs on the GPU only.
* LTX-Video's text mask is expanded to all heads before Ulysses splits them (``[2, 2, ...]`` against the local
  ``[2, 1, ...]``), so ``LTXPipeline`` fails under Ulysses in diffusers 0.42 with or without cachelab; the LTX
  loop here calls the transformer as the pipeline does but without the mask (the text is unpadded).
"""

from __future__ import annotations

import datetime
import os
import pickle
import socket
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import torch

import cachelab
from cachelab.policies import Policy
from tiny_pipelines import CALL_DEFAULTS, tiny_pipeline
from tiny_transformers import TINY_TRANSFORMERS, VIDEO_FRAMES, LATENT_SIZE, draw

STEPS = 6
PROMPT = "a red circle moving left"

#: policy -> parameters that make it reuse on a tiny random model in STEPS steps (data-dependent thresholds are
#: far above the tiny models' relative changes, or in their range so decisions mix)
POLICIES: dict[str, dict] = {
    "vanilla": {"interval": 2, "window": [0.0, 1.0]},
    "dynamic": {"interval": 2, "window": [0.3, 1.0]},
    "pab": {"window": [0.0, 1.0]},
    "delta_dit": {"interval": 2, "span": 1},
    "cfg_cache": {"interval": 2, "window": [0.0, 1.0], "low_freq_window": [0.0, 0.5],
                  "high_freq_window": [0.5, 1.0], "low_freq_weight": 1.2, "high_freq_weight": 0.9},
    "fastercache": {"dynamic": {"interval": 2, "window": [0.3, 1.0]}, "cfg_cache": {"interval": 2,
                                                                                    "window": [0.0, 1.0]}},
    "taylorseer": {"interval": 2, "warmup_steps": 1},
    "fbcache": {"threshold": 0.3},
    "dbcache": {"fn": 1, "bn": 0, "threshold": 0.3, "warmup_steps": 1},
    "teacache": {"threshold": 0.3, "coefficients": [1.0, 0.0]},
    "magcache": {"threshold": 0.2, "mag_ratios": [1.0, 1.0, 0.98, 0.97, 0.95, 0.9], "retention_ratio": 0.2},
    "easycache": {"threshold": 0.3, "warmup_steps": 1},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def cpu_context_parallel():
    """Let diffusers' enable_parallelism place ranks on the CPU (see the module docstring)."""
    with mock.patch.object(torch.accelerator, "device_count", lambda: 1):
        yield


def enable_ulysses(model: torch.nn.Module, degree: int) -> None:
    from diffusers import ContextParallelConfig

    with cpu_context_parallel():
        model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=degree))


def wan_pipeline():
    return tiny_pipeline("wan")


def run_wan(pipe, policy: str | None, params: dict | None = None):
    """Final latents and, with a policy, the handle's per-site per-step counts."""
    call = dict(prompt=PROMPT, num_inference_steps=STEPS, output_type="latent",
                generator=torch.Generator().manual_seed(0), **CALL_DEFAULTS["wan"])
    if policy is None:
        return pipe(**call).frames, None
    with cachelab.apply(pipe, policy, **(params or {})) as handle:
        frames = pipe(**call).frames
        events = {f"{key}@{step}": list(row) for (key, step), row in handle.stats().record.events.items()}
    return frames, events


class LtxLoop:
    """LTX-Video's denoising loop as ``LTXPipeline`` calls its transformer (batched CFG ``[uncond, cond]``, packed
    tokens, flow-match Euler steps), without the text mask (see the module docstring). It has what
    ``cachelab.apply`` looks for in a pipeline: ``components`` with the transformer and the scheduler."""

    def __init__(self, seed: int = 0, frames: int = VIDEO_FRAMES, size: int = LATENT_SIZE):
        from diffusers import FlowMatchEulerDiscreteScheduler

        self.spec = TINY_TRANSFORMERS["ltx"]
        self.transformer = self.spec.build(seed)
        self.scheduler = FlowMatchEulerDiscreteScheduler()
        self.frames, self.size = frames, size

    @property
    def components(self) -> dict:
        return {"transformer": self.transformer, "scheduler": self.scheduler}

    @torch.no_grad()
    def __call__(self, steps: int = STEPS, guidance: float = 3.0, seed: int = 0) -> torch.Tensor:
        text = self.spec.inputs(1, 1000.0, seed)["encoder_hidden_states"]
        latents = draw(1, seed, latents=(self.frames * self.size**2, self.spec.config["in_channels"]))["latents"]
        negative = draw(1, seed + 1, text=tuple(text.shape[1:]))["text"]
        self.scheduler.set_timesteps(steps)
        for t in self.scheduler.timesteps:
            noise = self.transformer(
                hidden_states=torch.cat([latents] * 2), encoder_hidden_states=torch.cat([negative, text]),
                encoder_attention_mask=None,
                timestep=t.expand(2), num_frames=self.frames, height=self.size, width=self.size,
                rope_interpolation_scale=(8 / 25, 32, 32), return_dict=False,
            )[0]
            uncond, cond = noise.chunk(2)
            latents = self.scheduler.step(uncond + guidance * (cond - uncond), t, latents, return_dict=False)[0]
        return latents


def run_ltx(loop: LtxLoop, policy: str | None, params: dict | None = None):
    if policy is None:
        return loop(), None
    params = dict(params or {})
    if policy in ("cfg_cache", "fastercache"):  # packed tokens: no frequency split
        params = cachelab_deep_merge(params, {"cfg_cache": {"layout": "flat"}} if policy == "fastercache"
                                     else {"layout": "flat"})
    with cachelab.apply(loop, policy, **params) as handle:
        latents = loop()
        events = {f"{key}@{step}": list(row) for (key, step), row in handle.stats().record.events.items()}
    return latents, events


def cachelab_deep_merge(base: dict, update: dict) -> dict:
    from cachelab.policies.base import deep_merge

    return deep_merge(base, update)


def run_all(model: str, world: int | None) -> dict:
    """Every policy of :data:`POLICIES` (and uncached) on ``model`` ("wan" or "ltx"): latents and counts."""
    torch.manual_seed(0)
    if model == "wan":
        target, run = wan_pipeline(), run_wan
        transformer = target.transformer
    else:
        target, run = LtxLoop(), run_ltx
        transformer = target.transformer
    if world:
        enable_ulysses(transformer, world)
    seen = []  # the sequence length attention works on: the local shard under context parallelism
    first_attention = next(m for n, m in transformer.named_modules() if n.endswith("attn1"))
    probe = first_attention.register_forward_pre_hook(lambda m, args, kw: seen.append(kw.get("hidden_states", args[0] if args else None).shape[1]), with_kwargs=True)
    out = {"uncached": run(target, None), "tokens": seen}
    probe.remove()
    for name, params in POLICIES.items():
        out[name] = run(target, name, params)
    return out


def rank_main(rank: int, world: int, port: int, out_dir: str, job: str) -> None:
    """One rank: join the gloo group and run ``job`` (a function name of this module taking the rank)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # ranks that disagree wait on each other's collectives: fail within a minute instead of gloo's 30
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        result = globals()[job](rank, world)
    finally:
        torch.distributed.destroy_process_group()
    Path(out_dir, f"rank{rank}.pkl").write_bytes(pickle.dumps(result))


def spawn(job: str, out_dir: Path, world: int = 2) -> list:
    """Run ``job`` on ``world`` CPU ranks; each rank's result, in rank order."""
    import torch.multiprocessing as mp

    mp.spawn(rank_main, args=(world, free_port(), str(out_dir), job), nprocs=world, join=True)
    return [pickle.loads(Path(out_dir, f"rank{r}.pkl").read_bytes()) for r in range(world)]


def all_policies(rank: int, world: int) -> dict:
    return {"wan": run_all("wan", world), "ltx": run_all("ltx", world)}


def applied_first(rank: int, world: int):
    """fbcache applied before diffusers' enable_parallelism (its hooks then wrap cachelab's), then removed."""
    pipe = wan_pipeline()
    handle = cachelab.apply(pipe, "fbcache", **POLICIES["fbcache"])
    enable_ulysses(pipe.transformer, world)
    frames = run_wan(pipe, None)[0]
    events = {f"{key}@{step}": list(row) for (key, step), row in handle.stats().record.events.items()}
    handle.remove()
    return frames, events, run_wan(pipe, None)[0]


def everything(rank: int, world: int) -> dict:
    """What tests/test_context_parallel.py reads, from one spawn (each costs seconds of imports)."""
    return {"policies": all_policies(rank, world), "metrics": rank_metrics(rank, world),
            "errors": rank_errors(rank, world), "applied_first": applied_first(rank, world)}


def rank_metrics(rank: int, world: int) -> dict:
    """fbcache on tiny Wan, recording each decision's metric on this rank's shard alone and over every rank; then
    again with the threshold set between two ranks' local metrics, where deciding locally would split them."""
    from cachelab.policies import dbcache

    pipe = wan_pipeline()
    enable_ulysses(pipe.transformer, world)
    records: list[tuple[float, float]] = []
    reduced = dbcache.mean_abs

    def recording(runtime, *tensors):
        local = [t.abs().mean() for t in tensors]
        whole = reduced(runtime, *tensors)
        records.append((float(local[0] / local[1]), float(whole[0] / whole[1])))
        return whole

    with mock.patch.object(dbcache, "mean_abs", recording):
        first = run_wan(pipe, "fbcache", {"threshold": 0.3})[1]
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, [local for local, _ in records])
        gaps = [abs(a - b) for a, b in zip(*gathered[:2])]
        step = max(range(len(gaps)), key=gaps.__getitem__)
        threshold = (gathered[0][step] + gathered[1][step]) / 2
        local_first = list(records)
        records.clear()
        second = run_wan(pipe, "fbcache", {"threshold": threshold})[1]
    return {"metrics": local_first, "events": first, "threshold": threshold, "metrics_split": list(records),
            "events_split": second}


class LocalThreshold(Policy):
    """A data-dependent policy that reads only its own rank's shard (and says nothing about ranks)."""

    name = "local_threshold"
    static = False

    def select(self, sites):
        return sites.by_role("block")[1:]

    def forward(self, site, call):
        return call.defer()


def rank_errors(rank: int, world: int) -> dict:
    """What each rank raises for a sequence the world size does not divide, and for a policy that cannot run
    sharded, and whether any generation step ran before it."""
    out = {}
    loop = LtxLoop(frames=1, size=7)  # 49 tokens over 2 ranks
    enable_ulysses(loop.transformer, world)
    with cachelab.apply(loop, "pab") as handle:
        try:
            loop(steps=2)
        except Exception as exc:  # noqa: BLE001 - the test reads the type and message
            out["indivisible"] = (type(exc).__name__, str(exc), dict(handle.runtime.record.events))
    # Wan is split inside its forward (the RoPE table, the first block's input): 1 x 3 x 3 patches = 9 tokens
    wan = TINY_TRANSFORMERS["wan"].build(0)
    enable_ulysses(wan, world)
    inputs = TINY_TRANSFORMERS["wan"].inputs(1, 500.0)
    inputs["hidden_states"] = inputs["hidden_states"][:, :, :1, :6, :6]
    with cachelab.apply(wan, "pab"):
        try:
            wan(**inputs)
        except Exception as exc:  # noqa: BLE001
            out["indivisible_inside"] = (type(exc).__name__, str(exc))
    pipe = wan_pipeline()
    enable_ulysses(pipe.transformer, world)
    attention_calls = []
    first_attention = next(m for n, m in pipe.transformer.named_modules() if n.endswith("attn1"))
    first_attention.register_forward_pre_hook(lambda *a: attention_calls.append(1))
    with cachelab.apply(pipe, LocalThreshold()):
        try:
            run_wan(pipe, None)
        except Exception as exc:  # noqa: BLE001
            out["unsharded_policy"] = (type(exc).__name__, str(exc), len(attention_calls))
    return out
