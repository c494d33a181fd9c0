"""Stored values outlive CUDA graphs: while CUDA graphs run on a device, every tensor a policy keeps is copied into
storage of its own at the end of the denoiser call, since the next replay of a denoiser compiled with
``mode="reduce-overhead"`` overwrites its outputs. CUDA graphs need a GPU (the benchmark's ``whole-cudagraphs``
mode runs them); here the check that says whether they are in use is forced on, on the CPU."""

from collections import namedtuple

import pytest
import torch

import cachelab
from cachelab.hooks import graph_memory
from cachelab.hooks.graph_memory import StorageOwner
from cachelab.hooks.history import tree_leaves
from tiny_transformers import TINY_TRANSFORMERS

STEPS = 6
TIMESTEPS = torch.linspace(950, 50, STEPS).tolist()
EVERYWHERE = {"window": [0, 1]}
POLICIES = {
    "pab": {"spatial_interval": 2, "joint_interval": 2, **EVERYWHERE},
    "fastercache": {"dynamic": {"interval": 2, **EVERYWHERE}, "cfg_cache": {"interval": 2, **EVERYWHERE}},
    "cfg_cache": {"interval": 2, **EVERYWHERE},
    "dbcache": {"fn": 1, "bn": 0, "warmup_steps": 1, "threshold": 10.0},
    "taylorseer": {"interval": 2, "warmup_steps": 1, "max_order": 2},
}


def force_cuda_graphs(patch) -> None:
    """Make the runtime believe CUDA graphs run on every device (``patch``: a monkeypatch or its context)."""
    patch.setattr(StorageOwner, "graphs_loaded", staticmethod(lambda: True))
    patch.setattr(graph_memory, "cuda_graphs_in_use", lambda device: True)


@pytest.fixture
def graphs_in_use(monkeypatch):
    force_cuda_graphs(monkeypatch)


def test_owner_copies_each_tensor_once_and_keeps_containers(graphs_in_use):
    Pair = namedtuple("Pair", "a b")
    x, y = torch.randn(3), torch.randn(2)
    inner = [x]
    tree = {"list": inner, "pair": Pair(y, 1), "shape": torch.Size([2, 3]), "n": 4}
    owner = StorageOwner()
    out = owner.own(tree)
    assert out is tree and tree["list"] is inner  # dicts and lists updated in place
    assert isinstance(tree["pair"], Pair) and tree["pair"].b == 1
    assert tree["shape"] == torch.Size([2, 3]) and tree["n"] == 4
    copied = [inner[0], tree["pair"].a]
    for new, old in zip(copied, (x, y)):
        assert torch.equal(new, old) and new.untyped_storage().data_ptr() != old.untyped_storage().data_ptr()
    owner.forget_devices()
    assert owner.own(tree) is tree and inner[0] is copied[0] and tree["pair"].a is copied[1]  # owned: not again


def test_owner_copies_nothing_without_cuda_graphs():
    x = torch.randn(3)
    tree = {"x": x, "t": (x,)}
    owner = StorageOwner()
    assert not StorageOwner.graphs_loaded() or not graph_memory.cuda_graphs_in_use(x.device)
    assert owner.own(tree)["x"] is x and tree["t"][0] is x


def cfg_calls(spec, cfg: str) -> list[dict]:
    """The denoiser calls of a generation with CFG: batched ``[uncond, cond]``, or diffusers' two-call style (the
    unconditional call, then the conditional one)."""
    calls = []
    for t in TIMESTEPS:
        kw = spec.inputs(2, t)
        kw["hidden_states"] = torch.cat([kw["hidden_states"][:1]] * 2)
        if cfg == "batched":
            calls.append(kw)
        else:
            calls += [{k: (v[half] if isinstance(v, torch.Tensor) and v.shape[:1] == (2,) else v) for k, v in kw.items()}
                      for half in (slice(0, 1), slice(1, 2))]
    return calls


def _storages(tensors) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in tensors}


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("cfg", ["batched", "two calls"])
def test_stored_tensors_get_their_own_storage_while_cuda_graphs_run(policy, cfg, monkeypatch):
    """Forced on, no stored tensor shares storage with what a module returned, and outputs are unchanged;
    forced off, some do (which is what CUDA graphs would overwrite), so the check can fail."""
    spec = TINY_TRANSFORMERS["cogvideox"]
    calls = cfg_calls(spec, cfg)
    results, shared = {}, {}
    for forced in (False, True):
        with monkeypatch.context() as m:
            if forced:
                force_cuda_graphs(m)
            model = spec.build()
            returned = []  # every tensor a module handed back, kept alive so no later one reuses its storage
            handles = [module.register_forward_hook(lambda mod, args, out: returned.extend(tree_leaves(out)))
                       for module in model.modules()]
            with cachelab.apply(model, policy, num_steps=STEPS, **POLICIES[policy]) as handle:
                outs, overlap = [], 0
                with torch.no_grad():
                    for kw in calls:
                        outs.append(model(**kw)[0])
                        # a reused value is a stored copy handed back again: only what modules computed counts
                        computed = [t for t in returned if not handle.runtime._storage_owner.owns(t)]
                        overlap += len(_storages(handle.runtime.stored_tensors()) & _storages(computed))
                assert handle.stats().computed_fraction < 1.0, policy
            for h in handles:
                h.remove()
            results[forced], shared[forced] = torch.stack(outs), overlap
    assert torch.equal(results[True], results[False])
    assert shared[True] == 0, f"{policy}: {shared[True]} stored tensors share storage with module outputs"
    if (policy, cfg) != ("cfg_cache", "batched"):  # there CFG-Cache keeps only a difference it computes itself
        assert shared[False] > 0, f"{policy}: the check cannot fail (nothing stored aliases an output)"


@pytest.mark.parametrize("policy", ["pab", "fastercache"])  # the policies whose sites decide at the entry
@pytest.mark.parametrize("cfg", ["batched", "two calls"])
def test_compiled_sites_read_reused_values_at_fixed_addresses_while_cuda_graphs_run(policy, cfg, monkeypatch):
    """Dynamo lifts a prepared reused value (a site hook's attribute) as a static input, and torch's CUDA-graph
    trees record the graph again whenever a static input comes at a new address. Forced on: each site reads its
    reused values at one address per shape, in every step and generation; outputs equal the eager cached model's;
    no stored tensor shares a fixed buffer. Forced off, the addresses move, so the check can fail."""
    import torch._dynamo as dynamo

    spec = TINY_TRANSFORMERS["cogvideox"]
    calls = cfg_calls(spec, cfg)
    reference = spec.build()
    with cachelab.apply(reference, policy, num_steps=STEPS, **POLICIES[policy]), torch.no_grad():
        eager = [torch.stack([reference(**kw)[0] for kw in calls]) for _ in range(2)]
    original = StorageOwner.at_fixed_address
    for forced in (True, False):
        addresses: dict[tuple, set[int]] = {}

        def recording(self, key, tree):
            out = original(self, key, tree)
            for index, leaf in enumerate(tree_leaves(out)):
                addresses.setdefault((key, index, tuple(leaf.shape)), set()).add(leaf.data_ptr())
            return out

        with monkeypatch.context() as m:
            if forced:
                force_cuda_graphs(m)
            m.setattr(StorageOwner, "at_fixed_address", recording)
            model = spec.build()
            with cachelab.apply(model, policy, num_steps=STEPS, **POLICIES[policy]) as handle, torch.no_grad():
                model.compile(backend="aot_eager")
                dynamo.reset()
                outs = [torch.stack([model(**kw)[0] for kw in calls]) for _ in range(3)]
                owner = handle.runtime._storage_owner
                assert not _storages(handle.runtime.stored_tensors()) & _storages(owner._fixed.values())
            assert not owner._fixed, "remove() keeps the fixed buffers alive"
            dynamo.reset()
        assert addresses, f"{policy}: no compiled site reused a prepared value"
        moved = {k: len(v) for k, v in addresses.items() if len(v) > 1}
        if forced:
            assert not moved, f"{policy}: reused values moved between calls: {moved}"
            for out, expected in zip(outs, eager + eager[1:]):
                assert torch.equal(out, expected)
        else:
            assert moved, f"{policy}: the addresses never move without the fix, so the check cannot fail"
