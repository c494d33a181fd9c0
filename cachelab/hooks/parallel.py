"""Context (sequence) parallelism: what the engine needs so that every rank of a diffusers context-parallel group
makes the same decisions.

diffusers (``model.enable_parallelism(config=ContextParallelConfig(...))``) splits the token sequence across the
ranks of a device mesh where the model's ``_cp_plan`` says (the denoiser's inputs for LTX-Video and Flux; the
first block's input and the RoPE table for Wan), runs attention as Ulysses (all-to-all) or Ring (all-gather), and
gathers the sequence again at the output projection. Blocks and attention modules therefore see the local shard
on each rank, and the denoiser's output is whole on every rank. Attention is a collective: a rank that skips a
block while another computes it waits forever, so every decision must be equal on every rank. Step-only
schedules are; a decision that reads data reads it through :meth:`ContextParallel.reduce_sum`, which adds the
local sums of every rank (the identity without parallelism).

The engine reads the group from the model (``model._parallel_config.context_parallel_config``, which diffusers
sets in ``enable_parallelism``), so it depends on nothing but torch here.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from cachelab.errors import ParallelError

#: diffusers' message when a split dimension is not a multiple of the mesh size (EquipartitionSharder.shard)
_INDIVISIBLE = "must be divisible by mesh size"


class ContextParallel:
    """The context-parallel group of a model: its process group, size, this rank, and the model's split plan."""

    def __init__(self, model: nn.Module, config) -> None:
        mesh = config._flattened_mesh
        self.model = model
        self.config = config
        self.group = mesh.get_group()
        self.world_size = int(mesh.size())
        self.rank = torch.distributed.get_rank(self.group)
        self.plan = getattr(model, "_cp_plan", None) or {}
        self.uneven = bool(config.ulysses_anything or config.ring_anything)

    def describe(self) -> str:
        kind = "Ulysses" if self.config.ulysses_degree > 1 else "Ring"
        if self.config.ulysses_degree > 1 and self.config.ring_degree > 1:
            kind = f"Ulysses x{self.config.ulysses_degree} + Ring x{self.config.ring_degree}"
        return f"{kind} context parallelism over {self.world_size} ranks"

    def reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` over the ranks (a new tensor; every rank gets the same bits)."""
        total = tensor.clone()
        torch.distributed.all_reduce(total, group=self.group)
        return total

    def input_split_dim(self, name: str, tensor: torch.Tensor) -> int | None:
        """The dimension along which diffusers split the model input ``name`` before the model's forward ran
        (``None`` when it did not: it is whole on every rank)."""
        entry = self.plan.get("", {}).get(name)
        if entry is None or getattr(entry, "split_output", False):
            return None
        if entry.expected_dims is not None and tensor.dim() != entry.expected_dims:
            return None  # diffusers leaves such an input whole
        return entry.split_dim

    def gather(self, tensor: torch.Tensor, dim: int) -> torch.Tensor:
        """The whole tensor from every rank's shard along ``dim`` (the inverse of diffusers' split)."""
        tensor = tensor.contiguous()
        if self.uneven:
            sizes = [torch.zeros(1, dtype=torch.int64, device=tensor.device) for _ in range(self.world_size)]
            mine = torch.tensor([tensor.shape[dim]], dtype=torch.int64, device=tensor.device)
            torch.distributed.all_gather(sizes, mine, group=self.group)
            shapes = [list(tensor.shape) for _ in sizes]
            for shape, size in zip(shapes, sizes):
                shape[dim] = int(size.item())
        else:
            shapes = [list(tensor.shape)] * self.world_size
        parts = [torch.empty(shape, dtype=tensor.dtype, device=tensor.device) for shape in shapes]
        torch.distributed.all_gather(parts, tensor, group=self.group)
        return torch.cat(parts, dim=dim)

    def explain(self, exc: BaseException) -> ParallelError | None:
        """diffusers' assertion on a sequence the world size does not divide, as a :class:`ParallelError` naming
        the module, the length and the world sizes that would work (``None`` for any other exception). diffusers
        splits before the first block runs (no attention, no collective has run yet) and every rank sees the same
        shapes, so every rank raises it at the same point, before any denoising work."""
        if not isinstance(exc, AssertionError) or _INDIVISIBLE not in str(exc):
            return None
        return ParallelError(self._indivisible(exc))

    def _indivisible(self, exc: AssertionError) -> str:
        tensor, dim, module = None, None, None
        tb = exc.__traceback__
        while tb is not None:  # the sharder's frame holds the tensor, the hook's frame the module it splits at
            local = tb.tb_frame.f_locals
            if isinstance(local.get("tensor"), torch.Tensor) and isinstance(local.get("dim"), int):
                tensor, dim = local["tensor"], local["dim"]
            if isinstance(local.get("module"), nn.Module):
                module = local["module"]
            tb = tb.tb_next
        where = next((name or "its input" for name, m in self.model.named_modules() if m is module), "a split point")
        if tensor is None:
            return (f"{type(self.model).__name__}: {self.describe()} needs every split sequence to be a multiple of "
                    f"{self.world_size}, and one at {where} is not; change the height, width or frame count")
        return self._message(tensor, dim, where)

    def _message(self, tensor: torch.Tensor, dim: int, where: str) -> str:
        length = tensor.shape[dim]
        sizes = [n for n in range(2, min(length, 64) + 1) if length % n == 0]
        return (
            f"{type(self.model).__name__}: {self.describe()} splits {length} tokens (dim {dim} of a "
            f"{tuple(tensor.shape)} tensor at {where}), which {self.world_size} does not divide. World sizes that "
            f"divide it: {', '.join(map(str, sizes)) or 'none'}; or change the height, width or frame count so "
            f"that {self.world_size} divides the sequence, or set ContextParallelConfig(ulysses_anything=True)."
        )

    def check_inputs(self, arguments: dict) -> None:
        """Raise :class:`ParallelError` before the model runs when diffusers would split one of its inputs
        (``arguments``: name -> value of the call) into unequal shards."""
        if self.uneven:
            return
        for name, value in arguments.items():
            if not isinstance(value, torch.Tensor):
                continue
            dim = self.input_split_dim(name, value)
            if dim is not None and value.shape[dim] % self.world_size:
                raise ParallelError(self._message(value, dim, f"the input {name!r}"))


def check_split_inputs(module: nn.Module, args: tuple, kwargs: dict) -> None:
    """A forward pre-hook for a denoiser: under context parallelism, refuse inputs that diffusers would split
    unevenly, before its own split (which runs before any hook beneath it) asserts without saying why."""
    parallel = context_parallel_of(module)
    if parallel is None or not parallel.plan.get(""):
        return
    arguments = dict(kwargs)
    try:
        names = list(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        names = []
    arguments.update({n: a for n, a in zip(names, args) if n not in arguments})
    parallel.check_inputs(arguments)


def context_parallel_of(model: nn.Module) -> ContextParallel | None:
    """The context-parallel group diffusers set up on ``model`` (``enable_parallelism``), or ``None``."""
    config = getattr(getattr(model, "_parallel_config", None), "context_parallel_config", None)
    if config is None or getattr(config, "_flattened_mesh", None) is None:
        return None
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return None
    return ContextParallel(model, config)
