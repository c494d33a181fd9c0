"""Each policy's reuse step against its formula, on hand-made tensors and toy models."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

import cachelab
from cachelab.hooks.context import StepContext
from cachelab.hooks.history import History
from cachelab.policies.cfg_cache import low_frequency_mask, rebuild_uncond, split_frequencies
from cachelab.policies.dynamic import Dynamic
from stdit import STDIT_SITES, make_stdit


def ctx(step=0, num_steps=10, timestep=500.0, branches=("cond",)):
    return StepContext(0, step, num_steps, timestep, step / num_steps, 0, branches, 1)


# -- dynamic -------------------------------------------------------------------------------------------------------
def test_dynamic_extrapolation_formula():
    policy = Dynamic(weight=0.3)
    last, prev = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    out = policy.reuse(None, SimpleNamespace(ctx=ctx()), [last, prev])
    torch.testing.assert_close(out, last + 0.3 * (last - prev))


def test_dynamic_weight_ramp_and_tuple_outputs():
    policy = Dynamic(weight=0.3, weight_end=0.9, window={"start": 0.2, "end": 1.0})
    last = (torch.randn(1, 4, 8), torch.randn(1, 2, 8))  # joint attention returns (video, text)
    prev = (torch.randn(1, 4, 8), torch.randn(1, 2, 8))
    out = policy.reuse(None, SimpleNamespace(ctx=ctx(step=6)), [last, prev])  # progress 0.6: w = 0.3 + 0.5 * 0.6
    for o, a, b in zip(out, last, prev):
        torch.testing.assert_close(o, a + 0.6 * (a - b))


# -- cfg_cache -------------------------------------------------------------------------------------------------------
def test_low_frequency_mask_is_a_centred_disk():
    mask = low_frequency_mask(10, 12, 5)  # radius min(10, 12) // 5 = 2, centre (5, 6)
    assert mask.sum() == 13  # integer points with y^2 + x^2 <= 4
    assert mask[5, 6] and mask[3, 6] and mask[5, 8] and not mask[3, 8] and not mask[0, 0]


def _reference_uncond(cond, delta, a_low, a_high, divisor):
    """The paper's formula, literally: IFFT(LF(cond) + a_low LF(delta) + HF(cond) + a_high HF(delta))."""
    lf_c, hf_c = split_frequencies(cond, divisor)
    lf_d, hf_d = split_frequencies(delta, divisor)
    spectrum = lf_c + a_low * lf_d + hf_c + a_high * hf_d
    return torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1))).real


@pytest.mark.parametrize("layout", ["BCFHW", "BFCHW"])
def test_cfg_cache_split_and_rebuild(layout):
    g = torch.Generator().manual_seed(0)
    shape = (2, 4, 3, 10, 12) if layout == "BCFHW" else (2, 3, 4, 10, 12)
    x = torch.randn(shape, generator=g)
    low, high = split_frequencies(x, 5)
    torch.testing.assert_close(low + high, torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1)))
    back = torch.fft.ifft2(torch.fft.ifftshift(low + high, dim=(-2, -1))).real
    torch.testing.assert_close(back, x, rtol=1e-5, atol=1e-5)

    cond, delta = torch.randn(shape, generator=g), torch.randn(shape, generator=g) * 0.1
    for a_low, a_high in [(1.0, 1.0), (1.1, 1.0), (1.0, 1.21), (1.331, 0.9)]:
        ours = rebuild_uncond(cond, delta, a_low, a_high, 5, split=True)
        torch.testing.assert_close(ours, _reference_uncond(cond, delta, a_low, a_high, 5), rtol=1e-5, atol=1e-5)

    # the split is per frame: both layouts give the same result for the same frames
    if layout == "BFCHW":
        as_bcfhw = rebuild_uncond(cond.transpose(1, 2), delta.transpose(1, 2), 1.1, 1.3, 5, split=True)
        torch.testing.assert_close(rebuild_uncond(cond, delta, 1.1, 1.3, 5, split=True), as_bcfhw.transpose(1, 2))


class ToyDenoiser(nn.Module):
    """out = latents * (1 + t / 1000) + prompt_scalar * fixed spatial pattern; layout BCFHW or BFCHW."""

    def __init__(self, layout="BCFHW"):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        shape = (1, 2, 3, 8, 10) if layout == "BCFHW" else (1, 3, 2, 8, 10)
        self.register_buffer("pattern", torch.randn(shape, generator=g))
        self.block = nn.Identity()
        self.blocks = nn.ModuleList([nn.Linear(2, 2)])

    def forward(self, hidden_states, timestep, encoder_hidden_states):
        scale = 1 + timestep.view(-1, 1, 1, 1, 1) / 1000
        e = encoder_hidden_states.view(-1, 1, 1, 1, 1)
        return hidden_states * scale + e * self.pattern * (2 - scale)


@pytest.mark.parametrize("layout", ["BCFHW", "BFCHW"])
@pytest.mark.parametrize("compound", [True, False])
def test_cfg_cache_end_to_end_matches_formula(layout, compound):
    model = ToyDenoiser(layout).eval()
    timesteps = torch.linspace(950, 50, 10).tolist()
    params = dict(
        interval=3,
        window=[0.0, 1.0, "progress"],
        low_freq_weight=1.2,
        low_freq_window=[700, 300, "timestep"],
        high_freq_weight=0.8,
        high_freq_window=[400, 0, "timestep"],
        compound=compound,
    )
    x = torch.randn(model.pattern.shape, generator=torch.Generator().manual_seed(0))
    e = torch.tensor([0.0, 1.5])  # [uncond, cond]
    sites = {"block": r"blocks\.0"}
    with cachelab.apply(model, "cfg_cache", sites=sites, num_steps=10, **params) as handle:
        handle.begin(timesteps=timesteps)
        got = [model(torch.cat([x, x]), torch.tensor([t, t]), e) for t in timesteps]
        stats = handle.stats()
    assert stats.by_kind()["denoiser"]["reused"] == 6  # steps 1, 2, 4, 5, 7, 8 skip the uncond branch

    lf = hf = 1.0
    delta = None
    for step, t in enumerate(timesteps):
        full = model(torch.cat([x, x]), torch.tensor([t, t]), e)
        uncond, cond = full.chunk(2)
        if step % 3 == 0:
            delta, lf, hf = uncond - cond, 1.0, 1.0
            torch.testing.assert_close(got[step], full)
            continue
        a_low = 1.2 if 700 >= t >= 300 else 1.0
        a_high = 0.8 if 400 >= t >= 0 else 1.0
        lf, hf = (lf * a_low, hf * a_high) if compound else (a_low, a_high)
        expected = _reference_uncond(cond, delta, lf, hf, 5)
        torch.testing.assert_close(got[step][1:], cond)
        torch.testing.assert_close(got[step][:1], expected, rtol=1e-5, atol=1e-5)


def test_cfg_cache_high_passes_each_stored_delta_once(monkeypatch):
    """The rebuild keeps the delta's high-pass between full steps: the same outputs as computing it at every
    rebuilt step (exactly), with one high-pass per stored delta."""
    from cachelab.policies import cfg_cache as module

    g = torch.Generator().manual_seed(1)
    cond, delta = torch.randn(2, 3, 4, 10, 12, generator=g), torch.randn(2, 3, 4, 10, 12, generator=g)
    kept = module.high_pass(delta, 5)
    assert torch.equal(module.rebuild_uncond(cond, delta, 1.2, 0.8, 5, split=True, high=kept),
                       module.rebuild_uncond(cond, delta, 1.2, 0.8, 5, split=True))

    calls = []
    real = module.high_pass
    monkeypatch.setattr(module, "high_pass", lambda x, d: calls.append(x) or real(x, d))
    model = ToyDenoiser().eval()
    timesteps = torch.linspace(950, 50, 10).tolist()
    x = torch.randn(model.pattern.shape, generator=g)
    e = torch.tensor([0.0, 1.5])
    params = dict(interval=3, window=[0.0, 1.0, "progress"], low_freq_weight=1.2, low_freq_window=[1000, 0, "timestep"],
                  high_freq_weight=0.8, high_freq_window=[1000, 0, "timestep"])
    with cachelab.apply(model, "cfg_cache", sites={"block": r"blocks\.0"}, num_steps=10, **params) as handle:
        handle.begin(timesteps=timesteps)
        for t in timesteps:
            model(torch.cat([x, x]), torch.tensor([t, t]), e)
    # full steps 0, 3, 6, 9 store a delta; the rebuilt steps after the first three read it: one high-pass each
    assert len(calls) == 3


def test_cfg_cache_rejects_layouts_it_cannot_split():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(4, 4)])

        def forward(self, hidden_states, timestep, encoder_hidden_states):
            return self.blocks[0](hidden_states) + encoder_hidden_states.view(-1, 1, 1)

    model = Tokens()
    x = torch.randn(1, 6, 4)
    with cachelab.apply(model, "cfg_cache", sites={"block": r"blocks\.0"}, num_steps=4, window=[0, 1]):
        with pytest.raises(cachelab.LayoutError, match=r"\(B, C, H, W\).*layout='flat'"):
            for t in (900.0, 600.0):
                model(torch.cat([x, x]), torch.tensor([t, t]), torch.tensor([0.0, 1.0]))
    # flat: no frequency split, the delta is scaled as a whole
    with cachelab.apply(model, "cfg_cache", sites={"block": r"blocks\.0"}, num_steps=4, window=[0, 1], layout="flat"):
        outs = [model(torch.cat([x, x]), torch.tensor([t, t]), torch.tensor([0.0, 1.0])) for t in (900.0, 600.0)]
    assert outs[1].shape == (2, 6, 4)

    video = ToyDenoiser()
    latents = torch.randn(1, 2, 3, 8, 10)
    with cachelab.apply(video, "cfg_cache", sites={"block": r"blocks\.0"}, num_steps=4, window=[0, 1], layout="BCHW"):
        with pytest.raises(cachelab.LayoutError, match="layout='BCHW'"):
            for t in (900.0, 600.0):
                video(torch.cat([latents, latents]), torch.tensor([t, t]), torch.tensor([0.0, 1.0]))


# -- delta_dit -------------------------------------------------------------------------------------------------------
class Chain(nn.Module):
    """Blocks with an affine relayout between blocks 1 and 2 (a permutation plus a position embedding), as Latte
    reshapes and adds its temporal position embedding between spatial and temporal blocks."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for _ in range(4)])
        self.pe = nn.Parameter(torch.randn(6, 8))
        self.inputs = {}

    def forward(self, hidden_states, timestep):
        h = hidden_states
        for i, block in enumerate(self.blocks):
            self.inputs[i] = h
            h = block(h)
            if i == 1:
                h = h.flip(1) + self.pe
        return h


class Residual(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, hidden_states):
        return hidden_states + self.inner(hidden_states)


def test_delta_dit_adds_cached_span_deviation():
    model = Chain()
    for i, block in enumerate(model.blocks):
        model.blocks[i] = Residual(block)
    timesteps = [900.0, 700.0, 500.0, 300.0]
    xs = [torch.randn(1, 6, 8, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    params = dict(interval=2, span=2, boundary=0.5)
    with cachelab.apply(model, "delta_dit", sites={"block": r"blocks\.\d"}, num_steps=4, **params):
        got = [model(x, torch.tensor([t])) for x, t in zip(xs, timesteps)]

    def run_span(h, blocks, relayout_after):
        for i in blocks:
            h = model.blocks[i](h)
            if i == relayout_after:
                h = h.flip(1) + model.pe
        return h

    # step 0: full. step 1 (progress 0.25, outline stage): rear span (blocks 2, 3) cached.
    in_rear0 = run_span(xs[0], [0, 1], 1)
    out0 = run_span(in_rear0, [2, 3], None)
    torch.testing.assert_close(got[0], out0)
    in_rear1 = run_span(xs[1], [0, 1], 1)
    torch.testing.assert_close(got[1], in_rear1 + (out0 - in_rear0))
    # step 2: full. step 3 (detail stage): front span (blocks 0, 1, with the relayout inside) cached.
    in2 = xs[2]
    mid2 = run_span(in2, [0, 1], 1)
    # span deviation across a relayout T: cached output T(in) + D  ->  T(x_new) + (out_full - T(in_full))
    relayout = lambda h: h.flip(1) + model.pe  # noqa: E731
    deviation = mid2 - relayout(in2)
    mid3 = relayout(xs[3]) + deviation
    torch.testing.assert_close(got[3], run_span(mid3, [2, 3], None), rtol=1e-5, atol=1e-6)


# -- pab and vanilla --------------------------------------------------------------------------------------------------
def test_pab_intervals_per_attention_kind():
    model = make_stdit()
    timesteps = torch.linspace(999, 1, 30).tolist()
    params = dict(spatial_interval=2, temporal_interval=3, cross_interval=6, window=[800, 100, "timestep"])
    with cachelab.apply(model, "pab", sites=STDIT_SITES, **params) as handle:
        plan = handle.plan(30, timesteps)
    for key, row in plan.items():
        role = plan.roles[key]
        interval = {"attn.spatial": 2, "attn.temporal": 3, "attn.cross": 6}[role]
        for step, compute in enumerate(row):
            inside = 800 >= timesteps[step] >= 100
            assert compute == (not inside or step % interval == 0), (key, step)
    fractions = plan.reuse_fraction()
    assert fractions["attn.cross"] > fractions["attn.temporal"] > fractions["attn.spatial"] > 0


def test_pab_mlp_broadcast_selects_leading_ffns():
    model = make_stdit()
    with cachelab.apply(model, "pab", sites=STDIT_SITES, mlp_interval=2, mlp_layers=1) as handle:
        ffns = [s.name for s in handle.owned_sites if s.role == "ffn"]
    assert ffns == ["spatial_blocks.0.mlp", "temporal_blocks.0.mlp"]


def test_vanilla_reuses_the_last_output_exactly():
    model = make_stdit()
    attn = model.spatial_blocks[0].attn
    timesteps = torch.linspace(999, 1, 10).tolist()
    # count_macs=False: the spy below sees every call, and MACs are measured by one extra call per input shape
    with cachelab.apply(model, "vanilla", sites=STDIT_SITES, num_steps=10, interval=3, window=[0.0, 1.0],
                        count_macs=False):
        x, y = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 5, 16)
        outputs = []
        hook_forward = attn.forward

        def spy(*args, **kwargs):
            out = hook_forward(*args, **kwargs)
            outputs.append(out)
            return out

        attn.forward = spy
        try:
            for t in timesteps:
                model(x, torch.tensor([t]), y)
        finally:
            attn.forward = hook_forward
    assert "forward" not in attn.__dict__
    for step, out in enumerate(outputs):
        assert out is outputs[step - step % 3], step  # steps 1, 2 return step 0's tensor itself, and so on


# -- branch-aware storage -----------------------------------------------------------------------------------------------
def test_history_slices_branches_and_mixes_steps():
    history = History(depth=2)
    full = torch.arange(4.0).view(2, 2)  # [uncond, cond]
    history.push(full, ("uncond", "cond"), step=0)
    assert history.get(("uncond", "cond"), 1)[0] is full
    torch.testing.assert_close(history.get(("cond",), 1)[0], full[1:])
    cond_only = torch.tensor([[9.0, 9.0]])
    history.push(cond_only, ("cond",), step=1)
    mixed = history.get(("uncond", "cond"), 1)[0]  # uncond from step 0, cond from step 1
    torch.testing.assert_close(mixed, torch.tensor([[0.0, 1.0], [9.0, 9.0]]))
    assert history.steps("cond") == [0, 1] and history.steps("uncond") == [0]
    assert history.available(("uncond", "cond")) == 1
