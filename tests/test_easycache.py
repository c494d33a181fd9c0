"""EasyCache: never-reuse identity, the estimate and reuse formulas on hand-made tensors, the decision sequence on a
tiny model against the authors' forward transcribed, state reset, and bad input."""

import pytest
import torch
from torch import nn

import cachelab
from tiny_transformers import TINY_TRANSFORMERS

STEPS = 10
TIMESTEPS = torch.linspace(950, 50, STEPS).tolist()
DENOISER = "<denoiser>"


class Reference:
    """The authors' HunyuanVideo forward (EasyCache4HunyuanVideo/hyvideo_svg_easycache.py, ``easycache_forward``)
    transcribed around a denoiser, with its attributes as locals: the oracle the policy must equal."""

    def __init__(self, model, thresh, ret_steps, num_steps):
        self.model, self.thresh, self.ret_steps, self.num_steps = model, thresh, ret_steps, num_steps
        self.cnt, self.k, self.accumulated_error, self.cache = 0, None, 0, None
        self.previous_raw_input = self.previous_output = self.prev_prev_raw_input = None
        self.computed: list[bool] = []

    def __call__(self, **inputs):
        raw_input = inputs["hidden_states"].clone()
        if self.cnt < self.ret_steps or self.cnt >= self.num_steps - 1:
            should_calc = True
            self.accumulated_error = 0
        elif self.previous_raw_input is not None and self.previous_output is not None and self.k is not None:
            raw_input_change = (raw_input - self.previous_raw_input).abs().mean()
            output_norm = self.previous_output.abs().mean()
            self.accumulated_error += self.k * (raw_input_change / output_norm)
            should_calc = not self.accumulated_error < self.thresh
            if should_calc:
                self.accumulated_error = 0
        else:
            should_calc = True
        self.previous_raw_input = raw_input.clone()
        self.computed.append(should_calc or self.cache is None)
        self.cnt += 1
        if not should_calc and self.cache is not None:
            return raw_input + self.cache
        result = self.model(**inputs)[0]
        self.cache = result - raw_input
        if self.previous_output is not None and self.prev_prev_raw_input is not None:
            output_change = (result - self.previous_output).abs().mean()
            self.k = output_change / (self.previous_raw_input - self.prev_prev_raw_input).abs().mean()
        self.prev_prev_raw_input = self.previous_raw_input
        self.previous_output = result.clone()
        return result


def sample(denoise, spec, batch=2, seed=0):
    """A toy sampler: the next latent moves against the prediction, so inputs change from step to step as in a
    real one (the denoiser sees ``hidden_states``, which EasyCache measures)."""
    inputs = spec.inputs(batch, TIMESTEPS[0], seed=seed)
    latents, outputs = inputs["hidden_states"], []
    with torch.no_grad():
        for t in TIMESTEPS:
            out = denoise(**{**inputs, "hidden_states": latents, "timestep": torch.full((batch,), t)})
            outputs.append(out)
            latents = latents - 0.1 * out
    return outputs


def tiny():
    spec = TINY_TRANSFORMERS["cogvideox"]
    return spec.build(), spec


def direct(model):
    return lambda **inputs: model(**inputs)[0]


# -- identity, reset, bad input ---------------------------------------------------------------------------------------
def test_threshold_zero_is_identical_and_generations_reset():
    model, spec = tiny()
    reference = sample(direct(model), spec)
    with pytest.warns(cachelab.NothingReusedWarning):
        with cachelab.apply(model, "easycache", cfg="batched", num_steps=STEPS, threshold=0.0, warmup_steps=0):
            assert all(torch.equal(a, b) for a, b in zip(sample(direct(model), spec), reference))
    with cachelab.apply(model, "easycache", cfg="batched", num_steps=STEPS, threshold=0.3, warmup_steps=1) as handle:
        first, first_stats = sample(direct(model), spec), handle.stats()
        second, second_stats = sample(direct(model), spec), handle.stats()
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert {**first_stats.to_dict(), "generation": 1} == second_stats.to_dict()
    computed = first_stats.computed_steps(DENOISER)
    assert any(computed) and not all(computed)
    assert not all(torch.equal(a, b) for a, b in zip(first, reference))


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(threshold=-0.1), r"threshold: Input should be greater than or equal to 0 \(got -0.1\)"),
        (dict(warmup_steps=-1), r"warmup_steps: Input should be greater than or equal to 0 \(got -1\)"),
        (dict(tau=0.1), r"tau: unknown parameter \(value 0.1\); 'easycache' takes: threshold, warmup_steps"),
    ],
)
def test_bad_parameters_name_the_field(params, message):
    with pytest.raises(cachelab.PolicyError, match=message):
        cachelab.policy_class("easycache")(**params)


def test_refuses_an_output_of_another_shape():
    spec = TINY_TRANSFORMERS["latte"]  # learned variance: twice the input's channels
    model = spec.build()
    with cachelab.apply(model, "easycache", cfg="batched", num_steps=STEPS):
        with pytest.raises(cachelab.PolicyError, match=r"easycache: the denoiser returns a sample of shape "
                                                       r"\(2, 8, 4, 8, 8\) for an input of shape \(2, 4, 4, 8, 8\)"):
            sample(direct(model), spec)


class TwoSamples(nn.Module):
    """Predicts a video and an audio sample in one call, as LTX-2 does."""

    def __init__(self):
        super().__init__()
        self.body = Double()

    def forward(self, hidden_states, audio_hidden_states, timestep):
        return self.body(hidden_states), self.body(audio_hidden_states)


@pytest.mark.parametrize("policy, what", [
    ("easycache", "it reuses the transformation output - input"),
    ("cfg_cache", "CFG-Cache rebuilds the unconditional branch"),
    ("fastercache", "CFG-Cache rebuilds the unconditional branch"),
])
def test_refuses_a_denoiser_that_predicts_several_samples(policy, what):
    model = TwoSamples()
    inputs = dict(hidden_states=torch.ones(2, 3, 4), audio_hidden_states=torch.ones(2, 5), timestep=torch.full((2,), 900.0))
    # fastercache's dynamic reuse needs an attention site: the body stands for one
    sites = {"attn.spatial": "body"} if policy == "fastercache" else {"block": "body"}
    with cachelab.apply(model, policy, sites=sites, cfg="batched", num_steps=STEPS):
        with pytest.raises(cachelab.PolicyError, match=rf"{policy}: the denoiser returns 2 samples \(shapes \(2, 3, 4\), "
                                                       rf"\(2, 5\)\), and {what} for the first one only"):
            model(**inputs)


# -- the formulas -----------------------------------------------------------------------------------------------------
class Double(nn.Module):
    def forward(self, hidden_states):
        return 2 * hidden_states


class Affine(nn.Module):
    """v = 2x + t/1000: a denoiser whose every value is known (its one block is there to be found as a site)."""

    def __init__(self):
        super().__init__()
        self.body = Double()

    def forward(self, hidden_states, timestep):
        return (self.body(hidden_states) + timestep[:, None] / 1000,)


def test_estimate_accumulates_and_reuse_adds_the_last_transformation():
    model = Affine()
    x = [torch.tensor([[1.0, -2.0, 3.0]]), torch.tensor([[1.5, -1.0, 2.0]]), torch.tensor([[1.2, -1.1, 2.2]]),
         torch.tensor([[1.0, -1.0, 2.0]]), torch.tensor([[0.9, -0.8, 1.9]])]
    t = [torch.tensor([900.0 - 100 * i]) for i in range(5)]
    v = [model(a, b)[0] for a, b in zip(x, t)]
    k = (v[1] - v[0]).abs().mean() / (x[1] - x[0]).abs().mean()  # rate between the two full steps
    estimate2 = k * ((x[2] - x[1]).abs().mean() / v[1].abs().mean())
    estimate3 = estimate2 + k * ((x[3] - x[2]).abs().mean() / v[1].abs().mean())
    assert estimate2 < estimate3
    # tau between the two: step 2 is reused, step 3 passes tau and computes, step 4 (the last) computes
    tau = ((estimate2 + estimate3) / 2).item()
    with cachelab.apply(model, "easycache", sites={"block": "body"}, cfg="off", num_steps=5, threshold=tau,
                        warmup_steps=0) as handle:
        outputs = [model(a, b)[0] for a, b in zip(x, t)]
        stats = handle.stats()
    assert stats.computed_steps(DENOISER) == [True, True, False, True, True]
    assert torch.equal(outputs[2], x[2] + (v[1] - x[1]))
    assert all(torch.equal(outputs[i], v[i]) for i in (0, 1, 3, 4))


# -- the decision sequence against the authors' forward ------------------------------------------------------------
def sample_two_calls(denoisers, spec):
    """The toy sampler with CFG as two calls per step (uncond, seed 1, then cond, seed 0), each with its latents."""
    inputs = [spec.inputs(1, TIMESTEPS[0], seed=seed) for seed in (1, 0)]
    latents = [i["hidden_states"] for i in inputs]
    outputs = []
    with torch.no_grad():
        for t in TIMESTEPS:
            step = []
            for branch, (denoise, branch_inputs) in enumerate(zip(denoisers, inputs)):
                step.append(denoise(**{**branch_inputs, "hidden_states": latents[branch],
                                       "timestep": torch.full((1,), t)}))
                latents[branch] = latents[branch] - 0.1 * step[-1]
            outputs.append(torch.cat(step))
    return outputs


@pytest.mark.parametrize("cfg", ["batched", "sequential"])
@pytest.mark.parametrize("threshold, warmup", [(0.15, 2), (0.4, 1)])
def test_matches_the_reference_forward(cfg, threshold, warmup):
    """The same sampler, fp32, through the transcribed reference and through ``easycache``: outputs bit-identical
    (tolerance 0: the same tensors meet the same operations) and the same steps computed. ``sequential``: each
    branch has its own state, so one reference instance per branch."""
    model, spec = tiny()
    oracles = [Reference(model, threshold, warmup, STEPS) for _ in range(1 if cfg == "batched" else 2)]
    run = (lambda denoisers: sample(denoisers[0], spec)) if cfg == "batched" else (lambda d: sample_two_calls(d, spec))
    theirs = run(oracles)
    with cachelab.apply(model, "easycache", cfg=cfg, cfg_order="uncond_first", num_steps=STEPS, threshold=threshold,
                        warmup_steps=warmup) as handle:
        ours = run([direct(model)] * len(oracles))
        per_step = handle.stats().site_steps(DENOISER)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    # computed calls per step: the one batched call, or each branch's call
    assert [per_step[i][0] for i in range(STEPS)] == [sum(o.computed[i] for o in oracles) for i in range(STEPS)]
    computed = sum(map(sum, (o.computed for o in oracles)))
    assert 0 < computed < STEPS * len(oracles)  # the threshold gives both kinds of step
