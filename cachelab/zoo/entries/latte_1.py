from cachelab.zoo.presets import PRESETS, preset_video_model
from cachelab.zoo.registry import register_model


@register_model("latte-1", "random weights, latency only: " + PRESETS["latte-1"].description, trained=False)
def latte_1(device, dtype=None, **build_kwargs):
    return preset_video_model("latte-1", device, dtype, **build_kwargs)
