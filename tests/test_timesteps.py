"""Placing denoiser calls in sampling: timestep conventions (t, t/1000, 1 - t/1000), second-order schedulers that
repeat a timestep (Heun, KDPM2, DPM-2), batched and two-call CFG, branches named by ``cache_context``."""

import pytest
import torch
from diffusers import FlowMatchHeunDiscreteScheduler, HeunDiscreteScheduler, KDPM2AncestralDiscreteScheduler, KDPM2DiscreteScheduler

import cachelab
from cachelab.hooks.context import StepTracker, branches_of_context
from configs import NEVER_REUSE
from tiny_pipelines import CALL_DEFAULTS as PIPELINE_CALL_DEFAULTS
from tiny_pipelines import tiny_pipeline
from tiny_transformers import TINY_TRANSFORMERS

# a second-order schedule of 4 steps as Heun lists it: the first timestep once, then every later one twice
HEUN = [999.0, 749.0, 749.0, 499.0, 499.0, 249.0, 249.0]


def track(tracker: StepTracker, values, calls_per_position=1):
    """(step, call) of each call, calling ``calls_per_position`` times at every position of ``values``."""
    out = []
    for t in values:
        for _ in range(calls_per_position):
            new, call = tracker.advance(t)
            out.append((tracker.context(t, ("cond",), 1).step, call))
    return out


@pytest.mark.parametrize("scale", ["same", "fraction", "rising"])
@pytest.mark.parametrize("calls", [1, 2], ids=["batched", "two-call"])
def test_repeated_timesteps_of_second_order_schedules_are_steps_not_cfg_calls(scale, calls):
    passed = {"same": lambda t: t, "fraction": lambda t: t / 1000, "rising": lambda t: 1 - t / 1000}[scale]
    tracker = StepTracker()
    tracker.begin(timesteps=HEUN)
    placed = track(tracker, [passed(t) for t in HEUN], calls)
    assert placed == [(step, call) for step in range(len(HEUN)) for call in range(calls)]
    # the context's timestep is the scheduler's, whatever the denoiser was passed
    assert tracker.context(passed(HEUN[-1]), ("cond",), 1).timestep == HEUN[-1]
    assert tracker.generation == 0
    # a new pipeline call announces itself (set_timesteps); a return to the start without it is also seen
    placed = track(tracker, [passed(t) for t in HEUN[:3]], calls)
    assert tracker.generation == 1 and placed[-1] == (2, calls - 1)


def test_without_a_schedule_steps_follow_changes_and_direction():
    tracker = StepTracker()
    # Lumina-style: 1 - t/1000 rises during sampling; the fall back to the start is a new generation
    rising = [0.0, 0.25, 0.5, 0.75]
    assert track(tracker, rising, 2) == [(s, c) for s in range(4) for c in range(2)]
    ctx = tracker.context(0.75, ("cond",), 1)
    assert ctx.timestep == pytest.approx(250.0)  # read on the training scale
    track(tracker, rising[:2])
    assert tracker.generation == 1
    # Flux-style t/1000 falls; a rise is a new generation
    tracker = StepTracker()
    track(tracker, [1.0, 0.75, 0.5])
    assert tracker.context(0.5, ("cond",), 1).timestep == pytest.approx(500.0)
    track(tracker, [1.0])
    assert tracker.generation == 1


@pytest.mark.parametrize("name,branches", [("cond", ("cond",)), ("uncond", ("uncond",)), ("pred_uncond", ("uncond",)),
                                           ("cond_uncond", ("uncond", "cond")), ("uncond_stg", ("uncond_stg",))])
def test_cache_context_names_branches(name, branches):
    assert branches_of_context(name) == branches


def _latte(scheduler_cls):
    pipe = tiny_pipeline("latte")
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
    return pipe


def _generate(pipe, kind, steps):
    return pipe(prompt="a red circle moving left", negative_prompt="", num_inference_steps=steps, guidance_scale=5.0,
                generator=torch.Generator().manual_seed(0), output_type="latent", **PIPELINE_CALL_DEFAULTS[kind]).frames


@pytest.mark.parametrize("scheduler_cls", [HeunDiscreteScheduler, KDPM2DiscreteScheduler, KDPM2AncestralDiscreteScheduler])
def test_second_order_schedulers_with_batched_cfg(scheduler_cls):
    pipe = _latte(scheduler_cls)
    steps = 4
    reference = _generate(pipe, "latte", steps)
    with cachelab.apply(pipe, "pab", **NEVER_REUSE["pab"]) as handle:
        assert torch.equal(_generate(pipe, "latte", steps), reference)
        record = handle.stats().record
    positions = len(pipe.scheduler.timesteps)
    assert positions > steps  # the scheduler lists repeated timesteps
    assert record.num_steps == positions
    # one batched [uncond, cond] call at every position: never mistaken for a second CFG call
    assert dict(record.logical_samples) == {("<denoiser>", s): 2 for s in range(positions)}
    with cachelab.apply(pipe, "pab", spatial_interval=2, temporal_interval=2, cross_interval=2, window=[0, 1]) as handle:
        _generate(pipe, "latte", steps)
        stats = handle.stats()
        plan = handle.plan(positions, timesteps=pipe.scheduler.timesteps)
    for key, planned in plan.items():
        assert stats.computed_steps(key) == planned
    assert stats.computed_fraction < 1.0


def test_second_order_scheduler_with_two_call_cfg_named_by_cache_context():
    pipe = tiny_pipeline("wan")
    pipe.scheduler = FlowMatchHeunDiscreteScheduler.from_config(pipe.scheduler.config)
    steps = 3
    reference = _generate(pipe, "wan", steps)
    seen = []
    with cachelab.apply(pipe, "cfg_cache", **NEVER_REUSE["cfg_cache"]) as handle:
        original = handle.runtime.tracker.branches_for_call

        def spy(call, batch, sample):
            seen.append((handle.tracker.context_name, original(call, batch, sample)))
            return seen[-1][1]

        handle.runtime.tracker.branches_for_call = spy
        assert torch.equal(_generate(pipe, "wan", steps), reference)
        record = handle.stats().record
    positions = len(pipe.scheduler.timesteps)
    assert record.num_steps == positions > steps
    assert dict(record.logical_samples) == {("<denoiser>", s): 2 for s in range(positions)}  # cond + uncond calls
    assert seen == [("cond", ("cond",)), ("uncond", ("uncond",))] * positions
    with cachelab.apply(pipe, "cfg_cache", interval=2, window=[0, 1]) as handle:
        cached = _generate(pipe, "wan", steps)
        calls = handle.stats().site_steps("<denoiser>")
    assert [s for s, (_, reused) in calls.items() if reused] == [s for s in range(positions) if s % 2]
    assert not torch.equal(cached, reference)


def test_flux_style_fraction_timesteps_meet_windows_in_timestep_units():
    spec = TINY_TRANSFORMERS["flux"]  # its inputs pass t / 1000, as FluxPipeline does
    model = spec.build()
    schedule = torch.linspace(1000, 100, 10)
    with cachelab.apply(model, "pab", joint_interval=2, window={"start": 950, "end": 150, "unit": "timestep"}) as handle:
        handle.begin(timesteps=schedule)
        with torch.no_grad():
            for t in schedule.tolist():
                model(**spec.inputs(1, t))
        stats = handle.stats()
        plan = handle.plan(10, timesteps=schedule)
    assert stats.computed_fraction < 1.0  # the window matched: t/1000 was read as t
    for key, planned in plan.items():
        assert stats.computed_steps(key) == planned


def test_timestep_parameter_by_name_or_signature():
    class Timesteps(torch.nn.Module):  # HiDream names it `timesteps`
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)])

        def forward(self, hidden_states, timesteps):
            for block in self.blocks:
                hidden_states = block(hidden_states)
            return hidden_states

    net = Timesteps()
    x = torch.randn(1, 4)
    with cachelab.apply(net, "vanilla", sites={"block": r"blocks\.\d"}, roles=["block"], interval=2, window=[0, 1],
                        num_steps=4) as handle:
        outs = [net(x, timesteps=torch.tensor([t])) for t in (900.0, 600.0, 300.0, 100.0)]
        assert handle.stats().computed_fraction < 1.0
        positional = net(x, torch.tensor([900.0]))  # a new generation, read positionally
    assert torch.equal(positional, outs[0])


def _compatible_schedulers():
    return sorted(tiny_pipeline("latte").scheduler.compatibles, key=lambda cls: cls.__name__)


@pytest.mark.parametrize("scheduler_cls", _compatible_schedulers(), ids=lambda cls: cls.__name__)
def test_every_compatible_scheduler_places_steps(scheduler_cls):
    """What the README's "any scheduler" means: every scheduler diffusers lists as compatible with the pipeline's
    own (``scheduler.compatibles``) gets one step per listed timestep, plans equal counts, and never-reuse is exact."""
    try:
        pipe = _latte(scheduler_cls)
    except ImportError as exc:  # LMS needs scipy, DPM-Solver-SDE torchsde: diffusers' optional dependencies
        pytest.skip(f"{scheduler_cls.__name__} needs a library diffusers does not require: {str(exc).strip().splitlines()[0]}")
    steps = 4
    reference = _generate(pipe, "latte", steps)
    with cachelab.apply(pipe, "pab", **NEVER_REUSE["pab"]):
        assert torch.equal(_generate(pipe, "latte", steps), reference)
    with cachelab.apply(pipe, "pab", spatial_interval=2, temporal_interval=2, cross_interval=2, window=[0, 1]) as handle:
        _generate(pipe, "latte", steps)
        stats = handle.stats()
        positions = len(pipe.scheduler.timesteps)
        plan = handle.plan(positions, timesteps=pipe.scheduler.timesteps)
    assert stats.record.num_steps == positions
    for key, planned in plan.items():
        assert stats.computed_steps(key) == planned
    assert stats.computed_fraction < 1.0
