"""One table of tiny, randomly initialised diffusers transformers and their inputs, one row per model.

Every row is a :class:`TinySpec`: the diffusers class name, its constructor arguments (width 16-32, one or two
blocks per stack, written here so nothing is downloaded) and the model's inputs, shaped the way its pipeline
calls it. Configs follow diffusers' own tests (``tests/models/transformers/test_models_transformer_*.py``) where
those exist; the facts carried over are noted beside the values that must agree with each other.

Conventions of ``spec.inputs(batch, timestep, seed=0)``:

* ``timestep`` is on the scheduler's 0-1000 scale; ``timestep_scale`` (and ``timestep_offset``) convert it the way
  the pipeline does (Flux-like pipelines pass ``t / 1000``, Ideogram 4 ``1 - t / 1000``). The timestep is a float32
  tensor of shape ``(batch,)``, or ``(batch, *timestep_shape)`` for models that take one per frame.
* Random tensors are drawn sample by sample from one generator seeded with ``seed``, so the first *k* samples of
  a batch of *n* equal a batch of *k* (tests of CFG splitting compare them).
* Text masks keep a different number of tokens per sample (16, 13, 16, 13, ...) so masking code runs.
* Arguments without a batch dimension (position ids, RoPE tables, image shapes) come from ``extras``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

#: Width of the text features every tiny transformer takes.
TEXT_DIM = 32
#: Text tokens per prompt.
TEXT_LEN = 16
#: Latent channels (before any packing) and latent height = width.
LATENT_CHANNELS = 4
LATENT_SIZE = 8
POOLED_DIM = 32
#: latent frames of the video models (Latte's temporal table and CogVideoX/Wan's 9 pixel frames fix their own)
VIDEO_FRAMES = 2


def _no_extras(batch: int, seed: int) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class TinySpec:
    """A tiny denoiser: its diffusers class, constructor arguments and an input factory.

    Attributes:
        model_class: the class name, exported by ``diffusers``.
        config: constructor keyword arguments.
        latents: ``name -> per-sample shape`` of the standard-normal inputs (latents, text features ...).
        extras: ``(batch, seed) -> kwargs`` for the other inputs (masks, ids, labels, unbatched tables).
        timestep_scale: the model receives ``timestep_offset + timestep * timestep_scale``.
        timestep_offset: for models whose time rises as sampling goes (``1 - t / 1000``: offset 1, scale -1e-3).
        timestep_arg: the name of the timestep argument in the model's forward.
        timestep_shape: the per-sample shape of the timestep, for models that take one per frame (the same value
            in every frame here, as their text-to-video pipelines pass it).
        timestep_batched: False for a model that takes one timestep tensor shared by the whole batch, shape
            ``timestep_shape`` (MiniMax-H3: the distinct noise levels of its packed layout).
        timestep_copies: other arguments that get the same timestep tensor (ACE-Step's mean-flow reference time r,
            which its pipeline sets equal to t).
        timestep_targets: arguments that get the next step's timestep, shaped and scaled as the timestep (a
            flow-map model's target time r, which its pipeline sets to the next sigma of the schedule).
        redrawn: parameters the class initialises to zero that leave the untrained model's output zero (a zero
            output projection): drawn from N(0, 0.1^2) after construction, as training would have moved them.
        init: initialises, under the build's seed, parameters the class leaves as ``torch.empty`` memory (a
            checkpoint fills them), which would otherwise differ from build to build and may hold NaNs.
    """

    model_class: str
    config: Mapping[str, Any]
    latents: Mapping[str, tuple[int, ...]]
    extras: Callable[[int, int], dict[str, Any]] = _no_extras
    timestep_scale: float = 1.0
    timestep_offset: float = 0.0
    timestep_arg: str = "timestep"
    return_dict: bool = field(default=False)
    redrawn: tuple[str, ...] = ()
    timestep_copies: tuple[str, ...] = ()
    timestep_targets: tuple[str, ...] = ()
    timestep_shape: tuple[int, ...] = ()
    timestep_batched: bool = True
    init: Callable[[torch.nn.Module], None] | None = None

    def build(self, seed: int = 0) -> torch.nn.Module:
        """The model in ``eval()`` mode, with the same weights on every call for one seed."""
        import diffusers

        cls = getattr(diffusers, self.model_class)
        with torch.random.fork_rng(devices=[]):  # building does not reseed the caller's random stream
            torch.manual_seed(seed)
            model = cls(**self.config)
            if self.init is not None:
                self.init(model)
            with torch.no_grad():
                for name in self.redrawn:
                    torch.nn.init.normal_(model.get_parameter(name), std=0.1)
        return model.eval()

    def inputs(self, batch: int, timestep: float, seed: int = 0, next_timestep: float = 0.0) -> dict[str, Any]:
        """Keyword arguments for ``model(**kwargs)``, including ``return_dict=False``; ``next_timestep`` is the
        following step's (0, clean data, after the last step) for ``timestep_targets``."""
        shape = (batch, *self.timestep_shape) if self.timestep_batched else self.timestep_shape

        def timestep_tensor(value: float) -> torch.Tensor:
            return torch.full(shape, self.timestep_offset + float(value) * self.timestep_scale, dtype=torch.float32)

        t = timestep_tensor(timestep)
        return {
            **draw(batch, seed, **self.latents),
            self.timestep_arg: t,
            **{name: t.clone() for name in self.timestep_copies},
            **{name: timestep_tensor(next_timestep) for name in self.timestep_targets},
            **self.extras(batch, seed),
            "return_dict": False,
        }


def seeded(factory: Callable[[], torch.nn.Module], seed: int) -> torch.nn.Module:
    """``factory()`` under ``torch.manual_seed(seed)``, in eval mode; the caller's random stream is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = factory()
    return module.eval()


def draw(batch: int, seed: int, **shapes: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Standard-normal tensors of shape ``(batch, *shape)``, drawn sample-major from one generator."""
    generator = torch.Generator().manual_seed(seed)
    samples = [{name: torch.randn(shape, generator=generator) for name, shape in shapes.items()} for _ in range(batch)]
    return {name: torch.stack([sample[name] for sample in samples]) for name in shapes}


def text_mask(batch: int, dtype: torch.dtype = torch.int64, length: int = TEXT_LEN) -> torch.Tensor:
    """Right-padded text mask: even samples keep all tokens, odd samples 3 fewer."""
    lengths = torch.tensor([length - 3 * (i % 2) for i in range(batch)])
    return (torch.arange(length)[None, :] < lengths[:, None]).to(dtype)


def labels(batch: int, seed: int, classes: int) -> torch.Tensor:
    """One class label per sample from its own generator, so labels do not depend on the batch size."""
    generator = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randint(0, classes, (1,), generator=generator) for _ in range(batch)])


def token_ids(batch: int, seed: int, vocab: int, length: int, low: int = 0) -> torch.Tensor:
    """``length`` token ids in ``[low, vocab)`` per sample, drawn sample-major from one generator."""
    generator = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randint(low, vocab, (1, length), generator=generator) for _ in range(batch)])


def grid_ids(height: int, width: int, frame: float = 0.0) -> torch.Tensor:
    """(frame, row, col) position ids per image token, as Flux-like pipelines build them, no batch dim."""
    ids = torch.zeros(height, width, 3)
    ids[..., 0] = frame
    ids[..., 1] = torch.arange(height)[:, None]
    ids[..., 2] = torch.arange(width)[None, :]
    return ids.reshape(-1, 3)


def _merge(*factories: Callable[[int, int], dict[str, Any]]) -> Callable[[int, int], dict[str, Any]]:
    return lambda batch, seed: {k: v for f in factories for k, v in f(batch, seed).items()}


def _mask(name: str, dtype: torch.dtype = torch.int64, length: int = TEXT_LEN):
    return lambda batch, seed: {name: text_mask(batch, dtype, length)}


def _const(**values: Any):
    return lambda batch, seed: dict(values)


def _per_sample(**values: Callable[[int], Any]):
    return lambda batch, seed: {k: f(batch) for k, f in values.items()}


IMAGE = (LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE)
VIDEO = (LATENT_CHANNELS, VIDEO_FRAMES, LATENT_SIZE, LATENT_SIZE)
TEXT = (TEXT_LEN, TEXT_DIM)


# --------------------------------------------------------------------------------------------------------------
# Extras that need more than a constant
# --------------------------------------------------------------------------------------------------------------

#: Latte's temporal positional table is added as is, so ``video_length`` must equal the frame count.
LATTE_FRAMES = 4
#: CogVideoX and Wan: 3 latent frames = 9 pixel frames (the VAEs compress time 4x).
COGVIDEOX_LATENT_FRAMES = 3
COGVIDEOX_FRAMES = (COGVIDEOX_LATENT_FRAMES - 1) * 4 + 1
WAN_LATENT_FRAMES = 3
WAN_FRAMES = (WAN_LATENT_FRAMES - 1) * 4 + 1
DIT_CLASSES = 10
#: Flux-like models take 2x2-packed latents: 4 channels become 16 token channels on a 4x4 grid.
PACKED_GRID = LATENT_SIZE // 2
PACKED_CHANNELS = LATENT_CHANNELS * 4
#: HunyuanVideo Framepack: 4 latent frames, so no frame-index table has the batch size (2) as its length
FRAMEPACK_FRAMES = 4
#: LTX-2's audio latents: frames of (8 latent channels x 2 mel bins) packed into one token each
LTX2_AUDIO_FRAMES = 8
LTX2_AUDIO_CHANNELS = 16
ACE_STEP_CONTEXT_CHANNELS = 8
KANDINSKY6_AUDIO_CHANNELS = 8
#: Krea 2 stacks hidden states tapped from this many text-encoder layers per token
KREA2_TEXT_LAYERS = 3
#: Ideogram 4 packs text and image tokens into one sequence
IDEOGRAM4_SEQ = TEXT_LEN + PACKED_GRID**2
#: OmniGen's tiny vocabulary and the id its collator pads prompts with
OMNIGEN_VOCAB = 64
OMNIGEN_PAD_ID = 2
#: GLM-Image's prior tokens: ids of a tiny VQ codebook, one per image patch
GLM_IMAGE_CODEBOOK = 16
#: Wan 2.1's tiny backbone, shared by the Wan row and AnyFlow (Wan 2.1 with a dual (t, r) timestep embedding)
WAN_BACKBONE = dict(
    patch_size=(1, 2, 2), num_attention_heads=2,
    attention_head_dim=12,  # RoPE splits the head into t/h/w parts of 4 each
    in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=32,
    num_layers=2, cross_attn_norm=True, rope_max_seq_len=32,
)
ALLEGRO_HEAD_DIM = 12  # RoPE splits the head into three equal, even parts
ALLEGRO_ROPE_SCALE = (2.2, 2.0, 2.0)


def _flux_ids(batch: int, seed: int) -> dict[str, Any]:
    return {"img_ids": grid_ids(PACKED_GRID, PACKED_GRID), "txt_ids": torch.zeros(TEXT_LEN, 3)}


def _ideogram4_layout(batch: int, seed: int) -> dict[str, Any]:
    """Position ids, segment ids and token roles as ``Ideogram4Pipeline._prepare_ids`` builds them: each prompt
    left-padded to TEXT_LEN (16 and 13 tokens), padding in a segment of its own, image positions offset by 65536."""
    from diffusers.models.transformers.transformer_ideogram4 import (
        IMAGE_POSITION_OFFSET, LLM_TOKEN_INDICATOR, OUTPUT_IMAGE_INDICATOR, SEQUENCE_PADDING_INDICATOR,
    )

    rows, cols = torch.meshgrid(torch.arange(PACKED_GRID), torch.arange(PACKED_GRID), indexing="ij")
    image_positions = torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(-1, 3) + IMAGE_POSITION_OFFSET
    position_ids = torch.zeros(batch, IDEOGRAM4_SEQ, 3, dtype=torch.long)
    segment_ids = torch.full((batch, IDEOGRAM4_SEQ), SEQUENCE_PADDING_INDICATOR, dtype=torch.long)
    indicator = torch.zeros(batch, IDEOGRAM4_SEQ, dtype=torch.long)
    for b, length in enumerate(text_mask(batch).sum(1).tolist()):
        pad = TEXT_LEN - length
        position_ids[b, pad:TEXT_LEN] = torch.arange(length)[:, None]
        position_ids[b, TEXT_LEN:] = image_positions
        indicator[b, pad:TEXT_LEN] = LLM_TOKEN_INDICATOR
        indicator[b, TEXT_LEN:] = OUTPUT_IMAGE_INDICATOR
        segment_ids[b, pad:] = 1
    return {"position_ids": position_ids, "segment_ids": segment_ids, "indicator": indicator}


def _init_moe_experts(model: torch.nn.Module) -> None:
    """NucleusMoE's packed expert weights are created with ``torch.empty``: draw them as ``nn.Linear`` draws its
    weights, uniform in +-1/sqrt(fan_in)."""
    for module in model.modules():
        if type(module).__name__ == "SwiGLUExperts":
            for weight in (module.gate_up_proj, module.down_proj):  # (experts, in, out)
                bound = weight.shape[1] ** -0.5
                torch.nn.init.uniform_(weight, -bound, bound)


def _bria_fibo_text_layers(batch: int, seed: int) -> dict[str, Any]:
    """One text encoder hidden state per block of the tiny BriaFibo (one double, one single)."""
    return {"text_encoder_layers": list(draw(batch, seed + 1, layers=(2, *TEXT))["layers"].unbind(1))}


def _omnigen_inputs(batch: int, seed: int) -> dict[str, Any]:
    """Token ids, the joint attention mask and position ids as OmniGenCollator builds them for text-to-image: each
    prompt left-padded to TEXT_LEN (16 and 13 tokens), then a time token and the image tokens; causal over the text,
    bidirectional within the image."""
    from diffusers.pipelines.omnigen.processor_omnigen import OmniGenCollator

    text_mask_left = text_mask(batch).flip(1)
    ids = token_ids(batch, seed, OMNIGEN_VOCAB, TEXT_LEN, low=OMNIGEN_PAD_ID + 1)
    collator = OmniGenCollator(pad_token_id=OMNIGEN_PAD_ID)
    image_tokens = [PACKED_GRID**2] * batch
    attention_mask, _ = collator.create_mask(text_mask_left, image_tokens)
    return {
        "input_ids": ids.masked_fill(text_mask_left == 0, OMNIGEN_PAD_ID),
        "attention_mask": attention_mask,
        "position_ids": collator.create_position(text_mask_left, image_tokens),
        # no input images: they replace placeholder tokens at positions keyed by sample index, which no batch slice
        # keeps
        "input_img_latents": [],
        "input_image_sizes": {},
    }


def _allegro_rotary_emb(batch: int, seed: int) -> dict[str, Any]:
    """RoPE tables as ``AllegroPipeline._prepare_rotary_positional_embeddings`` builds them (the model applies
    RoPE only when given them)."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed_allegro

    grid = LATENT_SIZE // 2
    freqs_t, freqs_h, freqs_w, grid_t, grid_h, grid_w = get_3d_rotary_pos_embed_allegro(
        embed_dim=ALLEGRO_HEAD_DIM,
        crops_coords=((0, 0), (grid, grid)),
        grid_size=(grid, grid),
        temporal_size=VIDEO_FRAMES,
        interpolation_scale=ALLEGRO_ROPE_SCALE,
    )
    pos = torch.cartesian_prod(grid_t.long(), grid_h.long(), grid_w.long())
    grid_t, grid_h, grid_w = pos.reshape(-1, 3).transpose(0, 1).reshape(3, 1, -1).contiguous()
    return {"image_rotary_emb": ((freqs_t, freqs_h, freqs_w), (grid_t, grid_h, grid_w))}


#: SANA-WM's VAE (LTX-2's) compresses time 8x and space 32x
SANA_WM_VAE_STRIDE = (8, 32, 32)


def _sana_wm_camera(batch: int, seed: int) -> dict[str, Any]:
    """Camera conditions as SanaWMPipeline builds them (``prepare_camera``) for a camera moving forward and turning
    a little, the same for every sample (the pipeline repeats them for CFG)."""
    import math

    import numpy as np
    from diffusers.pipelines.sana_wm.cam_utils import prepare_camera

    num_frames = (VIDEO_FRAMES - 1) * SANA_WM_VAE_STRIDE[0] + 1
    size = LATENT_SIZE * SANA_WM_VAE_STRIDE[1]
    c2w = np.tile(np.eye(4, dtype=np.float32), (num_frames, 1, 1))
    for i in range(num_frames):
        angle = 0.05 * i
        c2w[i, 0, 0], c2w[i, 0, 2], c2w[i, 2, 0], c2w[i, 2, 2] = math.cos(angle), math.sin(angle), -math.sin(angle), math.cos(angle)
        c2w[i, 2, 3] = 0.1 * i
    intrinsics = np.tile(np.array([size, size, size / 2, size / 2], dtype=np.float32), (num_frames, 1))
    camera = prepare_camera(c2w, intrinsics, target_size=(size, size), vae_stride=SANA_WM_VAE_STRIDE)
    return {"camera_conditions": camera["raymap"].expand(batch, -1, -1).clone(),
            "chunk_plucker": camera["chunk_plucker"].expand(batch, -1, -1, -1, -1).clone()}


#: the LTX-2 layout of the SANA-WM refiner (stage 2); its audio modules are built but never run
SANA_WM_REFINER_CONFIG = dict(
    in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, num_attention_heads=2, attention_head_dim=8,
    cross_attention_dim=16, audio_in_channels=8, audio_out_channels=8, audio_num_attention_heads=2,
    audio_attention_head_dim=8, audio_cross_attention_dim=16, num_layers=2, caption_channels=TEXT_DIM,
)


@functools.cache
def _sana_wm_refiner_rope() -> tuple[torch.Tensor, torch.Tensor]:
    """The video RoPE the refiner pipeline passes, for the window's absolute frame indices (one table broadcast
    over the batch); only the model's parameter-free RoPE module is used."""
    import diffusers

    model = diffusers.SanaWMLTX2RefinerTransformer3DModel(**SANA_WM_REFINER_CONFIG)
    return model.build_rotary_emb_for_absolute_positions(
        batch_size=1, frame_positions=list(range(VIDEO_FRAMES)), height=LATENT_SIZE, width=LATENT_SIZE,
        device=torch.device("cpu"), fps=24.0,
    )


#: Helios's latent history (long, mid, 1x frames), smaller than the pipeline's [16, 2, 1]
HELIOS_HISTORY = (4, 2, 1)


def _helios_history(batch: int, seed: int) -> dict[str, Any]:
    """Histories and frame indices as HeliosPipeline builds them with ``keep_first_frame``: one prefix frame, the
    long, mid and 1x histories, then the frames being denoised; the short history is the prefix and the 1x frames.
    The indices have a batch dimension of 1 (the pipeline's), the histories stay fixed across steps."""
    long, mid, short = HELIOS_HISTORY
    prefix, idx_long, idx_mid, idx_1x, idx_hidden = torch.arange(1 + sum(HELIOS_HISTORY) + VIDEO_FRAMES).split(
        [1, long, mid, short, VIDEO_FRAMES]
    )
    history = draw(batch, seed + 1, long=(LATENT_CHANNELS, long, LATENT_SIZE, LATENT_SIZE),
                   mid=(LATENT_CHANNELS, mid, LATENT_SIZE, LATENT_SIZE),
                   short=(LATENT_CHANNELS, 1 + short, LATENT_SIZE, LATENT_SIZE))
    return {
        "indices_hidden_states": idx_hidden[None],
        "indices_latents_history_short": torch.cat([prefix, idx_1x])[None],
        "indices_latents_history_mid": idx_mid[None],
        "indices_latents_history_long": idx_long[None],
        "latents_history_short": history["short"],
        "latents_history_mid": history["mid"],
        "latents_history_long": history["long"],
    }


MINIMAX_H3_AUDIO_ROWS = 8
MINIMAX_H3_AUDIO_CHANNELS = 8


def _minimax_h3_layout() -> dict[str, torch.Tensor]:
    """The packed layout MiniMax-H3 takes (no pipeline ships one; built as its forward documents): text rows, then
    audio rows, then video rows; text and audio rows are placed along the t axis, video rows on their (t, h, w)
    patch grid after them; every row at the one noise level; modality tags 0 video, 1 text, 2 audio. These
    structural arguments have no batch dimension: every sample of the batch shares them."""
    video_rows = VIDEO_FRAMES * PACKED_GRID**2
    text = torch.arange(TEXT_LEN)
    audio = TEXT_LEN + torch.arange(MINIMAX_H3_AUDIO_ROWS)
    video = TEXT_LEN + MINIMAX_H3_AUDIO_ROWS + torch.arange(video_rows)
    length = TEXT_LEN + MINIMAX_H3_AUDIO_ROWS + video_rows
    tags = torch.zeros(length, dtype=torch.long)
    tags[text], tags[audio] = 1, 2
    positions = torch.zeros(length, 3, dtype=torch.long)
    positions[text, 0] = text
    positions[audio, 0] = audio
    grid = torch.stack(torch.meshgrid(torch.arange(VIDEO_FRAMES), torch.arange(PACKED_GRID), torch.arange(PACKED_GRID),
                                      indexing="ij"), -1).reshape(-1, 3)
    positions[video] = grid + torch.tensor([TEXT_LEN + MINIMAX_H3_AUDIO_ROWS, 0, 0])
    return {"timestep_indices": torch.zeros(length, dtype=torch.long), "token_tags": tags, "position_ids": positions,
            "video_indices": video, "audio_indices": audio, "text_indices": text}


def _hunyuandit_rope() -> tuple[torch.Tensor, torch.Tensor]:
    """2-D RoPE tables as HunyuanDiTPipeline builds them for an 8x8 latent with 2x2 patches."""
    from diffusers.models.embeddings import get_2d_rotary_pos_embed

    grid = LATENT_SIZE // 2
    return get_2d_rotary_pos_embed(8, ((0, 0), (grid, grid)), (grid, grid), use_real=True)  # head dim 8


def _stable_audio_rope() -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE over the 16 audio positions plus the global token, as StableAudioPipeline builds it."""
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    return get_1d_rotary_pos_embed(max(32 // 2 // 2, 32), 16 + 1, use_real=True, repeat_interleave_real=False)


def _lumina_next_rope() -> torch.Tensor:
    """The 2-D RoPE table LuminaPipeline builds (384 x 384 positions, head dim 24 / 3 = 8)."""
    from diffusers.models.embeddings import get_2d_rotary_pos_embed_lumina

    return get_2d_rotary_pos_embed_lumina(8, 384, 384, linear_factor=1.0, ntk_factor=1.0)


# --------------------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------------------

#: Tiny denoisers by short name. ``TINY_TRANSFORMERS[name].build()`` gives identical weights on every call.
TINY_TRANSFORMERS: dict[str, TinySpec] = {
    "latte": TinySpec(
        "LatteTransformer3DModel",
        dict(
            num_attention_heads=2, attention_head_dim=8, in_channels=LATENT_CHANNELS,
            out_channels=2 * LATENT_CHANNELS,  # learned sigma; the pipeline drops the second half
            num_layers=2, cross_attention_dim=16,  # captions are projected to the inner dim (2 * 8)
            attention_bias=True, sample_size=LATENT_SIZE, patch_size=2, activation_fn="gelu-approximate",
            num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
            caption_channels=TEXT_DIM, video_length=LATTE_FRAMES,
        ),
        # LattePipeline passes no text mask: it zeroes padded embeddings instead
        {"hidden_states": (LATENT_CHANNELS, LATTE_FRAMES, LATENT_SIZE, LATENT_SIZE), "encoder_hidden_states": TEXT},
    ),
    "cogvideox": TinySpec(
        "CogVideoXTransformer3DModel",
        # CogVideoX-2b layout: sin-cos positions, no RoPE, no temporal patching
        dict(
            num_attention_heads=2, attention_head_dim=8, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
            time_embed_dim=16, text_embed_dim=TEXT_DIM, num_layers=2, sample_width=LATENT_SIZE,
            sample_height=LATENT_SIZE, sample_frames=COGVIDEOX_FRAMES, patch_size=2, temporal_compression_ratio=4,
            max_text_seq_length=TEXT_LEN,  # the joint positional table assumes exactly this many text tokens
            use_rotary_positional_embeddings=False,
        ),
        # frame-major latents: (frames, channels, height, width)
        {"hidden_states": (COGVIDEOX_LATENT_FRAMES, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE),
         "encoder_hidden_states": TEXT},
    ),
    "pixart": TinySpec(
        "PixArtTransformer2DModel",
        dict(
            num_attention_heads=2, attention_head_dim=8, in_channels=LATENT_CHANNELS,
            out_channels=2 * LATENT_CHANNELS, num_layers=2, cross_attention_dim=16, sample_size=LATENT_SIZE,
            patch_size=2, caption_channels=TEXT_DIM,
            use_additional_conditions=False,  # resolution embeddings are for the 1024px checkpoints only
        ),
        {"hidden_states": IMAGE, "encoder_hidden_states": TEXT},
        _merge(_mask("encoder_attention_mask"), _const(added_cond_kwargs={"resolution": None, "aspect_ratio": None})),
    ),
    "dit": TinySpec(
        "DiTTransformer2DModel",
        dict(
            num_attention_heads=2, attention_head_dim=8, in_channels=LATENT_CHANNELS,
            out_channels=2 * LATENT_CHANNELS, num_layers=2, sample_size=LATENT_SIZE, patch_size=2,
            num_embeds_ada_norm=DIT_CLASSES,
        ),
        {"hidden_states": IMAGE},
        lambda batch, seed: {"class_labels": labels(batch, seed, DIT_CLASSES)},
    ),
    "sd3": TinySpec(
        "SD3Transformer2DModel",
        # SD3.5-medium layout: QK RMS-norm and a dual attention in the first block; the last is context_pre_only
        dict(
            sample_size=LATENT_SIZE, patch_size=2, in_channels=LATENT_CHANNELS, num_layers=2, attention_head_dim=8,
            num_attention_heads=2, joint_attention_dim=TEXT_DIM,
            caption_projection_dim=16,  # must equal the inner dim: text joins the image stream
            pooled_projection_dim=POOLED_DIM, out_channels=LATENT_CHANNELS,
            pos_embed_max_size=16, dual_attention_layers=(0,), qk_norm="rms_norm",
        ),
        {"hidden_states": IMAGE, "encoder_hidden_states": TEXT, "pooled_projections": (POOLED_DIM,)},
    ),
    "flux": TinySpec(
        "FluxTransformer2DModel",
        # FLUX.1-dev layout: guidance-distilled, one double- and one single-stream block
        dict(
            patch_size=1, in_channels=PACKED_CHANNELS, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=TEXT_DIM, pooled_projection_dim=POOLED_DIM,
            guidance_embeds=True, axes_dims_rope=(4, 6, 6),  # must sum to attention_head_dim
        ),
        {"hidden_states": (PACKED_GRID**2, PACKED_CHANNELS), "encoder_hidden_states": TEXT,
         "pooled_projections": (POOLED_DIM,)},
        _merge(_flux_ids, _per_sample(guidance=lambda b: torch.full((b,), 3.5))),
        timestep_scale=1e-3,  # FluxPipeline passes t / 1000, the model multiplies back
    ),
    "hunyuanvideo": TinySpec(
        "HunyuanVideoTransformer3DModel",
        dict(
            in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, num_attention_heads=2, attention_head_dim=8,
            num_layers=1, num_single_layers=1, num_refiner_layers=1, patch_size=2, patch_size_t=1,
            guidance_embeds=True, text_embed_dim=TEXT_DIM, pooled_projection_dim=POOLED_DIM,
            rope_axes_dim=(2, 2, 4),  # must sum to attention_head_dim
        ),
        {"hidden_states": VIDEO, "encoder_hidden_states": TEXT, "pooled_projections": (POOLED_DIM,)},
        # the pipeline casts the mask to the model dtype and passes guidance * 1000
        _merge(_mask("encoder_attention_mask", torch.float32), _per_sample(guidance=lambda b: torch.full((b,), 6000.0))),
    ),
    "wan": TinySpec(
        "WanTransformer3DModel",
        dict(**WAN_BACKBONE, qk_norm="rms_norm_across_heads"),
        # WanPipeline zero-pads text embeddings and passes no mask
        {"hidden_states": (LATENT_CHANNELS, WAN_LATENT_FRAMES, LATENT_SIZE, LATENT_SIZE), "encoder_hidden_states": TEXT},
    ),
    "anyflow": TinySpec(
        "AnyFlowTransformer3DModel",
        # Wan2.1's backbone with a dual (t, r) timestep embedding for the flow map from t to r
        WAN_BACKBONE,
        # frames first, (F, C, H, W), as AnyFlowPipeline permutes the latents; it zero-pads text and passes no mask
        {"hidden_states": (VIDEO_FRAMES, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE), "encoder_hidden_states": TEXT},
        timestep_shape=(VIDEO_FRAMES,),  # (batch, frames), as the pipeline passes t and r
        # the pipeline's default use_mean_velocity: r is the next sigma * 1000, the target of this step's flow map
        timestep_targets=("r_timestep",),
    ),
    "ltx": TinySpec(
        "LTXVideoTransformer3DModel",
        dict(
            in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, patch_size=1, patch_size_t=1,
            num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16, num_layers=2,
            qk_norm="rms_norm_across_heads", caption_channels=TEXT_DIM,
        ),
        # packed tokens (frames * height * width, channels) plus the grid size for its RoPE
        {"hidden_states": (VIDEO_FRAMES * LATENT_SIZE**2, LATENT_CHANNELS), "encoder_hidden_states": TEXT},
        _merge(
            _mask("encoder_attention_mask", torch.bool),
            # rope_interpolation_scale as LTXPipeline computes it: (VAE temporal ratio / fps, spatial, spatial)
            _const(num_frames=VIDEO_FRAMES, height=LATENT_SIZE, width=LATENT_SIZE, rope_interpolation_scale=(8 / 25, 32, 32)),
        ),
    ),
    "ltx2": TinySpec(
        "LTX2VideoTransformer3DModel",
        # LTX-2.0 layout: joint video and audio streams, each with self-, text- and cross-modal attention
        dict(
            in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, patch_size=1, patch_size_t=1,
            num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,  # text projected to the inner dim
            audio_in_channels=LTX2_AUDIO_CHANNELS, audio_out_channels=LTX2_AUDIO_CHANNELS,
            audio_num_attention_heads=2, audio_attention_head_dim=8, audio_cross_attention_dim=16, num_layers=2,
            caption_channels=TEXT_DIM,
        ),
        # packed video tokens (frames * height * width, channels) and audio tokens (frames, channels * mel bins);
        # the RoPE coordinates are built from the grid sizes (the pipeline's coords are batched, one per sample)
        {"hidden_states": (VIDEO_FRAMES * LATENT_SIZE**2, LATENT_CHANNELS),
         "audio_hidden_states": (LTX2_AUDIO_FRAMES, LTX2_AUDIO_CHANNELS), "encoder_hidden_states": TEXT,
         "audio_encoder_hidden_states": TEXT},
        _merge(
            _mask("encoder_attention_mask"),
            _mask("audio_encoder_attention_mask"),  # the pipeline passes the same mask to both streams
            _const(num_frames=VIDEO_FRAMES, height=LATENT_SIZE, width=LATENT_SIZE, fps=24.0,
                   audio_num_frames=LTX2_AUDIO_FRAMES),
        ),
    ),
    "sana-wm-refiner": TinySpec(
        "SanaWMLTX2RefinerTransformer3DModel",
        SANA_WM_REFINER_CONFIG,
        # one AR window of packed video tokens; its KV cache of the attention sink and refined history is left out
        # (without one the model runs plain self-attention over the window, as its docs describe)
        {"hidden_states": (VIDEO_FRAMES * LATENT_SIZE**2, LATENT_CHANNELS), "encoder_hidden_states": TEXT},
        _merge(
            _mask("encoder_attention_mask"),
            lambda batch, seed: {"video_rotary_emb": _sana_wm_refiner_rope()},
        ),
        timestep_shape=(VIDEO_FRAMES * LATENT_SIZE**2,),  # one per token: the pipeline's sigma * 1000 everywhere
    ),
    "mochi": TinySpec(
        "MochiTransformer3DModel",
        dict(
            patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=2,  # the last is context_pre_only
            pooled_projection_dim=16, in_channels=LATENT_CHANNELS,
            text_embed_dim=TEXT_DIM,  # pooled by an 8-head attention pool, so a multiple of 8
            time_embed_dim=16, max_sequence_length=TEXT_LEN,
        ),
        {"hidden_states": VIDEO, "encoder_hidden_states": TEXT},
        _mask("encoder_attention_mask", torch.bool),
    ),
    "allegro": TinySpec(
        "AllegroTransformer3DModel",
        dict(
            patch_size=2, patch_size_t=1, num_attention_heads=2, attention_head_dim=ALLEGRO_HEAD_DIM,
            in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, num_layers=2,
            cross_attention_dim=2 * ALLEGRO_HEAD_DIM, sample_height=LATENT_SIZE, sample_width=LATENT_SIZE,
            sample_frames=VIDEO_FRAMES, caption_channels=TEXT_DIM, interpolation_scale_t=ALLEGRO_ROPE_SCALE[0],
            interpolation_scale_h=ALLEGRO_ROPE_SCALE[1], interpolation_scale_w=ALLEGRO_ROPE_SCALE[2],
        ),
        {"hidden_states": VIDEO, "encoder_hidden_states": TEXT},
        _merge(_mask("encoder_attention_mask"), _allegro_rotary_emb),
    ),
    "auraflow": TinySpec(
        "AuraFlowTransformer2DModel",
        dict(
            sample_size=LATENT_SIZE, patch_size=2, in_channels=LATENT_CHANNELS, num_mmdit_layers=1,
            num_single_dit_layers=1, attention_head_dim=8, num_attention_heads=2, joint_attention_dim=TEXT_DIM,
            caption_projection_dim=16,  # the inner dim (2 * 8)
            out_channels=LATENT_CHANNELS, pos_embed_max_size=64,  # must cover (8 / 2)^2 patches
        ),
        {"hidden_states": IMAGE, "encoder_hidden_states": TEXT},
    ),
    "sana": TinySpec(
        "SanaTransformer2DModel",
        dict(
            in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, num_attention_heads=2, attention_head_dim=8,
            num_layers=2, num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16,
            caption_channels=TEXT_DIM, sample_size=LATENT_SIZE, patch_size=1,
        ),
        {"hidden_states": IMAGE, "encoder_hidden_states": TEXT},
        _mask("encoder_attention_mask"),
    ),
    "sana-video": TinySpec(
        "SanaVideoTransformer3DModel",
        dict(
            in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, num_attention_heads=2, attention_head_dim=12,
            num_layers=2, num_cross_attention_heads=2, cross_attention_head_dim=12, cross_attention_dim=24,
            caption_channels=TEXT_DIM, sample_size=LATENT_SIZE, patch_size=(1, 2, 2), rope_max_seq_len=32,
        ),
        {"hidden_states": VIDEO, "encoder_hidden_states": TEXT},
        _mask("encoder_attention_mask"),
    ),
    "sana-wm": TinySpec(
        "SanaWMTransformer3DModel",
        # camera-controlled: a gated-delta-net linear attention block and a softmax one, both with the UCPE camera
        # branch, and the chunked Plucker rays added after attention
        dict(
            in_channels=LATENT_CHANNELS, num_layers=2, hidden_size=32, num_attention_heads=2,
            softmax_every_n=2, linear_head_dim=16, chunk_plucker_channels=6 * SANA_WM_VAE_STRIDE[0],
            chunk_plucker_post_attn_blocks=2, caption_channels=TEXT_DIM, mlp_ratio=2.0,
        ),
        {"hidden_states": VIDEO, "encoder_hidden_states": (1, TEXT_LEN, TEXT_DIM)},
        _merge(_mask("mask"), _sana_wm_camera),
        timestep_shape=(1, VIDEO_FRAMES),  # (batch, 1, frames), as the pipeline passes it
        redrawn=("plucker_embedder.proj.weight",),  # zero-initialised: the rays would have no effect
    ),
    "lumina2": TinySpec(
        "Lumina2Transformer2DModel",
        dict(
            sample_size=LATENT_SIZE, patch_size=2, in_channels=LATENT_CHANNELS, hidden_size=24, num_layers=2,
            num_refiner_layers=1, num_attention_heads=2, num_kv_heads=1, multiple_of=16,
            axes_dim_rope=(4, 4, 4),  # sums to the head dim (24 / 2)
            axes_lens=(128, 128, 128), cap_feat_dim=TEXT_DIM,
        ),
        {"hidden_states": IMAGE, "encoder_hidden_states": TEXT},
        _mask("encoder_attention_mask", torch.bool),
    ),
    "cogview3plus": TinySpec(
        "CogView3PlusTransformer2DModel",
        dict(
            patch_size=2, in_channels=LATENT_CHANNELS, num_layers=2, attention_head_dim=8, num_attention_heads=2,
            out_channels=LATENT_CHANNELS, text_embed_dim=TEXT_DIM, time_embed_dim=16, condition_dim=4,
            pos_embed_max_size=LATENT_SIZE, sample_size=LATENT_SIZE,
        ),
        {"hidden_states": IMAGE, "encoder_hidden_states": TEXT},
        _per_sample(
            original_size=lambda b: torch.tensor([[64.0, 64.0]] * b),
            target_size=lambda b: torch.tensor([[64.0, 64.0]] * b),
            crop_coords=lambda b: torch.zeros(b, 2),
        ),
    ),
    "cogview4": TinySpec(
        "CogView4Transformer2DModel",
        dict(
            patch_size=2, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, num_layers=2,
            attention_head_dim=8, num_attention_heads=2, text_embed_dim=TEXT_DIM, time_embed_dim=16,
            condition_dim=4, rope_axes_dim=(4, 4),
        ),
        {"hidden_states": IMAGE, "encoder_hidden_states": TEXT},
        _per_sample(
            original_size=lambda b: torch.tensor([[64.0, 64.0]] * b),
            target_size=lambda b: torch.tensor([[64.0, 64.0]] * b),
            crop_coords=lambda b: torch.zeros(b, 2),
        ),
    ),
    "glm-image": TinySpec(
        "GlmImageTransformer2DModel",
        # CogView4-like joint blocks; each image token also gets the embedding of its prior token, the id the
        # autoregressive stage generated for that patch
        dict(
            patch_size=2, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, num_layers=2,
            attention_head_dim=16, num_attention_heads=2, text_embed_dim=TEXT_DIM, time_embed_dim=16,
            condition_dim=4, prior_vq_quantizer_codebook_size=GLM_IMAGE_CODEBOOK,
        ),
        # glyph features of the prompt's quoted text; GlmImagePipeline passes no text mask
        {"hidden_states": IMAGE, "encoder_hidden_states": TEXT},
        _merge(
            lambda batch, seed: {"prior_token_id": token_ids(batch, seed, GLM_IMAGE_CODEBOOK, PACKED_GRID**2)},
            _per_sample(
                # the unconditional half drops its prior tokens, as the pipeline's unconditional call does
                prior_token_drop=lambda b: (torch.arange(b) < b // 2)[:, None].expand(b, PACKED_GRID**2),
                target_size=lambda b: torch.tensor([[64.0, 64.0]] * b),
                crop_coords=lambda b: torch.zeros(b, 2),
            ),
        ),
        # text-to-image: no condition images, so no KV cache of their keys and values
        timestep_offset=-1.0,  # GlmImagePipeline passes t - 1
    ),
    "hunyuandit": TinySpec(
        "HunyuanDiT2DModel",
        dict(
            num_attention_heads=2, attention_head_dim=8, in_channels=LATENT_CHANNELS, patch_size=2,
            sample_size=LATENT_SIZE, hidden_size=16, num_layers=2, cross_attention_dim=TEXT_DIM,
            cross_attention_dim_t5=TEXT_DIM, pooled_projection_dim=16, text_len=TEXT_LEN, text_len_t5=TEXT_LEN,
        ),
        {"hidden_states": IMAGE, "encoder_hidden_states": TEXT, "encoder_hidden_states_t5": TEXT},
        _merge(
            _mask("text_embedding_mask"),
            _mask("text_embedding_mask_t5"),
            _per_sample(
                image_meta_size=lambda b: torch.tensor([[64.0, 64.0, 64.0, 64.0, 0.0, 0.0]] * b),
                style=lambda b: torch.zeros(b, dtype=torch.long),
            ),
            lambda batch, seed: {"image_rotary_emb": _hunyuandit_rope()},
        ),
    ),
    "qwenimage": TinySpec(
        "QwenImageTransformer2DModel",
        dict(
            patch_size=2, in_channels=PACKED_CHANNELS, out_channels=LATENT_CHANNELS, num_layers=2,
            attention_head_dim=16, num_attention_heads=2, joint_attention_dim=TEXT_DIM, axes_dims_rope=(4, 6, 6),
        ),
        {"hidden_states": (PACKED_GRID**2, PACKED_CHANNELS), "encoder_hidden_states": TEXT},
        _merge(_mask("encoder_hidden_states_mask"), _per_sample(img_shapes=lambda b: [(1, PACKED_GRID, PACKED_GRID)] * b)),
        timestep_scale=1e-3,
    ),
    "nucleusmoe-image": TinySpec(
        "NucleusMoEImageTransformer2DModel",
        # Qwen-Image's packed inputs; single-stream blocks whose attention also reads the text as keys and values.
        # Block 0 dense (its SwiGLU width rounds dim * mlp_ratio * 2/3 down to a multiple of 128), block 1 a mixture
        # of 4 experts, each choosing its top ceil(16 tokens / 4) = 4 tokens
        dict(
            patch_size=2, in_channels=PACKED_CHANNELS, out_channels=LATENT_CHANNELS, num_layers=2,
            attention_head_dim=16, num_attention_heads=2, joint_attention_dim=TEXT_DIM, axes_dims_rope=(4, 6, 6),
            mlp_ratio=6.0, dense_moe_strategy="leave_first_block_dense", num_experts=4, moe_intermediate_dim=32,
            capacity_factors=1.0,
        ),
        {"hidden_states": (PACKED_GRID**2, PACKED_CHANNELS), "encoder_hidden_states": TEXT},
        _merge(_mask("encoder_hidden_states_mask"), _per_sample(img_shapes=lambda b: [(1, PACKED_GRID, PACKED_GRID)] * b)),
        timestep_scale=1e-3,  # NucleusMoEImagePipeline passes t / num_train_timesteps
        init=_init_moe_experts,
    ),
    "qwenimage21": TinySpec(
        "QwenImage21Transformer2DModel",
        # one single-stream sequence: the text, then the target image's tokens (block-causal attention)
        dict(
            patch_size=1, in_channels=PACKED_CHANNELS, out_channels=PACKED_CHANNELS, num_layers=2,
            attention_head_dim=16, num_attention_heads=2, context_in_dim=TEXT_DIM, mlp_ratio=2,
            axes_dims_rope=(4, 6, 6),  # sums to attention_head_dim
        ),
        {"hidden_states": (PACKED_GRID**2, PACKED_CHANNELS), "encoder_hidden_states": TEXT},
        _merge(
            _mask("encoder_hidden_states_mask", torch.bool),
            _per_sample(
                img_shapes=lambda b: [[(1, PACKED_GRID, PACKED_GRID)]] * b,  # per sample: condition images, target
                # the vision-language sequence: no condition-image slots in the text, then one slot per 2x2 group of
                # target tokens, as QwenImage21Pipeline appends them
                img_mask=lambda b: torch.cat([torch.zeros(b, TEXT_LEN, dtype=torch.bool),
                                              torch.ones(b, PACKED_GRID**2 // 4, dtype=torch.bool)], dim=1),
            ),
        ),
        # the pipeline's prefix KV cache (kv_cache, kv_cache_mode) is its use_kv_cache=False path here: every step
        # runs the whole sequence
        timestep_scale=1e-3,  # QwenImage21Pipeline passes t / 1000, the model multiplies back
    ),
    "chroma": TinySpec(
        "ChromaTransformer2DModel",
        dict(
            patch_size=1, in_channels=PACKED_CHANNELS, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=TEXT_DIM, axes_dims_rope=(4, 6, 6),
            approximator_num_channels=8, approximator_hidden_dim=16, approximator_layers=1,
        ),
        {"hidden_states": (PACKED_GRID**2, PACKED_CHANNELS), "encoder_hidden_states": TEXT},
        _flux_ids,
        timestep_scale=1e-3,
    ),
    "flux2": TinySpec(
        "Flux2Transformer2DModel",
        dict(
            patch_size=1, in_channels=PACKED_CHANNELS, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=TEXT_DIM, timestep_guidance_channels=32,
            axes_dims_rope=(4, 4, 4, 4),
        ),
        {"hidden_states": (PACKED_GRID**2, PACKED_CHANNELS), "encoder_hidden_states": TEXT},
        _merge(
            # four position axes (t, h, w, l) per token
            lambda batch, seed: {"img_ids": torch.cat([grid_ids(PACKED_GRID, PACKED_GRID), torch.zeros(PACKED_GRID**2, 1)], 1),
                                 "txt_ids": torch.zeros(TEXT_LEN, 4)},
            _per_sample(guidance=lambda b: torch.full((b,), 3.5)),
        ),
        timestep_scale=1e-3,
    ),
    "flux3": TinySpec(
        "Flux3Transformer2DModel",
        # text-to-image: one per-mode block each for the text and the image, one joint block; no flow map (the
        # step-distilled checkpoints take the next step's timestep too)
        dict(
            in_channels=PACKED_CHANNELS, cond_in_channels=PACKED_CHANNELS, num_layers=1, num_single_layers=1,
            attention_head_dim=16, num_attention_heads=2, joint_attention_dim=TEXT_DIM, timestep_channels=32,
            mlp_ratio=2.0, axes_dims_rope=(4, 4, 4, 4),  # sums to attention_head_dim
        ),
        {"hidden_states": (PACKED_GRID**2, PACKED_CHANNELS), "encoder_hidden_states": TEXT},
        # (t, h, w, l) ids as the modular pipeline builds them: the image's h/w scaled by 0.5, the text along l
        lambda batch, seed: {
            "img_ids": torch.cat([grid_ids(PACKED_GRID, PACKED_GRID) * torch.tensor([1.0, 0.5, 0.5]),
                                  torch.zeros(PACKED_GRID**2, 1)], 1),
            "txt_ids": torch.cat([torch.zeros(TEXT_LEN, 3), torch.arange(TEXT_LEN, dtype=torch.float32)[:, None]], 1),
        },
        timestep_scale=1e-3,  # the pipeline passes t / 1000, the model multiplies back
    ),
    "krea2": TinySpec(
        "Krea2Transformer2DModel",
        # single-stream blocks on [text, image]; the text first passes a fusion stack of its own (one block across
        # the tapped encoder layers of each token, one across the tokens)
        dict(
            in_channels=PACKED_CHANNELS, num_layers=2, attention_head_dim=16, num_attention_heads=2,
            num_key_value_heads=1, intermediate_size=64, timestep_embed_dim=32, text_hidden_dim=TEXT_DIM,
            num_text_layers=KREA2_TEXT_LAYERS, text_num_attention_heads=2, text_num_key_value_heads=2,
            text_intermediate_size=64, num_layerwise_text_blocks=1, num_refiner_text_blocks=1,
            axes_dims_rope=(4, 6, 6),  # sums to attention_head_dim
        ),
        {"hidden_states": (PACKED_GRID**2, PACKED_CHANNELS),
         "encoder_hidden_states": (TEXT_LEN, KREA2_TEXT_LAYERS, TEXT_DIM)},
        _merge(
            _mask("encoder_attention_mask", torch.bool),
            # (t, h, w) for [text, image] as Krea2Pipeline.prepare_position_ids builds them: text at the origin
            _const(position_ids=torch.cat([torch.zeros(TEXT_LEN, 3), grid_ids(PACKED_GRID, PACKED_GRID)])),
        ),
        timestep_scale=1e-3,  # Krea2Pipeline passes t / num_train_timesteps, the model multiplies back
    ),
    "ideogram4": TinySpec(
        "Ideogram4Transformer2DModel",
        # one packed sequence per sample: [left padding][text][image], roles told by `indicator`
        dict(
            in_channels=PACKED_CHANNELS, num_layers=2, attention_head_dim=16, num_attention_heads=2,
            intermediate_size=64, adaln_dim=16, llm_features_dim=TEXT_DIM,
            mrope_section=(2, 2, 2),  # interleaved: axis k takes every third of the head's 8 frequencies from k
        ),
        # the image latents and the text features each fill the whole sequence; the model zeroes them outside their
        # own positions (the pipeline passes zeros there)
        {"hidden_states": (IDEOGRAM4_SEQ, PACKED_CHANNELS), "encoder_hidden_states": (IDEOGRAM4_SEQ, TEXT_DIM)},
        _ideogram4_layout,
        timestep_scale=-1e-3, timestep_offset=1.0,  # Ideogram4Pipeline passes 1 - t / 1000 (1 is clean data)
    ),
    "omnigen": TinySpec(
        "OmniGenTransformer2DModel",
        # a Phi-3-like decoder over [text tokens, time token, image tokens]
        dict(
            in_channels=LATENT_CHANNELS, patch_size=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=1,
            intermediate_size=64, num_layers=2, pad_token_id=OMNIGEN_PAD_ID, vocab_size=OMNIGEN_VOCAB,
            rope_scaling={"short_factor": [1.0] * 8, "long_factor": [1.0] * 8},  # one per frequency of a 16-wide head
            pos_embed_max_size=LATENT_SIZE, time_step_dim=32,
        ),
        {"hidden_states": IMAGE},
        _omnigen_inputs,
    ),
    "bria": TinySpec(
        "BriaTransformer2DModel",
        dict(
            patch_size=1, in_channels=PACKED_CHANNELS, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=TEXT_DIM, axes_dims_rope=(4, 6, 6),
        ),
        {"hidden_states": (PACKED_GRID**2, PACKED_CHANNELS), "encoder_hidden_states": TEXT},
        _flux_ids,
    ),
    "bria-fibo": TinySpec(
        "BriaFiboTransformer2DModel",
        dict(
            patch_size=1, in_channels=PACKED_CHANNELS, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=TEXT_DIM, axes_dims_rope=(4, 6, 6),
            text_encoder_dim=TEXT_DIM,  # each block's text encoder layer is projected to half the inner dim
        ),
        {"hidden_states": (PACKED_GRID**2, PACKED_CHANNELS), "encoder_hidden_states": TEXT},
        # one text encoder hidden state per block (double, then single); prompts padded to full length leave the
        # pipeline's attention mask out (it passes one only when some token is padding)
        _merge(_flux_ids, _bria_fibo_text_layers),
    ),
    "bria-fibo2": TinySpec(
        "BriaFibo2Transformer2DModel",
        # Z-Image-like blocks: a noise refiner on the image tokens, then one stream of Perceiver gist tokens and image
        # tokens; block 1 also cross-attends to its own text encoder layer
        dict(
            in_channels=LATENT_CHANNELS, patch_size=2, dim=32, n_layers=2, n_refiner_layers=1, n_heads=2,
            cap_feat_dim=TEXT_DIM, injection_layer_ids=(1,), perceiver_num_layers=1,
            # 4-8 gist tokens, one per two text tokens above 8: the 16- and 13-token prompts get 8 and 7, so a
            # batch pads the gist tokens
            min_num_gist_tokens=4, max_num_gist_tokens=8, gist_step=1, gist_min_text_len=8, gist_max_text_len=16,
            axes_dims=(4, 6, 6),  # sums to the head dim (32 / 2)
            axes_lens=(16, 8, 8),  # RoPE planes: gist tokens 1-8, the image 9, the context image 10
        ),
        # text: the Perceiver's layer, then one per injection block
        {"hidden_states": IMAGE, "encoder_hidden_states": (2, *TEXT)},
        _merge(
            _mask("encoder_attention_mask", torch.bool),
            # one image to edit, clean tokens next to the noisy ones
            lambda batch, seed: {"context_latents": [draw(batch, seed + 1, image=IMAGE)["image"]]},
        ),
        timestep_scale=1e-3,  # BriaFibo2Pipeline passes t / 1000, the model multiplies back
    ),
    "longcat-image": TinySpec(
        "LongCatImageTransformer2DModel",
        dict(
            patch_size=1, in_channels=PACKED_CHANNELS, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=TEXT_DIM, pooled_projection_dim=TEXT_DIM,
            axes_dims_rope=(4, 6, 6),
        ),
        {"hidden_states": (PACKED_GRID**2, PACKED_CHANNELS), "encoder_hidden_states": TEXT},
        _flux_ids,
        timestep_scale=1e-3,
    ),
    "ovis-image": TinySpec(
        "OvisImageTransformer2DModel",
        dict(
            patch_size=1, in_channels=PACKED_CHANNELS, out_channels=PACKED_CHANNELS, num_layers=1,
            num_single_layers=1, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=TEXT_DIM,
            axes_dims_rope=(4, 6, 6),
        ),
        {"hidden_states": (PACKED_GRID**2, PACKED_CHANNELS), "encoder_hidden_states": TEXT},
        _flux_ids,
        timestep_scale=1e-3,
    ),
    "skyreels-v2": TinySpec(
        "SkyReelsV2Transformer3DModel",
        dict(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=LATENT_CHANNELS,
            out_channels=LATENT_CHANNELS, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=32, num_layers=2,
            rope_max_seq_len=32,
        ),
        {"hidden_states": VIDEO, "encoder_hidden_states": TEXT},
    ),
    "helios": TinySpec(
        "HeliosTransformer3DModel",
        # Wan-like, with short / mid / long latent histories patched at 1x, 2x and 4x and prepended to the tokens
        dict(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=LATENT_CHANNELS,
            out_channels=LATENT_CHANNELS, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=32, num_layers=2,
            rope_dim=(4, 4, 4),  # sums to attention_head_dim
        ),
        {"hidden_states": VIDEO, "encoder_hidden_states": TEXT},
        _helios_history,
    ),
    "wan-vace": TinySpec(
        "WanVACETransformer3DModel",
        dict(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=LATENT_CHANNELS,
            out_channels=LATENT_CHANNELS, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=32, num_layers=2,
            rope_max_seq_len=32, vace_layers=[0], vace_in_channels=2 * LATENT_CHANNELS,
        ),
        {"hidden_states": VIDEO, "encoder_hidden_states": TEXT, "control_hidden_states": (2 * LATENT_CHANNELS, VIDEO_FRAMES, LATENT_SIZE, LATENT_SIZE)},
        _const(control_hidden_states_scale=torch.ones(1)),
    ),
    "chronoedit": TinySpec(
        "ChronoEditTransformer3DModel",
        dict(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=LATENT_CHANNELS,
            out_channels=LATENT_CHANNELS, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=32, num_layers=2,
            rope_max_seq_len=32,
        ),
        {"hidden_states": VIDEO, "encoder_hidden_states": TEXT},
    ),
    "stable-audio": TinySpec(
        "StableAudioDiTModel",
        dict(
            # RoPE rotates max(head_dim // 2, 32) channels, so the head needs 32
            sample_size=16, in_channels=LATENT_CHANNELS, num_layers=2, attention_head_dim=32, num_attention_heads=1,
            num_key_value_attention_heads=1, out_channels=LATENT_CHANNELS, cross_attention_dim=32,
            time_proj_dim=8, global_states_input_dim=32, cross_attention_input_dim=TEXT_DIM,
        ),
        {"hidden_states": (LATENT_CHANNELS, 16), "encoder_hidden_states": TEXT, "global_hidden_states": (1, 32)},
        lambda batch, seed: {"rotary_embedding": _stable_audio_rope()},
    ),
    "stable-audio3": TinySpec(
        "StableAudio3DiTModel",
        dict(
            io_channels=LATENT_CHANNELS, embed_dim=32, depth=2, num_heads=2, cond_token_dim=TEXT_DIM,
            global_cond_dim=POOLED_DIM, local_add_cond_dim=LATENT_CHANNELS + 1, timestep_features_dim=16,
            ff_mult=2.0, num_memory_tokens=4,
        ),
        # the pipeline appends the duration embedding to the text as one more, always valid, context token
        {"hidden_states": (LATENT_CHANNELS, 16), "encoder_hidden_states": (TEXT_LEN + 1, TEXT_DIM),
         "global_hidden_states": (POOLED_DIM,)},
        _mask("encoder_attention_mask", torch.bool, TEXT_LEN + 1),
        timestep_scale=1e-3,  # the model takes the flow-matching sigma in [0, 1]
    ),
    "longcat-audio": TinySpec(
        "LongCatAudioDiTTransformer",
        dict(dit_dim=32, dit_depth=2, dit_heads=2, dit_text_dim=TEXT_DIM, latent_dim=LATENT_CHANNELS, ff_mult=2.0),
        {"hidden_states": (16, LATENT_CHANNELS), "encoder_hidden_states": TEXT},
        _merge(
            _mask("encoder_attention_mask", torch.bool),
            # every latent frame valid; text-to-audio passes a zero latent condition
            _per_sample(attention_mask=lambda b: torch.ones(b, 16, dtype=torch.bool),
                        latent_cond=lambda b: torch.zeros(b, 16, LATENT_CHANNELS)),
        ),
        timestep_scale=1e-3,  # the pipeline passes t / num_train_timesteps
        redrawn=("proj_out.weight",),
    ),
    "ace-step": TinySpec(
        "AceStepTransformer1DModel",
        dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2,  # one sliding-window, one full attention
            num_attention_heads=2, num_key_value_heads=1, head_dim=16,
            in_channels=ACE_STEP_CONTEXT_CHANNELS + LATENT_CHANNELS,  # context latents join the noisy ones
            audio_acoustic_hidden_dim=LATENT_CHANNELS, patch_size=2,
            sliding_window=4,  # shorter than the 8 patched frames, so the band mask matters
            encoder_hidden_size=TEXT_DIM,
        ),
        # context latents: source latents and chunk masks, concatenated on channels by the pipeline
        {"hidden_states": (16, LATENT_CHANNELS), "encoder_hidden_states": TEXT,
         "context_latents": (16, ACE_STEP_CONTEXT_CHANNELS)},
        timestep_scale=1e-3,  # the model takes t in [0, 1]
        timestep_copies=("timestep_r",),
    ),
    "transformer2d": TinySpec(
        "Transformer2DModel",
        # a patched, ada-norm-zero class-conditional transformer (the DiT layout before DiTTransformer2DModel)
        dict(
            num_attention_heads=2, attention_head_dim=8, in_channels=LATENT_CHANNELS,
            out_channels=2 * LATENT_CHANNELS, num_layers=2, sample_size=LATENT_SIZE, patch_size=2,
            num_embeds_ada_norm=DIT_CLASSES, norm_type="ada_norm_zero", norm_elementwise_affine=False,
        ),
        {"hidden_states": IMAGE},
        lambda batch, seed: {"class_labels": labels(batch, seed, DIT_CLASSES)},
    ),
    "hunyuanvideo15": TinySpec(
        "HunyuanVideo15Transformer3DModel",
        dict(
            in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, num_attention_heads=2, attention_head_dim=8,
            num_layers=2, num_refiner_layers=1, mlp_ratio=2.0, patch_size=1, patch_size_t=1,
            text_embed_dim=TEXT_DIM, text_embed_2_dim=8, image_embed_dim=12,
            rope_axes_dim=(2, 2, 4),  # must sum to attention_head_dim
            target_size=16, task_type="t2v",
        ),
        # the ByT5 projection has a fixed 2048 hidden width and dominates this tiny model's FLOPs (a few glyph tokens)
        {"hidden_states": VIDEO, "encoder_hidden_states": TEXT, "encoder_hidden_states_2": (4, 8)},
        _merge(
            _mask("encoder_attention_mask", torch.float32),
            _mask("encoder_attention_mask_2", torch.float32, 4),
            # text-to-video passes zero image features (the image-to-video pipeline passes SigLIP features)
            _per_sample(image_embeds=lambda b: torch.zeros(b, 3, 12)),
        ),
    ),
    "easyanimate": TinySpec(
        "EasyAnimateTransformer3DModel",
        dict(
            attention_head_dim=16, num_attention_heads=2, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
            mmdit_layers=2, num_layers=2, patch_size=2, sample_height=60, sample_width=90, text_embed_dim=TEXT_DIM,
            time_embed_dim=8, time_position_encoding_type="3d_rope", timestep_activation_fn="silu",
        ),
        {"hidden_states": VIDEO, "encoder_hidden_states": TEXT},
    ),
    "prx": TinySpec(
        "PRXTransformer2DModel",
        dict(
            in_channels=LATENT_CHANNELS, patch_size=2, context_in_dim=TEXT_DIM, hidden_size=32, mlp_ratio=2.0,
            num_heads=2, depth=2, axes_dim=[8, 8],  # sums to the head dim (32 / 2)
            theta=10_000,
        ),
        {"hidden_states": IMAGE, "encoder_hidden_states": TEXT},
        _mask("attention_mask", torch.bool),
    ),
    "lumina-next": TinySpec(
        "LuminaNextDiT2DModel",
        dict(
            sample_size=16, patch_size=2, in_channels=LATENT_CHANNELS, hidden_size=24, num_layers=2,
            num_attention_heads=3, num_kv_heads=1, multiple_of=16, ffn_dim_multiplier=None, norm_eps=1e-5,
            learn_sigma=False, qk_norm=True, cross_attention_dim=TEXT_DIM, scaling_factor=1.0,
        ),
        {"hidden_states": IMAGE, "encoder_hidden_states": TEXT},
        _merge(
            _mask("encoder_mask"),
            _const(cross_attention_kwargs={}),  # the blocks unpack it with **
            lambda batch, seed: {"image_rotary_emb": _lumina_next_rope()},
        ),
    ),
    "consisid": TinySpec(
        "ConsisIDTransformer3DModel",
        # the CogVideoX layout plus identity features (a local face extractor and face cross-attention)
        dict(
            num_attention_heads=2, attention_head_dim=8, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
            time_embed_dim=2, text_embed_dim=TEXT_DIM, num_layers=2, sample_width=LATENT_SIZE,
            sample_height=LATENT_SIZE, sample_frames=8, patch_size=2, temporal_compression_ratio=4,
            max_text_seq_length=TEXT_LEN, cross_attn_interval=1, is_kps=False, is_train_face=True,
            cross_attn_dim_head=1, cross_attn_num_heads=1, LFE_id_dim=2, LFE_vit_dim=2, LFE_depth=5,
            LFE_dim_head=8, LFE_num_heads=2, LFE_num_id_token=1, LFE_num_querie=1, LFE_output_dim=10,
            LFE_ff_mult=1, LFE_num_scale=1,
        ),
        {"hidden_states": (1, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE), "encoder_hidden_states": TEXT,
         "id_cond": (2,)},
        lambda batch, seed: {"id_vit_hidden": [draw(batch, seed + 1, v=(2, 2))["v"]]},
    ),
    "prior": TinySpec(
        "PriorTransformer",
        # the unCLIP / Kandinsky prior: denoises a CLIP image embedding, not a latent image
        dict(num_attention_heads=2, attention_head_dim=4, num_layers=2, embedding_dim=8, num_embeddings=TEXT_LEN,
             additional_embeddings=4),
        {"hidden_states": (8,), "proj_embedding": (8,), "encoder_hidden_states": (TEXT_LEN, 8)},
        _mask("attention_mask", torch.bool),
    ),
    "hunyuanvideo-framepack": TinySpec(
        "HunyuanVideoFramepackTransformer3DModel",
        dict(
            in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, num_attention_heads=2, attention_head_dim=10,
            num_layers=1, num_single_layers=1, num_refiner_layers=1, patch_size=2, patch_size_t=1,
            guidance_embeds=True, text_embed_dim=TEXT_DIM, pooled_projection_dim=POOLED_DIM,
            rope_axes_dim=(2, 4, 4),  # must sum to attention_head_dim
            image_condition_type=None, has_image_proj=True, image_proj_dim=16, has_clean_x_embedder=True,
        ),
        # frame counts differ from the batch size: the unbatched frame indices must not look batched
        {"hidden_states": (LATENT_CHANNELS, FRAMEPACK_FRAMES, LATENT_SIZE, LATENT_SIZE),
         "encoder_hidden_states": TEXT, "pooled_projections": (POOLED_DIM,), "image_embeds": (TEXT_LEN, 16),
         "latents_clean": (LATENT_CHANNELS, FRAMEPACK_FRAMES - 1, LATENT_SIZE, LATENT_SIZE),
         "latents_history_2x": (LATENT_CHANNELS, FRAMEPACK_FRAMES - 1, LATENT_SIZE, LATENT_SIZE),
         "latents_history_4x": (LATENT_CHANNELS, 4 * (FRAMEPACK_FRAMES - 1), LATENT_SIZE, LATENT_SIZE)},
        _merge(
            _mask("encoder_attention_mask", torch.float32),
            _per_sample(guidance=lambda b: torch.full((b,), 6000.0)),
            lambda batch, seed: {
                "indices_latents": torch.arange(FRAMEPACK_FRAMES),
                "indices_latents_clean": torch.arange(FRAMEPACK_FRAMES - 1),
                "indices_latents_history_2x": torch.arange(FRAMEPACK_FRAMES - 1),
                "indices_latents_history_4x": torch.arange(4 * (FRAMEPACK_FRAMES - 1)),
            },
        ),
    ),
    "hidream": TinySpec(
        "HiDreamImageTransformer2DModel",
        dict(
            patch_size=2, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, num_layers=1,
            num_single_layers=1, attention_head_dim=8, num_attention_heads=2, caption_channels=[TEXT_DIM, 8],
            text_emb_dim=POOLED_DIM, num_routed_experts=2, num_activated_experts=2, axes_dims_rope=(4, 2, 2),
            max_resolution=(LATENT_SIZE, LATENT_SIZE),
            llama_layers=(1, 2),  # one Llama layer per block, picked from the stacked hidden states
            force_inference_output=True,
        ),
        {"hidden_states": IMAGE, "encoder_hidden_states_t5": TEXT, "pooled_embeds": (POOLED_DIM,)},
        # Llama hidden states are stacked layer-major: (layers, batch, tokens, dim), the batch in dim 1
        lambda batch, seed: {"encoder_hidden_states_llama3": draw(batch, seed + 1, h=(3, TEXT_LEN, 8))["h"].transpose(0, 1)},
        timestep_arg="timesteps",
    ),
    "wan-animate": TinySpec(
        "WanAnimateTransformer3DModel",
        dict(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
            in_channels=3 * LATENT_CHANNELS,  # noisy latents, reference latents and a mask channel group
            latent_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, text_dim=TEXT_DIM, freq_dim=32,
            ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads", image_dim=16,
            rope_max_seq_len=32,
            # small motion encoder channels, else it holds most of the parameters; face crops of 16 px
            motion_encoder_channel_sizes={"4": 16, "8": 16, "16": 16}, motion_encoder_size=16,
            motion_style_dim=8, motion_dim=4, motion_encoder_dim=16, face_encoder_hidden_dim=16,
            face_encoder_num_heads=2, inject_face_latents_blocks=2,
        ),
        # one reference frame before the pose frames; 4 pose latent frames = 13 face frames
        {"hidden_states": (3 * LATENT_CHANNELS, 5, LATENT_SIZE, LATENT_SIZE), "encoder_hidden_states": TEXT,
         "encoder_hidden_states_image": (4, 16), "pose_hidden_states": (LATENT_CHANNELS, 4, LATENT_SIZE, LATENT_SIZE),
         "face_pixel_values": (3, 13, 16, 16)},
    ),
    "kandinsky6": TinySpec(
        "Kandinsky6Transformer3DModel",
        # the released layout (text_token_padding, ca_rope, cross_gates, fix_modulation): text blocks per modality,
        # then fused video/audio blocks with cross-modal attention
        dict(
            in_visual_dim=LATENT_CHANNELS, out_visual_dim=LATENT_CHANNELS, in_text_dim=TEXT_DIM,
            in_text_dim2=POOLED_DIM, time_dim=16, patch_size=(1, 2, 2), model_dim=32, ff_dim=64, num_text_blocks=1,
            num_visual_blocks=2, axes_dims=(4, 6, 6),  # sums to the head dim: 2 heads of 16
            in_audio_dim=KANDINSKY6_AUDIO_CHANNELS, out_audio_dim=KANDINSKY6_AUDIO_CHANNELS, text_token_padding=True,
            ca_rope=True, cross_gates=True, fix_modulation=True,
        ),
        # channels last (frames, height, width, channels): the noisy latent, the conditioning latent and its mask
        {"hidden_states": (VIDEO_FRAMES, LATENT_SIZE, LATENT_SIZE, 2 * LATENT_CHANNELS + 1),
         "audio_hidden_states": (16, KANDINSKY6_AUDIO_CHANNELS), "encoder_hidden_states": TEXT,
         "pooled_projections": (POOLED_DIM,)},
        _mask("encoder_attention_mask", torch.bool),
    ),
    "minimax-h3": TinySpec(
        "MiniMaxH3Transformer3DModel",
        dict(
            num_attention_heads=2, attention_head_dim=16, hidden_size=32, num_layers=2, num_refiner_layers=1,
            ffn_dim=64, in_channels=LATENT_CHANNELS, audio_in_channels=MINIMAX_H3_AUDIO_CHANNELS, patch_size=(1, 2, 2),
            text_dim=TEXT_DIM, freq_dim=32, time_embed_hidden_dim=32, time_embed_dim=16,
            rope_freq_dim=2,  # rotates 2 * 3 * 2 = 12 of the 16 head channels
        ),
        # one packed sequence of text, audio and video rows (no conditioning rows: text-to-video-and-audio);
        # patchified video rows (frames * (8 / 2)^2, channels * 2 * 2)
        {"hidden_states": (VIDEO_FRAMES * PACKED_GRID**2, PACKED_CHANNELS),
         "audio_hidden_states": (MINIMAX_H3_AUDIO_ROWS, MINIMAX_H3_AUDIO_CHANNELS), "encoder_hidden_states": TEXT},
        lambda batch, seed: _minimax_h3_layout(),
        timestep_scale=1e-3,  # the model takes t in [0, 1]
        timestep_shape=(1,),  # one distinct noise level: video and audio rows are noised together
        timestep_batched=False,
    ),
    "joyimage-edit": TinySpec(
        "JoyImageEditTransformer3DModel",
        dict(
            patch_size=[1, 2, 2], in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, hidden_size=32,
            num_attention_heads=2, text_dim=TEXT_DIM, mlp_width_ratio=2.0, num_layers=2,
            rope_dim_list=[4, 6, 6],  # sums to the head dim (32 / 2)
        ),
        {"hidden_states": VIDEO, "encoder_hidden_states": TEXT},
    ),
    "hunyuanimage": TinySpec(
        "HunyuanImageTransformer2DModel",
        dict(
            in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, num_attention_heads=2, attention_head_dim=8,
            num_layers=1, num_single_layers=1, num_refiner_layers=1, mlp_ratio=2.0, patch_size=(1, 1),
            text_embed_dim=TEXT_DIM, rope_axes_dim=(4, 4),  # sums to attention_head_dim
        ),
        {"hidden_states": IMAGE, "encoder_hidden_states": TEXT},
        _mask("encoder_attention_mask", torch.float32),
    ),
    "motif-video": TinySpec(
        "MotifVideoTransformer3DModel",
        dict(
            in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, num_attention_heads=2, attention_head_dim=8,
            num_layers=1, num_single_layers=1, mlp_ratio=2.0, patch_size=2, patch_size_t=1, text_embed_dim=TEXT_DIM,
            rope_axes_dim=(2, 2, 4),  # sums to attention_head_dim
        ),
        {"hidden_states": VIDEO, "encoder_hidden_states": TEXT},
        _mask("encoder_attention_mask", torch.float32),
    ),
    "minimax-music3": TinySpec(
        "MiniMaxMusic3Transformer1DModel",
        dict(in_channels=LATENT_CHANNELS, condition_dim=TEXT_DIM, num_layers=2, num_attention_heads=2,
             attention_head_dim=16, ff_inner_dim=32, rotary_dim=8, fourier_embedding_dim=16),
        {"hidden_states": (LATENT_CHANNELS, 16), "encoder_hidden_states": TEXT},
    ),
    "ernie-image": TinySpec(
        "ErnieImageTransformer2DModel",
        dict(hidden_size=32, num_attention_heads=2, num_layers=2, ffn_hidden_size=64, in_channels=LATENT_CHANNELS,
             out_channels=LATENT_CHANNELS, patch_size=1, text_in_dim=TEXT_DIM,
             rope_axes_dim=(4, 6, 6)),  # sums to the head dim (32 / 2)
        {"hidden_states": IMAGE, "text_bth": TEXT},
        _per_sample(text_lens=lambda b: torch.tensor([TEXT_LEN - 3 * (i % 2) for i in range(b)])),
    ),
    "joyimage-edit-plus": TinySpec(
        "JoyImageEditPlusTransformer3DModel",
        dict(
            patch_size=[1, 2, 2], in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, hidden_size=32,
            num_attention_heads=2, text_dim=TEXT_DIM, mlp_width_ratio=2.0, num_layers=2,
            rope_dim_list=[4, 6, 6],  # sums to the head dim (32 / 2)
        ),
        # pre-patchified latents: (patches, channels, pt, ph, pw), the target only (no reference images), and per
        # sample the (t, h, w) patch grid of each component
        {"hidden_states": (VIDEO_FRAMES * PACKED_GRID**2, LATENT_CHANNELS, 1, 2, 2), "encoder_hidden_states": TEXT},
        _merge(
            _mask("encoder_hidden_states_mask", torch.float32),
            _per_sample(shape_list=lambda b: [[(VIDEO_FRAMES, PACKED_GRID, PACKED_GRID)] for _ in range(b)]),
        ),
    ),
}  # fmt: skip


#: Transformer classes diffusers exports that have no row above, and why. The coverage test fails for any
#: exported class that is in neither table.
NOT_COVERED: dict[str, str] = {
    # not a denoiser called with a `timestep` over latents
    "T5FilmDecoder": "spectrogram decoder of the music pipeline: takes decoder_noise_time, no timestep argument",
    "MiniMaxMusic3RVQDepthDecoder": "codebook depth decoder: takes only inputs_embeds, no timestep",
    "TransformerTemporalModel": "a UNet sub-block (timestep unused), not a denoiser",
    "DreamLiteTransformer2DModel": "a UNet sub-block, not a denoiser: DreamLite's U-Net calls it without a timestep "
    "(its layer_norm blocks take none) between resnets, on GroupNorm'd feature maps",
    "RFD4ProteinaTransformer": "protein structure model: per-stream times (bb_ca_time, local_latents_time), no timestep",
    "Cosmos3OmniTransformer": "omni model over token lists: per-modality vision/sound/action timesteps, no timestep",
    "WanAnimate2Transformer3DModel": "takes lists of per-sample latents and a mandatory external KV cache",
    "ZImageTransformer2DModel": "takes Python lists of per-sample latents and caption features (x, cap_feats) "
    "rather than batched tensors",
    # cannot run in this environment
    "CosmosTransformer3DModel": "its forward needs torchvision (padding-mask resize), which is not installed",
    # found out while writing rows
    "Kandinsky6SRTransformer3DModel": "its attention is NABLA sparse attention on PyTorch's flex_attention, which "
    "runs eagerly on the CPU but not under the check's FlopCounterMode (TypeError: no implementation found for "
    "'torch.ops.higher_order.flex_attention' in that mode, torch 2.13), so no FLOPs can be counted",
    "AnyFlowFARTransformer3DModel": "its causal self-attention always runs on PyTorch's flex_attention (a FAR "
    "block mask), which runs eagerly on the CPU but not under the check's FlopCounterMode (TypeError: no "
    "implementation found for 'torch.ops.higher_order.flex_attention' in that mode, torch 2.13), so no FLOPs can be "
    "counted; it also takes per-frame timesteps (batch, frames), a chunk partition and, in inference, a KV cache",
    "Kandinsky5Transformer3DModel": "its forward takes one video without a batch dimension ((frames, H, W, C), "
    "channels last: a (2, 2, 8, 8, 4) input comes back as (2, 8, 8, 4)); its pipeline runs CFG as two calls, so "
    "batched CFG cannot be checked",
}  # fmt: skip


def exported_transformer_classes() -> list[str]:
    """Names of the ModelMixin classes diffusers exports from ``diffusers.models.transformers``."""
    import inspect

    import diffusers
    import diffusers.models
    from diffusers.models.modeling_utils import ModelMixin

    names = set()
    for namespace in (diffusers.models, diffusers):
        for name in dir(namespace):
            try:
                obj = getattr(namespace, name)
            except Exception:  # lazy imports of optional backends may fail; such names are not transformers here
                continue
            if (
                inspect.isclass(obj)
                and issubclass(obj, ModelMixin)
                and obj.__module__.startswith("diffusers.models.transformers")
            ):
                names.add(name)
    return sorted(names)
