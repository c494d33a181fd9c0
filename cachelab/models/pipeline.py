"""Loading diffusers pipelines (local directories or hub ids) for cachelab."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from cachelab.errors import CachelabError


class LoadError(CachelabError, OSError):
    """A pipeline could not be loaded."""


def load_pipeline(
    name_or_path: str | os.PathLike,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    local_files_only: bool | None = None,
    **kwargs: Any,
):
    """``DiffusionPipeline.from_pretrained`` on a local directory or a hub id, moved to ``device``.

    A local directory never touches the network. For a hub id, ``local_files_only`` defaults to the
    ``HF_HUB_OFFLINE`` setting, so offline machines read the local cache and say so when the model is not there.
    """
    from diffusers import DiffusionPipeline

    path = Path(name_or_path)
    is_local = path.exists()
    if is_local and not (path / "model_index.json").is_file():
        raise LoadError(f"{str(path)!r} is a directory but not a diffusers pipeline (no model_index.json in it)")
    if local_files_only is None:
        local_files_only = is_local or os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    if dtype is not None:
        # diffusers 0.42 renamed torch_dtype to dtype
        kwargs["dtype" if _diffusers_at_least("0.42") else "torch_dtype"] = dtype
    try:
        pipe = DiffusionPipeline.from_pretrained(str(name_or_path), local_files_only=local_files_only, **kwargs)
    except (OSError, ValueError) as exc:
        where = "directory" if is_local else "hub id (no local copy found; this machine may be offline)"
        raise LoadError(f"cannot load a diffusers pipeline from {str(name_or_path)!r} as a {where}: {exc}") from exc
    if device is not None:
        pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _diffusers_at_least(version: str) -> bool:
    import diffusers
    from packaging.version import Version

    return Version(diffusers.__version__) >= Version(version)
