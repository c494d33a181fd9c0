"""Per-site storage of computed values, kept separately for each CFG branch.

A value is whatever a site returns (a tensor, or a tuple of tensors for blocks that update two streams), or
what a policy derived from it (a residual). Values computed by a batched ``[uncond, cond]`` call are stored once
and sliced per branch only when a later call needs a different mix of branches (e.g. the conditional half
alone on a step where CFG-Cache skips the unconditional branch).
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

import torch

Tree = Any


def tree_map(fn: Callable[[torch.Tensor], Any], tree: Tree) -> Tree:
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, tuple):
        return tuple(tree_map(fn, x) for x in tree)
    if isinstance(tree, list):
        return [tree_map(fn, x) for x in tree]
    if isinstance(tree, dict):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    return tree


def tree_map2(fn: Callable[[torch.Tensor, torch.Tensor], Any], a: Tree, b: Tree) -> Tree:
    """Apply ``fn`` leafwise to two trees of the same structure (non-tensor leaves are taken from ``a``)."""
    if isinstance(a, torch.Tensor):
        return fn(a, b)
    if isinstance(a, (tuple, list)):
        return type(a)(tree_map2(fn, x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return {k: tree_map2(fn, a[k], b[k]) for k in a}
    return a


def tree_leaves(tree: Tree) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, (tuple, list)):
        return [leaf for x in tree for leaf in tree_leaves(x)]
    if isinstance(tree, dict):
        return [leaf for x in tree.values() for leaf in tree_leaves(x)]
    return []


def tree_cat(trees: list[Tree]) -> Tree:
    first = trees[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(trees, dim=0)
    if isinstance(first, (tuple, list)):
        return type(first)(tree_cat([t[i] for t in trees]) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: tree_cat([t[k] for t in trees]) for k in first}
    return first


def branch_slice(tree: Tree, branches: tuple[str, ...], branch: str) -> Tree:
    """The part of a batched value that belongs to ``branch`` (branches are equal chunks of dim 0)."""
    if len(branches) == 1:
        return tree
    index = branches.index(branch)
    return tree_map(lambda x: x.chunk(len(branches), dim=0)[index], tree)


#: one clock for reads of stored values and for footprint samples, so "read after this sample" is a comparison
CLOCK = itertools.count()


class _Entry:
    __slots__ = ("value", "branches", "step", "reads")

    def __init__(self, value: Tree, branches: tuple[str, ...], step: int):
        self.value = value
        self.branches = branches
        self.step = step
        self.reads: dict[str, int] = {}  # branch -> CLOCK at its latest read


class History:
    """The ``depth`` latest values of one site, per CFG branch."""

    def __init__(self, depth: int):
        self.depth = depth
        self._by_branch: dict[str, list[_Entry]] = {}

    def push(self, value: Tree, branches: tuple[str, ...], step: int) -> None:
        entry = _Entry(value, branches, step)
        for branch in branches:
            entries = self._by_branch.setdefault(branch, [])
            entries.append(entry)
            if len(entries) > self.depth:
                self._compact(entries.pop(0))

    def _compact(self, entry: _Entry) -> None:
        """An entry one branch no longer reads: keep only the slices other branches still read, in their own
        storage, so a batched output is not kept alive whole for half of it."""
        remaining = tuple(b for b in entry.branches if any(e is entry for e in self._by_branch.get(b, ())))
        if remaining and remaining != entry.branches:
            parts = [branch_slice(entry.value, entry.branches, b) for b in remaining]
            entry.value = tree_map(torch.clone, parts[0]) if len(parts) == 1 else tree_cat(parts)
            entry.branches = remaining

    def available(self, branches: tuple[str, ...]) -> int:
        return min((len(self._by_branch.get(b, ())) for b in branches), default=0)

    def get(self, branches: tuple[str, ...], count: int) -> list[Tree]:
        """The ``count`` latest values for ``branches``, most recent first, batched in ``branches`` order."""
        values = []
        for i in range(1, count + 1):
            entries = [self._by_branch[b][-i] for b in branches]
            tick = next(CLOCK)
            for entry, branch in zip(entries, branches):
                entry.reads[branch] = tick
            first = entries[0]
            if first.branches == branches and all(e is first for e in entries):
                values.append(first.value)
            else:
                parts = [branch_slice(e.value, e.branches, b) for e, b in zip(entries, branches)]
                values.append(parts[0] if len(parts) == 1 else tree_cat(parts))
        return values

    def steps(self, branch: str) -> list[int]:
        return [e.step for e in self._by_branch.get(branch, ())]

    def clear(self) -> None:
        self._by_branch.clear()

    def _entries(self) -> list[_Entry]:
        """Every kept entry once, however many branches read it."""
        return list({id(e): e for entries in self._by_branch.values() for e in entries}.values())

    def replace_values(self, fn: Callable[[Tree], Tree]) -> None:
        """Replace every kept value by ``fn(value)``."""
        for e in self._entries():
            e.value = fn(e.value)

    def tensors(self) -> list[torch.Tensor]:
        return [leaf for e in self._entries() for leaf in tree_leaves(e.value)]

    def slices(self) -> list[tuple[dict[str, int], str, int]]:
        """Per kept branch slice: its entry's read record (live: later reads land in it), the branch, its bytes."""
        out = []
        for branch, entries in self._by_branch.items():
            for e in entries:
                out.append((e.reads, branch, sum(t.numel() * t.element_size() for t in tree_leaves(e.value)) // len(e.branches)))
        return out
