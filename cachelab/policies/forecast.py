"""Taylor forecasts of a feature from its full steps: what ``taylorseer`` forecasts per site, and what the
stack caches (``magcache``, ``teacache``) forecast for the stack residual with ``forecast_order`` > 0.

A value is a tensor or a tree of them (tuples, lists, dicts). The factors after a full step are ``[F, F', F'',
...]``, each order the divided difference of the order below between this full step and the previous one.
"""

from __future__ import annotations

import math

import torch

from cachelab.hooks.history import tree_leaves, tree_map2


def taylor_factors(output, previous: list | None, gap: int, max_order: int) -> list:
    """The Taylor factors after a full step: ``[F, F', F'', ...]`` from its output and the factors of the full
    step ``gap`` steps earlier (``previous``; None at the first). Each order is the difference of the order below
    over ``gap``, so the order grows by one per full step up to ``max_order``. A change of shape (tokens added or
    dropped between full steps) starts over at order 0, as diffusers does."""
    factors = [output]
    if previous is None or _shapes(previous[0]) != _shapes(output):
        return factors
    for order in range(min(max_order, len(previous))):
        factors.append(tree_map2(lambda new, old: (new - old) / gap, factors[order], previous[order]))
    return factors


def taylor_forecast(factors: list, offset: float):
    """``sum_i factors[i] * offset**i / i!``: the output ``offset`` steps after the full step of ``factors``."""
    out = factors[0]
    for order in range(1, len(factors)):
        coeff = offset**order / math.factorial(order)
        out = tree_map2(lambda acc, factor: acc + factor * coeff, out, factors[order])
    return out


def _shapes(tree) -> list[torch.Size]:
    return [leaf.shape for leaf in tree_leaves(tree)]
