"""Site discovery and every policy on tiny configs of eleven diffusers transformers, called directly."""

import pytest
import torch

import cachelab
from configs import AGGRESSIVE, NEVER_REUSE
from tiny_transformers import TINY_TRANSFORMERS

# role counts each tiny config must show (layers per stack are in tests/tiny_transformers.py)
EXPECTED_ROLES = {
    "latte": {"block": 4, "attn.spatial": 2, "attn.temporal": 2, "attn.cross": 2, "ffn": 4},
    "cogvideox": {"block": 2, "attn.joint": 2, "ffn": 2},
    "pixart": {"block": 2, "attn.spatial": 2, "attn.cross": 2, "ffn": 2},
    "dit": {"block": 2, "attn.spatial": 2, "ffn": 2},
    "sd3": {"block": 2, "attn.joint": 2, "attn.spatial": 1, "ffn": 3},
    "flux": {"block": 2, "attn.joint": 2, "ffn": 2},
    "hunyuanvideo": {"block": 2, "attn.joint": 2, "ffn": 2},
    "wan": {"block": 2, "attn.spatial": 2, "attn.cross": 2, "ffn": 2},
    "ltx": {"block": 2, "attn.spatial": 2, "attn.cross": 2, "ffn": 2},
    "mochi": {"block": 2, "attn.joint": 2, "ffn": 3},
    "allegro": {"block": 2, "attn.spatial": 2, "attn.cross": 2, "ffn": 2},
}
TOKEN_OUTPUTS = {"flux", "ltx"}  # packed latents: cfg_cache needs layout="flat"
# Latte's spatial and temporal blocks see tokens in other shapes: no residual spans its first and last block
REFUSALS = {
    **{
        ("latte", policy): rf"{policy}: the last block \(temporal_transformer_blocks\.1\) returns hidden_states"
        for policy in ("fbcache", "dbcache")
    },
    # learned variance: the output has twice the input's channels, so no transformation output - input exists
    **{
        (name, "easycache"): r"easycache: the denoiser returns a sample of shape"
        for name in ("dit", "latte", "pixart")
    },
}
#: policies that skip only where the denoiser's input changes between steps; run() feeds one latent to every step
INPUT_DRIVEN = {"easycache"}

STEPS = 8
TIMESTEPS = torch.linspace(950, 50, STEPS).tolist()


# the eleven original families; every other tiny transformer is tried with every policy in tests/test_coverage.py
@pytest.fixture(scope="module", params=sorted(EXPECTED_ROLES))
def tiny(request):
    spec = TINY_TRANSFORMERS[request.param]
    return request.param, spec.build(), spec


def run(model, spec, batch=2):
    with torch.no_grad():
        return [model(**spec.inputs(batch, t))[0] for t in TIMESTEPS]


def test_sites_found_by_structure(tiny):
    name, model, _ = tiny
    sites = cachelab.find_sites(model)
    roles = sites.roles()
    assert roles.pop("denoiser") == 1
    assert roles == EXPECTED_ROLES[name]
    if name == "latte":  # diffusers' own PAB identifiers give these the spatial role
        for site in sites.by_role("attn.temporal"):
            assert site.name.startswith("temporal_transformer_blocks.") and site.name.endswith(".attn1")
        assert all(s.name.startswith("transformer_blocks.") for s in sites.by_role("attn.spatial"))
    if name in ("flux", "hunyuanvideo"):
        stacks = [s.stack for s in sites.by_role("block")]
        assert stacks == ["transformer_blocks", "single_transformer_blocks"]
        assert [s.layer for s in sites.by_role("block")] == [0, 1]
    if name == "hunyuanvideo":  # the text token refiner's attention is not a denoiser site
        assert not any("refiner" in s.name for s in sites)


@pytest.mark.parametrize("policy", sorted(NEVER_REUSE))
def test_every_policy_runs_and_never_reuse_is_identical(tiny, policy):
    name, model, spec = tiny
    reference = run(model, spec)
    if (name, policy) in REFUSALS:
        with cachelab.apply(model, policy, cfg="batched", num_steps=STEPS, **NEVER_REUSE[policy]):
            with pytest.raises(cachelab.PolicyError, match=REFUSALS[(name, policy)]):
                run(model, spec)
        assert all(torch.equal(a, b) for a, b in zip(run(model, spec), reference))  # removed
        return
    extra = {"layout": "flat"} if name in TOKEN_OUTPUTS and policy == "cfg_cache" else {}
    if name in TOKEN_OUTPUTS and policy == "fastercache":
        extra = {"cfg_cache": {"layout": "flat"}}
    params = {**NEVER_REUSE[policy], **extra} if policy != "fastercache" else _merge(NEVER_REUSE[policy], extra)
    with cachelab.apply(model, policy, cfg="batched", num_steps=STEPS, **params):
        assert all(torch.equal(a, b) for a, b in zip(run(model, spec), reference))
    params = {**AGGRESSIVE[policy], **extra} if policy != "fastercache" else _merge(AGGRESSIVE[policy], extra)
    with cachelab.apply(model, policy, cfg="batched", num_steps=STEPS, **params) as handle:
        cached = run(model, spec)
        stats = handle.stats()
    if policy in INPUT_DRIVEN:  # the rate |output change| / |input change| is x/0: every step computes
        assert stats.computed_fraction == 1.0 and all(torch.equal(a, b) for a, b in zip(cached, reference))
        return
    assert all(torch.isfinite(c).all() for c in cached)
    assert stats.computed_fraction < 1.0
    assert not all(torch.equal(a, b) for a, b in zip(cached, reference))
    assert all(torch.equal(a, b) for a, b in zip(run(model, spec), reference))  # removed


def _merge(a, b):
    out = {k: dict(v) for k, v in a.items()}
    for k, v in b.items():
        out.setdefault(k, {}).update(v)
    return out


def test_cfg_cache_refuses_token_outputs_without_flat_layout():
    spec = TINY_TRANSFORMERS["flux"]
    model = spec.build()
    with cachelab.apply(model, "cfg_cache", cfg="batched", num_steps=STEPS, interval=2, window=[0, 1]):
        with pytest.raises(cachelab.LayoutError, match=r"one CFG branch of the denoiser output has shape \(1, 16, 16\)"):
            run(model, spec)


#: role counts of tiny models whose attention classes the generic rules would misread (see their adapters)
ADAPTED_ROLES = {
    # their cross-attention classes have no is_cross_attention flag
    "stable-audio3": {"block": 2, "attn.spatial": 2, "attn.cross": 2},
    "longcat-audio": {"block": 2, "attn.spatial": 2, "attn.cross": 2},
    # only the fused video/audio blocks are the denoiser's stack (the text blocks run on the text alone)
    "kandinsky6": {"block": 2, "attn.spatial": 4, "attn.cross": 8, "ffn": 4},
    # full self-attention over one packed text + audio + video sequence; the text refiner is not the stack
    "minimax-h3": {"block": 2, "attn.joint": 2, "ffn": 2},
    # LTX-2's blocks run on the video stream only: the audio modules they hold are not sites
    "sana-wm-refiner": {"block": 2, "attn.spatial": 2, "attn.cross": 2, "ffn": 2},
    # its attention and FFN classes subclass no attention type: found because the adapter names them
    "sana-wm": {"block": 2, "attn.spatial": 2, "attn.cross": 2, "ffn": 2},
    # LTX2Attention has no is_cross_attention flag: text and cross-modal (a2v, v2a) attention look like self-attention
    "ltx2": {"block": 2, "attn.spatial": 4, "attn.cross": 8, "ffn": 4},
}


@pytest.mark.parametrize("name", sorted(ADAPTED_ROLES))
def test_adapted_roles(name):
    roles = cachelab.find_sites(TINY_TRANSFORMERS[name].build()).roles()
    assert roles.pop("denoiser") == 1
    assert roles == ADAPTED_ROLES[name]


def test_stacks_inside_a_module_dict_are_found_by_dotted_path():
    """Flux3 keeps its per-mode block lists in a ModuleDict (``mode_blocks.image``); the text's mode blocks run
    before the image's on the text alone and are not part of the stack."""
    sites = cachelab.find_sites(TINY_TRANSFORMERS["flux3"].build())
    blocks = sites.by_role("block")
    names = ["mode_blocks.image.0", "mode_blocks.image_cond.0", "single_transformer_blocks.0"]
    assert [s.name for s in blocks] == names
    assert [s.layer for s in blocks] == [0, 1, 2]
    assert [s.stack for s in blocks] == ["mode_blocks.image", "mode_blocks.image_cond", "single_transformer_blocks"]
    assert not any(s.name.startswith("txt_mode_blocks") for s in sites)


def test_an_adapter_can_mark_a_commonly_unbatched_argument_as_batched():
    """``position_ids`` carries no batch dimension in most models (Krea 2: one table for the batch), but Ideogram 4
    takes one row of ids per packed sample: CFG-Cache's conditional-only call must get its half."""
    denoiser = cachelab.find_sites(TINY_TRANSFORMERS["ideogram4"].build()).by_role("denoiser")[0]
    assert "position_ids" not in denoiser.unbatched
    assert "position_ids" in cachelab.find_sites(TINY_TRANSFORMERS["krea2"].build()).by_role("denoiser")[0].unbatched
    spec, model = TINY_TRANSFORMERS["ideogram4"], TINY_TRANSFORMERS["ideogram4"].build()
    with cachelab.apply(model, "cfg_cache", cfg="batched", num_steps=2, interval=2, window=[0, 1], layout="flat"):
        with torch.no_grad():
            outputs = [model(**spec.inputs(2, t))[0] for t in (900, 600)]
    assert [tuple(o.shape) for o in outputs] == [(2, *spec.latents["hidden_states"])] * 2
