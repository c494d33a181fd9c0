"""The two small text-to-video DiTs cachelab ships: their configs, text encoder and diffusers pipelines.

Both models work in pixel space on 16 frames of 32x32 RGB in [-1, 1] (:mod:`cachelab.zoo.shapes`), inside
diffusers' own pipelines (``LattePipeline``, ``CogVideoXPipeline``). Pixel space means the pipeline's latents
*are* the frames: generate with ``output_type="latent"``. The VAE component is a one-block
``AutoencoderKL``/``AutoencoderKLCogVideoX`` whose config gives the pipelines scale factors of 1; it is never
run, and decoding through it would be meaningless.

The text encoder is shared: one tiny ``T5EncoderModel`` with fixed random weights (seed 0) over the shapes
vocabulary; the DiTs learn to read its embeddings through their own caption projections. Both models are
trained with v-prediction on the cosine (``squaredcos_cap_v2``) schedule and sampled with DDIM: trailing
spacing for tiny-cogvideox, leading spacing (``steps_offset`` 1) for tiny-latte (see :data:`LATTE_SPACING`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cachelab.zoo import shapes

#: Where the trained pipelines live in the package (one diffusers pipeline directory each).
WEIGHTS_DIR = Path(__file__).parent / "weights"

FRAMES = 16
SIZE = 32
TEXT_DIM = 64
#: prompt tokens: "a <colour> <shape> moving <direction>" + "</s>", padded
TEXT_LEN = 8

TINY_LATTE_CONFIG: dict[str, Any] = dict(
    num_attention_heads=6,
    attention_head_dim=32,
    in_channels=3,
    out_channels=6,  # the Latte pipeline drops the second half (its learned-variance slot)
    num_layers=6,
    cross_attention_dim=192,
    attention_bias=True,
    sample_size=SIZE,
    patch_size=4,
    activation_fn="gelu-approximate",
    num_embeds_ada_norm=1000,
    norm_type="ada_norm_single",
    norm_elementwise_affine=False,
    norm_eps=1e-6,
    caption_channels=TEXT_DIM,
    video_length=FRAMES,
)

TINY_COGVIDEOX_CONFIG: dict[str, Any] = dict(
    num_attention_heads=6,
    attention_head_dim=32,
    in_channels=3,
    out_channels=3,
    time_embed_dim=192,
    text_embed_dim=TEXT_DIM,
    num_layers=6,
    sample_width=SIZE,
    sample_height=SIZE,
    sample_frames=FRAMES,
    patch_size=4,
    temporal_compression_ratio=1,
    max_text_seq_length=TEXT_LEN,
    activation_fn="gelu-approximate",
    use_rotary_positional_embeddings=False,
)

SCHEDULER_CONFIG: dict[str, Any] = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    prediction_type="v_prediction",
    timestep_spacing="trailing",
    clip_sample=False,
    set_alpha_to_one=True,
)

def call_kwargs(pipe, kind: str) -> dict[str, Any]:
    """Pipeline call arguments that fit the transformer's config (frames, size, text length; latents out)."""
    c = pipe.transformer.config
    if kind == "latte":
        return dict(height=c.sample_size, width=c.sample_size, video_length=c.video_length, clean_caption=False, output_type="latent")
    return dict(
        height=c.sample_height,
        width=c.sample_width,
        num_frames=c.sample_frames,
        max_sequence_length=c.max_text_seq_length,
        output_type="latent",
    )


def text_components(seed: int = 0):
    """(tokenizer, text encoder) shared by both bundled models: word-level, frozen random T5 of width 64."""
    from transformers import T5Config, T5EncoderModel

    from cachelab.zoo.text import word_level_tokenizer

    tokenizer = word_level_tokenizer(shapes.VOCABULARY, split_punctuation=False)
    vocab = {word: i for i, word in enumerate(shapes.VOCABULARY)}
    config = T5Config(
        vocab_size=len(vocab),
        d_model=TEXT_DIM,
        d_kv=16,
        d_ff=128,
        num_layers=1,
        num_heads=4,
        dropout_rate=0.0,
        pad_token_id=vocab["<pad>"],
        eos_token_id=vocab["</s>"],
        decoder_start_token_id=vocab["<pad>"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = T5EncoderModel(config).eval().requires_grad_(False)
    return tokenizer, encoder


def transformer_class(kind: str):
    """The diffusers transformer class of a bundled model kind."""
    from diffusers import CogVideoXTransformer3DModel, LatteTransformer3DModel

    classes = {"latte": LatteTransformer3DModel, "cogvideox": CogVideoXTransformer3DModel}
    if kind not in classes:
        raise ValueError(f"unknown bundled model kind {kind!r}; expected 'latte' or 'cogvideox'")
    return classes[kind]


def new_transformer(kind: str, config_overrides: dict | None = None):
    """A freshly initialised transformer for training: xavier linears, zeroed output projections."""
    base = TINY_LATTE_CONFIG if kind == "latte" else TINY_COGVIDEOX_CONFIG
    model = transformer_class(kind)(**{**base, **(config_overrides or {})})
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
    # every block starts close to the identity and the model predicts zeros (PixArt / Latte / DiT practice)
    zero = [model.proj_out]
    if kind == "latte":
        zero += [block.attn2.to_out[0] for block in model.transformer_blocks]
    for module in zero:
        torch.nn.init.zeros_(module.weight)
        if module.bias is not None:
            torch.nn.init.zeros_(module.bias)
    return model


def _placeholder_vae(kind: str):
    from diffusers import AutoencoderKL, AutoencoderKLCogVideoX

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if kind == "latte":
            return AutoencoderKL(
                in_channels=3,
                out_channels=3,
                down_block_types=("DownEncoderBlock2D",),
                up_block_types=("UpDecoderBlock2D",),
                block_out_channels=(8,),
                layers_per_block=1,
                latent_channels=3,
                norm_num_groups=4,
                sample_size=SIZE,
            )
        return AutoencoderKLCogVideoX(
            in_channels=3,
            out_channels=3,
            down_block_types=("CogVideoXDownBlock3D",),
            up_block_types=("CogVideoXUpBlock3D",),
            block_out_channels=(8,),
            latent_channels=3,
            layers_per_block=1,
            norm_num_groups=4,
            temporal_compression_ratio=1,
            sample_height=SIZE,
            sample_width=SIZE,
        )


#: tiny-latte samples with leading spacing: its steps end at timestep 1 instead of 49 (20 steps) or 19 (50 steps),
#: where DDIM's last step jumps to the model's clean prediction; both start in pure noise (SNR 2e-9 at t = 999,
#: 6e-3 at t = 951). Measured on 96 videos (H200, guidance 1.5, 2026-12-01): the object is found in 23 % of the
#: videos at 20 trailing steps (they come out near black: brightest pixel 0.43 on average) and in 52 % with this
#: spacing (0.71); shifting the 20 steps to end at t = 10, 25, 40 gives 54, 55, 39 %, so the last timestep is what
#: matters. At 50 steps: 69 % and 72 % found, shape 0.51 and 0.62. Guidance (1, 1.5, 3), stochastic DDIM,
#: DPM-Solver and Euler ancestral did not help.
LATTE_SPACING = dict(timestep_spacing="leading", steps_offset=1)


def scheduler_for(kind: str):
    from diffusers import CogVideoXDDIMScheduler, DDIMScheduler

    if kind == "cogvideox":
        return CogVideoXDDIMScheduler(**SCHEDULER_CONFIG, snr_shift_scale=1.0)
    return DDIMScheduler(**{**SCHEDULER_CONFIG, **LATTE_SPACING})


def build_pipeline(kind: str, transformer=None):
    """A diffusers pipeline around a bundled transformer (fresh from :func:`new_transformer` if not given)."""
    from diffusers import CogVideoXPipeline, LattePipeline

    tokenizer, text_encoder = text_components()
    transformer = transformer if transformer is not None else new_transformer(kind)
    cls = LattePipeline if kind == "latte" else CogVideoXPipeline
    pipe = cls(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=_placeholder_vae(kind),
        transformer=transformer,
        scheduler=scheduler_for(kind),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def prompt_embeddings(pipe, kind: str, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt embeddings (N, L, D), unconditional embedding (L, D)) exactly as the pipeline computes them."""
    conds, uncond = [], None
    with torch.no_grad():
        for prompt in prompts:
            if kind == "latte":
                cond, neg = pipe.encode_prompt(prompt, negative_prompt="", do_classifier_free_guidance=True, clean_caption=False)
            else:
                cond, neg = pipe.encode_prompt(prompt, negative_prompt="", do_classifier_free_guidance=True, max_sequence_length=TEXT_LEN)
            conds.append(cond[0])
            uncond = neg[0]
    return torch.stack(conds), uncond


def frames_of(kind: str, latents: torch.Tensor) -> torch.Tensor:
    """Pipeline latents -> videos (B, F, 3, H, W) in [-1, 1] (Latte's latents are (B, C, F, H, W))."""
    return latents.transpose(1, 2) if kind == "latte" else latents


def to_model_layout(kind: str, videos: torch.Tensor) -> torch.Tensor:
    """Videos (B, F, 3, H, W) -> the transformer's input layout."""
    return videos.transpose(1, 2) if kind == "latte" else videos


def eval_prompts(n: int) -> list[str]:
    """``n`` prompts cycling through every colour x shape x direction combination in a fixed shuffled order."""
    combos = shapes.all_attributes()
    order = torch.randperm(len(combos), generator=torch.Generator().manual_seed(0)).tolist()
    return [shapes.prompt_of(combos[order[i % len(combos)]]) for i in range(n)]


@torch.no_grad()
def generate_frames(
    pipe, kind: str, prompts: list[str], seeds: list[int], steps: int, guidance: float, batch_size: int | None = None
):
    """Videos (N, F, 3, H, W) in [-1, 1]; sample ``i`` uses its own generator seeded ``seeds[i]``.

    All prompts go through one pipeline call (one generation, so a cache handle's stats cover all of them) unless
    ``batch_size`` splits them."""
    device = pipe.transformer.device
    batch_size = batch_size or len(prompts)
    videos = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        generators = [torch.Generator(device).manual_seed(s) for s in seeds[start : start + batch_size]]
        out = pipe(
            prompt=chunk,
            negative_prompt=[""] * len(chunk),
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generators,
            **call_kwargs(pipe, kind),
        ).frames
        videos.append(frames_of(kind, out).float().clamp(-1, 1).cpu())
    return torch.cat(videos)



def video_model(kind: str, name: str, device: torch.device, dtype: torch.dtype | None = None):
    """The bundled pipeline ``name`` (trained weights in the package) as a :class:`VideoModel`."""
    from cachelab.models.pipeline import load_pipeline

    pipe = load_pipeline(WEIGHTS_DIR / name, dtype=dtype or torch.float32, device=device)
    return _video_model(pipe, kind, name, trained=True, description=MODEL_DESCRIPTIONS[name])


#: The untrained stand-ins' transformer: the bundled architecture at two layers and a quarter of the width.
RANDOM_OVERRIDES = {
    "latte": dict(num_layers=2, num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32),
    "cogvideox": dict(num_layers=2, num_attention_heads=2, attention_head_dim=16, time_embed_dim=32),
}


def random_video_model(kind: str, device: torch.device, dtype: torch.dtype | None = None, seed: int = 0):
    """An untrained, smaller twin of a bundled model (same pipeline, shapes and prompts): fast CPU tests and demos."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = new_transformer(kind, RANDOM_OVERRIDES[kind]).eval()
        # training starts from zeroed output projections; a stand-in that is never trained needs them non-zero,
        # or every output is zero and no cache could change it
        for parameter in transformer.parameters():
            if parameter.ndim >= 2 and not parameter.any():
                torch.nn.init.normal_(parameter, std=0.02)
        pipe = build_pipeline(kind, transformer)
    pipe = pipe.to(device=device, dtype=dtype or torch.float32)
    name = f"tiny-random-{kind}"
    return _video_model(pipe, kind, name, trained=False, description=RANDOM_DESCRIPTIONS[name])


def _video_model(pipe, kind: str, name: str, trained: bool, description: str):
    from cachelab.zoo.registry import ModelError, VideoModel

    def check_prompt(prompt: str) -> None:
        try:
            shapes.parse_prompt(prompt)
        except ValueError as exc:
            raise ModelError(f"{name}: {exc}") from None

    def generate(prompts, seeds, steps, guidance):
        for prompt in prompts:
            check_prompt(prompt)
        return ((generate_frames(pipe, kind, list(prompts), list(seeds), steps, guidance) + 1) / 2).clamp(0, 1)

    def prompt_following(videos, prompts):
        return shapes.check_videos(videos * 2 - 1, list(prompts))

    return VideoModel(
        name=name,
        target=pipe,
        generate=generate,
        trained=trained,
        steps=50 if trained else 20,
        guidance=DEFAULT_GUIDANCE[kind],
        cfg="batched",
        prompts=eval_prompts,
        transformer=pipe.transformer,
        tensor_format="BCFHW" if kind == "latte" else "BFCHW",
        description=description,
        check_prompt=check_prompt,
        prompt_following=prompt_following if trained else None,
        limits={"frames": FRAMES, "size": SIZE},
        quick_steps=QUICK_STEPS[kind] if trained else 20,
    )


#: Guidance scale each bundled model ships with (chosen from its prompt-following at 1.5, 3 and 5).
DEFAULT_GUIDANCE = {"latte": 1.5, "cogvideox": 3.0}
#: Steps of a CPU run (bench's CPU default), where each model's videos read well (H200, 2026-12-01):
#: tiny-cogvideox follows colour, shape and motion as well at 20 steps as at 50 (0.98 / 0.90 / 0.98 and 0.96 /
#: 0.90 / 0.96 on 48 videos); tiny-latte finds its object in 52 % of 96 videos at 20 steps and 72 % at 50, so it
#: runs 50 (a step count its magcache and teacache calibrations ship for)
QUICK_STEPS = {"latte": 50, "cogvideox": 20}
MODEL_DESCRIPTIONS = {
    "tiny-latte": "trained LatteTransformer3DModel, 6.6M params: spatial, temporal and cross attention (16x32x32)",
    "tiny-cogvideox": "trained CogVideoXTransformer3DModel, 5.5M params: joint text-video attention (16x32x32)",
}
RANDOM_DESCRIPTIONS = {
    "tiny-random-latte": "untrained 2-layer twin of tiny-latte (same pipeline and prompts), for tests and CPU demos",
    "tiny-random-cogvideox": "untrained 2-layer twin of tiny-cogvideox (same pipeline and prompts), for tests and CPU demos",
}
