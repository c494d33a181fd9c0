"""The hook layer: signatures kept, stacking with diffusers' and accelerate's hooks in any order, chains of cachelab
hooks on one module, and all-or-nothing detach."""

import inspect

import pytest
import torch

import cachelab
from cachelab.hooks.registry import ModuleHook, attach, detach, detach_all, hook_of, hooks_of
from tiny_pipelines import tiny_pipeline
from tiny_transformers import TINY_TRANSFORMERS

STEPS = 4
TIMESTEPS = [999.0, 749.0, 499.0, 249.0]
SPEC = TINY_TRANSFORMERS["cogvideox"]
#: never reuses, and hooks the denoiser, its blocks and their attention: outputs equal running without cachelab
NEVER_REUSE = [
    {"policy": "delta_dit", "interval": 1},
    {"policy": "fastercache", "dynamic": {"interval": 1}, "cfg_cache": {"interval": 1}},
]


def generate(model) -> torch.Tensor:
    """One generation of ``STEPS`` calls, as a pipeline makes them (diffusers' caches need a ``cache_context``)."""
    registry = getattr(model, "_diffusers_hook", None)
    if registry is not None:
        registry.reset_stateful_hooks()
    outs = []
    for t in TIMESTEPS:
        CLOCK["t"] = t
        with model.cache_context("cond"):
            outs.append(model(**SPEC.inputs(1, t))[0])
    return torch.stack(outs)


CLOCK = {"t": 999.0}


def hook_cachelab(model):
    handle = cachelab.apply(model, NEVER_REUSE, num_steps=STEPS, cfg="off", count_macs=False)
    assert {s.key for s in handle.owned_sites} == HOOKED
    return handle


HOOKED = {
    "<denoiser>",
    "transformer_blocks.0",
    "transformer_blocks.1",
    "transformer_blocks.0.attn1",
    "transformer_blocks.1.attn1",
}


def counts(handle) -> tuple[int, int]:
    """(computed, reused) forward calls of the last generation, all sites together."""
    kinds = handle.stats().by_kind().values()
    return sum(k["computed"] for k in kinds), sum(k["reused"] for k in kinds)


def instance_forwards_are_clean(model) -> bool:
    """Every module calls its class's forward: no instance ``forward``, or the class's own bound method (diffusers
    leaves that behind when it removes its last hook)."""
    for m in model.modules():
        fn = m.__dict__.get("forward")
        if fn is not None and not (getattr(fn, "__self__", None) is m and fn.__func__ is type(m).forward):
            return False
        if "_old_forward" in m.__dict__:
            return False
    return True


def signatures(model) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(m.forward) for name, m in model.named_modules()}


# -- other libraries' hooks, each added and removed the way users do -------------------------------------------------
def _remove_diffusers_hooks(model, *names):
    from diffusers.hooks import HookRegistry

    registry = HookRegistry.check_if_exists_or_initialize(model)
    for name in names:
        registry.remove_hook(name, recurse=True)


def _round_weights(model, dtype):
    """Weights exactly representable in ``dtype``: casting to it and back is lossless."""
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(t.to(dtype).to(t.dtype))


class LayerwiseCasting:
    """diffusers cannot remove layerwise casting (its hook refuses ``deinitalize_hook``): only cachelab comes off."""

    removable = False
    skips = False

    def __init__(self, storage):
        self.storage = storage

    def prepare(self, model):
        _round_weights(model, self.storage)

    def add(self, model):
        model.enable_layerwise_casting(storage_dtype=self.storage, compute_dtype=torch.float32)


class GroupOffload:
    removable = True
    skips = False

    def prepare(self, model):
        pass

    def add(self, model):
        cpu = torch.device("cpu")
        model.enable_group_offload(
            onload_device=cpu, offload_device=cpu, offload_type="block_level", num_blocks_per_group=1
        )

    def remove(self, model):
        _remove_diffusers_hooks(model, "group_offloading", "layer_execution_tracker", "lazy_prefetch_group_offloading")


class DiffusersCache:
    removable = True
    skips = True  # skips whole blocks or attention calls above cachelab's hooks: those do not run then

    def __init__(self, make_config):
        self.make_config = make_config

    def prepare(self, model):
        pass

    def add(self, model):
        model.enable_cache(self.make_config())

    def remove(self, model):
        model.disable_cache()


def _fbc():
    from diffusers import FirstBlockCacheConfig

    return FirstBlockCacheConfig(threshold=0.5)


def _pab():
    from diffusers import PyramidAttentionBroadcastConfig

    return PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=2,
        spatial_attention_timestep_skip_range=(100, 800),
        current_timestep_callback=lambda: CLOCK["t"],
    )


OTHERS = {
    "layerwise_casting_fp8": LayerwiseCasting(torch.float8_e4m3fn),
    "layerwise_casting_bf16": LayerwiseCasting(torch.bfloat16),
    "group_offload": GroupOffload(),
    "first_block_cache": DiffusersCache(_fbc),
    "pyramid_attention_broadcast": DiffusersCache(_pab),
}


def _model(ext):
    model = SPEC.build()  # the same weights on every call
    ext.prepare(model)
    return model


STACKINGS = [
    (other, add_first, remove_first)
    for other, ext in OTHERS.items()
    for add_first in ("cachelab", "other")
    for remove_first in (("cachelab", "other") if ext.removable else ("cachelab",))
]


@pytest.mark.parametrize("other, add_first, remove_first", STACKINGS)
def test_stacks_with_diffusers_hooks(other, add_first, remove_first):
    ext = OTHERS[other]
    reference = generate(_model(ext))
    alone_model = _model(ext)
    ext.add(alone_model)
    alone = generate(alone_model)  # the other library's hooks alone
    alone_signatures = signatures(alone_model)

    model = _model(ext)
    before = signatures(model)
    if add_first == "cachelab":
        handle = hook_cachelab(model)
        ext.add(model)
    else:
        ext.add(model)
        handle = hook_cachelab(model)
    assert signatures(model) == alone_signatures == before
    assert torch.equal(generate(model), alone)  # cachelab never reusing adds nothing to the other hooks
    computed, reused = counts(handle)
    assert reused == 0 and (computed == len(HOOKED) * STEPS or ext.skips and 0 < computed < len(HOOKED) * STEPS)

    if remove_first == "cachelab":
        handle.remove()
        assert not any(hooks_of(m) for m in model.modules())
        assert torch.equal(generate(model), alone)
        if not ext.removable:
            return
        ext.remove(model)
    else:
        ext.remove(model)
        assert torch.equal(generate(model), reference)
        assert counts(handle) == (len(HOOKED) * STEPS, 0)  # every cachelab hook survived the removal
        handle.remove()
    assert torch.equal(generate(model), reference)
    assert signatures(model) == before
    assert instance_forwards_are_clean(model)
    assert not any(hooks_of(m) for m in model.modules())


def test_reusing_policy_still_reuses_beneath_diffusers_hooks():
    model = SPEC.build()
    ext = OTHERS["layerwise_casting_bf16"]
    ext.prepare(model)
    ext.add(model)
    with cachelab.apply(model, "vanilla", interval=2, num_steps=STEPS, cfg="off", count_macs=False) as handle:
        generate(model)
        assert counts(handle)[1] > 0
    assert not any(hooks_of(m) for m in model.modules())


# -- signatures -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["cogvideox", "wan", "flux"])
def test_hooked_forwards_keep_their_signatures(kind):
    model = TINY_TRANSFORMERS[kind].build()
    before = signatures(model)
    with cachelab.apply(model, "pab", cfg="off") as handle:
        hooked = {s.module for s in handle.owned_sites} | {model}
        assert all(hooks_of(m) for m in hooked)
        assert signatures(model) == before
    assert signatures(model) == before


def test_scheduler_keeps_its_signature_and_pipelines_can_pass_sigmas():
    from diffusers.pipelines.flux.pipeline_flux import retrieve_timesteps

    pipe = tiny_pipeline("wan")
    scheduler = pipe.scheduler
    before = inspect.signature(scheduler.set_timesteps)
    assert "sigmas" in before.parameters
    handle = cachelab.apply(pipe, "vanilla", interval=2)
    assert inspect.signature(scheduler.set_timesteps) == before
    sigmas = [1.0, 0.75, 0.5, 0.25]
    timesteps, steps = retrieve_timesteps(scheduler, sigmas=sigmas)
    assert steps == 4
    assert handle.tracker.num_steps == 4  # the wrapper saw the new schedule
    handle.remove()
    assert "set_timesteps" not in scheduler.__dict__


# -- chains of cachelab hooks and foreign wrappers ---------------------------------------------------------------------
class Add(ModuleHook):
    def __init__(self, value):
        self.value = value

    def new_forward(self, module, original, args, kwargs):
        return original(*args, **kwargs) + self.value


class Scale(ModuleHook):
    def new_forward(self, module, original, args, kwargs):
        return original(*args, **kwargs) * 10


def test_two_cachelab_hooks_chain_on_one_module_and_detach_in_any_order():
    lin = torch.nn.Linear(2, 2)
    x = torch.randn(3, 2)
    y = lin(x)
    attach(lin, Add(1.0), "add")
    attach(lin, Scale(), "scale")  # attached later: outermost
    assert torch.allclose(lin(x), (y + 1) * 10)
    assert list(hooks_of(lin)) == ["add", "scale"] and isinstance(hook_of(lin), Scale)
    with pytest.raises(ValueError, match="already has a cachelab hook named 'add'"):
        attach(lin, Add(2.0), "add")
    assert inspect.signature(lin.forward) == inspect.signature(torch.nn.Linear(2, 2).forward)
    detach(lin, "add")  # from the inside of the chain
    assert torch.allclose(lin(x), y * 10)
    detach(lin, "scale")
    assert "forward" not in lin.__dict__ and not hooks_of(lin)
    assert torch.equal(lin(x), y)


def test_diffusers_hooks_around_a_cachelab_chain_removed_from_the_middle():
    from diffusers.hooks import HookRegistry, ModelHook

    class Post(ModelHook):
        def __init__(self, value):
            super().__init__()
            self.value = value

        def post_forward(self, module, output):
            return output - self.value

    lin = torch.nn.Linear(2, 2)
    x = torch.randn(3, 2)
    y = lin(x)
    registry = HookRegistry.check_if_exists_or_initialize(lin)
    registry.register_hook(Post(1.0), "a")
    attach(lin, Add(100.0), "add")  # beneath "a": runs on the module's own output
    registry.register_hook(Post(2.0), "b")
    attach(lin, Scale(), "scale")  # outermost of cachelab's chain, still beneath "a" and "b"
    assert torch.allclose(lin(x), (y + 100) * 10 - 3)
    registry.remove_hook("a")
    assert torch.allclose(lin(x), (y + 100) * 10 - 2)
    detach(lin, "add")
    assert torch.allclose(lin(x), y * 10 - 2)
    registry.remove_hook("b")
    assert torch.allclose(lin(x), y * 10)
    detach(lin, "scale")
    assert "forward" not in lin.__dict__
    assert torch.equal(lin(x), y)


@pytest.mark.parametrize("remove_first", ["cachelab", "accelerate"])
@pytest.mark.parametrize("add_first", ["cachelab", "accelerate"])
def test_stacks_with_accelerate_hooks(add_first, remove_first):
    from accelerate.hooks import ModelHook, add_hook_to_module, remove_hook_from_module

    class Double(ModelHook):
        def post_forward(self, module, output):
            return output * 2

    lin = torch.nn.Linear(2, 2)
    x = torch.randn(3, 2)
    y = lin(x)
    before = inspect.signature(lin.forward)
    if add_first == "cachelab":
        attach(lin, Add(1.0))
        add_hook_to_module(lin, Double())
    else:
        add_hook_to_module(lin, Double())
        attach(lin, Add(1.0))
    assert torch.allclose(lin(x), (y + 1) * 2)  # cachelab beneath accelerate, whatever the order
    assert inspect.signature(lin.forward) == before
    if remove_first == "cachelab":
        detach(lin)
        assert torch.allclose(lin(x), y * 2)
        remove_hook_from_module(lin)
    else:
        remove_hook_from_module(lin)
        assert torch.allclose(lin(x), y + 1)
        detach(lin)
    assert instance_forwards_are_clean(lin)  # accelerate, removed last, leaves the bound method on the instance
    assert torch.equal(lin(x), y)


def test_detach_is_all_or_nothing():
    model = SPEC.build()
    reference = generate(model)
    handle = cachelab.apply(model, "vanilla", interval=2, num_steps=STEPS, cfg="off", count_macs=False)
    cached = generate(model)
    block = model.transformer_blocks[0].attn1
    hooked = block.forward

    def foreign(*args, **kwargs):  # a plain wrapper cachelab cannot see into
        return hooked(*args, **kwargs)

    block.forward = foreign
    expected = "Attention .*transformer_blocks.0.attn1.*foreign.*remove that wrapper first"
    with pytest.raises(cachelab.HookStackError, match=expected):
        handle.remove()
    assert handle.active
    assert all(hooks_of(s.module) for s in handle.owned_sites) and hooks_of(model)
    assert torch.equal(generate(model), cached)  # everything still hooked and working
    block.forward = hooked
    handle.remove()
    assert torch.equal(generate(model), reference)
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_detach_all_checks_every_module_first():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    attach(a, Add(1.0))
    attach(b, Add(1.0))
    wrapped = b.forward
    b.forward = lambda *args, **kwargs: wrapped(*args, **kwargs)
    with pytest.raises(cachelab.HookStackError, match="nothing was detached"):
        detach_all([(a, "cachelab"), (b, "cachelab")])
    assert hooks_of(a) and hooks_of(b)
    b.forward = wrapped
    detach_all([(a, "cachelab"), (b, "cachelab")])
    assert not hooks_of(a) and "forward" not in a.__dict__ and "forward" not in b.__dict__
