"""Caches on diffusers' context parallelism, in the form of FasterCache's Table 4: latency and speedup against one
GPU uncached.

    python benchmarks/context_parallel.py --nproc 2 --rows base --out OUT_DIR      # spawns the ranks itself
    torchrun --nproc-per-node 2 benchmarks/context_parallel.py --rows cached --out OUT_DIR

Rows (``--rows``, comma-separated; ``base`` = ``1gpu,cp``, ``cached`` = the cached rows of ``--policies``):

* ``1gpu``: uncached on rank 0 alone, a model without parallelism (the other ranks wait);
* ``cp``: uncached, the model split over every rank with ``ContextParallelConfig`` (Ulysses by default);
* one row per policy of ``--policies`` (default ``fastercache,pab,fbcache``): context parallel plus the policy.

The model is the ``--preset`` (default ``wan-1.3b``: Wan2.1-T2V-1.3B, 81 frames 480x832, random weights, bf16 on
GPUs) driven by the Wan pipeline's own loop (two-call CFG, UniPC); the weights are broadcast from rank 0, and every
rank draws the same latents and text. Each row runs one warm-up generation of ``--warmup-steps`` steps (cuBLAS /
cuDNN choices, the allocator, and cachelab's one MAC-counting pass), then ``--repeats`` timed generations of
``--steps`` steps; latency is the median, synchronised on every rank. Each row also records cachelab's computed
fraction of the MACs, whether every rank made the same compute/reuse decisions, and peak memory per rank.

Rows are written as they finish to ``OUT_DIR/rows/<row>.json``; at the end the table of every row in OUT_DIR is
rebuilt: ``OUT_DIR/table.json`` and ``OUT_DIR/table.md`` (device, command, date, commit), so stages can run as
separate commands. With random weights a data-dependent policy's decisions mean little (they are measured, not
tuned); ``fbcache`` is given ``threshold`` through ``--param fbcache.threshold=...`` when the default skips
nothing (the computed-fraction column says so).

On a CPU (no CUDA) the same runs over gloo with ``--shrink`` for a check in seconds (tests/test_cp_benchmarks.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import socket
import statistics
import sys
import time
import warnings
from pathlib import Path
from unittest import mock

import torch

from cachelab.errors import NothingReusedWarning
from provenance import commit, device_name

DEFAULT_POLICIES = "fastercache,pab,fbcache"


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--rows", default="base,cached", help="1gpu, cp, policy names, or the groups base and cached")
    p.add_argument("--policies", default=DEFAULT_POLICIES, help="the policies of the cached rows")
    p.add_argument("--param", action="append", default=[], metavar="POLICY.NAME=VALUE",
                   help="a policy parameter, e.g. fbcache.threshold=0.1 (repeatable; values parsed as JSON)")
    p.add_argument("--preset", default="wan-1.3b")
    p.add_argument("--shrink", action="store_true", help="the preset's tiny test version (CPU check)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--attention", choices=["ulysses", "ring"], default="ulysses")
    p.add_argument("--backend", default=None, help="diffusers attention backend (Ring needs one returning the LSE, "
                   "e.g. _native_cudnn or flash); default: diffusers' active one")
    p.add_argument("--nproc", type=int, default=None,
                   help="spawn this many ranks (without it, the ranks come from torchrun's environment)")
    return p.parse_args(argv)


def expand_rows(args) -> list[str]:
    policies = [p for p in args.policies.split(",") if p]
    rows: list[str] = []
    for item in args.rows.split(","):
        rows += {"base": ["1gpu", "cp"], "cached": policies}.get(item, [item])
    return list(dict.fromkeys(rows))


def policy_params(args, policy: str) -> dict:
    params = {}
    for item in args.param:
        key, _, value = item.partition("=")
        owner, _, name = key.partition(".")
        if owner == policy:
            params[name] = json.loads(value)
    return params




def command_line(argv: list[str]) -> str:
    """How this script was started, from the repository root (under torchrun: as torchrun would be called)."""
    script = os.path.relpath(os.path.abspath(argv[0]), Path(__file__).resolve().parents[1])
    launcher = ["python"] if "LOCAL_WORLD_SIZE" not in os.environ else [
        "torchrun", f"--nproc-per-node={os.environ['LOCAL_WORLD_SIZE']}"]
    return shlex.join([*launcher, script, *argv[1:]])




# ----------------------------------------------------------------------------------------------------- the ranks
def rank_main(rank: int, world: int, args: argparse.Namespace, port: int | None) -> None:
    if port is not None:  # spawned here rather than by torchrun
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                          LOCAL_RANK=str(rank))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    else:
        torch.set_num_threads(1)
    torch.distributed.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    try:
        for row in expand_rows(args):
            result = run_row(row, args)
            if torch.distributed.get_rank() == 0 and result is not None:
                (args.out / "rows").mkdir(parents=True, exist_ok=True)
                (args.out / "rows" / f"{row}.json").write_text(json.dumps(result, indent=1))
                print(f"{row}: {result['latency_s']:.3f} s", flush=True)
    finally:
        torch.distributed.destroy_process_group()


def build(args):
    from cachelab.zoo.presets import preset_pipeline

    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    loop = preset_pipeline(args.preset, device=device, dtype=dtype, shrink=args.shrink)
    for tensor in [*loop.transformer.parameters(), *loop.transformer.buffers()]:  # the same weights everywhere
        torch.distributed.broadcast(tensor, src=0)
    if args.backend:
        loop.transformer.set_attention_backend(args.backend)
    return loop, device


def enable_context_parallel(model, args) -> None:
    from diffusers import ContextParallelConfig

    world = torch.distributed.get_world_size()
    config = ContextParallelConfig(**{f"{args.attention}_degree": world})
    if torch.cuda.is_available():
        model.enable_parallelism(config=config)
        return
    # diffusers places rank r on device r % torch.accelerator.device_count(), which is 0 on a CPU-only torch
    with mock.patch.object(torch.accelerator, "device_count", lambda: 1):
        model.enable_parallelism(config=config)


def sync(device, together: bool = True) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if together:
        torch.distributed.barrier()


def generate(loop, steps: int) -> torch.Tensor:
    return loop(steps=steps, generator=torch.Generator(loop.device).manual_seed(0))


def timed(loop, args, device, together: bool = True) -> list[float]:
    """Latencies of ``--repeats`` generations after a warm-up; ``together``: every rank starts and stops each one
    at a barrier (context parallel), else this rank alone."""
    times = []
    # a warm-up shorter than a schedule's windows reuses nothing, by design (warned at the next generation's
    # start); the table's computed-MACs column shows what the timed generations reused
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NothingReusedWarning)
        generate(loop, args.warmup_steps)
        for _ in range(args.repeats):
            sync(device, together)
            start = time.perf_counter()
            generate(loop, args.steps)
            sync(device, together)
            times.append(time.perf_counter() - start)
    return times


def run_row(row: str, args) -> dict | None:
    import cachelab

    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    loop, device = build(args)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = {"row": row, "steps": args.steps, "repeats": args.repeats, "preset": loop.preset.name,
              "description": loop.preset.description, "attention": args.attention, "backend": args.backend}
    if row == "1gpu":
        times = timed(loop, args, device, together=False) if rank == 0 else None
        torch.distributed.barrier()  # the other ranks wait, idle, until rank 0 is done
        result.update(gpus=1, policy=None, params=None, computed_fraction=1.0, ranks_agree=True)
    else:
        enable_context_parallel(loop.transformer, args)
        result.update(gpus=world, policy=None if row == "cp" else row)
        if row == "cp":
            times = timed(loop, args, device)
            result.update(params=None, computed_fraction=1.0, ranks_agree=True)
        else:
            params = policy_params(args, row)
            with cachelab.apply(loop, row, cfg=loop.preset.cfg, cfg_order=loop.preset.cfg_order, **params) as handle:
                times = timed(loop, args, device)
                stats = handle.stats()
                events = sorted((k, s, tuple(v)) for (k, s), v in stats.record.events.items())
            everyone = [None] * world
            torch.distributed.all_gather_object(everyone, events)
            result.update(params=params, computed_fraction=stats.computed_fraction,
                          ranks_agree=all(e == everyone[0] for e in everyone))
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    peaks = [None] * world
    torch.distributed.all_gather_object(peaks, peak)
    times_all = [None] * world
    torch.distributed.all_gather_object(times_all, times)
    del loop
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if rank != 0:
        return None
    result.update(latencies_s=times_all[0], latency_s=statistics.median(times_all[0]),
                  peak_memory_gib=peaks if row != "1gpu" else peaks[:1])
    return result


# ---------------------------------------------------------------------------------------------------- the table
def write_table(args, argv: list[str]) -> dict:
    rows = {p.stem: json.loads(p.read_text()) for p in sorted((args.out / "rows").glob("*.json"))}
    base = rows.get("1gpu")
    order = ["1gpu", "cp", *[r for r in rows if r not in ("1gpu", "cp")]]
    table = []
    for name in order:
        r = rows.get(name)
        if r is None:
            continue
        label = "uncached" if r["policy"] is None else r["policy"] + (f" ({r['params']})" if r["params"] else "")
        speedup = base["latency_s"] / r["latency_s"] if base else None
        table.append({**r, "label": label, "speedup": speedup})
    report = {"device": device_name(), "command": command_line(argv), "date": datetime.datetime.now(
        datetime.timezone.utc).isoformat(timespec="seconds"), "commit": commit(), "rows": table}
    (args.out / "table.json").write_text(json.dumps(report, indent=1))
    lines = [f"# Caches on context parallelism ({table[0]['preset'] if table else args.preset})", "",
             f"device: {report['device']}  ", f"date: {report['date']}  ", f"commit: {report['commit']}  ",
             f"command: `{report['command']}`", ""]
    if table:
        r0 = table[0]
        lines += [f"{r0['description']}; {r0['steps']} steps, median of {r0['repeats']} timed generation(s) after a "
                  f"{args.warmup_steps}-step warm-up; attention: {r0['attention']}"
                  f"{' (' + r0['backend'] + ')' if r0['backend'] else ''}. Speedup against 1 GPU uncached.", ""]
    lines += ["| GPUs | method | latency (s) | speedup | computed MACs | ranks agree | peak memory per GPU (GiB) |",
              "|---|---|---|---|---|---|---|"]
    for r in table:
        memory = ", ".join(f"{m:.1f}" for m in r["peak_memory_gib"] if m is not None) or "-"
        speedup = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        lines.append(f"| {r['gpus']} | {r['label']} | {r['latency_s']:.2f} | {speedup} | "
                     f"{r['computed_fraction']:.0%} | {'yes' if r['ranks_agree'] else 'NO'} | {memory} |")
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    return report


def main(argv=None) -> None:
    argv = sys.argv if argv is None else ["benchmarks/context_parallel.py", *argv]
    args = parse(argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    if args.nproc:
        import torch.multiprocessing as mp

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.spawn(rank_main, args=(args.nproc, args, port), nprocs=args.nproc, join=True)
    else:
        rank_main(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), args, None)
        if int(os.environ["RANK"]) != 0:
            return
    print((args.out / "table.md").read_text() if write_table(args, argv) else "", flush=True)


if __name__ == "__main__":
    main()
