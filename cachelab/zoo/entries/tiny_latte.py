from cachelab.zoo.bundled import MODEL_DESCRIPTIONS, video_model
from cachelab.zoo.registry import register_model


@register_model("tiny-latte", MODEL_DESCRIPTIONS["tiny-latte"], trained=True)
def tiny_latte(device, dtype=None):
    return video_model("latte", "tiny-latte", device, dtype)
