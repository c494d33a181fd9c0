"""Stored values that outlive CUDA graphs.

A denoiser compiled with CUDA graphs (``torch.compile(mode="reduce-overhead")``) returns its outputs in memory
that the graphs' next replay overwrites: torch's CUDA-graph trees treat every call of the compiled denoiser as a
new iteration, and a tensor kept from the previous one raises "accessing tensor output of CUDAGraphs that has been
overwritten by a subsequent run" when read. A cache keeps exactly such tensors from one denoiser call for later
ones, so while CUDA graphs are in use on their device the runtime gives every newly stored tensor storage of its
own at the end of the denoiser call (one copy per stored tensor, once; tensors it already owns are not copied
again).

The other way round, a value a compiled region *reads* must stay where it was: dynamo lifts tensors it reaches
through a module's attributes (a site hook's prepared reused value) as static inputs, and torch's CUDA-graph trees
record the graph again whenever a static input comes at a new address, which costs about as much as running the
step eagerly. So while CUDA graphs are in use, a reused value handed to a compiled site is first copied into a
buffer kept for that site (one per leaf and shape): the same address at every reuse, one device copy each.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten
from torch.utils.weak import WeakIdKeyDictionary


def cuda_graphs_in_use(device: torch.device) -> bool:
    """Whether inductor's CUDA-graph trees have run on ``device`` in this thread.

    Reads torch's private tree manager (``torch._inductor.cudagraph_trees``), the only place that knows; if it
    is not loaded, nothing was compiled with CUDA graphs. Should its layout change, this says False and torch's
    own error about overwritten outputs stays the symptom."""
    trees = sys.modules.get("torch._inductor.cudagraph_trees")
    if trees is None or device.type != "cuda":
        return False
    try:
        index = device.index if device.index is not None else torch.cuda.current_device()
        return trees.get_manager(index, create_if_none_exists=False) is not None
    except Exception:  # a private API: a torch that moved it cannot be told apart from no CUDA graphs
        return False


class StorageOwner:
    """Replaces tensors in stored trees by copies it owns, where CUDA graphs would overwrite the originals."""

    def __init__(self):
        self._owned: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._in_use: dict[torch.device, bool] = {}
        self._fixed: dict[tuple, torch.Tensor] = {}  # see at_fixed_address

    def own(self, tree: Any) -> Any:
        """``tree`` with every tensor that may live in CUDA-graph memory replaced by an owned copy. Dicts and lists
        are updated in place and returned; a tuple is rebuilt only when one of its tensors was replaced."""
        if isinstance(tree, torch.Tensor):
            if not self._graphs_on(tree.device) or tree in self._owned:
                return tree
            copy = tree.clone()
            self._owned[copy] = True
            return copy
        if isinstance(tree, dict):
            for key, value in tree.items():
                tree[key] = self.own(value)
            return tree
        if isinstance(tree, list):
            tree[:] = [self.own(value) for value in tree]
            return tree
        if isinstance(tree, tuple):
            items = [self.own(value) for value in tree]
            if all(a is b for a, b in zip(items, tree)):
                return tree
            return type(tree)(*items) if hasattr(tree, "_fields") else type(tree)(items)
        return tree

    def at_fixed_address(self, key: Any, tree: Any) -> Any:
        """``tree`` with each tensor copied into a buffer kept for (``key``, its position, shape, dtype, device),
        where CUDA graphs run on its device; unchanged elsewhere. The buffers are overwritten by the next call with
        the same key, so the result is for reading within one denoiser call (a store copies it: it is not owned)."""
        if not self.graphs_loaded():
            return tree
        leaves, spec = tree_flatten(tree)
        out = []
        for index, leaf in enumerate(leaves):
            if isinstance(leaf, torch.Tensor) and self._graphs_on(leaf.device):
                slot = (key, index, tuple(leaf.shape), leaf.dtype, leaf.device)
                buffer = self._fixed.get(slot)
                if buffer is None or buffer.stride() != leaf.stride():
                    buffer = self._fixed[slot] = torch.empty_strided(leaf.shape, leaf.stride(), dtype=leaf.dtype,
                                                                     device=leaf.device)
                leaf = buffer.copy_(leaf)
            out.append(leaf)
        return tree_unflatten(out, spec)

    def release(self) -> None:
        """Free the fixed buffers (hooks removed: no compiled site reads them again)."""
        self._fixed.clear()

    def owns(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor`` is a copy this owner made (a reused value returned from a site is one)."""
        return tensor in self._owned

    @staticmethod
    def graphs_loaded() -> bool:
        """False when no CUDA graph can have run in this process (torch loads its tree manager lazily)."""
        return "torch._inductor.cudagraph_trees" in sys.modules

    def forget_devices(self) -> None:
        """Look again, at the next :meth:`own`, at which devices use CUDA graphs (once per denoiser call)."""
        self._in_use.clear()

    def _graphs_on(self, device: torch.device) -> bool:
        if device not in self._in_use:
            self._in_use[device] = cuda_graphs_in_use(device)
        return self._in_use[device]
