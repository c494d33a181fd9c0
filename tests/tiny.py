"""Tiny, randomly initialised diffusers denoisers and pipelines that run in milliseconds on CPU.

They exist for tests and demos of cache policies: every builder works offline from a config written here (no hub
ids, no downloads), and every model keeps the block structure of the real checkpoint family (same classes, same
block kinds, the same kind of conditioning) at a width of 16-32 channels and one or two blocks per stack.

* :data:`TINY_TRANSFORMERS` maps a short name to a :class:`TinySpec`: ``spec.build()`` returns the denoiser in
  ``eval()`` mode and ``spec.inputs(batch, timestep)`` the keyword arguments for ``model(**kwargs)``, shaped the
  way the matching diffusers pipeline calls the model.
* :func:`tiny_pipeline` assembles a real ``LattePipeline``, ``CogVideoXPipeline`` or ``WanPipeline`` from tiny
  components (transformer, VAE, scheduler, text encoder and a word-level tokenizer), which survives
  ``save_pretrained`` / ``DiffusionPipeline.from_pretrained`` offline. :data:`PIPELINE_CALL_DEFAULTS` holds
  call arguments (sizes, frame counts, sequence lengths) that fit those components.

Conventions of ``spec.inputs(batch, timestep, seed=0)``:

* ``timestep`` is on the scheduler's 0-1000 scale. The spec converts it the way the model's pipeline does before
  calling the model: Flux receives ``timestep / 1000`` (``FluxPipeline`` divides, the model multiplies back).
  ``kwargs["timestep"]`` is always a float32 tensor of shape ``(batch,)``.
* Random tensors are drawn sample by sample from one ``torch.Generator`` seeded with ``seed``, so the first *k*
  samples of a batch of *n* equal a batch of *k*, so a batched call can be checked sample by sample against
  smaller ones (as tests of classifier-free-guidance splitting need).
* Text masks keep a different number of tokens per sample (16, 13, 16, 13, ...) so that masking code is exercised.
* Latents are small: 8x8 spatially, 2-4 latent frames for video models, 16 text tokens.
* Some kwargs have no batch dimension, as in the pipelines: Flux ``img_ids``/``txt_ids``, PixArt
  ``added_cond_kwargs``, Allegro ``image_rotary_emb``, LTX ``num_frames``/``height``/``width``/
  ``rope_interpolation_scale``.

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

if TYPE_CHECKING:  # only for annotations: importing diffusers/transformers takes seconds
    from diffusers import DiffusionPipeline
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "PIPELINE_CALL_DEFAULTS",
    "TINY_TRANSFORMERS",
    "TinySpec",
    "tiny_pipeline",
    "tiny_text_encoder",
    "tiny_tokenizer",
]


@dataclass(frozen=True)
class TinySpec:
    """A tiny denoiser and a matching input factory.

    Attributes:
        build: returns a freshly initialised model in ``eval()`` mode; the same weights on every call.
        inputs: ``(batch, timestep, seed=0) -> kwargs`` for ``model(**kwargs)``, including ``return_dict=False``.
    """

    build: Callable[[], torch.nn.Module]
    inputs: Callable[[int, float], dict[str, Any]]


# --------------------------------------------------------------------------------------------------------------
# Shared sizes and helpers
# --------------------------------------------------------------------------------------------------------------

#: Width of the tiny text encoder; also the ``text_embed_dim``/``caption_channels`` of every tiny transformer.
TEXT_DIM = 32
#: Text tokens per prompt. CogVideoX adds a positional table sized for exactly this many tokens.
TEXT_LEN = 16
#: Latent channels of every tiny model (before any packing).
LATENT_CHANNELS = 4
#: Latent height and width of every tiny model.
LATENT_SIZE = 8


def _seeded(factory: Callable[[], torch.nn.Module], seed: int) -> torch.nn.Module:
    """Run ``factory`` under ``torch.manual_seed(seed)`` and return its module in eval mode.

    The global RNG state is forked so that building a model does not reseed the caller's random stream.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = factory()
    return module.eval()


def _draw(batch: int, seed: int, **shapes: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Standard-normal tensors of shape ``(batch, *shape)``, drawn sample-major from one generator.

    Drawing sample by sample (all tensors of sample 0, then all of sample 1, ...) makes a batch's leading samples
    independent of the batch size.
    """
    generator = torch.Generator().manual_seed(seed)
    samples = [{name: torch.randn(shape, generator=generator) for name, shape in shapes.items()} for _ in range(batch)]
    return {name: torch.stack([sample[name] for sample in samples]) for name in shapes}


def _timestep(batch: int, timestep: float) -> torch.Tensor:
    """One timestep per sample, float32, as the pipelines expand it."""
    return torch.full((batch,), float(timestep), dtype=torch.float32)


def _text_mask(batch: int, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """Right-padded text mask: even samples keep all ``TEXT_LEN`` tokens, odd samples 3 fewer."""
    lengths = torch.tensor([TEXT_LEN - 3 * (i % 2) for i in range(batch)])
    return (torch.arange(TEXT_LEN)[None, :] < lengths[:, None]).to(dtype)


# --------------------------------------------------------------------------------------------------------------
# Transformers
# --------------------------------------------------------------------------------------------------------------

#: Latte uses learned sigma, so the output has twice the latent channels (the pipeline drops the second half).
#: ``video_length`` sizes a temporal positional table that is added as is, so it must equal the frame count.
LATTE_FRAMES = 4


def _build_latte(seed: int = 0) -> torch.nn.Module:
    from diffusers import LatteTransformer3DModel

    return _seeded(
        lambda: LatteTransformer3DModel(
            num_attention_heads=2,
            attention_head_dim=8,
            in_channels=LATENT_CHANNELS,
            out_channels=2 * LATENT_CHANNELS,
            num_layers=2,
            cross_attention_dim=16,  # captions are projected to the inner dim (2 * 8) before cross-attention
            attention_bias=True,
            sample_size=LATENT_SIZE,
            patch_size=2,
            activation_fn="gelu-approximate",
            num_embeds_ada_norm=1000,
            norm_type="ada_norm_single",
            norm_elementwise_affine=False,
            norm_eps=1e-6,
            caption_channels=TEXT_DIM,
            video_length=LATTE_FRAMES,
        ),
        seed,
    )


def _latte_inputs(batch: int, timestep: float, seed: int = 0) -> dict[str, Any]:
    # LattePipeline passes no text mask: it zeroes padded embeddings (or trims them for a single prompt) instead.
    x = _draw(
        batch,
        seed,
        hidden_states=(LATENT_CHANNELS, LATTE_FRAMES, LATENT_SIZE, LATENT_SIZE),
        encoder_hidden_states=(TEXT_LEN, TEXT_DIM),
    )
    return {**x, "timestep": _timestep(batch, timestep), "return_dict": False}


#: CogVideoX latent frames; the VAE compresses time 4x, so 9 pixel frames.
COGVIDEOX_LATENT_FRAMES = 3
COGVIDEOX_FRAMES = (COGVIDEOX_LATENT_FRAMES - 1) * 4 + 1


def _build_cogvideox(seed: int = 0) -> torch.nn.Module:
    from diffusers import CogVideoXTransformer3DModel

    # CogVideoX-2b layout: sin-cos positional embeddings, no RoPE, no temporal patching.
    return _seeded(
        lambda: CogVideoXTransformer3DModel(
            num_attention_heads=2,
            attention_head_dim=8,
            in_channels=LATENT_CHANNELS,
            out_channels=LATENT_CHANNELS,
            time_embed_dim=16,
            text_embed_dim=TEXT_DIM,
            num_layers=2,
            sample_width=LATENT_SIZE,
            sample_height=LATENT_SIZE,
            sample_frames=COGVIDEOX_FRAMES,  # pixel frames; the pipeline uses it as its default ``num_frames``
            patch_size=2,
            temporal_compression_ratio=4,
            max_text_seq_length=TEXT_LEN,  # the joint positional table assumes exactly this many text tokens
            use_rotary_positional_embeddings=False,
        ),
        seed,
    )


def _cogvideox_inputs(batch: int, timestep: float, seed: int = 0) -> dict[str, Any]:
    x = _draw(
        batch,
        seed,
        # CogVideoX latents are frame-major: (batch, frames, channels, height, width).
        hidden_states=(COGVIDEOX_LATENT_FRAMES, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE),
        encoder_hidden_states=(TEXT_LEN, TEXT_DIM),
    )
    return {**x, "timestep": _timestep(batch, timestep), "return_dict": False}


def _build_pixart(seed: int = 0) -> torch.nn.Module:
    from diffusers import PixArtTransformer2DModel

    return _seeded(
        lambda: PixArtTransformer2DModel(
            num_attention_heads=2,
            attention_head_dim=8,
            in_channels=LATENT_CHANNELS,
            out_channels=2 * LATENT_CHANNELS,  # learned sigma, as in PixArt-alpha/sigma
            num_layers=2,
            cross_attention_dim=16,
            sample_size=LATENT_SIZE,
            patch_size=2,
            caption_channels=TEXT_DIM,
            # Resolution/aspect-ratio embeddings are only used by the 1024px checkpoints; off, as for 512px.
            use_additional_conditions=False,
        ),
        seed,
    )


def _pixart_inputs(batch: int, timestep: float, seed: int = 0) -> dict[str, Any]:
    x = _draw(
        batch,
        seed,
        hidden_states=(LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE),
        encoder_hidden_states=(TEXT_LEN, TEXT_DIM),
    )
    return {
        **x,
        "timestep": _timestep(batch, timestep),
        "encoder_attention_mask": _text_mask(batch),
        # Unbatched dict, as PixArtAlphaPipeline passes it when additional conditions are off.
        "added_cond_kwargs": {"resolution": None, "aspect_ratio": None},
        "return_dict": False,
    }


#: Number of DiT classes (ImageNet has 1000; ten keep the label table tiny).
DIT_CLASSES = 10


def _build_dit(seed: int = 0) -> torch.nn.Module:
    from diffusers import DiTTransformer2DModel

    return _seeded(
        lambda: DiTTransformer2DModel(
            num_attention_heads=2,
            attention_head_dim=8,
            in_channels=LATENT_CHANNELS,
            out_channels=2 * LATENT_CHANNELS,  # learned sigma, as in DiT-XL/2
            num_layers=2,
            sample_size=LATENT_SIZE,
            patch_size=2,
            num_embeds_ada_norm=DIT_CLASSES,
        ),
        seed,
    )


def _dit_inputs(batch: int, timestep: float, seed: int = 0) -> dict[str, Any]:
    x = _draw(batch, seed, hidden_states=(LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE))
    # Labels come from their own generator, one per sample, so they too do not depend on the batch size.
    generator = torch.Generator().manual_seed(seed)
    class_labels = torch.cat([torch.randint(0, DIT_CLASSES, (1,), generator=generator) for _ in range(batch)])
    return {**x, "timestep": _timestep(batch, timestep), "class_labels": class_labels, "return_dict": False}


POOLED_DIM = 32


def _build_sd3(seed: int = 0) -> torch.nn.Module:
    from diffusers import SD3Transformer2DModel

    # SD3.5-medium layout: QK RMS-norm and a dual (second, image-only) attention in the first block, so both
    # JointTransformerBlock variants exist; the last block is ``context_pre_only``.
    return _seeded(
        lambda: SD3Transformer2DModel(
            sample_size=LATENT_SIZE,
            patch_size=2,
            in_channels=LATENT_CHANNELS,
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=2,
            joint_attention_dim=TEXT_DIM,
            caption_projection_dim=16,  # must equal the inner dim (2 * 8): text joins the image stream
            pooled_projection_dim=POOLED_DIM,
            out_channels=LATENT_CHANNELS,
            pos_embed_max_size=16,  # the positional table is cropped to the latent, so it must cover 8 / 2
            dual_attention_layers=(0,),
            qk_norm="rms_norm",
        ),
        seed,
    )


def _sd3_inputs(batch: int, timestep: float, seed: int = 0) -> dict[str, Any]:
    x = _draw(
        batch,
        seed,
        hidden_states=(LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE),
        encoder_hidden_states=(TEXT_LEN, TEXT_DIM),
        pooled_projections=(POOLED_DIM,),
    )
    return {**x, "timestep": _timestep(batch, timestep), "return_dict": False}


#: Flux packs 2x2 latent patches into tokens: 4 latent channels become 16 token channels on a 4x4 grid.
FLUX_GRID = LATENT_SIZE // 2
FLUX_CHANNELS = LATENT_CHANNELS * 4


def _build_flux(seed: int = 0) -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel

    # FLUX.1-dev layout: guidance-distilled (guidance embedding on), one double- and one single-stream block.
    return _seeded(
        lambda: FluxTransformer2DModel(
            patch_size=1,
            in_channels=FLUX_CHANNELS,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=TEXT_DIM,
            pooled_projection_dim=POOLED_DIM,
            guidance_embeds=True,
            axes_dims_rope=(4, 6, 6),  # must sum to attention_head_dim
        ),
        seed,
    )


def _flux_inputs(batch: int, timestep: float, seed: int = 0) -> dict[str, Any]:
    x = _draw(
        batch,
        seed,
        hidden_states=(FLUX_GRID * FLUX_GRID, FLUX_CHANNELS),
        encoder_hidden_states=(TEXT_LEN, TEXT_DIM),
        pooled_projections=(POOLED_DIM,),
    )
    # Position ids as FluxPipeline builds them: (0, row, col) per image token, zeros per text token, no batch dim.
    img_ids = torch.zeros(FLUX_GRID, FLUX_GRID, 3)
    img_ids[..., 1] = torch.arange(FLUX_GRID)[:, None]
    img_ids[..., 2] = torch.arange(FLUX_GRID)[None, :]
    return {
        **x,
        # FluxPipeline passes t / 1000 and the model multiplies by 1000; guidance is passed raw, likewise rescaled.
        "timestep": _timestep(batch, timestep / 1000.0),
        "img_ids": img_ids.reshape(-1, 3),
        "txt_ids": torch.zeros(TEXT_LEN, 3),
        "guidance": torch.full((batch,), 3.5),
        "return_dict": False,
    }


VIDEO_LATENT_FRAMES = 2


def _build_hunyuanvideo(seed: int = 0) -> torch.nn.Module:
    from diffusers import HunyuanVideoTransformer3DModel

    return _seeded(
        lambda: HunyuanVideoTransformer3DModel(
            in_channels=LATENT_CHANNELS,
            out_channels=LATENT_CHANNELS,
            num_attention_heads=2,
            attention_head_dim=8,
            num_layers=1,
            num_single_layers=1,
            num_refiner_layers=1,
            patch_size=2,
            patch_size_t=1,
            guidance_embeds=True,
            text_embed_dim=TEXT_DIM,
            pooled_projection_dim=POOLED_DIM,
            rope_axes_dim=(2, 2, 4),  # must sum to attention_head_dim
        ),
        seed,
    )


def _hunyuanvideo_inputs(batch: int, timestep: float, seed: int = 0) -> dict[str, Any]:
    x = _draw(
        batch,
        seed,
        hidden_states=(LATENT_CHANNELS, VIDEO_LATENT_FRAMES, LATENT_SIZE, LATENT_SIZE),
        encoder_hidden_states=(TEXT_LEN, TEXT_DIM),
        pooled_projections=(POOLED_DIM,),
    )
    return {
        **x,
        "timestep": _timestep(batch, timestep),
        # HunyuanVideoPipeline casts the mask to the transformer dtype and passes guidance * 1000.
        "encoder_attention_mask": _text_mask(batch, torch.float32),
        "guidance": torch.full((batch,), 6.0 * 1000.0),
        "return_dict": False,
    }


#: Wan latent frames; the VAE compresses time 4x, so 9 pixel frames.
WAN_LATENT_FRAMES = 3
WAN_FRAMES = (WAN_LATENT_FRAMES - 1) * 4 + 1


def _build_wan(seed: int = 0) -> torch.nn.Module:
    from diffusers import WanTransformer3DModel

    return _seeded(
        lambda: WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,  # RoPE splits the head into t/h/w parts of 4 each (h = w = 2 * (12 // 6))
            in_channels=LATENT_CHANNELS,
            out_channels=LATENT_CHANNELS,
            text_dim=TEXT_DIM,
            freq_dim=32,
            ffn_dim=32,
            num_layers=2,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=32,
        ),
        seed,
    )


def _wan_inputs(batch: int, timestep: float, seed: int = 0) -> dict[str, Any]:
    # WanPipeline zero-pads text embeddings past the prompt and passes no mask.
    x = _draw(
        batch,
        seed,
        hidden_states=(LATENT_CHANNELS, WAN_LATENT_FRAMES, LATENT_SIZE, LATENT_SIZE),
        encoder_hidden_states=(TEXT_LEN, TEXT_DIM),
    )
    return {**x, "timestep": _timestep(batch, timestep), "return_dict": False}


def _build_ltx(seed: int = 0) -> torch.nn.Module:
    from diffusers import LTXVideoTransformer3DModel

    return _seeded(
        lambda: LTXVideoTransformer3DModel(
            in_channels=LATENT_CHANNELS,
            out_channels=LATENT_CHANNELS,
            patch_size=1,
            patch_size_t=1,
            num_attention_heads=2,
            attention_head_dim=8,
            cross_attention_dim=16,
            num_layers=2,
            qk_norm="rms_norm_across_heads",
            caption_channels=TEXT_DIM,
        ),
        seed,
    )


def _ltx_inputs(batch: int, timestep: float, seed: int = 0) -> dict[str, Any]:
    frames = VIDEO_LATENT_FRAMES
    # LTX takes packed tokens (batch, frames * height * width, channels) plus the grid size for its RoPE.
    x = _draw(
        batch,
        seed,
        hidden_states=(frames * LATENT_SIZE * LATENT_SIZE, LATENT_CHANNELS),
        encoder_hidden_states=(TEXT_LEN, TEXT_DIM),
    )
    return {
        **x,
        "timestep": _timestep(batch, timestep),
        "encoder_attention_mask": _text_mask(batch, torch.bool),
        "num_frames": frames,
        "height": LATENT_SIZE,
        "width": LATENT_SIZE,
        # As LTXPipeline computes it: (VAE temporal ratio / frame rate, VAE spatial ratio, VAE spatial ratio).
        "rope_interpolation_scale": (8 / 25, 32, 32),
        "return_dict": False,
    }


def _build_mochi(seed: int = 0) -> torch.nn.Module:
    from diffusers import MochiTransformer3DModel

    return _seeded(
        lambda: MochiTransformer3DModel(
            patch_size=2,
            num_attention_heads=2,
            attention_head_dim=8,
            num_layers=2,  # the last block is ``context_pre_only``
            pooled_projection_dim=16,
            in_channels=LATENT_CHANNELS,
            text_embed_dim=TEXT_DIM,  # pooled by an 8-head attention pool, so a multiple of 8
            time_embed_dim=16,
            max_sequence_length=TEXT_LEN,
        ),
        seed,
    )


def _mochi_inputs(batch: int, timestep: float, seed: int = 0) -> dict[str, Any]:
    x = _draw(
        batch,
        seed,
        hidden_states=(LATENT_CHANNELS, VIDEO_LATENT_FRAMES, LATENT_SIZE, LATENT_SIZE),
        encoder_hidden_states=(TEXT_LEN, TEXT_DIM),
    )
    return {
        **x,
        # MochiPipeline passes its (reversed, 1000 = clean) scheduler timestep as is; any value works here.
        "timestep": _timestep(batch, timestep),
        "encoder_attention_mask": _text_mask(batch, torch.bool),
        "return_dict": False,
    }


ALLEGRO_HEAD_DIM = 12  # RoPE splits the head into three equal, even parts
#: RoPE position scales (t, h, w): Allegro's defaults, passed to the model and reused for the RoPE tables.
ALLEGRO_ROPE_SCALE = (2.2, 2.0, 2.0)


def _build_allegro(seed: int = 0) -> torch.nn.Module:
    from diffusers import AllegroTransformer3DModel

    return _seeded(
        lambda: AllegroTransformer3DModel(
            patch_size=2,
            patch_size_t=1,
            num_attention_heads=2,
            attention_head_dim=ALLEGRO_HEAD_DIM,
            in_channels=LATENT_CHANNELS,
            out_channels=LATENT_CHANNELS,
            num_layers=2,
            cross_attention_dim=2 * ALLEGRO_HEAD_DIM,  # captions are projected to the inner dim
            sample_height=LATENT_SIZE,
            sample_width=LATENT_SIZE,
            sample_frames=VIDEO_LATENT_FRAMES,
            caption_channels=TEXT_DIM,
            interpolation_scale_t=ALLEGRO_ROPE_SCALE[0],
            interpolation_scale_h=ALLEGRO_ROPE_SCALE[1],
            interpolation_scale_w=ALLEGRO_ROPE_SCALE[2],
        ),
        seed,
    )


def _allegro_rotary_emb(frames: int, height: int, width: int, patch: int = 2) -> tuple:
    """RoPE tables as ``AllegroPipeline._prepare_rotary_positional_embeddings`` builds them, from latent sizes.

    The model only applies RoPE when it is given these tables, so the spec passes them as the pipeline does.
    """
    from diffusers.models.embeddings import get_3d_rotary_pos_embed_allegro

    grid_height, grid_width = height // patch, width // patch
    freqs_t, freqs_h, freqs_w, grid_t, grid_h, grid_w = get_3d_rotary_pos_embed_allegro(
        embed_dim=ALLEGRO_HEAD_DIM,
        crops_coords=((0, 0), (grid_height, grid_width)),
        grid_size=(grid_height, grid_width),
        temporal_size=frames,
        interpolation_scale=ALLEGRO_ROPE_SCALE,
    )
    pos = torch.cartesian_prod(grid_t.long(), grid_h.long(), grid_w.long())
    grid_t, grid_h, grid_w = pos.reshape(-1, 3).transpose(0, 1).reshape(3, 1, -1).contiguous()
    return (freqs_t, freqs_h, freqs_w), (grid_t, grid_h, grid_w)


def _allegro_inputs(batch: int, timestep: float, seed: int = 0) -> dict[str, Any]:
    x = _draw(
        batch,
        seed,
        hidden_states=(LATENT_CHANNELS, VIDEO_LATENT_FRAMES, LATENT_SIZE, LATENT_SIZE),
        encoder_hidden_states=(TEXT_LEN, TEXT_DIM),
    )
    return {
        **x,
        "timestep": _timestep(batch, timestep),
        "encoder_attention_mask": _text_mask(batch),
        "image_rotary_emb": _allegro_rotary_emb(VIDEO_LATENT_FRAMES, LATENT_SIZE, LATENT_SIZE),
        "return_dict": False,
    }


#: Tiny denoisers by short name. ``TINY_TRANSFORMERS[name].build()`` gives identical weights on every call.
TINY_TRANSFORMERS: dict[str, TinySpec] = {
    "latte": TinySpec(_build_latte, _latte_inputs),
    "cogvideox": TinySpec(_build_cogvideox, _cogvideox_inputs),
    "pixart": TinySpec(_build_pixart, _pixart_inputs),
    "dit": TinySpec(_build_dit, _dit_inputs),
    "sd3": TinySpec(_build_sd3, _sd3_inputs),
    "flux": TinySpec(_build_flux, _flux_inputs),
    "hunyuanvideo": TinySpec(_build_hunyuanvideo, _hunyuanvideo_inputs),
    "wan": TinySpec(_build_wan, _wan_inputs),
    "ltx": TinySpec(_build_ltx, _ltx_inputs),
    "mochi": TinySpec(_build_mochi, _mochi_inputs),
    "allegro": TinySpec(_build_allegro, _allegro_inputs),
}


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


def tiny_tokenizer(model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer over :data:`TINY_VOCAB`, built offline with the ``tokenizers`` package.

    It lowercases, splits on whitespace and punctuation, maps unknown words to ``<unk>`` and appends ``</s>``
    like the T5/UMT5 tokenizers the video pipelines expect. ``model_max_length`` only has to exceed the longest
    padding the pipelines request (Latte pads to 120).
    """
    from cachelab.zoo.text import word_level_tokenizer

    return word_level_tokenizer(TINY_VOCAB, model_max_length)


_TEXT_ENCODER_KINDS = {"latte": "t5", "cogvideox": "t5", "wan": "umt5", "t5": "t5", "umt5": "umt5"}


def tiny_text_encoder(kind: str, seed: int = 0) -> torch.nn.Module:
    """A one-layer, 32-wide T5 (Latte, CogVideoX) or UMT5 (Wan) encoder over :data:`TINY_VOCAB`, in eval mode.

    ``kind`` is a pipeline kind (``"latte"``, ``"cogvideox"``, ``"wan"``) or an encoder family (``"t5"``,
    ``"umt5"``).
    """
    family = _TEXT_ENCODER_KINDS.get(kind)
    if family is None:
        raise ValueError(f"unknown text encoder kind {kind!r}; expected one of {sorted(_TEXT_ENCODER_KINDS)}")
    # T5 v1.1 settings (gated GELU, no dropout), as in the checkpoints these pipelines ship with.
    common = dict(
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
    if family == "t5":
        from transformers import T5Config, T5EncoderModel

        return _seeded(lambda: T5EncoderModel(T5Config(**common)), seed)
    from transformers import UMT5Config, UMT5EncoderModel

    return _seeded(lambda: UMT5EncoderModel(UMT5Config(**common)), seed)


# --------------------------------------------------------------------------------------------------------------
# Pipelines
# --------------------------------------------------------------------------------------------------------------

#: Call arguments that fit the tiny components: ``pipe(prompt=..., **PIPELINE_CALL_DEFAULTS[kind])``.
#: Every choice gives an 8x8 latent. Latte names its frame count ``video_length`` and always pads text to 120
#: tokens (no ``max_sequence_length``); ``clean_caption=False`` skips the bs4/ftfy caption cleaning. CogVideoX's
#: ``max_sequence_length`` must equal the transformer's ``max_text_seq_length``.
PIPELINE_CALL_DEFAULTS: dict[str, dict[str, Any]] = {
    "latte": {"height": 16, "width": 16, "video_length": LATTE_FRAMES, "clean_caption": False},
    "cogvideox": {"height": 32, "width": 32, "num_frames": COGVIDEOX_FRAMES, "max_sequence_length": TEXT_LEN},
    "wan": {"height": 32, "width": 32, "num_frames": WAN_FRAMES, "max_sequence_length": TEXT_LEN},
}


def _latte_vae(seed: int):
    from diffusers import AutoencoderKL

    # Two blocks: one 2x downsampling, so 16x16 frames <-> 8x8 latents (LattePipeline reads the factor from
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


def tiny_pipeline(kind: str, seed: int = 0) -> DiffusionPipeline:
    """A real diffusers video pipeline built from tiny random components.

    ``kind`` is ``"latte"`` (LattePipeline, DDIM), ``"cogvideox"`` (CogVideoXPipeline, CogVideoX-DDIM,
    v-prediction) or ``"wan"`` (WanPipeline, flow-matching Euler). ``seed`` seeds every component. The progress bar
    is disabled. Call it with :data:`PIPELINE_CALL_DEFAULTS` ``[kind]`` for sizes that fit.
    """
    from diffusers import (
        CogVideoXDDIMScheduler,
        CogVideoXPipeline,
        DDIMScheduler,
        FlowMatchEulerDiscreteScheduler,
        LattePipeline,
        WanPipeline,
    )

    components = {"tokenizer": tiny_tokenizer(), "text_encoder": tiny_text_encoder(kind, seed)}
    if kind == "latte":
        pipe = LattePipeline(
            transformer=_build_latte(seed),
            vae=_latte_vae(seed),
            # Latte-1's scheduler; it has no ``variance_type``, so the pipeline drops the learned-sigma channels.
            scheduler=DDIMScheduler(beta_schedule="linear", clip_sample=False),
            **components,
        )
    elif kind == "cogvideox":
        pipe = CogVideoXPipeline(
            transformer=_build_cogvideox(seed),
            vae=_cogvideox_vae(seed),
            # CogVideoX-2b's scheduler settings.
            scheduler=CogVideoXDDIMScheduler(
                beta_start=0.00085,
                beta_end=0.012,
                beta_schedule="scaled_linear",
                clip_sample=False,
                prediction_type="v_prediction",
                rescale_betas_zero_snr=True,
                set_alpha_to_one=True,
                snr_shift_scale=3.0,
                timestep_spacing="trailing",
            ),
            **components,
        )
    elif kind == "wan":
        pipe = WanPipeline(
            transformer=_build_wan(seed),
            vae=_wan_vae(seed),
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            **components,
        )
    else:
        raise ValueError(f"unknown pipeline kind {kind!r}; expected one of {sorted(PIPELINE_CALL_DEFAULTS)}")
    pipe.set_progress_bar_config(disable=True)
    return pipe
