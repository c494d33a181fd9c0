"""Where a benchmark's numbers come from: the commit and the device, written beside every result."""

from __future__ import annotations

import os
import platform
import subprocess

import torch


def commit() -> str:
    """``$CACHELAB_COMMIT`` (a GPU machine gets the working tree without its .git) or ``git rev-parse HEAD``."""
    if os.environ.get("CACHELAB_COMMIT"):
        return os.environ["CACHELAB_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
