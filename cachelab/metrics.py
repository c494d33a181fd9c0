"""How close a cached video is to the uncached video of the same seed and prompt (PSNR, SSIM, LPIPS).

This is the comparison of FasterCache's Table 1: the reference is the video the same pipeline makes with no cache
policy, same prompt, same seed; the higher PSNR/SSIM and the lower LPIPS, the closer the cached video is to it.

Videos are torch tensors ``(B, F, 3, H, W)`` or ``(F, 3, H, W)`` (one video) with values in ``[0, 1]``.
Values that leave ``[0, 1]`` by at most ``RANGE_TOLERANCE`` are clamped; further out is an error (a ``[-1, 1]``
video must be mapped with ``(x + 1) / 2`` first).

Rules
-----
* **PSNR** (``psnr``): one number per video, from the mean squared error over *all* frames, channels and pixels of
  that video, with ``data_range = 1.0`` (torchmetrics' ``peak_signal_noise_ratio``). Identical videos have MSE 0 and
  PSNR ``+inf``; :func:`psnr` keeps the ``inf``. **Averages** (:func:`compare_videos`, :func:`summarize_psnr`) are
  the mean over the *finite* values only, reported together with the count of identical (``inf``) videos; when every
  video is identical the mean is ``None``. Nothing is capped.
  Note: some papers average per-frame PSNR instead; on videos of differing quality per frame the two differ.
* **SSIM** (``ssim``): torchmetrics' ``structural_similarity_index_measure`` per frame with ``data_range = 1.0`` and a
  gaussian window of ``kernel_size = 11``, ``sigma = 1.5`` (the window of Wang et al. 2004 and torchmetrics' default),
  then the mean over the frames of each video. An 11-pixel window fits 32x32 frames; frames smaller than the window
  are an error (pass a smaller odd ``kernel_size``, e.g. 7).
* **LPIPS** (``lpips``): torchmetrics' ``LearnedPerceptualImagePatchSimilarity`` (AlexNet backbone by default,
  ``normalize=True`` so it takes ``[0, 1]`` input) per frame, then the mean over the frames of each video. It needs
  torchvision *and* the backbone's ImageNet weights on local disk; nothing is ever downloaded. See
  :func:`lpips_available`: when it is unavailable, callers show "unavailable" and the reason, never a number.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import tempfile
from pathlib import Path

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from cachelab.errors import CachelabError, LayoutError

__all__ = [
    "RANGE_TOLERANCE",
    "SSIM_KERNEL_SIZE",
    "SSIM_SIGMA",
    "LPIPS_WEIGHTS_ENV",
    "LpipsUnavailableError",
    "psnr",
    "ssim",
    "lpips",
    "lpips_available",
    "summarize_psnr",
    "compare_videos",
    "format_comparison",
]

RANGE_TOLERANCE = 1e-3
SSIM_KERNEL_SIZE = 11
SSIM_SIGMA = 1.5

#: Environment variable naming the LPIPS backbone checkpoint: a ``.pth`` file (torchvision's ImageNet state dict of
#: the backbone) or a directory holding it under torchvision's file name (directly or in ``checkpoints/``).
LPIPS_WEIGHTS_ENV = "CACHELAB_LPIPS_WEIGHTS"

# LPIPS backbone -> (torchvision model name, torchvision weights enum, checkpoint file name torchvision caches it as,
# name shown in messages). The file name is read from torchvision when it is installed; this is the fallback.
_LPIPS_NETS = {
    "alex": ("alexnet", "AlexNet_Weights", "alexnet-owt-7be5be79.pth", "AlexNet"),
    "vgg": ("vgg16", "VGG16_Weights", "vgg16-397923af.pth", "VGG16"),
    "squeeze": ("squeezenet1_1", "SqueezeNet1_1_Weights", "squeezenet1_1-b8a52dc0.pth", "SqueezeNet 1.1"),
}
_LPIPS_FRAME_CHUNK = 64
_lpips_cache: dict[tuple[str, str], torch.nn.Module] = {}


class LpipsUnavailableError(CachelabError, RuntimeError):
    """LPIPS cannot run here (no torchvision or no local backbone weights); the message says why."""


# --------------------------------------------------------------------------------------------------- input checks


def _as_videos(x: torch.Tensor, name: str) -> torch.Tensor:
    """``(F,3,H,W)`` or ``(B,F,3,H,W)`` in [0, 1] -> float ``(B,F,3,H,W)``."""
    if not isinstance(x, torch.Tensor):
        raise LayoutError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 4:
        x = x.unsqueeze(0)
    if x.ndim != 5 or x.shape[2] != 3:
        raise LayoutError(
            f"{name}: expected shape (B, F, 3, H, W) or (F, 3, H, W) with 3 colour channels, got {tuple(x.shape)}"
        )
    if x.numel() == 0:
        raise LayoutError(f"{name}: empty video, shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise LayoutError(f"{name}: expected a floating point tensor with values in [0, 1], got dtype {x.dtype}")
    x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    if torch.isnan(x).any():
        raise LayoutError(f"{name}: contains NaN")
    lo, hi = float(x.min()), float(x.max())
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise LayoutError(
            f"{name}: values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]; "
            "map a [-1, 1] video with (x + 1) / 2, or clamp with x.clamp(0, 1)"
        )
    return x.clamp(0.0, 1.0)


def _pair(x: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x, ref = _as_videos(x, "x"), _as_videos(ref, "ref")
    if x.shape != ref.shape:
        raise LayoutError(f"x and ref must have the same shape, got {tuple(x.shape)} and {tuple(ref.shape)}")
    dtype = torch.promote_types(x.dtype, ref.dtype)
    return x.to(dtype), ref.to(device=x.device, dtype=dtype)


# ------------------------------------------------------------------------------------------------------- PSNR, SSIM


def psnr(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each video of ``x`` against ``ref`` over all its frames and pixels (data range 1.0): shape (B,).

    Identical videos give ``+inf`` (kept; see :func:`summarize_psnr` for how averages treat it).
    """
    x, ref = _pair(x, ref)
    # float64 so that tiny errors do not round to an MSE of 0 (a false inf)
    return peak_signal_noise_ratio(
        x.double(), ref.double(), data_range=1.0, reduction="none", dim=(1, 2, 3, 4)
    ).to(torch.float32)


def ssim(
    x: torch.Tensor, ref: torch.Tensor, kernel_size: int = SSIM_KERNEL_SIZE, sigma: float = SSIM_SIGMA
) -> torch.Tensor:
    """Mean over frames of per-frame SSIM (gaussian window ``kernel_size``/``sigma``, data range 1.0): shape (B,)."""
    x, ref = _pair(x, ref)
    b, f, c, h, w = x.shape
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    if min(h, w) < kernel_size:
        raise LayoutError(
            f"frames of {h}x{w} are smaller than the SSIM window kernel_size={kernel_size}; "
            f"pass an odd kernel_size <= {min(h, w)}"
        )
    per_frame = structural_similarity_index_measure(
        x.reshape(b * f, c, h, w),
        ref.reshape(b * f, c, h, w),
        gaussian_kernel=True,
        sigma=sigma,
        kernel_size=kernel_size,
        data_range=1.0,
        reduction="none",
    )
    return per_frame.reshape(b, f).mean(dim=1).to(torch.float32)


def summarize_psnr(values) -> tuple[float | None, int]:
    """``(mean over finite values or None if there are none, number of +inf values = identical videos)``."""
    vals = [float(v) for v in (values.tolist() if isinstance(values, torch.Tensor) else values)]
    finite = [v for v in vals if math.isfinite(v)]
    identical = sum(1 for v in vals if v == math.inf)
    return (sum(finite) / len(finite) if finite else None), identical


# ------------------------------------------------------------------------------------------------------------ LPIPS


def _torchvision_installed() -> bool:
    return importlib.util.find_spec("torchvision") is not None


def _checkpoint_name(net: str) -> str:
    """The file name torchvision caches the backbone's ImageNet weights as (read from torchvision when possible)."""
    tv_name, enum_name, fallback, _ = _LPIPS_NETS[net]
    try:
        import torchvision.models as tvm

        return os.path.basename(getattr(tvm, enum_name).DEFAULT.url.split("?")[0])
    except Exception:  # torchvision missing or changed: torchvision's historic file name
        return fallback


def _lpips_linear_weights(net: str) -> Path | None:
    """The LPIPS linear-layer weights that ship inside torchmetrics (``lpips_models/<net>.pth``)."""
    spec = importlib.util.find_spec("torchmetrics")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "functional" / "image" / "lpips_models" / f"{net}.pth"


def _find_backbone(net: str) -> tuple[Path | None, str]:
    """``(checkpoint path, "")`` or ``(None, why not)``; looks only at local files."""
    name, label = _checkpoint_name(net), _LPIPS_NETS[net][3]
    env = os.environ.get(LPIPS_WEIGHTS_ENV, "").strip()
    if env:
        given = Path(env).expanduser()
        if given.is_file():
            return given, ""
        if given.is_dir():
            for cand in (given / name, given / "checkpoints" / name):
                if cand.is_file():
                    return cand, ""
            return None, f"{label} weights not found: {LPIPS_WEIGHTS_ENV}={env} is a directory without {name}"
        return None, f"{label} weights not found at {given} ({LPIPS_WEIGHTS_ENV}={env})"
    cand = Path(torch.hub.get_dir()) / "checkpoints" / name
    if cand.is_file():
        return cand, ""
    return None, (
        f"{label} weights not found at {cand} (torch hub cache); copy torchvision's {name} there "
        f"or set {LPIPS_WEIGHTS_ENV} to its path"
    )


def lpips_available(net: str = "alex") -> tuple[bool, str]:
    """``(True, where the weights are)`` when LPIPS can run offline, else ``(False, why not)``. Touches no network."""
    if net not in _LPIPS_NETS:
        raise ValueError(f"net must be one of {sorted(_LPIPS_NETS)}, got {net!r}")
    if not _torchvision_installed():
        return False, "torchvision not installed (LPIPS takes its backbone from torchvision)"
    linear = _lpips_linear_weights(net)
    if linear is None or not linear.is_file():
        return False, f"LPIPS linear-layer weights not found at {linear} (they ship with torchmetrics)"
    path, why = _find_backbone(net)
    if path is None:
        return False, why
    return True, f"{_LPIPS_NETS[net][3]} weights at {path}"


@contextlib.contextmanager
def _offline_hub(checkpoint: Path, net: str):
    """Make torchvision find ``checkpoint`` in the torch hub cache and forbid any download meanwhile."""
    name = _checkpoint_name(net)
    old_dir = torch.hub.get_dir()
    old_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    old_download = torch.hub.download_url_to_file

    def _no_download(url, dst, *args, **kwargs):
        raise LpipsUnavailableError(f"LPIPS would have downloaded {url}; cachelab never downloads weights")

    with tempfile.TemporaryDirectory(prefix="cachelab-lpips-") as tmp:
        try:
            os.environ.update({k: "1" for k in old_env})
            torch.hub.download_url_to_file = _no_download
            if checkpoint != Path(old_dir) / "checkpoints" / name:
                # stage the given file under the name torchvision looks for, in a private hub directory
                (Path(tmp) / "checkpoints").mkdir()
                (Path(tmp) / "checkpoints" / name).symlink_to(checkpoint.resolve())
                torch.hub.set_dir(tmp)
            yield
        finally:
            torch.hub.download_url_to_file = old_download
            torch.hub.set_dir(old_dir)
            for k, v in old_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _lpips_metric(net: str) -> torch.nn.Module:
    ok, why = lpips_available(net)
    if not ok:
        raise LpipsUnavailableError(f"LPIPS unavailable: {why}")
    checkpoint, _ = _find_backbone(net)
    key = (net, str(checkpoint))
    if key not in _lpips_cache:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        with _offline_hub(checkpoint, net):
            metric = LearnedPerceptualImagePatchSimilarity(net_type=net, reduction="mean", normalize=True)
        _lpips_cache[key] = metric.eval()
    return _lpips_cache[key]


@torch.no_grad()
def lpips(x: torch.Tensor, ref: torch.Tensor, net: str = "alex") -> torch.Tensor:
    """Mean over frames of per-frame LPIPS (lower is closer): shape (B,).

    Raises :class:`LpipsUnavailableError` (with the reason) when :func:`lpips_available` says no.
    """
    x, ref = _pair(x, ref)
    metric = _lpips_metric(net).to(x.device)
    out = []
    for video, reference in zip(x, ref):
        total, count = 0.0, 0
        for start in range(0, video.shape[0], _LPIPS_FRAME_CHUNK):
            a, b = video[start : start + _LPIPS_FRAME_CHUNK], reference[start : start + _LPIPS_FRAME_CHUNK]
            metric.reset()
            metric.update(a.float(), b.float())
            total += float(metric.compute()) * a.shape[0]
            count += a.shape[0]
        out.append(total / count)
    return torch.tensor(out, dtype=torch.float32)


# ---------------------------------------------------------------------------------------------------------- summary


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def compare_videos(
    x: torch.Tensor,
    ref: torch.Tensor,
    *,
    with_lpips: bool = True,
    lpips_net: str = "alex",
    ssim_kernel_size: int = SSIM_KERNEL_SIZE,
) -> dict:
    """PSNR, SSIM and (when available) LPIPS of each cached video against its uncached reference, and their means.

    Returns a dict::

        num_videos      int
        psnr            [float] per video, inf for identical videos
        psnr_mean       mean over the finite PSNRs, None when every video is identical
        psnr_identical  how many videos are identical (PSNR inf), left out of psnr_mean
        ssim            [float] per video;  ssim_mean  float
        lpips           [float] per video, or None when LPIPS is unavailable (never a made-up number)
        lpips_mean      float or None
        lpips_reason    None when LPIPS ran, else why it did not (e.g. "torchvision not installed ...")
    """
    x, ref = _pair(x, ref)
    p = psnr(x, ref).tolist()
    smallest = min(x.shape[-2:])
    if smallest < ssim_kernel_size:  # tiny frames (test models): the largest odd window that fits
        ssim_kernel_size = smallest if smallest % 2 else smallest - 1
    s = ssim(x, ref, kernel_size=ssim_kernel_size).tolist()
    psnr_mean, identical = summarize_psnr(p)
    out = {
        "num_videos": len(p),
        "psnr": p,
        "psnr_mean": psnr_mean,
        "psnr_identical": identical,
        "ssim": s,
        "ssim_mean": _mean(s),
        "lpips": None,
        "lpips_mean": None,
        "lpips_reason": None,
    }
    if not with_lpips:
        out["lpips_reason"] = "not requested"
        return out
    ok, why = lpips_available(lpips_net)
    if not ok:
        out["lpips_reason"] = why
        return out
    try:
        values = lpips(x, ref, net=lpips_net).tolist()
    except LpipsUnavailableError as exc:
        out["lpips_reason"] = str(exc)
        return out
    out["lpips"], out["lpips_mean"] = values, _mean(values)
    return out


def format_comparison(result: dict) -> str:
    """One line for logs, e.g. ``PSNR 31.20 dB (1 identical, excluded) | SSIM 0.9402 | LPIPS unavailable: ...``."""
    if result["psnr_mean"] is None:
        p = f"PSNR inf (all {result['psnr_identical']} identical)"
    else:
        p = f"PSNR {result['psnr_mean']:.2f} dB"
        if result["psnr_identical"]:
            p += f" ({result['psnr_identical']} identical, excluded)"
    s = f"SSIM {result['ssim_mean']:.4f}"
    lp = (
        f"LPIPS {result['lpips_mean']:.4f}"
        if result["lpips_mean"] is not None
        else f"LPIPS unavailable: {result['lpips_reason']}"
    )
    return " | ".join((p, s, lp))
