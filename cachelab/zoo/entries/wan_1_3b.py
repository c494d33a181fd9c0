from cachelab.zoo.presets import PRESETS, preset_video_model
from cachelab.zoo.registry import register_model


@register_model("wan-1.3b", "random weights, latency only: " + PRESETS["wan-1.3b"].description, trained=False)
def wan_1_3b(device, dtype=None, **build_kwargs):
    return preset_video_model("wan-1.3b", device, dtype, **build_kwargs)
