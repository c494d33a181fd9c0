"""Tiny, randomly initialised diffusers denoisers that run in milliseconds on CPU.

They exist for tests and demos of cache policies: every builder works offline from a config written here (no hub
ids, no downloads), and every model keeps the block structure of the real checkpoint family (same classes, same
block kinds, the same kind of conditioning) at a width of 16-32 channels and one or two blocks per stack.

* :data:`TINY_TRANSFORMERS` maps a short name to a :class:`TinySpec`: ``spec.build()`` returns the denoiser in
  ``eval()`` mode and ``spec.inputs(batch, timestep)`` the keyword arguments for ``model(**kwargs)``, shaped the
  way the matching diffusers pipeline calls the model.
* Whole pipelines (these transformers with tiny VAEs, schedulers, text encoders and word-level tokenizers) are
  built by ``tiny_pipelines.tiny_pipeline``.

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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

__all__ = ["TINY_TRANSFORMERS", "TinySpec"]


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
