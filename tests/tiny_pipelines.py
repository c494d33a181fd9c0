"""Tiny, offline diffusers pipelines of the current families: one table-driven builder.

``tiny_pipeline(family, seed=0)`` assembles the real, unmodified diffusers pipeline class of ``family`` from tiny
random components: the matching transformer of :data:`tiny_transformers.TINY_TRANSFORMERS` (or one built here for the
pipeline-only families Qwen-Image and HunyuanVideo-1.5), a small VAE of the family's class, the family's scheduler,
text encoders of the family's classes built from configs, and word-level tokenizers built with the ``tokenizers``
package. Nothing is downloaded. Every component is seeded, encoders are in ``eval()``, the progress bar is off,
and the pipeline survives ``save_pretrained`` and ``cachelab.models.pipeline.load_pipeline`` offline.

``pipe(prompt=..., **CALL_DEFAULTS[family])`` runs with sizes that fit the components (an 8x8 latent, 2-3 latent
frames for video, short text). :data:`FAMILIES` describes how each family runs classifier-free guidance, which is
what decides whether ``cfg_cache`` applies.

Component sizes follow diffusers' own fast tests where they are not fixed by the shared tiny widths (32-wide text,
4 latent channels); those tests fetch tokenizers and some encoders from the hub, which these replace.

Two caveats of the save/load round trip, both from the libraries rather than from these configs:

* Loading a ``WanTransformer3DModel`` needs ``accelerate``: without it diffusers turns ``low_cpu_mem_usage`` off
  and then refuses any class with ``_keep_in_fp32_modules``.
* Reloaded weights are memory-mapped safetensors, not 64-byte aligned, and MKL's CPU GEMMs may then round the
  last bit differently. Bitwise comparisons across a reload need ``MKL_CBWR=AUTO,STRICT`` in the environment of
  the process (or the parameters cloned into fresh storage); otherwise latents agree to about 1e-5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch

from tiny_transformers import (
    COGVIDEOX_FRAMES,
    LATENT_CHANNELS,
    LATTE_FRAMES,
    TEXT_DIM,
    TEXT_LEN,
    TINY_TRANSFORMERS,
    WAN_FRAMES,
)
from tiny_transformers import seeded as _seeded

if TYPE_CHECKING:  # only for annotations: importing diffusers/transformers takes seconds
    from diffusers import DiffusionPipeline
    from transformers import PreTrainedTokenizerFast

__all__ = ["CALL_DEFAULTS", "FAMILIES", "TINY_VOCAB", "Family", "tiny_pipeline", "tiny_text_encoder", "tiny_tokenizer"]


# --------------------------------------------------------------------------------------------------------------
# Text side: tokenizer and encoders
# --------------------------------------------------------------------------------------------------------------

#: T5 convention: pad = 0, eos = 1, unk = 2. Everything else is a small vocabulary for demo prompts.
TINY_VOCAB: tuple[str, ...] = (
    "<pad>", "</s>", "<unk>",
    "a", "an", "the", "of", "and", "with", "in", "on", "to", ",", ".",
    "video", "image", "photo",
    "red", "green", "blue", "yellow", "magenta", "cyan", "white", "black",
    "small", "big", "bright", "dark",
    "circle", "square", "triangle", "ball", "box", "cat", "dog", "bird", "car",
    "moving", "moves", "rolling", "flying", "running", "fast", "slowly",
    "left", "right", "up", "down", "background",
)  # fmt: skip

#: CLIP tokenizers pad to their ``model_max_length``; the CLIP encoders' position table has exactly this size.
CLIP_LENGTH = 77

#: A chat template for the Qwen tokenizers: HunyuanVideo-1.5 formats prompts with ``apply_chat_template`` and then
#: crops the first 108 tokens (its system prompt under Qwen's tokenizer). The system message therefore renders as
#: exactly 108 one-token words here, so that the crop keeps the user's prompt and CFG has something to guide by.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ 'a ' * 108 }}"
    "{% else %}{{ message['content'] }} . {% endif %}{% endfor %}"
)


def tiny_tokenizer(model_max_length: int = 512, chat_template: str | None = None) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer over :data:`TINY_VOCAB`, built offline with the ``tokenizers`` package.

    It lowercases, splits on whitespace and punctuation, maps unknown words to ``<unk>`` and appends ``</s>``
    like the T5/UMT5 tokenizers the video pipelines expect; it stands in for the CLIP, Llama and Qwen tokenizers
    too. ``model_max_length`` only has to exceed the longest padding a pipeline requests (Latte pads to 120), except
    for CLIP, whose pipelines pad to it.
    """
    from cachelab.zoo.text import word_level_tokenizer

    tokenizer = word_level_tokenizer(TINY_VOCAB, model_max_length)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def _t5_config_kwargs() -> dict[str, Any]:
    # T5 v1.1 settings (gated GELU, no dropout), as in the checkpoints these pipelines ship with.
    return dict(
        vocab_size=len(TINY_VOCAB),
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


def _clip_config(hidden_size: int, projection_dim: int):
    from transformers import CLIPTextConfig

    # eos_token_id != 2 makes CLIP pool at the first </s> rather than at the largest id (its legacy rule).
    return CLIPTextConfig(
        vocab_size=len(TINY_VOCAB),
        hidden_size=hidden_size,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CLIP_LENGTH,
        projection_dim=projection_dim,
        hidden_act="gelu",
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=1,
    )


def _qwen_text_config_kwargs() -> dict[str, Any]:
    # Two layers: the Qwen/Llama pipelines read hidden_states[-3] (they skip the last two layers' outputs).
    return dict(
        vocab_size=len(TINY_VOCAB),
        hidden_size=TEXT_DIM,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        rope_scaling={"mrope_section": [2, 2, 4], "rope_type": "default", "type": "default"},  # sums to head_dim / 2
        rope_theta=1000000.0,
        pad_token_id=0,
        eos_token_id=1,
    )


def tiny_text_encoder(kind: str, seed: int = 0) -> torch.nn.Module:
    """A tiny text encoder over :data:`TINY_VOCAB`, in eval mode, ``TEXT_DIM`` wide unless noted.

    ``kind`` is ``"t5"``, ``"umt5"``, ``"clip"`` (``CLIPTextModel``: pooled output as wide as the hidden size),
    ``"clip_projection"`` (``CLIPTextModelWithProjection``, 16 wide with a 16-wide projection, for SD3's pair),
    ``"llama"`` (HunyuanVideo), ``"qwen2_5_vl_text"`` (HunyuanVideo-1.5) or ``"qwen2_5_vl"`` (Qwen-Image).
    """
    import transformers as tf

    if kind == "t5":
        return _seeded(lambda: tf.T5EncoderModel(tf.T5Config(**_t5_config_kwargs())), seed)
    if kind == "umt5":
        return _seeded(lambda: tf.UMT5EncoderModel(tf.UMT5Config(**_t5_config_kwargs())), seed)
    if kind == "clip":
        return _seeded(lambda: tf.CLIPTextModel(_clip_config(TEXT_DIM, TEXT_DIM)), seed)
    if kind == "clip_projection":
        return _seeded(lambda: tf.CLIPTextModelWithProjection(_clip_config(16, 16)), seed)
    if kind == "llama":
        config = tf.LlamaConfig(
            vocab_size=len(TINY_VOCAB),
            hidden_size=TEXT_DIM,
            intermediate_size=37,
            num_hidden_layers=2,  # HunyuanVideo reads hidden_states[-3]
            num_attention_heads=4,
            hidden_act="gelu",
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=1,
        )
        return _seeded(lambda: tf.LlamaModel(config), seed)
    if kind == "qwen2_5_vl_text":
        return _seeded(lambda: tf.Qwen2_5_VLTextModel(tf.Qwen2_5_VLTextConfig(**_qwen_text_config_kwargs())), seed)
    if kind == "qwen2_5_vl":
        config = tf.Qwen2_5_VLConfig(
            text_config=_qwen_text_config_kwargs(),
            vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16},
            # vision token ids outside the vocabulary: a text-only prompt never contains them
            vision_start_token_id=len(TINY_VOCAB) + 1,
            vision_end_token_id=len(TINY_VOCAB) + 2,
            vision_token_id=len(TINY_VOCAB) + 3,
            image_token_id=len(TINY_VOCAB) + 4,
            video_token_id=len(TINY_VOCAB) + 5,
        )
        return _seeded(lambda: tf.Qwen2_5_VLForConditionalGeneration(config), seed)
    raise ValueError(f"unknown text encoder kind {kind!r}")


# --------------------------------------------------------------------------------------------------------------
# VAEs (only their configs matter for ``output_type="latent"``, but they are real and decode)
# --------------------------------------------------------------------------------------------------------------


def _kl_vae(seed: int):
    from diffusers import AutoencoderKL

    # Two blocks: one 2x downsampling, so 16x16 images <-> 8x8 latents (pipelines read the factor from
    # ``len(block_out_channels)``).
    return _seeded(
        lambda: AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(8, 8),
            layers_per_block=1,
            latent_channels=LATENT_CHANNELS,
            norm_num_groups=4,
            sample_size=16,
        ),
        seed,
    )


def _cogvideox_vae(seed: int):
    from diffusers import AutoencoderKLCogVideoX

    # Three blocks: 4x spatial compression; the first log2(4) = 2 blocks also halve time, so 9 <-> 3 frames.
    return _seeded(
        lambda: AutoencoderKLCogVideoX(
            in_channels=3,
            out_channels=3,
            down_block_types=("CogVideoXDownBlock3D",) * 3,
            up_block_types=("CogVideoXUpBlock3D",) * 3,
            block_out_channels=(8, 8, 8),
            latent_channels=LATENT_CHANNELS,
            layers_per_block=1,
            norm_num_groups=2,
            temporal_compression_ratio=4,
            sample_height=32,
            sample_width=32,
        ),
        seed,
    )


def _wan_vae(seed: int):
    from diffusers import AutoencoderKLWan

    # Two downsampling stages, both also halving time: 4x spatial and 4x temporal compression. The scale factors
    # and per-channel latent statistics are config values the pipeline reads, so they are set to match.
    return _seeded(
        lambda: AutoencoderKLWan(
            base_dim=8,
            z_dim=LATENT_CHANNELS,
            dim_mult=[1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[True, True],
            latents_mean=[0.0] * LATENT_CHANNELS,
            latents_std=[1.0] * LATENT_CHANNELS,
            scale_factor_spatial=4,
            scale_factor_temporal=4,
        ),
        seed,
    )


def _qwenimage_vae(seed: int):
    from diffusers import AutoencoderKLQwenImage

    # QwenImagePipeline's factor is 2 ** len(temperal_downsample) = 4: 32x32 images <-> 8x8 latents.
    return _seeded(
        lambda: AutoencoderKLQwenImage(
            base_dim=8,
            z_dim=LATENT_CHANNELS,
            dim_mult=[1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True],
            latents_mean=[0.0] * LATENT_CHANNELS,
            latents_std=[1.0] * LATENT_CHANNELS,
        ),
        seed,
    )


def _ltx_vae(seed: int):
    from diffusers import AutoencoderKLLTXVideo

    # Two of four blocks scale space and time: 4x spatial and 4x temporal compression (32x32, 5 frames <-> 8x8, 2).
    return _seeded(
        lambda: AutoencoderKLLTXVideo(
            latent_channels=LATENT_CHANNELS,
            block_out_channels=(8, 8, 8, 8),
            spatio_temporal_scaling=(True, True, False, False),
            layers_per_block=(1, 1, 1, 1, 1),
            # the decoder has its own sizes, 237M parameters by default
            decoder_block_out_channels=(8, 8, 8, 8),
            decoder_spatio_temporal_scaling=(True, True, False, False),
            decoder_layers_per_block=(1, 1, 1, 1, 1),
            patch_size=1,
            patch_size_t=1,
            encoder_causal=True,
            decoder_causal=False,
        ),
        seed,
    )


def _mochi_vae(seed: int):
    from diffusers import AutoencoderKLMochi

    # MochiPipeline fixes the factors (8x spatial, 6x temporal: 64x64, 7 frames <-> 8x8, 2); group norms of 32
    # groups need 32 channels.
    return _seeded(
        lambda: AutoencoderKLMochi(
            latent_channels=LATENT_CHANNELS,
            out_channels=3,
            encoder_block_out_channels=(32, 32, 32, 32),
            decoder_block_out_channels=(32, 32, 32, 32),
            layers_per_block=(1, 1, 1, 1, 1),
        ),
        seed,
    )


def _hunyuanvideo_vae(seed: int):
    from diffusers import AutoencoderKLHunyuanVideo

    # 8x spatial, 4x temporal compression, as the real one: 64x64, 5 frames <-> 8x8, 2.
    return _seeded(
        lambda: AutoencoderKLHunyuanVideo(
            in_channels=3,
            out_channels=3,
            latent_channels=LATENT_CHANNELS,
            down_block_types=("HunyuanVideoDownBlock3D",) * 4,
            up_block_types=("HunyuanVideoUpBlock3D",) * 4,
            block_out_channels=(8, 8, 8, 8),
            layers_per_block=1,
            norm_num_groups=4,
            spatial_compression_ratio=8,
            temporal_compression_ratio=4,
            mid_block_add_attention=True,
        ),
        seed,
    )


def _hunyuanvideo15_vae(seed: int):
    from diffusers import AutoencoderKLHunyuanVideo15

    # 4x spatial, 2x temporal compression: 32x32, 3 frames <-> 8x8, 2.
    return _seeded(
        lambda: AutoencoderKLHunyuanVideo15(
            in_channels=3,
            out_channels=3,
            latent_channels=LATENT_CHANNELS,
            block_out_channels=(16, 16),
            layers_per_block=1,
            spatial_compression_ratio=4,
            temporal_compression_ratio=2,
            downsample_match_channel=False,
            upsample_match_channel=False,
        ),
        seed,
    )


# --------------------------------------------------------------------------------------------------------------
# Transformers of the pipeline-only families
# --------------------------------------------------------------------------------------------------------------

#: HunyuanVideo-1.5's glyph-text projection has a fixed 2048-wide hidden layer (4.3M parameters, ~1 GMAC per call
#: on its 256 ByT5 tokens), so this family is the slowest of the tiny pipelines.
#: HunyuanVideo-1.5 feeds SigLIP image tokens to the transformer even for text-to-video (zeros); this sets their
#: width (the pipeline reads it from the config) while the count, 729, is fixed by the pipeline.
HUNYUANVIDEO15_IMAGE_DIM = 12


def _build_hunyuanvideo15(seed: int):
    from diffusers import HunyuanVideo15Transformer3DModel

    # The input is [latents, condition latents, mask]: 2 * 4 + 1 channels.
    return _seeded(
        lambda: HunyuanVideo15Transformer3DModel(
            in_channels=2 * LATENT_CHANNELS + 1,
            out_channels=LATENT_CHANNELS,
            num_attention_heads=2,
            attention_head_dim=8,
            num_layers=2,
            num_refiner_layers=1,
            mlp_ratio=2.0,
            patch_size=1,
            patch_size_t=1,
            text_embed_dim=TEXT_DIM,
            text_embed_2_dim=TEXT_DIM,
            image_embed_dim=HUNYUANVIDEO15_IMAGE_DIM,
            rope_axes_dim=(2, 2, 4),  # sums to attention_head_dim
            target_size=16,
            task_type="t2v",
        ),
        seed,
    )


def _build_qwenimage(seed: int):
    from diffusers import QwenImageTransformer2DModel

    # Qwen-Image packs 2x2 latent patches: 4 latent channels become 16 token channels.
    return _seeded(
        lambda: QwenImageTransformer2DModel(
            patch_size=2,
            in_channels=4 * LATENT_CHANNELS,
            out_channels=LATENT_CHANNELS,
            num_layers=2,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=TEXT_DIM,
            guidance_embeds=False,
            axes_dims_rope=(8, 4, 4),  # sums to attention_head_dim
        ),
        seed,
    )


# --------------------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """How to build one family's pipeline and how it runs classifier-free guidance.

    Attributes:
        pipeline: the diffusers pipeline class name.
        components: ``seed -> {name: component}`` without the tokenizers and ``scheduler``.
        scheduler: ``() -> scheduler``.
        tokenizers: component name -> tokenizer factory.
        cfg: ``"batched"`` (one call ``[uncond, cond]`` per step), ``"sequential"`` (two calls per step),
            ``"guider"`` (two calls through a diffusers guider) or ``"true_cfg"`` (guidance-distilled: the
            guidance scale is an embedded input; two calls per step only with ``true_cfg_scale > 1`` and a
            negative prompt).
        cfg_kwargs: call arguments that turn real CFG on (added to :data:`CALL_DEFAULTS` by the tests).
    """

    pipeline: str
    components: Callable[[int], dict[str, Any]]
    scheduler: Callable[[], Any]
    tokenizers: dict[str, Callable[[], Any]]
    cfg: str
    cfg_kwargs: dict[str, Any]


def _flow_match(**config: Any) -> Callable[[], Any]:
    def build():
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler(**config)

    return build


def _ddim_latte():
    from diffusers import DDIMScheduler

    # Latte-1's scheduler; it has no ``variance_type``, so the pipeline drops the learned-sigma channels.
    return DDIMScheduler(beta_schedule="linear", clip_sample=False)


def _ddim_cogvideox():
    from diffusers import CogVideoXDDIMScheduler

    # CogVideoX-2b's scheduler settings.
    return CogVideoXDDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        set_alpha_to_one=True,
        snr_shift_scale=3.0,
        timestep_spacing="trailing",
    )


def _dpm_pixart():
    from diffusers import DPMSolverMultistepScheduler

    # PixArt-Sigma's scheduler (learned sigma: the pipeline keeps only the first half of the output channels).
    return DPMSolverMultistepScheduler()


def _byt5_tokenizer():
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer()  # byte-level: built without files


def _guider():
    from diffusers.guiders import ClassifierFreeGuidance

    return ClassifierFreeGuidance(guidance_scale=6.0)


def _transformer(name: str) -> Callable[[int], torch.nn.Module]:
    return lambda seed: TINY_TRANSFORMERS[name].build(seed)


_T5_TOKENIZER = {"tokenizer": tiny_tokenizer}
_CLIP_TOKENIZER = lambda: tiny_tokenizer(model_max_length=CLIP_LENGTH)  # noqa: E731

#: Every family, by short name.
FAMILIES: dict[str, Family] = {
    "flux": Family(
        "FluxPipeline",
        lambda s: {
            "transformer": _transformer("flux")(s),
            "vae": _kl_vae(s),
            "text_encoder": tiny_text_encoder("clip", s),
            "text_encoder_2": tiny_text_encoder("t5", s),
        },
        # FLUX.1-dev's resolution-dependent shift
        _flow_match(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15),
        {"tokenizer": _CLIP_TOKENIZER, "tokenizer_2": tiny_tokenizer},
        "true_cfg",
        {"true_cfg_scale": 4.0},
    ),
    "sd3": Family(
        "StableDiffusion3Pipeline",
        lambda s: {
            "transformer": _transformer("sd3")(s),
            "vae": _kl_vae(s),
            # two 16-wide CLIPs concatenate to the 32-wide T5: joint_attention_dim 32, pooled 16 + 16
            "text_encoder": tiny_text_encoder("clip_projection", s),
            "text_encoder_2": tiny_text_encoder("clip_projection", s + 1),
            "text_encoder_3": tiny_text_encoder("t5", s),
        },
        _flow_match(shift=3.0),
        {"tokenizer": _CLIP_TOKENIZER, "tokenizer_2": _CLIP_TOKENIZER, "tokenizer_3": tiny_tokenizer},
        "batched",
        {"guidance_scale": 5.0},
    ),
    "ltx": Family(
        "LTXPipeline",
        lambda s: {"transformer": _transformer("ltx")(s), "vae": _ltx_vae(s), "text_encoder": tiny_text_encoder("t5", s)},
        _flow_match(),
        _T5_TOKENIZER,
        "batched",
        {"guidance_scale": 3.0},
    ),
    "mochi": Family(
        "MochiPipeline",
        lambda s: {
            "transformer": _transformer("mochi")(s),
            "vae": _mochi_vae(s),
            "text_encoder": tiny_text_encoder("t5", s),
        },
        # mochi-1-preview's scheduler: inverted sigmas, so the transformer receives rising timesteps
        _flow_match(invert_sigmas=True),
        _T5_TOKENIZER,
        "batched",
        {"guidance_scale": 4.5},
    ),
    "hunyuanvideo": Family(
        "HunyuanVideoPipeline",
        lambda s: {
            "transformer": _transformer("hunyuanvideo")(s),
            "vae": _hunyuanvideo_vae(s),
            "text_encoder": tiny_text_encoder("llama", s),
            "text_encoder_2": tiny_text_encoder("clip", s),
        },
        _flow_match(shift=7.0),
        {"tokenizer": tiny_tokenizer, "tokenizer_2": _CLIP_TOKENIZER},
        "true_cfg",
        {"true_cfg_scale": 4.0},
    ),
    "hunyuanvideo15": Family(
        "HunyuanVideo15Pipeline",
        lambda s: {
            "transformer": _build_hunyuanvideo15(s),
            "vae": _hunyuanvideo15_vae(s),
            "text_encoder": tiny_text_encoder("qwen2_5_vl_text", s),
            "text_encoder_2": tiny_text_encoder("t5", s),  # the glyph (ByT5) encoder; zeros unless quoted text
            "guider": _guider(),
        },
        _flow_match(shift=7.0),
        {"tokenizer": lambda: tiny_tokenizer(chat_template=CHAT_TEMPLATE), "tokenizer_2": _byt5_tokenizer},
        "guider",
        {},  # the guider's guidance_scale (6.0) is a component setting, not a call argument
    ),
    "qwenimage": Family(
        "QwenImagePipeline",
        lambda s: {
            "transformer": _build_qwenimage(s),
            "vae": _qwenimage_vae(s),
            "text_encoder": tiny_text_encoder("qwen2_5_vl", s),
        },
        _flow_match(use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9),
        {"tokenizer": tiny_tokenizer},
        "sequential",  # true CFG: two calls per step when true_cfg_scale > 1 and a negative prompt is given
        {"true_cfg_scale": 4.0},
    ),
    "wan": Family(
        "WanPipeline",
        lambda s: {"transformer": _transformer("wan")(s), "vae": _wan_vae(s), "text_encoder": tiny_text_encoder("umt5", s)},
        _flow_match(shift=3.0),
        _T5_TOKENIZER,
        "sequential",
        {"guidance_scale": 5.0},
    ),
    "cogvideox": Family(
        "CogVideoXPipeline",
        lambda s: {
            "transformer": _transformer("cogvideox")(s),
            "vae": _cogvideox_vae(s),
            "text_encoder": tiny_text_encoder("t5", s),
        },
        _ddim_cogvideox,
        _T5_TOKENIZER,
        "batched",
        {"guidance_scale": 5.0},
    ),
    "latte": Family(
        "LattePipeline",
        lambda s: {"transformer": _transformer("latte")(s), "vae": _kl_vae(s), "text_encoder": tiny_text_encoder("t5", s)},
        _ddim_latte,
        _T5_TOKENIZER,
        "batched",
        {"guidance_scale": 5.0},
    ),
    "pixart_sigma": Family(
        "PixArtSigmaPipeline",
        lambda s: {"transformer": _transformer("pixart")(s), "vae": _kl_vae(s), "text_encoder": tiny_text_encoder("t5", s)},
        _dpm_pixart,
        _T5_TOKENIZER,
        "batched",
        {"guidance_scale": 4.5},
    ),
}

#: Call arguments that fit the tiny components: ``pipe(prompt=..., **CALL_DEFAULTS[family])``. Every choice
#: gives an 8x8 latent (before any 2x2 packing). Notes: Latte names its frame count ``video_length`` and always
#: pads text to 120 tokens; ``clean_caption=False`` skips the bs4/ftfy caption cleaning; CogVideoX's and Mochi's
#: ``max_sequence_length`` must equal the transformer's text table; HunyuanVideo's default prompt template would
#: crop 95 template tokens of the Llama tokenizer, so an empty template is passed (as diffusers' tests do);
#: PixArt-Sigma's resolution binning only knows the real sample sizes.
CALL_DEFAULTS: dict[str, dict[str, Any]] = {
    "flux": {"height": 16, "width": 16, "max_sequence_length": TEXT_LEN},
    "sd3": {"height": 16, "width": 16, "max_sequence_length": TEXT_LEN},
    "ltx": {"height": 32, "width": 32, "num_frames": 5, "max_sequence_length": TEXT_LEN},
    "mochi": {"height": 64, "width": 64, "num_frames": 7, "max_sequence_length": TEXT_LEN},
    "hunyuanvideo": {
        "height": 64,
        "width": 64,
        "num_frames": 5,
        "max_sequence_length": TEXT_LEN,
        "prompt_template": {"template": "{}", "crop_start": 0},
    },
    "hunyuanvideo15": {"height": 32, "width": 32, "num_frames": 3},
    "qwenimage": {"height": 32, "width": 32, "max_sequence_length": TEXT_LEN},
    "wan": {"height": 32, "width": 32, "num_frames": WAN_FRAMES, "max_sequence_length": TEXT_LEN},
    "cogvideox": {"height": 32, "width": 32, "num_frames": COGVIDEOX_FRAMES, "max_sequence_length": TEXT_LEN},
    "latte": {"height": 16, "width": 16, "video_length": LATTE_FRAMES, "clean_caption": False},
    "pixart_sigma": {
        "height": 16,
        "width": 16,
        "max_sequence_length": TEXT_LEN,
        "clean_caption": False,
        "use_resolution_binning": False,
    },
}


def tiny_pipeline(family: str, seed: int = 0) -> DiffusionPipeline:
    """The real diffusers pipeline of ``family`` (a key of :data:`FAMILIES`) from tiny components seeded with
    ``seed``, progress bar disabled. Call it with :data:`CALL_DEFAULTS` ``[family]``."""
    import diffusers

    spec = FAMILIES.get(family)
    if spec is None:
        raise ValueError(f"unknown pipeline family {family!r}; expected one of {sorted(FAMILIES)}")
    components = spec.components(seed)
    components.update({name: make() for name, make in spec.tokenizers.items()})
    components["scheduler"] = spec.scheduler()
    pipe = getattr(diffusers, spec.pipeline)(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe
