"""Full-size video DiTs with random weights, for measuring the latency of cache policies on a GPU.

Each preset is the exact transformer config of a released checkpoint (the hub ``transformer/config.json``), the
denoiser inputs its diffusers pipeline produces for a standard generation, the pipeline's default step count and
guidance, and its scheduler. Weight values do not change latency, so no checkpoint is needed: models are built
with cheap random weights.

* :data:`PRESETS` maps ``"cogvideox-2b"``, ``"latte-1"`` and ``"wan-1.3b"`` to a :class:`Preset`.
* :func:`build_preset` builds a model in seconds, whatever its size (see its docstring for how parameters and
  buffers are made).
* :func:`preset_inputs` returns the keyword arguments of one transformer call with the pipeline's shapes.
* :func:`denoise_loop` reproduces how the pipeline calls its transformer over a whole generation, with a real
  diffusers scheduler, random latents and random prompt embeddings (no text encoder, no VAE).
* :func:`preset_pipeline` wraps a model and its scheduler in :class:`PresetLoop`, a pipeline-shaped object that
  ``cachelab.apply`` accepts, so that a policy sees ``scheduler.set_timesteps`` as it would in a real pipeline.

``shrink=True`` (and ``layers=``) give the same classes and block structure at toy width, for CPU tests.

Where the values come from (hub files read through their hub pages; conversion scripts in huggingface/diffusers):

* CogVideoX-2b transformer: ``scripts/convert_cogvideox_to_diffusers.py`` (2B: 30 layers, 30 heads, no rotary
  embeddings; every other value is the class default) and copies of ``THUDM/CogVideoX-2b``
  ``transformer/config.json`` in models derived from it (``Xiaodong/cogvideox-D4-clean-image-sft-1022``,
  ``MatrixTeam/TheMatrix`` stage4), which list the same keys and values. Serialised the way diffusers writes
  configs, the keys below with ``_diffusers_version`` 0.30.0.dev0 (the version its ``model_index.json`` names)
  take exactly the 758 bytes the hub lists for the official file. Scheduler: ``THUDM/CogVideoX-2b``
  ``scheduler/scheduler_config.json`` (hub PR #2, merged).
* Latte-1 transformer: ``maxin-cn/Latte-1`` ``transformer/config.json`` (main). Its ``num_layers=28`` makes 28
  spatial and 28 temporal blocks: 1.06B parameters, matching the checkpoint (the 0.67B often quoted for Latte is
  the paper's class-conditional Latte-XL). Scheduler: ``maxin-cn/Latte-1`` ``scheduler/scheduler_config.json``
  without ``variance_type`` (see ``_LATTE_1_SCHEDULER``).
* Wan2.1-T2V-1.3B transformer: ``scripts/convert_wan_to_diffusers.py`` (``Wan-T2V-1.3B``) plus
  ``rope_max_seq_len`` and ``image_dim`` as in a copy of ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``
  ``transformer/config.json`` (``callgg/t2v-decoder``), which serialised takes exactly the 465 bytes the hub lists
  for the official file. Scheduler: ``scripts/convert_wan_to_diffusers.py`` (``UniPCMultistepScheduler``,
  ``flow_shift=3.0`` for Wan2.1 T2V).
* Reference parameter counts: the released transformer checkpoints' sizes (CogVideoX-2b 3.39 GB of fp16,
  Latte-1 4.23 GB of fp32, Wan2.1-T2V-1.3B 5.68 GB of fp32).
* Pipeline call semantics: ``CogVideoXPipeline``, ``LattePipeline`` and ``WanPipeline`` of diffusers 0.42.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import torch
from torch import nn

__all__ = [
    "PRESETS",
    "Preset",
    "PresetLoop",
    "build_preset",
    "count_parameters",
    "denoise_loop",
    "get_preset",
    "init_random_",
    "preset_inputs",
    "preset_pipeline",
    "preset_scheduler",
]


@dataclass(frozen=True)
class Preset:
    """One released video DiT: its transformer config and how its pipeline calls it.

    Attributes:
        name: preset key (``"cogvideox-2b"``, ``"latte-1"``, ``"wan-1.3b"``).
        model_class: diffusers class name of the transformer.
        config: keyword arguments of ``model_class`` (the hub ``transformer/config.json`` without ``_``-keys);
            treat it, like ``scheduler_config``, as read-only (:func:`get_preset` makes variants).
        description: one line on the model and the generation the shapes describe.
        source: where ``config`` comes from.
        latent_shape: one sample's latents as the transformer takes them (no batch dimension).
        latent_layout: ``"FCHW"`` (CogVideoX: frames first) or ``"CFHW"`` (Latte, Wan).
        text_shape: ``(tokens, width)`` of one prompt's embeddings as the pipeline passes them.
        frames, height, width: the pixel-space generation those latents decode to.
        num_inference_steps, guidance_scale: the pipeline's defaults.
        cfg: ``"batched"`` (one call on ``[uncond, cond]`` concatenated on the batch) or ``"sequential"`` (two
            calls per step); the vocabulary of ``cachelab.apply(cfg=...)``.
        cfg_order: ``"uncond_first"`` (batch halves, or call order) or ``"cond_first"``.
        scheduler_class, scheduler_config, scheduler_source: the pipeline's scheduler and where its config is from.
        reference_params: parameters of the released transformer checkpoint (from its file size).
        shrunk: a toy-width variant made by :func:`get_preset` ``(shrink=True)`` for CPU tests.
    """

    name: str
    model_class: str
    config: Mapping[str, Any] = field(hash=False)
    description: str
    source: str
    latent_shape: tuple[int, ...]
    latent_layout: str
    text_shape: tuple[int, int]
    frames: int
    height: int
    width: int
    num_inference_steps: int
    guidance_scale: float
    cfg: str
    cfg_order: str
    scheduler_class: str
    scheduler_config: Mapping[str, Any] = field(hash=False)
    scheduler_source: str
    reference_params: int
    shrunk: bool = False

    def __post_init__(self):
        # Own copies (plain dicts, so that presets and the models carrying them pickle and deep-copy).
        object.__setattr__(self, "config", dict(self.config))
        object.__setattr__(self, "scheduler_config", dict(self.scheduler_config))

    @property
    def model_cls(self) -> type:
        import diffusers

        return getattr(diffusers, self.model_class)

    def calls_per_step(self, guidance_scale: float | None = None) -> int:
        """Transformer calls per denoising step (2 for sequential CFG, else 1)."""
        cfg_on = (self.guidance_scale if guidance_scale is None else guidance_scale) > 1.0
        return 2 if cfg_on and self.cfg == "sequential" else 1

    def transformer_batch(self, prompts: int = 1, guidance_scale: float | None = None) -> int:
        """Batch size of each transformer call for ``prompts`` prompts (doubled by batched CFG)."""
        cfg_on = (self.guidance_scale if guidance_scale is None else guidance_scale) > 1.0
        return 2 * prompts if cfg_on and self.cfg == "batched" else prompts

    def make_scheduler(self):
        """A fresh scheduler of the pipeline's class and config."""
        import diffusers

        return getattr(diffusers, self.scheduler_class).from_config(dict(self.scheduler_config))


# --------------------------------------------------------------------------------------------------------------
# The presets
# --------------------------------------------------------------------------------------------------------------

# THUDM/CogVideoX-2b transformer/config.json (see the module docstring for the sources). Class defaults that the
# 2b checkpoint relies on and its config does not list: patch_size_t=None (CogVideoX 1.0 patching),
# ofs_embed_dim=None, patch_bias=True, use_learned_positional_embeddings=False.
_COGVIDEOX_2B = dict(
    activation_fn="gelu-approximate",
    attention_bias=True,
    attention_head_dim=64,
    dropout=0.0,
    flip_sin_to_cos=True,
    freq_shift=0,
    in_channels=16,
    max_text_seq_length=226,
    norm_elementwise_affine=True,
    norm_eps=1e-5,
    num_attention_heads=30,
    num_layers=30,
    out_channels=16,
    patch_size=2,
    sample_frames=49,  # pixel frames: (13 latent frames - 1) * 4 + 1
    sample_height=60,
    sample_width=90,
    spatial_interpolation_scale=1.875,
    temporal_compression_ratio=4,
    temporal_interpolation_scale=1.0,
    text_embed_dim=4096,
    time_embed_dim=512,
    timestep_activation_fn="silu",
    use_rotary_positional_embeddings=False,  # 2b: 3D sin-cos positional table (a buffer), no RoPE
)

# THUDM/CogVideoX-2b scheduler/scheduler_config.json.
_COGVIDEOX_2B_SCHEDULER = dict(
    beta_end=0.012,
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    clip_sample=False,
    clip_sample_range=1.0,
    num_train_timesteps=1000,
    prediction_type="v_prediction",
    rescale_betas_zero_snr=True,
    sample_max_value=1.0,
    set_alpha_to_one=True,
    snr_shift_scale=3.0,
    steps_offset=0,
    timestep_spacing="trailing",
    trained_betas=None,
)

# maxin-cn/Latte-1 transformer/config.json. video_length is not listed: the class default, 16, sizes the temporal
# positional table, which is added as is, so Latte-1 generates exactly 16 frames. num_layers=28 builds 28 spatial
# and 28 temporal blocks.
_LATTE_1 = dict(
    activation_fn="gelu-approximate",
    attention_bias=True,
    attention_head_dim=72,
    caption_channels=4096,
    cross_attention_dim=1152,
    dropout=0.0,
    in_channels=4,
    norm_elementwise_affine=False,
    norm_eps=1e-6,
    norm_type="ada_norm_single",
    num_attention_heads=16,
    num_embeds_ada_norm=1000,
    num_layers=28,
    out_channels=8,  # learned sigma: the pipeline keeps the first 4 channels
    patch_size=2,
    sample_size=64,
)

# maxin-cn/Latte-1 scheduler/scheduler_config.json, less its "variance_type": "learned_range". That key belongs to
# DDPMScheduler; DDIMScheduler ignores it, but it survives in the scheduler's config and LattePipeline keeps all 8
# output channels when it sees it (and then fails in DDIMScheduler.step on 8 vs 4 channels). Without it the pipeline
# drops the learned-sigma half, as denoise_loop does.
_LATTE_1_SCHEDULER = dict(
    beta_end=0.02,
    beta_schedule="linear",
    beta_start=0.0001,
    clip_sample=False,
    dynamic_thresholding_ratio=0.995,
    num_train_timesteps=1000,
    prediction_type="epsilon",
    sample_max_value=1.0,
    thresholding=False,
    timestep_spacing="leading",
    trained_betas=None,
)

# Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/config.json.
_WAN_1_3B = dict(
    added_kv_proj_dim=None,
    attention_head_dim=128,
    cross_attn_norm=True,
    eps=1e-6,
    ffn_dim=8960,
    freq_dim=256,
    image_dim=None,
    in_channels=16,
    num_attention_heads=12,
    num_layers=30,
    out_channels=16,
    patch_size=[1, 2, 2],
    qk_norm="rms_norm_across_heads",
    rope_max_seq_len=1024,
    text_dim=4096,
)

# scripts/convert_wan_to_diffusers.py: the scheduler saved with Wan2.1 T2V pipelines (flow_shift 3.0, for 480p).
_WAN_SCHEDULER = dict(
    prediction_type="flow_prediction",
    use_flow_sigmas=True,
    num_train_timesteps=1000,
    flow_shift=3.0,
)

PRESETS: dict[str, Preset] = {
    "cogvideox-2b": Preset(
        name="cogvideox-2b",
        model_class="CogVideoXTransformer3DModel",
        config=_COGVIDEOX_2B,
        description="CogVideoX-2b (1.69B): 49 frames at 480x720, 13 latent frames of 60x90, 226 T5 tokens",
        source="THUDM/CogVideoX-2b transformer/config.json; diffusers scripts/convert_cogvideox_to_diffusers.py",
        latent_shape=(13, 16, 60, 90),
        latent_layout="FCHW",
        text_shape=(226, 4096),
        frames=49,
        height=480,
        width=720,
        num_inference_steps=50,
        guidance_scale=6.0,
        cfg="batched",
        cfg_order="uncond_first",
        scheduler_class="CogVideoXDDIMScheduler",
        scheduler_config=_COGVIDEOX_2B_SCHEDULER,
        scheduler_source="THUDM/CogVideoX-2b scheduler/scheduler_config.json",
        reference_params=1_694_000_000,  # 3.39 GB of fp16
    ),
    "latte-1": Preset(
        name="latte-1",
        model_class="LatteTransformer3DModel",
        config=_LATTE_1,
        description=(
            "Latte-1 (1.06B, 28 spatial + 28 temporal blocks): 16 frames at 512x512, latents 16x64x64, up to 120 T5 "
            "tokens (LattePipeline trims a single prompt's embeddings to its real length; 120 is the maximum)"
        ),
        source="maxin-cn/Latte-1 transformer/config.json",
        latent_shape=(4, 16, 64, 64),
        latent_layout="CFHW",
        text_shape=(120, 4096),
        frames=16,
        height=512,
        width=512,
        num_inference_steps=50,
        guidance_scale=7.5,
        cfg="batched",
        cfg_order="uncond_first",
        scheduler_class="DDIMScheduler",
        scheduler_config=_LATTE_1_SCHEDULER,
        scheduler_source="maxin-cn/Latte-1 scheduler/scheduler_config.json (without variance_type)",
        reference_params=1_057_000_000,  # 4.23 GB of fp32
    ),
    "wan-1.3b": Preset(
        name="wan-1.3b",
        model_class="WanTransformer3DModel",
        config=_WAN_1_3B,
        description="Wan2.1-T2V-1.3B (1.42B): 81 frames at 480x832, 21 latent frames of 60x104, 512 UMT5 tokens",
        source=(
            "Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/config.json; "
            "diffusers scripts/convert_wan_to_diffusers.py"
        ),
        latent_shape=(16, 21, 60, 104),
        latent_layout="CFHW",
        text_shape=(512, 4096),
        frames=81,
        height=480,
        width=832,
        num_inference_steps=50,
        guidance_scale=5.0,
        cfg="sequential",
        cfg_order="cond_first",
        scheduler_class="UniPCMultistepScheduler",
        scheduler_config=_WAN_SCHEDULER,
        scheduler_source="diffusers scripts/convert_wan_to_diffusers.py (Wan2.1 T2V, flow_shift=3.0)",
        reference_params=1_420_000_000,  # 5.68 GB of fp32
    ),
}

# Toy-width variants: same classes, same block kinds, same positional-embedding kinds and patching; a few channels,
# a few tokens. Shapes stay consistent with the configs (CogVideoX's joint positional table covers exactly
# max_text_seq_length text tokens and sample_* latents; Latte's temporal table covers exactly video_length frames).
_SHRINK: dict[str, dict[str, Any]] = {
    "cogvideox-2b": dict(
        config=dict(
            num_attention_heads=2,
            attention_head_dim=16,
            time_embed_dim=16,
            text_embed_dim=32,
            num_layers=2,
            sample_height=8,
            sample_width=8,
            sample_frames=9,  # 3 latent frames
            max_text_seq_length=8,
        ),
        latent_shape=(3, 16, 8, 8),
        text_shape=(8, 32),
        frames=9,
        height=64,
        width=64,
    ),
    "latte-1": dict(
        config=dict(
            num_attention_heads=2,
            attention_head_dim=16,
            cross_attention_dim=32,  # captions are projected to the inner width (2 * 16) before cross-attention
            caption_channels=32,
            num_layers=2,
            sample_size=8,
            video_length=4,
        ),
        latent_shape=(4, 4, 8, 8),
        text_shape=(8, 32),
        frames=4,
        height=64,
        width=64,
    ),
    "wan-1.3b": dict(
        config=dict(
            num_attention_heads=2,
            attention_head_dim=24,  # rotary split t/h/w = 8/8/8
            ffn_dim=64,
            text_dim=32,
            freq_dim=32,
            num_layers=2,
        ),
        latent_shape=(16, 3, 8, 8),
        text_shape=(8, 32),
        frames=9,
        height=64,
        width=64,
    ),
}


def get_preset(name: str | Preset, *, shrink: bool = False, layers: int | None = None) -> Preset:
    """The preset called ``name`` (or ``name`` itself), optionally shrunk and with ``num_layers=layers``."""
    if isinstance(name, Preset):
        preset = name
    else:
        try:
            preset = PRESETS[name]
        except KeyError:
            raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
    if shrink and not preset.shrunk:
        small = _SHRINK[preset.name]
        preset = replace(
            preset,
            config={**preset.config, **small["config"]},
            description=f"{preset.description} [shrunk for tests]",
            latent_shape=small["latent_shape"],
            text_shape=small["text_shape"],
            frames=small["frames"],
            height=small["height"],
            width=small["width"],
            shrunk=True,
        )
    if layers is not None:
        preset = replace(preset, config={**preset.config, "num_layers": int(layers)})
    return preset


# --------------------------------------------------------------------------------------------------------------
# Building models
# --------------------------------------------------------------------------------------------------------------

# Normalisation modules, whose 1-D weights get 1 (and biases 0). FP32LayerNorm subclasses nn.LayerNorm; diffusers'
# own RMSNorm and the like are matched by class name (the adaLN wrappers named *Norm own no direct parameters).
_NORM_TYPES: tuple[type, ...] = (nn.LayerNorm, nn.GroupNorm) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, _NORM_TYPES) or type(module).__name__.endswith("Norm")


@torch.no_grad()
def init_random_(model: nn.Module, seed: int = 0, std: float = 0.02) -> nn.Module:
    """Fill every floating-point parameter of ``model`` in place, deterministically for a given seed and device.

    * biases: 0;
    * 1-D weights of normalisation layers (LayerNorm, FP32LayerNorm, RMSNorm, GroupNorm): 1;
    * ``scale_shift_table`` (adaLN modulation tables of Latte and Wan): normal with std ``width ** -0.5``, the
      distribution their ``__init__`` draws from;
    * every other weight (linear, convolution, embedding tables): normal with std ``std``.

    Buffers are left alone. With this init, hidden states stay O(1) through every block, so full-size bf16 outputs
    are finite and non-degenerate. Parameters on the meta device are skipped.
    """
    generators: dict[torch.device, torch.Generator] = {}
    for module in model.modules():
        for pname, param in module._parameters.items():
            if param is None or not param.is_floating_point() or param.device.type == "meta":
                continue
            if pname == "bias":
                param.zero_()
            elif _is_norm(module) and param.ndim == 1:
                param.fill_(1.0)
            else:
                gen = generators.get(param.device)
                if gen is None:
                    gen = torch.Generator(device=param.device).manual_seed(seed)
                    generators[param.device] = gen
                sigma = param.shape[-1] ** -0.5 if "scale_shift_table" in pname else std
                param.normal_(0.0, sigma, generator=gen)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (meta parameters count too)."""
    return sum(p.numel() for p in model.parameters())


def _keep_in_fp32(name: str, keep: list[str]) -> bool:
    # The rule diffusers applies when from_pretrained loads a state dict with torch_dtype.
    return any(module_name in name.split(".") for module_name in keep)


def build_preset(
    name: str | Preset,
    device: str | torch.device = "meta",
    dtype: torch.dtype = torch.bfloat16,
    *,
    layers: int | None = None,
    shrink: bool = False,
    seed: int = 0,
    std: float = 0.02,
) -> nn.Module:
    """Build a preset's transformer with random weights, in ``eval()`` mode and with ``requires_grad=False``.

    How it is built, fast at any size:

    * ``device="meta"``: the whole model, parameters and buffers, is constructed under ``torch.device("meta")``.
      Nothing is allocated; for counting parameters, checking shapes, or running shape-only forwards.
    * ``device="cpu"`` / ``"cuda"``: the model is constructed under ``accelerate.init_empty_weights(
      include_buffers=False)``, as diffusers' ``from_pretrained`` constructs it: every parameter goes to the meta
      device as soon as it is registered, while buffers are computed for real, on CPU, by the class's own
      ``__init__`` code. The buffers are set aside, the model is materialised with ``to_empty(device=device)``
      (uninitialised storage), the buffers are put back, copied to ``device``, and the parameters are filled by
      :func:`init_random_`. So buffers hold exactly what a normal construction computes, in the dtype it computes
      them in, not garbage: CogVideoX-2b's joint 3D sin-cos table ``patch_embed.pos_embedding`` (float64,
      non-persistent), Latte's ``pos_embed.pos_embed`` (2D sin-cos) and ``temp_pos_embed`` (1D sin-cos), Wan's
      rotary tables ``rope.freqs_cos`` / ``rope.freqs_sin``. As with ``from_pretrained``, buffers keep their own
      dtype whatever ``dtype`` is; the forwards cast them where they are used.

    Parameter dtypes follow ``from_pretrained(torch_dtype=dtype)``: floating-point parameters get ``dtype``,
    except those under the class's ``_keep_in_fp32_modules`` (Wan: ``time_embedder``, ``scale_shift_table``,
    ``norm1/2/3``, ...), which stay float32.

    Args:
        name: a preset name or :class:`Preset`.
        device: ``"meta"``, ``"cpu"``, ``"cuda"`` or any torch device.
        dtype: parameter dtype.
        layers: override ``num_layers`` (Latte: spatial and temporal blocks each).
        shrink: toy width (see ``_SHRINK``) with the same classes and structure, for CPU tests.
        seed, std: passed to :func:`init_random_`.

    The returned module carries its resolved :class:`Preset` as ``model._cachelab_preset``, which
    :func:`denoise_loop` and :class:`PresetLoop` read.
    """
    preset = get_preset(name, shrink=shrink, layers=layers)
    cls = preset.model_cls
    config = dict(preset.config)
    device = torch.device(device)
    keep = list(getattr(cls, "_keep_in_fp32_modules", None) or [])

    if device.type == "meta":
        with torch.device("meta"):
            model = cls(**config)
    else:
        from accelerate import init_empty_weights

        with init_empty_weights(include_buffers=False):
            model = cls(**config)

    # Parameter dtypes, still on the meta device (free).
    for mod_name, module in model.named_modules():
        for pname, param in list(module._parameters.items()):
            if param is None or not param.is_floating_point():
                continue
            full = f"{mod_name}.{pname}" if mod_name else pname
            target = torch.float32 if _keep_in_fp32(full, keep) else dtype
            if param.dtype != target:
                module._parameters[pname] = nn.Parameter(param.data.to(target), requires_grad=False)

    if device.type != "meta":
        saved = [
            (module, bname, buf)
            for module in model.modules()
            for bname, buf in module._buffers.items()
            if buf is not None
        ]
        model.to_empty(device=device)
        for module, bname, buf in saved:
            module._buffers[bname] = buf.to(device)
        init_random_(model, seed=seed, std=std)

    model.requires_grad_(False)
    model.eval()
    model._cachelab_preset = preset
    return model


# --------------------------------------------------------------------------------------------------------------
# Inputs and the denoising loop
# --------------------------------------------------------------------------------------------------------------


def _randn(shape, generator, device, dtype) -> torch.Tensor:
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(tuple(shape), generator=generator, device=torch.device(device), dtype=dtype)


def preset_inputs(
    name: str | Preset,
    batch: int = 1,
    timestep: float = 500,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    generator: torch.Generator | None = None,
    *,
    shrink: bool = False,
    text_len: int | None = None,
) -> dict[str, Any]:
    """Keyword arguments for one call ``model(**kwargs)`` with the pipeline's shapes and dtypes.

    ``batch`` is the batch the transformer sees: for a CFG step of CogVideoX or Latte (batched CFG) pass
    ``preset.transformer_batch(prompts)``, i.e. twice the number of prompts. ``timestep`` is on the 0-1000 scale
    and becomes a LongTensor ``(batch,)``, as each preset's scheduler yields int64 timesteps and its pipeline
    expands them. Latents and text are random normal in ``dtype``; the call has ``return_dict=False``.

    * CogVideoX: ``hidden_states`` (B, F, C, H, W), ``encoder_hidden_states`` (B, 226, 4096), ``timestep``,
      ``image_rotary_emb=None`` (2b has no RoPE).
    * Latte: ``hidden_states`` (B, C, F, H, W), ``encoder_hidden_states`` (B, 120, 4096), ``timestep``,
      ``enable_temporal_attentions=True`` (no text mask: LattePipeline passes none).
    * Wan: ``hidden_states`` (B, C, F, H, W), ``encoder_hidden_states`` (B, 512, 4096), ``timestep``.
    """
    preset = get_preset(name, shrink=shrink)
    tokens, width = preset.text_shape
    tokens = text_len or tokens
    hidden = _randn((batch, *preset.latent_shape), generator, device, dtype)
    text = _randn((batch, tokens, width), generator, device, dtype)
    kwargs: dict[str, Any] = {
        "hidden_states": hidden,
        "encoder_hidden_states": text,
        "timestep": torch.full((batch,), int(round(float(timestep))), dtype=torch.long, device=device),
    }
    if preset.model_class == "CogVideoXTransformer3DModel":
        kwargs["image_rotary_emb"] = None
    elif preset.model_class == "LatteTransformer3DModel":
        kwargs["enable_temporal_attentions"] = True
    kwargs["return_dict"] = False
    return kwargs


def preset_scheduler(name: str | Preset):
    """A fresh instance of the preset pipeline's scheduler."""
    return get_preset(name).make_scheduler()


def _model_preset(model: nn.Module, name: str | Preset | None, shrink: bool | None) -> Preset:
    """The preset to drive ``model`` with: the one it was built with when the name matches and ``shrink`` is not
    given (so a shrunk or layer-reduced build gets matching inputs), else ``get_preset(name, shrink=...)``."""
    own = getattr(model, "_cachelab_preset", None)
    if isinstance(name, Preset):
        return get_preset(name, shrink=bool(shrink))
    if own is not None and (name is None or own.name == name) and shrink is None:
        return own
    if name is None:
        raise ValueError("name is required for a model not built by build_preset")
    return get_preset(name, shrink=bool(shrink))


def _model_dtype(model: nn.Module) -> torch.dtype:
    dtype = getattr(model, "dtype", None)  # diffusers: the dtype of params outside _keep_in_fp32_modules
    if isinstance(dtype, torch.dtype):
        return dtype
    return next(p.dtype for p in model.parameters() if p.is_floating_point())


def _cache_context(model: nn.Module, name: str, **kwargs):
    """``model.cache_context(name, ...)`` as the pipelines call it (diffusers' CacheMixin), or a no-op."""
    import contextlib

    if hasattr(model, "cache_context"):
        return model.cache_context(name, **kwargs)
    return contextlib.nullcontext()


@torch.no_grad()
def denoise_loop(
    model: nn.Module,
    name: str | Preset | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    batch: int = 1,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
    scheduler=None,
    *,
    shrink: bool | None = None,
    text_len: int | None = None,
) -> torch.Tensor:
    """Run a whole generation's denoising loop the way the preset's diffusers pipeline calls its transformer.

    Random latents (scaled by ``init_noise_sigma``) and random prompt / negative-prompt embeddings stand in for
    the text encoder; the VAE is skipped; the final latents are returned. The loop starts with
    ``scheduler.set_timesteps(steps, device=device)`` (where cache frameworks start a generation) and advances with
    ``scheduler.step``. Per step, as in diffusers 0.42:

    * CogVideoX (``CogVideoXPipeline``): ``torch.cat([latents] * 2)`` (uncond first), ``scale_model_input``,
      ``timestep = t.expand(2B)``, one call under ``cache_context("cond_uncond")``, output cast to float32,
      guidance, ``scheduler.step(..., eta=0.0, generator=generator)``, latents cast back to ``dtype``.
    * Latte (``LattePipeline``): the same batched CFG without a cache context, ``timestep`` a LongTensor
      ``(2B,)``, ``enable_temporal_attentions=True``; the learned-sigma half of the 8 output channels is dropped
      (``chunk(2, dim=1)[0]``) before ``scheduler.step``.
    * Wan (``WanPipeline``): float32 latents cast to ``dtype`` for the model, ``set_begin_index(0)``, two calls per
      step, cond first (``cache_context("cond", step_index=i, sigma=..., num_inference_steps=...)``) then uncond
      (``cache_context("uncond", ...)``), ``noise = uncond + g * (cond - uncond)``, ``scheduler.step``.

    Guidance is skipped (one unbatched call per step) when ``guidance_scale <= 1``, as the pipelines do.

    Args:
        model: a transformer built by :func:`build_preset` (or any model of the preset's class and config).
        name: preset name; defaults to the one ``model`` was built with.
        steps, guidance_scale: default to the pipeline's (50 steps; 6.0, 7.5, 5.0).
        batch: number of prompts (videos); batched CFG doubles the transformer's batch.
        device, dtype: default to the model's device and (non-fp32-kept) parameter dtype.
        generator: for latents and embeddings (and the DDIM noise, unused at eta=0).
        scheduler: a scheduler to use instead of a fresh :func:`preset_scheduler` (e.g. one a cache framework has
            patched, or :attr:`PresetLoop.scheduler`).
        shrink: inputs of the shrunk preset; default: what ``model`` was built with.
        text_len: prompt tokens instead of the preset's (e.g. a trimmed Latte prompt).
    """
    preset = _model_preset(model, name, shrink)
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    dtype = dtype or _model_dtype(model)
    steps = steps or preset.num_inference_steps
    guidance_scale = preset.guidance_scale if guidance_scale is None else guidance_scale
    do_cfg = guidance_scale > 1.0
    scheduler = scheduler if scheduler is not None else preset.make_scheduler()
    tokens, width = preset.text_shape
    tokens = text_len or tokens

    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps

    kind = preset.model_class
    latent_dtype = torch.float32 if kind == "WanTransformer3DModel" else dtype
    latents = _randn((batch, *preset.latent_shape), generator, device, latent_dtype)
    latents = latents * scheduler.init_noise_sigma
    prompt_embeds = _randn((batch, tokens, width), generator, device, dtype)
    negative_embeds = _randn((batch, tokens, width), generator, device, dtype) if do_cfg else None

    if kind == "WanTransformer3DModel":
        scheduler.set_begin_index(0)
        for i, t in enumerate(timesteps):
            latent_model_input = latents.to(dtype)
            timestep = t.expand(latents.shape[0])
            context = {"step_index": i, "sigma": float(scheduler.sigmas[i]), "num_inference_steps": len(timesteps)}
            with _cache_context(model, "cond", **context):
                noise_pred = model(
                    hidden_states=latent_model_input,
                    timestep=timestep,
                    encoder_hidden_states=prompt_embeds,
                    attention_kwargs=None,
                    return_dict=False,
                )[0]
            if do_cfg:
                with _cache_context(model, "uncond", **context):
                    noise_uncond = model(
                        hidden_states=latent_model_input,
                        timestep=timestep,
                        encoder_hidden_states=negative_embeds,
                        attention_kwargs=None,
                        return_dict=False,
                    )[0]
                noise_pred = noise_uncond + guidance_scale * (noise_pred - noise_uncond)
            latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]
        _end_of_call(model)
        return latents

    text = torch.cat([negative_embeds, prompt_embeds], dim=0) if do_cfg else prompt_embeds
    for t in timesteps:
        latent_model_input = torch.cat([latents] * 2) if do_cfg else latents
        latent_model_input = scheduler.scale_model_input(latent_model_input, t)
        if kind == "CogVideoXTransformer3DModel":
            timestep = t.expand(latent_model_input.shape[0])
            with _cache_context(model, "cond_uncond"):
                noise_pred = model(
                    hidden_states=latent_model_input,
                    encoder_hidden_states=text,
                    timestep=timestep,
                    image_rotary_emb=None,
                    attention_kwargs=None,
                    return_dict=False,
                )[0]
            noise_pred = noise_pred.float()
        else:  # Latte
            timestep = t if torch.is_tensor(t) else torch.tensor(t)
            if timestep.ndim == 0:
                timestep = timestep[None].to(latent_model_input.device)
            timestep = timestep.expand(latent_model_input.shape[0])
            noise_pred = model(
                hidden_states=latent_model_input,
                encoder_hidden_states=text,
                timestep=timestep,
                enable_temporal_attentions=True,
                return_dict=False,
            )[0]
        if do_cfg:
            noise_uncond, noise_text = noise_pred.chunk(2)
            noise_pred = noise_uncond + guidance_scale * (noise_text - noise_uncond)
        if noise_pred.shape[1] != latents.shape[1]:  # Latte's learned sigma
            noise_pred = noise_pred.chunk(2, dim=1)[0]
        latents = scheduler.step(noise_pred, t, latents, eta=0.0, generator=generator, return_dict=False)[0]
        if kind == "CogVideoXTransformer3DModel":
            latents = latents.to(dtype)
    _end_of_call(model)
    return latents


def _end_of_call(model: nn.Module) -> None:
    """What a pipeline's ``maybe_free_model_hooks`` does at the end of ``__call__`` for caches: reset diffusers'
    stateful hooks, so a library cache starts every generation fresh (its step counters would run on otherwise)."""
    if hasattr(model, "_reset_stateful_cache"):
        model._reset_stateful_cache()


class PresetLoop:
    """A pipeline-shaped wrapper of a preset transformer and its scheduler (not a diffusers pipeline).

    It has what ``cachelab.apply`` looks for in a pipeline: ``components`` with a ``transformer`` and ``scheduler``
    attribute, so applying a policy to it hooks the transformer and sees every generation begin at
    ``scheduler.set_timesteps``. Calling it runs :func:`denoise_loop` with that scheduler::

        loop = preset_pipeline("wan-1.3b", device="cuda")
        with cachelab.apply(loop, policy, cfg=loop.preset.cfg, cfg_order=loop.preset.cfg_order):
            latents = loop(steps=50)
    """

    def __init__(
        self,
        transformer: nn.Module,
        name: str | Preset | None = None,
        scheduler=None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ):
        self.transformer = transformer
        self.preset = _model_preset(transformer, name, None)
        self.scheduler = scheduler if scheduler is not None else self.preset.make_scheduler()
        self.device = device
        self.dtype = dtype

    @property
    def components(self) -> dict[str, Any]:
        return {"transformer": self.transformer, "scheduler": self.scheduler}

    def __call__(
        self,
        steps: int | None = None,
        guidance_scale: float | None = None,
        batch: int = 1,
        generator: torch.Generator | None = None,
        text_len: int | None = None,
    ) -> torch.Tensor:
        return denoise_loop(
            self.transformer,
            self.preset,
            steps=steps,
            guidance_scale=guidance_scale,
            batch=batch,
            device=self.device,
            dtype=self.dtype,
            generator=generator,
            scheduler=self.scheduler,
            text_len=text_len,
        )


def preset_pipeline(
    name: str | Preset,
    device: str | torch.device = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    **build_kwargs: Any,
) -> PresetLoop:
    """Build the preset's transformer (:func:`build_preset`) and wrap it with its scheduler in a :class:`PresetLoop`.

    There is no diffusers pipeline here: no text encoder or VAE weights are available, and latency is measured on
    the denoising loop. ``build_kwargs`` go to :func:`build_preset` (``layers``, ``shrink``, ``seed``, ``std``).
    """
    model = build_preset(name, device=device, dtype=dtype, **build_kwargs)
    return PresetLoop(model, model._cachelab_preset, device=device, dtype=dtype)



def preset_video_model(name: str, device, dtype: torch.dtype | None = None, **build_kwargs: Any):
    """A preset as a :class:`~cachelab.zoo.registry.VideoModel` for latency work (random weights).

    Prompts are not encoded (random embeddings from the seed stand in), and the "video" is three channels of the
    final latents (:func:`~cachelab.zoo.registry.latents_as_frames`): its values carry no meaning, only the work
    done to produce them.
    """
    from cachelab.zoo.registry import VideoModel, latents_as_frames

    dtype = dtype or (torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32)
    loop = preset_pipeline(name, device=device, dtype=dtype, **build_kwargs)
    preset = loop.preset
    layout = "BFCHW" if preset.model_class == "CogVideoXTransformer3DModel" else "BCFHW"

    def generate(prompts, seeds, steps, guidance):
        generator = torch.Generator(device).manual_seed(int(seeds[0]))
        latents = loop(steps=steps, guidance_scale=guidance, batch=len(prompts), generator=generator)
        return latents_as_frames(latents, layout)

    return VideoModel(
        name=name,
        target=loop,
        generate=generate,
        trained=False,
        steps=preset.num_inference_steps,
        guidance=preset.guidance_scale,
        cfg=preset.cfg,
        prompts=lambda k: [f"random text embedding {i}" for i in range(k)],
        transformer=loop.transformer,
        tensor_format=layout,
        description=preset.description,
        limits={"random_weights": True},
    )
