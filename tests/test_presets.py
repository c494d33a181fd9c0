"""Full-size presets (CogVideoX-2b, Latte-1, Wan2.1-T2V-1.3B): configs, sizes, buffers and the denoising loop, on CPU.

Full-size models are only built on the meta device (parameter counts, shapes, a shape-only forward); anything
that computes runs on the shrunk variants or on one full-width block.
"""

import inspect

import pytest
import torch

import cachelab
from cachelab.zoo.presets import (
    PRESETS,
    Preset,
    build_preset,
    count_parameters,
    denoise_loop,
    get_preset,
    preset_inputs,
    preset_pipeline,
    preset_scheduler,
)

NAMES = list(PRESETS)

# The generations the presets describe (pipeline defaults) and the latents / text their pipelines hand the model.
PIPELINE_SHAPES = {
    "cogvideox-2b": dict(frames=49, height=480, width=720, latents=(13, 16, 60, 90), text=(226, 4096)),
    "latte-1": dict(frames=16, height=512, width=512, latents=(4, 16, 64, 64), text=(120, 4096)),
    "wan-1.3b": dict(frames=81, height=480, width=832, latents=(16, 21, 60, 104), text=(512, 4096)),
}
# Blocks per stack, inner width, and the positional buffers (name -> shape) of the full-size models.
STRUCTURE = {
    "cogvideox-2b": dict(
        stacks={"transformer_blocks": 30},
        inner=30 * 64,
        buffers={"patch_embed.pos_embedding": (1, 226 + 13 * 30 * 45, 1920)},
    ),
    "latte-1": dict(
        stacks={"transformer_blocks": 28, "temporal_transformer_blocks": 28},
        inner=16 * 72,
        buffers={"pos_embed.pos_embed": (1, 32 * 32, 1152), "temp_pos_embed": (1, 16, 1152)},
    ),
    "wan-1.3b": dict(
        stacks={"blocks": 30},
        inner=12 * 128,
        buffers={"rope.freqs_cos": (1024, 128), "rope.freqs_sin": (1024, 128)},
    ),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The models here are tiny: one intra-op thread is faster, and immune to a busy machine's other processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _init_args(cls) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}


@pytest.mark.parametrize("name", NAMES)
def test_config_keys_are_constructor_arguments(name):
    preset = PRESETS[name]
    assert set(preset.config) <= _init_args(preset.model_cls)
    assert set(preset.scheduler_config) <= _init_args(type(preset_scheduler(name)))
    small = get_preset(name, shrink=True)
    assert set(small.config) <= _init_args(small.model_cls)


@pytest.mark.parametrize("name", NAMES)
def test_pipeline_shapes_and_defaults(name):
    preset, want = PRESETS[name], PIPELINE_SHAPES[name]
    assert (preset.frames, preset.height, preset.width) == (want["frames"], want["height"], want["width"])
    assert preset.latent_shape == want["latents"] and preset.text_shape == want["text"]
    assert preset.num_inference_steps == 50
    # latents follow from the pixel size the way the pipelines compute them (VAE: 8x spatial, 4x temporal)
    frames = (preset.frames - 1) // 4 + 1 if name != "latte-1" else preset.frames
    spatial = (preset.height // 8, preset.width // 8)
    if preset.latent_layout == "FCHW":
        assert (preset.latent_shape[0], *preset.latent_shape[2:]) == (frames, *spatial)
    else:
        assert (preset.latent_shape[1], *preset.latent_shape[2:]) == (frames, *spatial)
    if preset.cfg == "batched":
        assert preset.transformer_batch(1) == 2 and preset.calls_per_step() == 1
    else:
        assert preset.transformer_batch(1) == 1 and preset.calls_per_step() == 2
    assert preset.transformer_batch(1, guidance_scale=1.0) == 1 and preset.calls_per_step(1.0) == 1


@pytest.mark.parametrize("shrink", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_shapes_agree_with_config(name, shrink):
    preset = get_preset(name, shrink=shrink)
    c = preset.config
    if name == "cogvideox-2b":
        frames, channels, h, w = preset.latent_shape
        assert (c["sample_frames"] - 1) // c["temporal_compression_ratio"] + 1 == frames
        assert (c["sample_height"], c["sample_width"], c["in_channels"]) == (h, w, channels)
        assert preset.text_shape == (c["max_text_seq_length"], c["text_embed_dim"])
    elif name == "latte-1":
        channels, frames, h, w = preset.latent_shape
        assert c.get("video_length", 16) == frames and c["in_channels"] == channels
        assert c["sample_size"] == h == w
        assert preset.text_shape[1] == c["caption_channels"]
        assert c["cross_attention_dim"] == c["num_attention_heads"] * c["attention_head_dim"]
    else:
        channels, frames, h, w = preset.latent_shape
        assert channels == c["in_channels"] and preset.text_shape[1] == c["text_dim"]
        assert h % c["patch_size"][1] == 0 and w % c["patch_size"][2] == 0


@pytest.mark.parametrize("name", NAMES)
def test_full_size_model_matches_the_checkpoint(name):
    preset, want = PRESETS[name], STRUCTURE[name]
    model = build_preset(name)  # meta device: nothing allocated
    params = count_parameters(model)
    # reference: the released transformer checkpoint's size (see Preset.reference_params)
    assert abs(params / preset.reference_params - 1) < 0.02, params
    for stack, n in want["stacks"].items():
        assert len(getattr(model, stack)) == n
    assert type(model).__name__ == preset.model_class
    buffers = dict(model.named_buffers())
    assert {k: tuple(v.shape) for k, v in buffers.items()} == want["buffers"]
    dtypes = {p.dtype for p in model.parameters()}
    assert torch.bfloat16 in dtypes and dtypes <= {torch.bfloat16, torch.float32}
    if name == "wan-1.3b":  # _keep_in_fp32_modules, as from_pretrained(torch_dtype=torch.bfloat16) keeps them
        assert model.blocks[0].scale_shift_table.dtype == torch.float32
        assert model.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32
        assert model.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    else:
        assert dtypes == {torch.bfloat16}


@pytest.mark.parametrize("name", NAMES)
def test_full_size_inputs_fit_the_full_size_model(name):
    """A shape-only forward on the meta device: the pipeline's inputs go through the full-width model (two layers:
    depth changes no shape, and each meta layer costs Python time)."""
    preset = PRESETS[name]
    model = build_preset(name, layers=2)
    batch = preset.transformer_batch(1)
    kwargs = preset_inputs(name, batch=batch, timestep=999, device="meta")
    assert kwargs["hidden_states"].shape == (batch, *preset.latent_shape)
    assert kwargs["encoder_hidden_states"].shape == (batch, *preset.text_shape)
    assert kwargs["timestep"].shape == (batch,) and kwargs["timestep"].dtype == torch.long
    assert kwargs["return_dict"] is False
    out = model(**kwargs)[0]
    expected = list(kwargs["hidden_states"].shape)
    if name == "latte-1":
        expected[1] = 8  # learned sigma
    assert list(out.shape) == expected


def _reference_buffers(preset: Preset) -> dict[str, torch.Tensor]:
    """Buffers of a normal construction: real tensors on CPU, made by the class's own __init__ (weight init is
    skipped, as from_pretrained skips it, since only the buffers are compared)."""
    from diffusers.models.modeling_utils import no_init_weights

    with no_init_weights():
        model = preset.model_cls(**preset.config)
    assert all(p.device.type == "cpu" for p in model.parameters())
    return dict(model.named_buffers())


@pytest.mark.parametrize("name", NAMES)
def test_buffers_equal_a_normal_construction(name):
    # the shrunk model, and one full-width block (full-size positional tables)
    for preset in (get_preset(name, shrink=True), get_preset(name, layers=1)):
        model = build_preset(preset, device="cpu", dtype=torch.bfloat16)
        got = dict(model.named_buffers())
        want = _reference_buffers(preset)
        assert set(got) == set(want) and got
        for key, value in got.items():
            assert value.device.type == "cpu"
            assert value.dtype == want[key].dtype, key
            assert torch.isfinite(value).all(), key
            assert torch.equal(value, want[key]), key
            assert value.float().std() > 0.1, key  # a real table, not zeros or uninitialised memory


def test_random_init_is_cheap_deterministic_and_sane():
    a = build_preset("wan-1.3b", device="cpu", dtype=torch.bfloat16, shrink=True, seed=3)
    b = build_preset("wan-1.3b", device="cpu", dtype=torch.bfloat16, shrink=True, seed=3)
    c = build_preset("wan-1.3b", device="cpu", dtype=torch.bfloat16, shrink=True, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["blocks.0.attn1.to_q.weight"], sc["blocks.0.attn1.to_q.weight"])
    block = a.blocks[0]
    assert torch.all(block.attn1.norm_q.weight == 1)  # RMSNorm weight
    assert torch.all(block.norm2.weight == 1) and torch.all(block.norm2.bias == 0)  # FP32LayerNorm, kept fp32
    assert block.norm2.weight.dtype == torch.float32
    assert torch.all(block.attn1.to_q.bias == 0)
    weight = a.condition_embedder.text_embedder.linear_1.weight.float()
    assert 0.015 < weight.std() < 0.025 and abs(weight.mean()) < 0.005
    assert not any(p.requires_grad for p in a.parameters()) and not a.training


@pytest.mark.parametrize("name", NAMES)
def test_shrunk_denoise_loop_calls_the_model_like_the_pipeline(name):
    preset = get_preset(name, shrink=True)
    model = build_preset(name, device="cpu", dtype=torch.float32, shrink=True)
    steps = 3
    scheduler = preset_scheduler(name)
    calls, set_timesteps = [], []
    original = scheduler.set_timesteps

    def spy(*args, **kwargs):
        set_timesteps.append((args, kwargs))
        return original(*args, **kwargs)

    scheduler.set_timesteps = spy

    def record(module, args, kwargs):
        calls.append(
            (kwargs["hidden_states"].shape, kwargs["encoder_hidden_states"], kwargs["timestep"].clone())
        )

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        latents = denoise_loop(
            model, name, steps=steps, generator=torch.Generator().manual_seed(0), scheduler=scheduler
        )
    finally:
        handle.remove()

    assert latents.shape == (1, *preset.latent_shape)
    assert torch.isfinite(latents).all() and latents.float().std() > 0.05
    assert len(set_timesteps) == 1 and set_timesteps[0][0][0] == steps and "device" in set_timesteps[0][1]
    assert len(calls) == steps * preset.calls_per_step()
    batch = preset.transformer_batch(1)
    assert all(shape[0] == batch for shape, _, _ in calls)
    per_step = preset.calls_per_step()
    for i, t in enumerate(scheduler.timesteps.tolist()):
        for _, _, timestep in calls[i * per_step : (i + 1) * per_step]:
            assert timestep.tolist() == [t] * batch
    if preset.cfg == "sequential":  # Wan: cond then uncond, each with its own embeddings every step
        cond, uncond = calls[0][1], calls[1][1]
        assert not torch.equal(cond, uncond)
        assert all(calls[k][1] is (cond if k % 2 == 0 else uncond) for k in range(len(calls)))
    else:  # [uncond, cond] on the batch
        text = calls[0][1]
        assert text.shape[0] == 2 and not torch.equal(text[0], text[1])


@pytest.mark.parametrize("name", NAMES)
def test_shrunk_bf16_loop_and_no_guidance(name):
    model = build_preset(name, device="cpu", dtype=torch.bfloat16, shrink=True)
    latents = denoise_loop(model, name, steps=2, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(latents).all()
    assert latents.dtype == (torch.float32 if name == "wan-1.3b" else torch.bfloat16)  # as the pipelines keep them
    single = denoise_loop(model, name, steps=2, guidance_scale=1.0, generator=torch.Generator().manual_seed(1))
    assert single.shape == latents.shape and torch.isfinite(single).all()


def test_preset_loop_drives_a_cachelab_handle():
    loop = preset_pipeline("wan-1.3b", device="cpu", dtype=torch.float32, shrink=True)
    preset = loop.preset
    assert preset.shrunk and set(loop.components) == {"transformer", "scheduler"}
    reference = loop(steps=4, generator=torch.Generator().manual_seed(0))
    with cachelab.apply(loop, "pab", cfg=preset.cfg, cfg_order=preset.cfg_order, count_macs=False) as handle:
        cached = loop(steps=4, generator=torch.Generator().manual_seed(0))
        assert handle.stats().steps == [0, 1, 2, 3]  # the generation began at scheduler.set_timesteps
    assert cached.shape == reference.shape and torch.isfinite(cached).all()
    again = loop(steps=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, reference)  # detached: bit-identical to never hooked


def _diffusers_cache(kind, name, model):
    from diffusers import FasterCacheConfig, TaylorSeerCacheConfig

    if kind == "taylorseer":
        blocks = r"transformer_blocks\.\d+" if name == "cogvideox-2b" else r"blocks\.\d+"
        return TaylorSeerCacheConfig(cache_interval=2, disable_cache_before_step=1, cache_identifiers=[blocks])
    seen = {}
    model.register_forward_pre_hook(lambda m, a, k: seen.update(t=k["timestep"].reshape(-1)[0]), with_kwargs=True)
    return FasterCacheConfig(spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 681),
                             spatial_attention_block_identifiers=["transformer_blocks", "blocks"],
                             attention_weight_callback=lambda _: 0.3, tensor_format="BFCHW",
                             is_guidance_distilled=True, current_timestep_callback=lambda: seen["t"])


@pytest.mark.parametrize("kind", ["taylorseer", "fastercache"])
@pytest.mark.parametrize("name", ["cogvideox-2b", "wan-1.3b"])
def test_loop_resets_diffusers_stateful_caches_like_a_pipeline(name, kind):
    """A pipeline's ``__call__`` ends in ``maybe_free_model_hooks``, which resets diffusers' stateful cache hooks; the
    loop does the same, or a library cache's step counter would run on into the next generation: diffusers'
    TaylorSeer and FasterCache then compute on other steps from the second generation on (a short warm-up before a
    timed run shifted their schedules on CogVideoX-2b)."""
    model = build_preset(name, device="cpu", dtype=torch.float32, shrink=True)
    model.enable_cache(_diffusers_cache(kind, name, model))
    runs = [denoise_loop(model, name, steps=steps, generator=torch.Generator().manual_seed(1)) for steps in (2, 5, 5)]
    model.disable_cache()
    assert torch.equal(runs[1], runs[2])
