"""Prompt following of the bundled text-to-video models: generate, then check colour, shape and motion.

``python -m cachelab.zoo.evaluate DIR --kind cogvideox --videos 60 --guidance 1.5 3`` prints one JSON line per
guidance scale. The same functions serve ``cachelab bench`` to compare cached with uncached videos.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from cachelab.zoo import shapes
from cachelab.zoo.bundled import eval_prompts, generate_frames  # noqa: F401  (the CLI below and older imports)


def prompt_following(videos: torch.Tensor, prompts: list[str]) -> dict[str, float]:
    return shapes.check_videos(videos, prompts)


def main(argv=None) -> None:
    from cachelab.models.pipeline import load_pipeline

    p = argparse.ArgumentParser(prog="python -m cachelab.zoo.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("pipeline", type=Path, help="a bundled pipeline directory")
    p.add_argument("--kind", choices=["latte", "cogvideox"], required=True)
    p.add_argument("--videos", type=int, default=60)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, nargs="+", default=[1.5, 3.0])
    p.add_argument("--save", type=Path, default=None, help="save the first 16 videos of each scale (.pt)")
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = load_pipeline(args.pipeline, dtype=torch.float32, device=device)
    device_label = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    prompts = eval_prompts(args.videos)
    seeds = list(range(args.videos))
    saved = {}
    for guidance in args.guidance:
        videos = generate_frames(pipe, args.kind, prompts, seeds, args.steps, guidance)
        scores = prompt_following(videos, prompts)
        print(json.dumps({"kind": args.kind, "guidance": guidance, "videos": args.videos, "steps": args.steps,
                          "device": device_label, **scores}), flush=True)
        saved[str(guidance)] = videos[:16].half()
    if args.save:
        torch.save({"prompts": prompts[:16], "videos": saved}, args.save)


if __name__ == "__main__":
    main()
