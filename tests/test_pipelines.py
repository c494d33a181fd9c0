"""End to end through real, unmodified diffusers pipelines, saved and loaded back through cachelab's loader."""

import pytest
import torch

import cachelab
from configs import NEVER_REUSE
from cachelab.models.pipeline import LoadError, load_pipeline
from tiny_pipelines import CALL_DEFAULTS, tiny_pipeline

POLICIES = ["vanilla", "dynamic", "cfg_cache", "pab", "delta_dit", "fastercache"]
STEPS = 20


def generate(pipe, kind, prompt="a red circle moving left", seed=0, guidance=5.0, steps=STEPS, **kwargs):
    out = pipe(
        prompt=prompt,
        negative_prompt="",
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(seed),
        output_type="latent",
        **CALL_DEFAULTS[kind],
        **kwargs,
    )
    return out.frames


@pytest.fixture(scope="module", params=["latte", "cogvideox"])
def loaded(request, tmp_path_factory):
    kind = request.param
    original = tiny_pipeline(kind)
    path = tmp_path_factory.mktemp(kind)
    original.save_pretrained(path)
    pipe = load_pipeline(path)
    # weights came back (MKL may round the last bit differently on memory-mapped weights, hence allclose)
    torch.testing.assert_close(generate(pipe, kind, steps=4), generate(original, kind, steps=4), rtol=1e-4, atol=1e-4)
    baselines = {g: generate(pipe, kind, guidance=g) for g in (5.0, 1.0)}
    return kind, pipe, baselines


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("guidance", [5.0, 1.0], ids=["cfg", "nocfg"])
def test_every_policy_through_the_pipeline(loaded, policy, guidance):
    kind, pipe, baselines = loaded
    with cachelab.apply(pipe, policy, **NEVER_REUSE[policy]) as handle:
        assert torch.equal(generate(pipe, kind, guidance=guidance), baselines[guidance])
        assert handle.stats().computed_fraction == 1.0
    with cachelab.apply(pipe, policy) as handle:
        cached = generate(pipe, kind, guidance=guidance)
        stats = handle.stats()
        plan = handle.plan(STEPS, timesteps=pipe.scheduler.timesteps)
    assert torch.isfinite(cached).all()
    assert stats.record.num_steps == STEPS
    if policy == "cfg_cache" and guidance == 1.0:
        assert stats.computed_fraction == 1.0  # no unconditional branch to skip
    else:
        assert stats.computed_fraction < 1.0
        assert not torch.equal(cached, baselines[guidance])
    if guidance > 1 and policy != "fastercache":
        for key, row in plan.items():
            assert stats.computed_steps(key) == row, key
    assert torch.equal(generate(pipe, kind, guidance=guidance), baselines[guidance])  # removed


@pytest.mark.parametrize("policy", ["fastercache", "pab", "delta_dit"])
def test_generations_in_a_row_equal_fresh_runs(loaded, policy):
    kind, pipe, _ = loaded
    with cachelab.apply(pipe, policy):
        first = generate(pipe, kind, prompt="a blue square moving up", seed=1)
        second = generate(pipe, kind, prompt="a green circle moving down", seed=2)
    with cachelab.apply(pipe, policy):
        fresh_second = generate(pipe, kind, prompt="a green circle moving down", seed=2)
    assert not torch.equal(first, second)
    assert torch.equal(second, fresh_second)


def test_interrupted_generation_does_not_leak(loaded):
    kind, pipe, _ = loaded

    def stop_at_8(pipeline, step, timestep, callback_kwargs):
        if step == 8:
            pipeline._interrupt = True
        return callback_kwargs

    with cachelab.apply(pipe, "fastercache") as handle:
        generate(pipe, kind, seed=3, callback_on_step_end=stop_at_8)
        interrupted = handle.stats()
        after = generate(pipe, kind, seed=4)
    with cachelab.apply(pipe, "fastercache"):
        fresh = generate(pipe, kind, seed=4)
    assert max(step for (_, step) in interrupted.record.events) == 8
    assert torch.equal(after, fresh)


def test_timesteps_are_read_without_device_syncs(loaded):
    # pipelines pass views of scheduler.timesteps: the step comes from the view's position, not from .item()
    kind, pipe, baselines = loaded
    with cachelab.apply(pipe, "pab") as handle:
        generate(pipe, kind, steps=6)
        assert handle.tracker.host_reads == 0
        assert handle.stats().record.num_steps == 6
    # a timestep that is not a view of the schedule is still read correctly, from the device
    with cachelab.apply(pipe.transformer, "pab", num_steps=3) as handle:
        for t in (900.0, 500.0, 100.0):
            model_inputs = _direct_inputs(pipe, kind, t)
            pipe.transformer(**model_inputs)
        assert handle.tracker.host_reads == 3
        assert [s for (_, s) in handle.stats().record.logical_samples] == [0, 1, 2]


def _direct_inputs(pipe, kind, t):
    transformer = pipe.transformer
    c = transformer.config
    if kind == "latte":
        x = torch.randn(2, c.in_channels, c.video_length, c.sample_size, c.sample_size)
    else:
        x = torch.randn(2, c.sample_frames, c.in_channels, c.sample_height, c.sample_width)
    text = torch.randn(2, c.max_text_seq_length if kind == "cogvideox" else 6, pipe.text_encoder.config.d_model)
    return {"hidden_states": x, "encoder_hidden_states": text, "timestep": torch.tensor([t, t]), "return_dict": False}


def test_scheduler_is_restored_after_remove(loaded):
    _, pipe, _ = loaded
    handle = cachelab.apply(pipe, "pab")
    assert "set_timesteps" in pipe.scheduler.__dict__
    handle.remove()
    assert "set_timesteps" not in pipe.scheduler.__dict__


def test_two_calls_per_step_pipeline_with_cfg_cache(tmp_path):
    pipe = tiny_pipeline("wan")
    pipe.save_pretrained(tmp_path / "wan")
    pipe = load_pipeline(tmp_path / "wan")
    reference = generate(pipe, "wan")
    with cachelab.apply(pipe, "cfg_cache", interval=1) as handle:
        assert torch.equal(generate(pipe, "wan"), reference)
    with cachelab.apply(pipe, "cfg_cache", window=[0.2, 1.0]) as handle:
        cached = generate(pipe, "wan")
        stats = handle.stats()
        calls = stats.site_steps("<denoiser>")
        assert handle.tracker.host_reads == 0  # both calls of a step pass views of scheduler.timesteps
    # two calls per step: the second (unconditional) one is rebuilt on 4 of every 5 steps inside the window
    reused_steps = [s for s, (_, reused) in calls.items() if reused]
    assert reused_steps == [s for s in range(4, STEPS) if s % 5 != 0]
    assert all(computed == (1 if reused else 2) for computed, reused in calls.values())
    assert stats.computed_fraction == pytest.approx(1 - len(reused_steps) / (2 * STEPS))
    assert torch.isfinite(cached).all() and not torch.equal(cached, reference)
    with cachelab.apply(pipe, "fastercache", cfg_cache={"window": [0.2, 1.0]}) as handle:
        generate(pipe, "wan")
        assert handle.stats().computed_fraction < stats.computed_fraction
    assert torch.equal(generate(pipe, "wan"), reference)


def test_loader_errors(tmp_path):
    with pytest.raises(LoadError, match="not a diffusers pipeline"):
        load_pipeline(tmp_path)
    with pytest.raises(LoadError, match="cannot load a diffusers pipeline from 'no-such-org/no-such-model'"):
        load_pipeline("no-such-org/no-such-model", local_files_only=True)
