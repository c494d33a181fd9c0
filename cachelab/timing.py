"""Wall-clock timing of device work: synchronise before and after, so queued kernels are counted."""

from __future__ import annotations

import platform
import time
from typing import Callable, TypeVar

import torch

T = TypeVar("T")

#: steps of the short generation run before a timed one: allocations, kernels, compiled graphs and the runtime's
#: one-off MAC profiling then happen outside the timing
WARMUP_STEPS = 2


def warmup_steps(steps: int, handle=None) -> int:
    """Steps of the warm-up before a timed generation of ``steps``: a few, or all of them when a policy of the
    attached ``handle`` is calibrated for one step count (``Policy.steps_bound``) and refuses others."""
    if handle is not None and any(p.steps_bound for p in handle.policy.policies):
        return steps
    return min(WARMUP_STEPS, steps)


def timed(fn: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """``(fn(), seconds)``; on CUDA the device is synchronised around the call."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - start


def device_model(device: torch.device) -> str:
    """The kind of hardware ``device`` is (``NVIDIA H200``; the CPU's model name): timings and outputs made on one
    model compare with each other, not with another's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return platform.processor() or platform.machine() or "cpu"
    return device.type
