"""Prompt following of the bundled text-to-video models: generate, then check colour, shape and motion.

``python -m cachelab.models.evaluate DIR --kind cogvideox --videos 60 --guidance 1.5 3`` prints one JSON line per
guidance scale. The same functions serve ``cachelab bench`` to compare cached with uncached videos.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from cachelab.models import bundled, shapes


def eval_prompts(n: int) -> list[str]:
    """``n`` prompts cycling through every colour x shape x direction combination in a fixed shuffled order."""
    combos = shapes.all_attributes()
    order = torch.randperm(len(combos), generator=torch.Generator().manual_seed(0)).tolist()
    return [shapes.prompt_of(combos[order[i % len(combos)]]) for i in range(n)]


@torch.no_grad()
def generate_frames(
    pipe, kind: str, prompts: list[str], seeds: list[int], steps: int, guidance: float, batch_size: int | None = None
):
    """Videos (N, F, 3, H, W) in [-1, 1]; sample ``i`` uses its own generator seeded ``seeds[i]``.

    All prompts go through one pipeline call (one generation, so a cache handle's stats cover all of them) unless
    ``batch_size`` splits them."""
    device = pipe.transformer.device
    batch_size = batch_size or len(prompts)
    videos = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        generators = [torch.Generator(device).manual_seed(s) for s in seeds[start : start + batch_size]]
        out = pipe(
            prompt=chunk,
            negative_prompt=[""] * len(chunk),
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generators,
            **bundled.call_kwargs(pipe, kind),
        ).frames
        videos.append(bundled.frames_of(kind, out).float().clamp(-1, 1).cpu())
    return torch.cat(videos)


def prompt_following(videos: torch.Tensor, prompts: list[str]) -> dict[str, float]:
    return shapes.check_videos(videos, prompts)


def main(argv=None) -> None:
    from cachelab.models.pipeline import load_pipeline

    p = argparse.ArgumentParser(prog="python -m cachelab.models.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("pipeline", type=Path, help="a bundled pipeline directory")
    p.add_argument("--kind", choices=["latte", "cogvideox"], required=True)
    p.add_argument("--videos", type=int, default=60)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, nargs="+", default=[1.5, 3.0])
    p.add_argument("--save", type=Path, default=None, help="save the first 16 videos of each scale (.pt)")
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = load_pipeline(args.pipeline, dtype=torch.float32, device=device)
    prompts = eval_prompts(args.videos)
    seeds = list(range(args.videos))
    saved = {}
    for guidance in args.guidance:
        videos = generate_frames(pipe, args.kind, prompts, seeds, args.steps, guidance)
        scores = prompt_following(videos, prompts)
        print(json.dumps({"kind": args.kind, "guidance": guidance, "videos": args.videos, "steps": args.steps, **scores}), flush=True)
        saved[str(guidance)] = videos[:16].half()
    if args.save:
        torch.save({"prompts": prompts[:16], "videos": saved}, args.save)


if __name__ == "__main__":
    main()
