"""The model registry (``register_model`` / ``create_model`` / ``list_models``): one file per entry in ``entries/``.

An entry builds a :class:`VideoModel`: something that generates videos from prompts and seeds with a pipeline (or
pipeline-shaped loop) that :func:`cachelab.apply` can hook. Bench, run and search only talk to this interface.
"""

from __future__ import annotations

import fnmatch
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from cachelab.errors import CachelabError


class ModelError(CachelabError, ValueError):
    """Unknown model name or input a model cannot take."""


@dataclass
class VideoModel:
    """A generator of videos the framework can cache, measure and compare.

    Attributes:
        name: registry name.
        target: what ``cachelab.apply`` hooks: a diffusers pipeline or a pipeline-shaped loop.
        generate: ``(prompts, seeds, steps, guidance) -> (N, F, 3, H, W)`` in [0, 1] (for random-weight
            presets: the final latents scaled to [0, 1] per video; their values carry no meaning).
        trained: whether quality numbers mean anything (False for random-weight latency presets).
        steps, guidance: defaults for a generation.
        quick_steps: steps of a quick run on a CPU (``cachelab bench``'s CPU default): the fewest at which this
            model's own videos still read well.
        cfg: how the pipeline runs classifier-free guidance (``batched`` / ``sequential``), for ``apply``.
        prompts: default evaluation prompts (``prompts(k)`` gives ``k``).
        check_prompt: raises :class:`ModelError` for a prompt the model cannot take.
        prompt_following: ``(videos, prompts) -> {"colour": ..., ...}`` or None when the model has no such check.
        transformer: the denoiser (for diffusers' own cache hooks in comparisons).
        tensor_format: layout of the denoiser's output for diffusers' FasterCache (``BCFHW`` / ``BFCHW``).
        description: one line for listings and reports.
    """

    name: str
    target: Any
    generate: Callable[[Sequence[str], Sequence[int], int, float], torch.Tensor]
    trained: bool
    steps: int
    guidance: float
    cfg: str
    prompts: Callable[[int], list[str]]
    transformer: torch.nn.Module
    tensor_format: str
    description: str = ""
    check_prompt: Callable[[str], None] = lambda prompt: None
    prompt_following: Callable[[torch.Tensor, Sequence[str]], dict] | None = None
    limits: dict[str, Any] = field(default_factory=dict)
    quick_steps: int = 20


def latents_as_frames(latents: torch.Tensor, layout: str) -> torch.Tensor:
    """Random-weight models: the first three latent channels as (B, F, 3, H, W) in [0, 1] (a fixed sigmoid), so
    the same quality code runs on them; such numbers only show that outputs changed, never how good they are."""
    x = latents.float()
    if layout == "BCFHW":
        x = x.transpose(1, 2)
    return torch.sigmoid(x[:, :, :3])


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[..., VideoModel]
    description: str
    trained: bool


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, description: str, trained: bool):
    """Decorator for a function ``(device, dtype, **kwargs) -> VideoModel``."""

    def decorate(fn):
        if name in _MODELS and _MODELS[name].build.__qualname__ != fn.__qualname__:
            raise ValueError(f"model name {name!r} is already registered")
        _MODELS[name] = ModelEntry(name, fn, description, trained)
        return fn

    return decorate


def _load_entries() -> None:
    from cachelab.zoo import entries

    for module in pkgutil.iter_modules(entries.__path__):
        importlib.import_module(f"{entries.__name__}.{module.name}")


def list_models(pattern: str = "*") -> list[str]:
    _load_entries()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def model_entry(name: str) -> ModelEntry:
    _load_entries()
    if name not in _MODELS:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def create_model(name: str, device: str | torch.device | None = None, dtype: torch.dtype | None = None, **kwargs) -> VideoModel:
    """Build a registered model on ``device`` (default: CUDA when available, else CPU)."""
    entry = model_entry(name)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return entry.build(device=torch.device(device), dtype=dtype, **kwargs)
