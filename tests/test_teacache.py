"""TeaCache: never-reuse identity, the reuse formula, the modulated input, bad input, and agreement with a
transcription of TeaCache's reference code for CogVideoX."""

import types

import numpy as np
import pytest
import torch

import cachelab
import toy_stack

STEPS = 10
TIMESTEPS = torch.linspace(950, 50, STEPS).tolist()
LINEAR = [1.0, 0.0]  # the rescaling polynomial x -> x


tiny = toy_stack.tiny_transformer


def run(model, spec, batch=2):
    return toy_stack.run_steps(model, spec, TIMESTEPS, batch)


def test_never_reuse_is_identical_and_generations_reset():
    model, spec = tiny()
    reference = run(model, spec)
    with pytest.warns(cachelab.NothingReusedWarning):
        with cachelab.apply(model, "teacache", cfg="batched", num_steps=STEPS, coefficients=LINEAR, threshold=0.0):
            assert all(torch.equal(a, b) for a, b in zip(run(model, spec), reference))
    with cachelab.apply(model, "teacache", cfg="batched", num_steps=STEPS, coefficients=LINEAR,
                        threshold=0.3) as handle:
        first, first_stats = run(model, spec), handle.stats()
        second, second_stats = run(model, spec), handle.stats()
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert {**first_stats.to_dict(), "generation": 1} == second_stats.to_dict()
    assert 0 < first_stats.computed_fraction < 1
    assert first_stats.computed_steps("transformer_blocks.2")[-1]  # the last step always runs
    assert not all(torch.equal(a, b) for a, b in zip(first, reference))


class Toy(toy_stack.Toy):
    """Three AdaLN-like blocks and a scale after them."""

    def __init__(self):
        super().__init__(scale=2, adaln=True)


def test_skipped_step_follows_the_rescaled_distance_and_adds_the_stack_residual():
    model = Toy().eval()
    xs = [torch.randn(1, 4, 6) for _ in range(4)]
    xs[2] = xs[1] * 1.01  # a small change of the modulated input at step 2
    ts = [torch.tensor([t]) for t in (900.0, 880.0, 860.0, 840.0)]
    modulated = [x * (1 + t / 1000) for x, t in zip(xs, ts)]
    coefficients = [2.0, 0.5, 0.0]  # 2 x^2 + 0.5 x
    change = ((modulated[2] - modulated[1]).abs().mean() / modulated[1].abs().mean()).item()
    threshold = np.polyval(coefficients, change) * 1.01
    with torch.no_grad():
        full = [model(x, t) for x, t in zip(xs, ts)]
        with cachelab.apply(model, "teacache", cfg="off", num_steps=4, sites={"block": r"blocks\.\d"},
                            modulated_input="blocks.0.attn", coefficients=coefficients,
                            threshold=threshold) as handle:
            out = [model(x, t) for x, t in zip(xs, ts)]
            stats = handle.stats()
    # step 1: the change from step 0 is large (runs); step 2: under the threshold (skips); step 3: the last (runs)
    assert stats.computed_steps("blocks.0") == stats.computed_steps("blocks.2") == [True, True, False, True]
    assert torch.equal(out[1], full[1]) and torch.equal(out[3], full[3])
    torch.testing.assert_close(out[2], 2 * (xs[2] + (full[1] / 2 - xs[1])), rtol=0, atol=0)


def test_modulated_input_is_the_first_attentions_input_and_errors_name_the_fix():
    model, spec = tiny()
    seen = []
    hook = model.transformer_blocks[0].attn1.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["hidden_states"]), with_kwargs=True)
    try:
        with cachelab.apply(model, "teacache", cfg="batched", num_steps=STEPS, coefficients=LINEAR, threshold=0.3):
            run(model, spec)
    finally:
        hook.remove()
    assert len(seen) > STEPS  # read before each decision (the block stops there), then again on full steps
    with cachelab.apply(model, "teacache", cfg="batched", num_steps=STEPS, coefficients=LINEAR,
                        modulated_input="transformer_blocks.0.nope"):
        with pytest.raises(cachelab.PolicyError, match=r"modulated_input='transformer_blocks.0.nope' names no module"):
            run(model, spec)
    with cachelab.apply(model, "teacache", cfg="batched", num_steps=STEPS, coefficients=LINEAR,
                        modulated_input="transformer_blocks.1.attn1"):
        with pytest.raises(cachelab.PolicyError, match=r"did not run inside the first block \(transformer_blocks.0\)"):
            run(model, spec)


def test_bad_input_names_field_value_and_fix():
    teacache = cachelab.policy_class("teacache")
    with pytest.raises(cachelab.PolicyError, match=r"threshold: Input should be less than or equal to 10 \(got 11"):
        teacache(threshold=11)
    with pytest.raises(cachelab.PolicyError, match=r"coefficients: Value error, coefficients must be finite"):
        teacache(coefficients=[float("nan")])
    model, _ = tiny()
    with pytest.raises(cachelab.PolicyError, match=r"teacache needs a calibration of this CogVideoXTransformer3DModel "
                                                   r"\(fingerprint \w+\) and none ships with cachelab: run "
                                                   r"`cachelab calibrate --model <model> --policy teacache"):
        cachelab.apply(model, "teacache")
    with pytest.raises(cachelab.PolicyError, match="teacache: calibration='missing.yaml': no such file"):
        cachelab.apply(model, "teacache", calibration="missing.yaml")


# -- against TeaCache's reference code ---------------------------------------------------------------------------------
def reference_forward(self, hidden_states, encoder_hidden_states, timestep, timestep_cond=None, ofs=None,
                      image_rotary_emb=None, attention_kwargs=None, return_dict=True):
    """TeaCache4CogVideoX's ``teacache_forward``, transcribed onto diffusers 0.42's CogVideoX forward for the tiny
    config (no ofs, no rotary embedding, 2-D patches): ``emb`` is the modulated input, the first and last step run,
    the rescaled relative L1 distance accumulates, both streams get their cached residual."""
    batch_size, num_frames, channels, height, width = hidden_states.shape
    emb = self.time_embedding(self.time_proj(timestep).to(dtype=hidden_states.dtype), timestep_cond)
    hidden_states = self.embedding_dropout(self.patch_embed(encoder_hidden_states, hidden_states))
    text_seq_length = encoder_hidden_states.shape[1]
    encoder_hidden_states = hidden_states[:, :text_seq_length]
    hidden_states = hidden_states[:, text_seq_length:]
    if self.cnt == 0 or self.cnt == self.num_steps - 1:
        should_calc = True
        self.accumulated_rel_l1_distance = 0
    else:
        rescale_func = np.poly1d(self.coefficients)
        distance = ((emb - self.previous_modulated_input).abs().mean() / self.previous_modulated_input.abs().mean())
        self.accumulated_rel_l1_distance += rescale_func(distance.cpu().item())
        should_calc = self.accumulated_rel_l1_distance >= self.rel_l1_thresh
        if should_calc:
            self.accumulated_rel_l1_distance = 0
    self.previous_modulated_input = emb
    self.cnt = (self.cnt + 1) % self.num_steps
    if not should_calc:
        hidden_states = hidden_states + self.previous_residual
        encoder_hidden_states = encoder_hidden_states + self.previous_residual_encoder
    else:
        ori_hidden_states, ori_encoder_hidden_states = hidden_states.clone(), encoder_hidden_states.clone()
        for block in self.transformer_blocks:
            hidden_states, encoder_hidden_states = block(hidden_states=hidden_states,
                                                         encoder_hidden_states=encoder_hidden_states, temb=emb,
                                                         image_rotary_emb=image_rotary_emb)
        self.previous_residual = hidden_states - ori_hidden_states
        self.previous_residual_encoder = encoder_hidden_states - ori_encoder_hidden_states
    self.calls.append(should_calc)
    hidden_states = self.proj_out(self.norm_out(self.norm_final(hidden_states), temb=emb))
    p = self.config.patch_size
    output = hidden_states.reshape(batch_size, num_frames, height // p, width // p, -1, p, p)
    return (output.permute(0, 1, 4, 2, 5, 3, 6).flatten(5, 6).flatten(3, 4),)


def test_matches_teacache_reference_on_cogvideox():
    """Batched CFG (one call per step, as the reference counts steps), fp32: with the reference's modulated input
    (``emb``, which CogVideoX hands its blocks as ``temb``) and CogVideoX-2B's published coefficients, the same
    steps run and the outputs are bit-identical (tolerance 0: the same operations on the same tensors)."""
    model, spec = tiny()
    coefficients = [-3.10658903e01, 2.54732368e01, -5.92380459e00, 1.75769064e00, -3.61568434e-03]
    threshold = 0.05
    model.forward = types.MethodType(reference_forward, model)
    model.coefficients, model.rel_l1_thresh, model.num_steps, model.cnt, model.calls = coefficients, threshold, STEPS, 0, []
    try:
        theirs = run(model, spec)
    finally:
        del model.forward
    with cachelab.apply(model, "teacache", cfg="batched", num_steps=STEPS, coefficients=coefficients,
                        threshold=threshold, modulated_input="transformer_blocks.0:temb") as handle:
        ours = run(model, spec)
        computed = handle.stats().computed_steps("transformer_blocks.2")
    assert computed == model.calls
    assert any(model.calls) and not all(model.calls)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_two_calls_per_step_decide_per_branch():
    """With CFG as two calls per step, each branch keeps its own distance and residual: the cond calls give what
    the cond calls alone give (uncond calls interleaved or not)."""
    model, spec = tiny()
    params = dict(num_steps=STEPS, coefficients=LINEAR, threshold=0.3)

    def calls(branches):
        outs = {b: [] for b in branches}
        with torch.no_grad():
            for t in TIMESTEPS:
                for branch in branches:
                    outs[branch].append(model(**spec.inputs(1, t, seed=0 if branch == "cond" else 1))[0])
        return outs

    with cachelab.apply(model, "teacache", cfg="sequential", cfg_order="uncond_first", **params) as handle:
        both = calls(("uncond", "cond"))
        per_step = handle.stats().site_steps("transformer_blocks.2")
    with cachelab.apply(model, "teacache", cfg="off", **params):
        alone = calls(("cond",))
    assert all(torch.equal(a, b) for a, b in zip(both["cond"], alone["cond"]))
    computed = [per_step[i][0] for i in range(STEPS)]
    assert computed[0] == computed[-1] == 2 and 0 in computed
