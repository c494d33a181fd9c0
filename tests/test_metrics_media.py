"""Video quality metrics (PSNR, SSIM, LPIPS availability) and the media writers (GIF/MP4/PNG)."""

import math
import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from cachelab import media, metrics
from cachelab.errors import CachelabError
from cachelab.plan import Plan

F, H, W = 5, 32, 32


def _videos(b=2, f=F, h=H, w=W, seed=0):
    return torch.rand(b, f, 3, h, w, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------------------- metrics


def test_identical_videos_psnr_inf_ssim_one():
    x = _videos()
    p, s = metrics.psnr(x, x.clone()), metrics.ssim(x, x.clone())
    assert p.shape == (2,) and s.shape == (2,)
    assert torch.isinf(p).all() and (p > 0).all()
    assert torch.allclose(s, torch.ones(2), atol=1e-5)
    result = metrics.compare_videos(x, x.clone())
    assert result["psnr"] == [math.inf, math.inf]
    assert result["psnr_mean"] is None and result["psnr_identical"] == 2
    assert "PSNR inf (all 2 identical)" in metrics.format_comparison(result)


def test_known_mse_gives_known_psnr():
    ref = torch.full((2, F, 3, H, W), 0.5)
    x = ref.clone()
    x[0] += 0.1  # MSE 0.01 -> 20 dB
    signs = torch.where(torch.arange(H * W) % 2 == 0, 1.0, -1.0).reshape(H, W)
    x[1] += 0.01 * signs  # MSE 1e-4 -> 40 dB
    assert torch.allclose(metrics.psnr(x, ref), torch.tensor([20.0, 40.0]), atol=1e-3)


def test_psnr_mean_skips_identical_videos_and_counts_them():
    ref = torch.full((3, F, 3, H, W), 0.5)
    x = ref.clone()
    x[0] += 0.1  # 20 dB
    x[2] += 0.01  # 40 dB
    result = metrics.compare_videos(x, ref, with_lpips=False)
    assert result["psnr"][1] == math.inf
    assert result["psnr_identical"] == 1
    assert result["psnr_mean"] == pytest.approx(30.0, abs=1e-3)
    assert metrics.summarize_psnr([20.0, math.inf, 40.0]) == (30.0, 1)
    assert "(1 identical, excluded)" in metrics.format_comparison(result)


def test_ssim_decreases_with_noise():
    ref = _videos(b=1)
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(ref.shape, generator=gen)
    values = [float(metrics.ssim((ref + a * noise).clamp(0, 1), ref)[0]) for a in (0.0, 0.02, 0.1, 0.3)]
    assert values[0] == pytest.approx(1.0, abs=1e-5)
    assert all(a > b for a, b in zip(values, values[1:])), values


def test_single_video_and_dtypes():
    ref = _videos(b=1)[0]  # (F, 3, H, W)
    x = (ref + 0.05).clamp(0, 1)
    assert metrics.psnr(x, ref).shape == (1,)
    assert metrics.ssim(x, ref).shape == (1,)
    half = metrics.psnr(x.half(), ref.half())
    assert torch.isfinite(half).all()
    # a rounding overshoot is clamped, not an error
    assert metrics.psnr(x + 5e-4, ref).shape == (1,)


@pytest.mark.parametrize(
    "x, ref, pattern",
    [
        (torch.rand(2, F, 3, H, W), torch.rand(2, F, 3, H, 16), r"same shape"),
        (torch.rand(2, F, 4, H, W), torch.rand(2, F, 4, H, W), r"3 colour channels"),
        (torch.rand(3, H, W), torch.rand(3, H, W), r"\(B, F, 3, H, W\)"),
        (torch.rand(F, 3, H, W) * 2 - 1, torch.rand(F, 3, H, W), r"values must lie in \[0, 1\].*\(x \+ 1\) / 2"),
        (torch.randint(0, 255, (F, 3, H, W)), torch.rand(F, 3, H, W), r"floating point"),
    ],
)
def test_bad_inputs(x, ref, pattern):
    with pytest.raises(ValueError, match=pattern):
        metrics.psnr(x, ref)


def test_ssim_window_and_small_frames():
    assert metrics.SSIM_KERNEL_SIZE == 11  # documented choice; fits 32x32 frames
    small = torch.rand(1, 2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"smaller than the SSIM window kernel_size=11"):
        metrics.ssim(small, small)
    assert metrics.ssim(small, small, kernel_size=7) == pytest.approx(1.0, abs=1e-5)


def test_lpips_unavailable_says_why(monkeypatch):
    monkeypatch.setattr(metrics, "_torchvision_installed", lambda: False)
    ok, reason = metrics.lpips_available()
    assert not ok and reason.startswith("torchvision not installed")
    x = _videos(b=1)
    with pytest.raises(metrics.LpipsUnavailableError, match="torchvision not installed"):
        metrics.lpips(x, x)
    result = metrics.compare_videos(x, x)
    assert result["lpips"] is None and result["lpips_mean"] is None
    assert result["lpips_reason"] == reason
    assert "LPIPS unavailable: torchvision not installed" in metrics.format_comparison(result)


@pytest.mark.skipif(metrics._torchvision_installed(), reason="torchvision is installed here")
def test_lpips_unavailable_on_this_machine():
    assert metrics.lpips_available() == (False, "torchvision not installed (LPIPS takes its backbone from torchvision)")


def test_lpips_weight_lookup_is_local_only(monkeypatch, tmp_path):
    """With torchvision present, availability hangs on local weight files (checked, never downloaded)."""
    monkeypatch.setattr(metrics, "_torchvision_installed", lambda: True)
    monkeypatch.delenv(metrics.LPIPS_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    name = metrics._checkpoint_name("alex")
    ok, reason = metrics.lpips_available()
    assert not ok
    assert f"AlexNet weights not found at {tmp_path / 'torch' / 'hub' / 'checkpoints' / name}" in reason

    monkeypatch.setenv(metrics.LPIPS_WEIGHTS_ENV, str(tmp_path / "missing.pth"))
    ok, reason = metrics.lpips_available()
    assert not ok and str(tmp_path / "missing.pth") in reason and metrics.LPIPS_WEIGHTS_ENV in reason

    (tmp_path / "w").mkdir()
    (tmp_path / "w" / name).write_bytes(b"not really weights")
    monkeypatch.setenv(metrics.LPIPS_WEIGHTS_ENV, str(tmp_path / "w"))
    ok, reason = metrics.lpips_available()
    assert ok and str(tmp_path / "w" / name) in reason

    with pytest.raises(ValueError, match="net must be one of"):
        metrics.lpips_available("resnet")


def test_offline_hub_stages_weights_and_blocks_downloads(tmp_path):
    weights = tmp_path / "my-alexnet.pth"
    weights.write_bytes(b"x")
    before = torch.hub.get_dir()
    name = metrics._checkpoint_name("alex")
    with metrics._offline_hub(weights, "alex"):
        staged = Path(torch.hub.get_dir()) / "checkpoints" / name
        assert staged.resolve() == weights.resolve()
        assert os.environ["HF_HUB_OFFLINE"] == "1"
        with pytest.raises(metrics.LpipsUnavailableError, match="never downloads"):
            torch.hub.download_url_to_file("https://example.invalid/x.pth", str(tmp_path / "x.pth"))
    assert torch.hub.get_dir() == before
    assert torch.hub.download_url_to_file.__name__ == "download_url_to_file"


# ----------------------------------------------------------------------------------------------------------- media


def _read_video(path):
    path = Path(path)
    if path.suffix == ".mp4":
        return iio.imread(path, plugin="FFMPEG", index=None)
    return iio.imread(path, index=None)


needs_mp4 = pytest.mark.skipif(not media.mp4_available()[0], reason=f"mp4 unavailable: {media.mp4_available()[1]}")


def test_save_gif_auto_scale_and_native(tmp_path):
    video = _videos(b=1)[0]
    out = media.save_video(video, tmp_path / "sub" / "v.gif")  # missing directory is created
    frames = _read_video(out)
    assert out == tmp_path / "sub" / "v.gif"
    assert frames.shape == (F, 128, 128, 3)  # 32x32 -> short side >= 128
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary files left
    native = _read_video(media.save_video(video, tmp_path / "n.gif", scale=1))
    assert native.shape == (F, H, W, 3)


def test_save_gif_tiles_batch_side_by_side(tmp_path):
    frames = _read_video(media.save_video(_videos(b=3), tmp_path / "b.gif", fps=4, scale=1))
    assert frames.shape == (F, H, 3 * W + 2 * 2, 3)
    assert iio.immeta(tmp_path / "b.gif")["duration"] == 250


@needs_mp4
def test_save_mp4_even_sizes(tmp_path):
    frames = _read_video(media.save_video(_videos(b=1)[0], tmp_path / "v.mp4"))
    assert frames.shape == (F, 128, 128, 3)
    odd = _read_video(media.save_video(torch.rand(F, 3, 33, 31), tmp_path / "odd.mp4", scale=1))
    assert odd.shape == (F, 34, 32, 3)  # padded to even for yuv420p


@pytest.mark.parametrize("suffix", [".gif", pytest.param(".mp4", marks=needs_mp4)])
def test_side_by_side_labelled_grid(tmp_path, suffix):
    vids = {name: _videos(b=1, seed=i)[0] for i, name in enumerate(("uncached", "fastercache", "pab"))}
    frames = _read_video(media.side_by_side(vids, tmp_path / f"cmp{suffix}", scale=2))
    assert frames.shape[0] == F
    assert frames.shape[2] >= 3 * 2 * W and frames.shape[1] > 2 * H  # label strip above the tiles
    top = frames[0, :10].astype(int)
    assert (top < 128).any()  # some dark label pixels on the white strip


def test_sample_grid_png(tmp_path):
    out = media.sample_grid(_videos(b=2, f=8), ["a cat playing the piano", "a dog"], tmp_path / "grid.png", frames=4)
    img = iio.imread(out)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 300
    assert media._frame_indices(8, None) == [0, 4, 7]
    assert media._frame_indices(8, 3) == [0, 4, 7]
    assert media._frame_indices(8, [0, -1]) == [0, 7]
    with pytest.raises(ValueError, match="expected 2 labels"):
        media.sample_grid(_videos(b=2), ["only one"], tmp_path / "g.png")
    with pytest.raises(ValueError, match="index 9 is out of range"):
        media.sample_grid(_videos(b=2), ["a", "b"], tmp_path / "g.png", frames=[9])


def test_reuse_map_from_plan_dict_and_matrix(tmp_path):
    rows = {f"blocks.{i}.{k}": [bool((s + i) % 3) for s in range(12)] for i in range(3) for k in ("attn1", "attn2")}
    roles = {key: "spatial" if key.endswith("attn1") else "temporal" for key in rows}
    for out in (
        media.reuse_map(Plan(rows, roles), tmp_path / "plan.png", title="pab"),
        media.reuse_map(dict(rows), tmp_path / "dict.png", title="pab", roles=roles),
        media.reuse_map(torch.rand(6, 10) > 0.5, tmp_path / "matrix.png"),
        media.reuse_map([[1, 0, 1], [0, 1]], tmp_path / "ragged.png", roles=["a", "b"]),
    ):
        assert iio.imread(out).ndim == 3
    with pytest.raises(ValueError, match="nothing to draw"):
        media.reuse_map({}, tmp_path / "empty.png")


def test_pareto_front_and_plot(tmp_path):
    points = [
        {"cost": 1.0, "quality": 30.0, "label": "uncached"},
        {"cost": 0.5, "quality": 25.0, "label": "a"},
        {"cost": 0.7, "quality": 29.0, "label": "b", "highlight": True},
        {"cost": 0.8, "quality": 26.0, "label": "dominated"},
        {"cost": 0.4, "quality": 20.0},
        {"cost": 0.9, "quality": math.inf, "label": "identical"},
    ]
    assert media.pareto_front(points) == [4, 1, 2, 0]
    img = iio.imread(media.pareto_plot(points, tmp_path / "p.png", "latency (s)", "PSNR (dB)"))
    assert img.ndim == 3
    with pytest.raises(ValueError, match=r"points\[0\]: expected a dict with 'cost' and 'quality'"):
        media.pareto_plot([{"cost": 1}], tmp_path / "bad.png")


# ---------------------------------------------------------------------------------------------------- media errors


@pytest.mark.parametrize(
    "write, allowed",
    [
        (lambda p: media.save_video(torch.rand(2, 3, 8, 8), p), ".gif, .mp4"),
        (lambda p: media.side_by_side({"a": torch.rand(2, 3, 8, 8)}, p), ".gif, .mp4"),
        (lambda p: media.sample_grid(torch.rand(1, 2, 3, 8, 8), ["a"], p), ".png"),
        (lambda p: media.reuse_map({"s": [True, False]}, p), ".png"),
        (lambda p: media.pareto_plot([{"cost": 1, "quality": 2}], p), ".png"),
    ],
)
def test_bad_suffix_lists_allowed(tmp_path, write, allowed):
    with pytest.raises(ValueError, match=rf"unknown suffix '\.avi'; allowed: {allowed}"):
        write(tmp_path / "out.avi")
    assert not (tmp_path / "out.avi").exists()


def test_unwritable_paths_name_the_path(tmp_path):
    video = torch.rand(2, 3, 8, 8)
    (tmp_path / "dir.gif").mkdir()
    with pytest.raises(media.MediaPathError, match=r"cannot write '.*dir\.gif': it is a directory"):
        media.save_video(video, tmp_path / "dir.gif")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OSError, match=r"afile/sub/v\.gif'.*cannot create its directory"):
        media.save_video(video, tmp_path / "afile" / "sub" / "v.gif")
    assert issubclass(media.MediaPathError, CachelabError)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_no_permission_names_the_path(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(media.MediaPathError, match=r"no permission to write in .*ro'"):
            media.save_video(torch.rand(2, 3, 8, 8), ro / "v.gif")
    finally:
        ro.chmod(0o700)


def test_no_permission_reported_even_as_root(tmp_path, monkeypatch):
    monkeypatch.setattr(media.os, "access", lambda path, mode: False)
    with pytest.raises(media.MediaPathError, match=rf"cannot write '.*v\.png': no permission to write in '{tmp_path}'"):
        media.reuse_map({"s": [True, False]}, tmp_path / "v.png")


def test_bad_video_input(tmp_path):
    with pytest.raises(ValueError, match=r"expected shape \(F, 3, H, W\)"):
        media.save_video(torch.rand(3, 8, 8), tmp_path / "v.gif")
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        media.save_video(torch.rand(2, 3, 8, 8) * 2 - 1, tmp_path / "v.gif")
    with pytest.raises(ValueError, match="fps must be a positive number"):
        media.save_video(torch.rand(2, 3, 8, 8), tmp_path / "v.gif", fps=0)
    with pytest.raises(ValueError, match="scale must be a positive integer"):
        media.save_video(torch.rand(2, 3, 8, 8), tmp_path / "v.gif", scale=1.5)
    assert not (tmp_path / "v.gif").exists()
    np_video = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
    assert _read_video(media.save_video(np_video, tmp_path / "np.gif", scale=1)).shape == (2, 8, 8, 3)
