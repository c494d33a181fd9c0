from cachelab.zoo.bundled import MODEL_DESCRIPTIONS, video_model
from cachelab.zoo.registry import register_model


@register_model("tiny-cogvideox", MODEL_DESCRIPTIONS["tiny-cogvideox"], trained=True)
def tiny_cogvideox(device, dtype=None):
    return video_model("cogvideox", "tiny-cogvideox", device, dtype)
