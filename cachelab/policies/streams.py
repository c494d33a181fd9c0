"""Which input each output of a block updates, and the sample in a denoiser's output: shared by policies that
cache what a span of blocks, or the whole denoiser, adds.

A block returns one tensor (``hidden_states``) or a tuple of streams (``hidden_states``, ``encoder_hidden_states``
in joint-attention blocks, in an order that differs by architecture). Discovery records the order on
``site.outputs`` for the blocks it knows; other blocks are matched by shape.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from cachelab.errors import PolicyError


def block_input(policy: str, site, call, name: str, purpose: str = "") -> torch.Tensor:
    """The tensor input ``name`` of a block call (``hidden_states`` may be the first positional argument)."""
    value = call.argument(name)
    if value is None and name == "hidden_states" and call.args:
        value = call.args[0]
    if not isinstance(value, torch.Tensor):
        raise PolicyError(f"{policy}: block {site.key} has no tensor input {name!r}{purpose}")
    return value


def stream_names(policy: str, site, call, output) -> tuple[str, ...] | None:
    """The input each output of a block updates, in order (``""`` for an output that is None); None when the block
    returns one tensor."""
    if isinstance(output, torch.Tensor):
        return None
    return tuple(site.outputs) if site.outputs is not None else _match_by_shape(policy, site, call, output)


def inputs_like(site, call, like, policy: str = "policy"):
    """The block's inputs arranged like ``like`` (its output, or a value stored from one): for each output, the input
    it updates (None where the output is None). ``output - inputs_like(site, call, output)`` is what the block added,
    whether it takes keyword arguments or returns a tuple of streams."""
    names = stream_names(policy, site, call, like)
    if names is None:
        return block_input(policy, site, call, "hidden_states")
    return type(like)(block_input(policy, site, call, n) if n else None for n in names)


def _match_by_shape(policy: str, site, call, output) -> tuple[str, ...]:
    """Pair each output with the one input of the same shape (for blocks no adapter describes)."""
    names: list[str] = []
    for out in output:
        if out is None:
            names.append("")
            continue
        hits = [
            n
            for n in ("hidden_states", "encoder_hidden_states")
            if n not in names and isinstance(call.argument(n), torch.Tensor) and call.argument(n).shape == out.shape
        ]
        if len(hits) != 1:
            raise PolicyError(
                f"{policy}: cannot tell which input each output of {type(site.module).__name__} ({site.key}) "
                "updates; describe the block in cachelab.models.adapters (block_outputs)"
            )
        names.append(hits[0])
    return tuple(names)


def split_streams(output, names: tuple[str, ...] | None) -> dict:
    """A block's output as ``{input name: tensor}`` (``names`` from :func:`stream_names`)."""
    if names is None:
        return {"hidden_states": output}
    return {n: o for n, o in zip(names, output) if n}


def rebuild_streams(output, names: tuple[str, ...] | None, streams: dict):
    """``output``'s structure holding ``streams`` in place of the tensors they name."""
    if names is None:
        return streams["hidden_states"]
    return type(output)(streams[n] if n else o for n, o in zip(names, output))


def passthrough(policy: str, site, call, names: tuple[str, ...] | None):
    """A skipped block's value: its inputs, in its output structure."""
    if names is None:
        return block_input(policy, site, call, "hidden_states")
    return tuple(block_input(policy, site, call, n) if n else None for n in names)


def joined_at(site, call, first: torch.Tensor, previous: dict | None) -> str | None:
    """Where this block's ``hidden_states`` holds the image tokens ("first" or "last") if the model joined text and
    image tokens into one sequence just before it (Flux 2, Chroma, AuraFlow: ``[text, image]``; HiDream: ``[image,
    text]``), else None: it is longer than ``first`` (a block input before the join) and holds ``previous["hidden_states"]``
    (the previous block's output streams, this step) at one end. Found at a full step, where those values are exact."""
    x = call.argument("hidden_states")
    if x is None and call.args:
        x = call.args[0]
    image = (previous or {}).get("hidden_states")
    if not isinstance(x, torch.Tensor) or not isinstance(image, torch.Tensor) or site.folded or x.ndim != 3:
        return None
    n = first.shape[1]
    if x.shape[0] != first.shape[0] or x.shape[2] != first.shape[2] or x.shape[1] <= n or image.shape != first.shape:
        return None
    if torch.equal(x[:, -n:], image):
        return "last"
    if torch.equal(x[:, :n], image):
        return "first"
    return None


class JoinFinder:
    """Where each denoiser's stack joins text and image tokens (:func:`joined_at`), found at its first full step:
    before each block runs, :meth:`check` compares its input with the previous block's outputs (kept by
    :meth:`ran` in the step's ``state``), and :meth:`done`, after the last block, records what was found."""

    def __init__(self):
        self.found: dict[str, str | None] = {}  # per denoiser: "first", "last", or None (no join)

    def searching(self, denoiser: str) -> bool:
        return denoiser not in self.found

    def check(self, site, call, first: torch.Tensor, state: dict) -> None:
        if site.denoiser not in self.found and state.get("joined") is None:
            state["joined"] = joined_at(site, call, first, state.get("previous"))

    def ran(self, site, streams: dict, state: dict) -> None:
        if site.denoiser not in self.found:
            state["previous"] = streams

    def done(self, denoiser: str, state: dict) -> str | None:
        if denoiser not in self.found:
            self.found[denoiser] = state.pop("joined", None)
            state.pop("previous", None)
        return self.found[denoiser]

    def get(self, denoiser: str) -> str | None:
        return self.found.get(denoiser)


def image_tokens(x: torch.Tensor, joined: str, n: int) -> torch.Tensor:
    """The ``n`` image tokens of a joined sequence (see :func:`joined_at`)."""
    return x[:, -n:] if joined == "last" else x[:, :n]


def text_tokens(x: torch.Tensor, joined: str, n: int) -> torch.Tensor:
    """The tokens of a joined sequence other than its ``n`` image tokens."""
    return x[:, :-n] if joined == "last" else x[:, n:]


def mean_abs(runtime, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """``mean|t|`` of each tensor as 0-d tensors, over the whole sequence under context parallelism: the sums and
    element counts of every rank are added in one all-reduce, which gives the mean of a sharded tensor and leaves
    one that is whole on every rank unchanged, and gives every rank the same values (so the same decisions).
    Without a context-parallel group, exactly ``t.abs().mean()``."""
    if runtime.parallel is None:
        return [t.abs().mean() for t in tensors]
    sums = [t.abs().sum(dtype=torch.float32) for t in tensors]
    counts = [torch.tensor(float(t.numel()), device=t.device) for t in tensors]
    totals = runtime.reduce_sum(torch.stack(sums + counts))
    n = len(tensors)
    return [(totals[i] / totals[n + i]).to(t.dtype) for i, t in enumerate(tensors)]


def sample_of(policy: str, output: Any) -> torch.Tensor:
    """The predicted sample in a denoiser's output (a tensor, a tuple led by it, or an output with ``.sample``)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    sample = getattr(output, "sample", None)
    if isinstance(sample, torch.Tensor):
        return sample
    raise PolicyError(
        f"{policy}: cannot find the predicted sample in a denoiser output of type {type(output).__name__}"
    )


def single_sample(policy: str, output: Any, what: str) -> Any:
    """``output``, after checking that it holds one tensor: a denoiser that predicts several samples at once (joint
    video and audio latents: LTX-2) would get ``what`` for its first one only and stale values for the others."""
    if isinstance(output, (tuple, list)):
        values = list(output)
    elif dataclasses.is_dataclass(output) and not isinstance(output, type):
        values = [getattr(output, f.name) for f in dataclasses.fields(output)]
    else:
        return output
    shapes = [tuple(v.shape) for v in values if isinstance(v, torch.Tensor)]
    if len(shapes) > 1:
        raise PolicyError(
            f"{policy}: the denoiser returns {len(shapes)} samples (shapes {', '.join(map(str, shapes))}), and "
            f"{what} for the first one only"
        )
    return output


def with_sample(output: Any, sample: torch.Tensor) -> Any:
    """``output`` with its predicted sample replaced."""
    if isinstance(output, torch.Tensor):
        return sample
    if isinstance(output, (tuple, list)):
        return type(output)([sample, *output[1:]])
    return dataclasses.replace(output, sample=sample)
