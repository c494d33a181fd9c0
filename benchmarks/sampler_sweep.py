"""Prompt following of a bundled model under sampler settings: steps, guidance, scheduler class and config.

    python benchmarks/sampler_sweep.py --model tiny-latte --videos 96 \
        --setting '{"steps": 20, "g": 1.5}' \
        --setting '{"steps": 20, "g": 1.5, "timestep_spacing": "leading", "steps_offset": 1}' \
        --setting '{"steps": 50, "g": 1.5, "cls": "DPMSolverMultistepScheduler"}' --out sweep.jsonl

Each setting is one JSON object: ``steps``, ``g`` (guidance scale), optional ``eta`` (DDIM's noise), optional
``cls`` (a diffusers scheduler class, built from the shipped scheduler's config) and any scheduler config keys,
which override the shipped ones. Every setting generates the same prompts (``eval_prompts``) from the same seeds
and prints one JSON line: the checks' colour, shape, motion, found and consistency, and ``maxpx``, the mean over
videos of their brightest pixel in [0, 1] (near-black videos show up there).
"""

from __future__ import annotations

import argparse
import json
import time

import diffusers
import torch

from cachelab.models.pipeline import load_pipeline
from cachelab.zoo import bundled, shapes


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["tiny-latte", "tiny-cogvideox"], required=True)
    p.add_argument("--videos", type=int, default=48)
    p.add_argument("--setting", action="append", required=True, help="a JSON object (see above); repeatable")
    p.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = p.parse_args(argv)
    kind = args.model.removeprefix("tiny-")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = load_pipeline(bundled.WEIGHTS_DIR / args.model, dtype=torch.float32, device=device)
    shipped = dict(pipe.scheduler.config)
    prompts = bundled.eval_prompts(args.videos)
    for text in args.setting:
        setting = json.loads(text)
        overrides = {k: v for k, v in setting.items() if k not in ("steps", "g", "eta", "cls")}
        scheduler_class = getattr(diffusers, setting.get("cls", type(pipe.scheduler).__name__))
        pipe.scheduler = scheduler_class.from_config({**shipped, **overrides})
        extra = {"eta": setting["eta"]} if "eta" in setting else {}
        start = time.perf_counter()
        with torch.no_grad():
            out = pipe(prompt=prompts, negative_prompt=[""] * len(prompts), num_inference_steps=setting["steps"],
                       guidance_scale=setting["g"], generator=[torch.Generator(device).manual_seed(s) for s in range(len(prompts))],
                       **bundled.call_kwargs(pipe, kind), **extra).frames
        videos = bundled.frames_of(kind, out).float().clamp(-1, 1).cpu()
        scores = shapes.check_videos(videos, prompts)
        scores["maxpx"] = float(((videos + 1) / 2).amax(dim=(1, 2, 3, 4)).mean())
        scores["s"] = time.perf_counter() - start
        line = json.dumps({"setting": setting, "videos": len(prompts), **{k: round(v, 3) for k, v in scores.items()}})
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
