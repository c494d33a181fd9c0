"""Untrained two-layer twins of the bundled models: the same pipelines and prompts, fast enough for CPU tests."""

from cachelab.zoo.bundled import RANDOM_DESCRIPTIONS, random_video_model
from cachelab.zoo.registry import register_model

for _kind in ("latte", "cogvideox"):
    register_model(f"tiny-random-{_kind}", RANDOM_DESCRIPTIONS[f"tiny-random-{_kind}"], trained=False)(
        lambda device, dtype=None, _kind=_kind: random_video_model(_kind, device, dtype)
    )
