from cachelab.zoo.presets import PRESETS, preset_video_model
from cachelab.zoo.registry import register_model


@register_model("cogvideox-2b", "random weights, latency only: " + PRESETS["cogvideox-2b"].description, trained=False)
def cogvideox_2b(device, dtype=None, **build_kwargs):
    return preset_video_model("cogvideox-2b", device, dtype, **build_kwargs)
