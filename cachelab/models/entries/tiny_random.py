"""Tiny random-weight pipelines (Latte, CogVideoX, Wan): fast stand-ins for tests and CPU demos."""

import torch

from cachelab.models.registry import VideoModel, latents_as_frames, register_model
from cachelab.models.tiny import PIPELINE_CALL_DEFAULTS, tiny_pipeline

_FORMAT = {"latte": "BCFHW", "cogvideox": "BFCHW", "wan": "BCFHW"}
_CFG = {"latte": "batched", "cogvideox": "batched", "wan": "sequential"}


def _tiny_random(kind: str, device, dtype=None) -> VideoModel:
    pipe = tiny_pipeline(kind).to(device)
    if dtype is not None:
        pipe = pipe.to(dtype=dtype)

    def generate(prompts, seeds, steps, guidance):
        generators = [torch.Generator(device).manual_seed(int(s)) for s in seeds]
        out = pipe(
            prompt=list(prompts),
            negative_prompt=[""] * len(prompts),
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generators,
            output_type="latent",
            **PIPELINE_CALL_DEFAULTS[kind],
        ).frames
        return latents_as_frames(out, _FORMAT[kind])

    return VideoModel(
        name=f"tiny-random-{kind}",
        target=pipe,
        generate=generate,
        trained=False,
        steps=20,
        guidance=5.0,
        cfg=_CFG[kind],
        prompts=lambda k: [["a red circle moving left", "a blue square moving up", "a green triangle moving down"][i % 3] for i in range(k)],
        transformer=pipe.transformer,
        tensor_format=_FORMAT[kind],
        description=f"tiny random-weight {type(pipe).__name__} for tests and CPU demos",
    )


for _kind in ("latte", "cogvideox", "wan"):
    register_model(f"tiny-random-{_kind}", f"tiny random-weight {_kind} pipeline for tests and demos", trained=False)(
        lambda device, dtype=None, _kind=_kind: _tiny_random(_kind, device, dtype)
    )
