"""Write videos and figures: GIF/MP4 clips, labelled side-by-side comparisons, frame grids, reuse maps, Pareto plots.

Videos are torch tensors (or numpy arrays) ``(F, 3, H, W)`` or ``(B, F, 3, H, W)`` with values in ``[0, 1]``
(one-channel videos are shown as grey). Values outside ``[0, 1]`` by at most ``0.05`` are clamped; further out is
an error (map a ``[-1, 1]`` video with ``(x + 1) / 2``).

Every writer picks the format from the path's suffix, creates missing parent directories, writes to a temporary file
beside the target and renames it into place (no half-written files), and returns the written :class:`~pathlib.Path`.
A bad suffix raises :class:`MediaFormatError` (a ``ValueError``) listing the allowed suffixes; a path that cannot be
written raises :class:`MediaPathError` (an ``OSError``) naming the path and the reason.

* GIF goes through imageio's pillow plugin: 256 colours per frame, frame times in 1/100 s (8 fps -> 120 ms), and
  pillow merges *identical consecutive* frames into one longer frame (a reader may then count fewer frames).
* MP4 goes through imageio-ffmpeg (H.264, yuv420p); it needs the ffmpeg binary that the imageio-ffmpeg wheel ships
  (see :func:`mp4_available`). yuv420p needs even sizes, so frames are padded with black at the right/bottom.
* Figures (PNG) are drawn with matplotlib's Agg renderer through :class:`matplotlib.figure.Figure` (no pyplot state,
  no display needed).
"""

from __future__ import annotations

import math
import os
import textwrap
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from cachelab.errors import CachelabError

__all__ = [
    "VIDEO_SUFFIXES",
    "IMAGE_SUFFIXES",
    "MIN_SHORT_SIDE",
    "MediaError",
    "MediaFormatError",
    "MediaPathError",
    "atomic_write",
    "mp4_available",
    "save_video",
    "side_by_side",
    "sample_grid",
    "reuse_map",
    "pareto_front",
    "pareto_plot",
]

VIDEO_SUFFIXES = (".gif", ".mp4")
IMAGE_SUFFIXES = (".png",)
#: ``scale=None`` upscales (nearest neighbour) by the smallest integer that makes the short side at least this long.
MIN_SHORT_SIDE = 128
_RANGE_TOLERANCE = 0.05
_GAP = 2  # pixels between tiles
_BACKGROUND = 255  # white around tiles and labels
_COMPUTE_COLOR, _REUSE_COLOR, _MISSING_COLOR = "#2b6cb0", "#e2e8f0", "#a0a0a0"


class MediaError(CachelabError, ValueError):
    """A video, plan or point list that cannot be drawn (wrong shape, values, lengths)."""


class MediaFormatError(MediaError):
    """The path's suffix names no format this writer can write."""


class MediaPathError(CachelabError, OSError):
    """The output path cannot be written (directory path, directory that cannot be created, no permission)."""


# ----------------------------------------------------------------------------------------------------------- paths


def _prepare_path(path: str | os.PathLike, allowed: tuple[str, ...]) -> Path:
    """Check the suffix, that ``path`` is not a directory, and that its directory exists (created) and is writable."""
    p = Path(path).expanduser()
    if p.suffix.lower() not in allowed:
        raise MediaFormatError(
            f"cannot write {str(p)!r}: unknown suffix {p.suffix or '(none)'!r}; allowed: {', '.join(allowed)}"
        )
    if p.is_dir():
        raise MediaPathError(f"cannot write {str(p)!r}: it is a directory")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MediaPathError(
            f"cannot write {str(p)!r}: cannot create its directory {str(p.parent)!r} ({exc.strerror or exc})"
        ) from exc
    if not os.access(p.parent, os.W_OK | os.X_OK):
        raise MediaPathError(f"cannot write {str(p)!r}: no permission to write in {str(p.parent)!r}")
    return p


def check_writable(path: str | os.PathLike, allowed: tuple[str, ...] = VIDEO_SUFFIXES) -> Path:
    """Fail early (before any generation) if ``path`` cannot be written as one of ``allowed``."""
    return _prepare_path(path, allowed)


def atomic_write(p: Path, write: Callable[[str], None]) -> Path:
    """``write(tmp)`` to a temporary file next to ``p``, then rename it to ``p``."""
    tmp = p.with_name(f".{p.stem}.{uuid.uuid4().hex[:8]}.tmp{p.suffix}")
    try:
        write(str(tmp))
        os.replace(tmp, p)
    except OSError as exc:
        raise MediaPathError(f"cannot write {str(p)!r}: {exc.strerror or exc}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


# ---------------------------------------------------------------------------------------------------------- frames


def _to_numpy(x, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().to("cpu")
            return (x.float() if x.is_floating_point() else x).numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    if isinstance(x, np.ndarray):
        return x
    raise MediaError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")


def _to_uint8(video, name: str = "video") -> np.ndarray:
    """``(F,C,H,W)`` or ``(B,F,C,H,W)`` in [0, 1], C in {1, 3} -> uint8 ``(B, F, H, W, 3)``."""
    v = _to_numpy(video, name)
    if v.ndim == 4:
        v = v[None]
    if v.ndim != 5 or v.shape[2] not in (1, 3):
        raise MediaError(f"{name}: expected shape (F, 3, H, W) or (B, F, 3, H, W), got {tuple(v.shape)}")
    if v.size == 0:
        raise MediaError(f"{name}: empty video, shape {tuple(v.shape)}")
    if v.dtype == np.uint8:
        raise MediaError(f"{name}: expected floats in [0, 1], got uint8 (divide by 255)")
    v = v.astype(np.float32, copy=False)
    if not np.isfinite(v).all():
        raise MediaError(f"{name}: contains NaN or inf")
    lo, hi = float(v.min()), float(v.max())
    if lo < -_RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
        raise MediaError(
            f"{name}: values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]; map a [-1, 1] video with (x + 1) / 2"
        )
    v = np.rint(np.clip(v, 0.0, 1.0) * 255.0).astype(np.uint8)
    v = np.moveaxis(v, 2, -1)  # (B, F, H, W, C)
    if v.shape[-1] == 1:
        v = np.repeat(v, 3, axis=-1)
    return np.ascontiguousarray(v)


def _auto_scale(h: int, w: int) -> int:
    return max(1, math.ceil(MIN_SHORT_SIDE / max(1, min(h, w))))


def _check_scale(scale) -> None:
    if scale is not None and (not isinstance(scale, (int, np.integer)) or isinstance(scale, bool) or scale < 1):
        raise MediaError(f"scale must be a positive integer or None (auto), got {scale!r}")


def _upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of ``(..., H, W, 3)`` by an integer factor."""
    if scale == 1:
        return frames
    return np.repeat(np.repeat(frames, scale, axis=-3), scale, axis=-2)


def _hold_last(frames: np.ndarray, count: int) -> np.ndarray:
    """Pad ``(F, H, W, 3)`` to ``count`` frames by repeating its last frame."""
    if frames.shape[0] >= count:
        return frames
    return np.concatenate([frames, np.repeat(frames[-1:], count - frames.shape[0], axis=0)])


def _tile_row(videos: Sequence[np.ndarray], gap: int = _GAP) -> np.ndarray:
    """Videos ``(F_i, H_i, W_i, 3)`` side by side, top-aligned, white gaps; shorter videos hold their last frame."""
    f = max(v.shape[0] for v in videos)
    h = max(v.shape[1] for v in videos)
    w = sum(v.shape[2] for v in videos) + gap * (len(videos) - 1)
    out = np.full((f, h, w, 3), _BACKGROUND, np.uint8)
    x = 0
    for v in videos:
        out[:, : v.shape[1], x : x + v.shape[2]] = _hold_last(v, f)
        x += v.shape[2] + gap
    return out


def _pad_even(frames: np.ndarray) -> np.ndarray:
    _, h, w, _ = frames.shape
    if h % 2 == 0 and w % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))


def mp4_available() -> tuple[bool, str]:
    """``(True, path of the ffmpeg binary)`` when MP4 can be written, else ``(False, why not)``."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return False, "imageio-ffmpeg not installed (pip install imageio-ffmpeg), write .gif instead"
    try:
        return True, imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        return False, f"no ffmpeg binary found by imageio-ffmpeg ({exc}), write .gif instead"


def _write_frames(frames: np.ndarray, p: Path, fps: float) -> Path:
    """Write uint8 ``(F, H, W, 3)`` to ``p`` (.gif or .mp4)."""
    import imageio.v3 as iio

    if p.suffix.lower() == ".mp4":
        ok, why = mp4_available()
        if not ok:
            raise MediaError(f"cannot write {str(p)!r}: {why}")
        frames = _pad_even(frames)

        def write(tmp: str) -> None:
            iio.imwrite(
                tmp,
                frames,
                plugin="FFMPEG",
                fps=fps,
                codec="libx264",
                pixelformat="yuv420p",
                quality=8,
                macro_block_size=2,  # sizes are even already; no resizing by imageio
                ffmpeg_log_level="error",
            )

    else:

        def write(tmp: str) -> None:
            iio.imwrite(tmp, frames, extension=".gif", duration=round(1000 / fps), loop=0)

    return atomic_write(p, write)


def _check_fps(fps) -> None:
    if not isinstance(fps, (int, float)) or isinstance(fps, bool) or not math.isfinite(fps) or fps <= 0:
        raise MediaError(f"fps must be a positive number, got {fps!r}")


# ---------------------------------------------------------------------------------------------------------- videos


def save_video(video, path: str | os.PathLike, fps: float = 8, scale: int | None = None) -> Path:
    """Write a video ``(F,3,H,W)``, or several ``(B,F,3,H,W)`` tiled side by side, as .gif or .mp4 (by suffix).

    ``scale``: integer nearest-neighbour upscaling; ``None`` (default) picks the smallest factor that makes the short
    side at least ``MIN_SHORT_SIDE`` (128) pixels, e.g. 4 for 32x32 videos; ``1`` keeps the native size.
    """
    _check_fps(fps)
    _check_scale(scale)
    v = _to_uint8(video)
    p = _prepare_path(path, VIDEO_SUFFIXES)
    s = scale if scale is not None else _auto_scale(v.shape[2], v.shape[3])
    frames = _tile_row([_upscale(x, s) for x in v]) if v.shape[0] > 1 else _upscale(v[0], s)
    return _write_frames(frames, p, fps)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # pillow's bundled font when FreeType is available
    except (TypeError, ValueError, OSError, ImportError):
        return ImageFont.load_default()  # its fixed-size bitmap font otherwise


def _fit_text(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "..", font=font) > width:
        text = text[:-1]
    return text + ".."


def side_by_side(
    videos: Mapping[str, object],
    path: str | os.PathLike,
    fps: float = 8,
    scale: int | None = 4,
    ncols: int | None = None,
) -> Path:
    """A labelled grid video (.gif or .mp4) of ``{label: video (F,3,H,W)}``, each label drawn above its tile.

    Tiles are upscaled by ``scale`` (nearest neighbour; ``None``: as in :func:`save_video`); ``ncols`` defaults to all
    in one row up to 4, else a square-ish grid. Videos may differ in size (cells take the largest) and in length
    (shorter ones hold their last frame).
    """
    from PIL import Image, ImageDraw

    _check_fps(fps)
    _check_scale(scale)
    if not isinstance(videos, Mapping) or not videos:
        raise MediaError("videos: expected a non-empty dict {label: video (F, 3, H, W)}")
    raw = {}
    for label, video in videos.items():
        v = _to_uint8(video, f"videos[{label!r}]")
        if v.shape[0] != 1:
            raise MediaError(f"videos[{label!r}]: expected one video (F, 3, H, W), got a batch of {v.shape[0]}")
        raw[str(label)] = v[0]
    if scale is None:
        scale = min(_auto_scale(v.shape[1], v.shape[2]) for v in raw.values())
    tiles = {label: _upscale(v, scale) for label, v in raw.items()}
    p = _prepare_path(path, VIDEO_SUFFIXES)

    n = len(tiles)
    if ncols is None:
        ncols = n if n <= 4 else math.ceil(math.sqrt(n))
    if not isinstance(ncols, int) or ncols < 1:
        raise MediaError(f"ncols must be a positive integer, got {ncols!r}")
    nrows = math.ceil(n / ncols)
    f = max(t.shape[0] for t in tiles.values())
    cell_h = max(t.shape[1] for t in tiles.values())
    cell_w = max(t.shape[2] for t in tiles.values())
    font = _font(max(10, min(18, cell_w // 10)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left, top, right, bottom = probe.textbbox((0, 0), "Ag|", font=font)
    label_h = (bottom - top) + 6
    width = ncols * cell_w + (ncols + 1) * _GAP
    height = nrows * (label_h + cell_h) + (nrows + 1) * _GAP

    # the labels do not change from frame to frame: draw them once on a template
    template = Image.new("RGB", (width, height), (_BACKGROUND,) * 3)
    draw = ImageDraw.Draw(template)
    origins = []
    for i, label in enumerate(tiles):
        r, c = divmod(i, ncols)
        x0 = _GAP + c * (cell_w + _GAP)
        y0 = _GAP + r * (label_h + cell_h + _GAP)
        text = _fit_text(draw, label, font, cell_w)
        tw = draw.textlength(text, font=font)
        draw.text((x0 + (cell_w - tw) / 2, y0 + 3 - top), text, fill=(0, 0, 0), font=font)
        origins.append((x0, y0 + label_h))
    base = np.asarray(template, dtype=np.uint8)
    frames = np.repeat(base[None], f, axis=0)
    for (x0, y0), tile in zip(origins, tiles.values()):
        th, tw_ = tile.shape[1:3]
        oy, ox = y0 + (cell_h - th) // 2, x0 + (cell_w - tw_) // 2
        frames[:, oy : oy + th, ox : ox + tw_] = _hold_last(tile, f)
    return _write_frames(frames, p, fps)


# --------------------------------------------------------------------------------------------------------- figures


def _new_figure(figsize: tuple[float, float]):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=100, layout="constrained")


def _save_figure(fig, p: Path) -> Path:
    return atomic_write(p, lambda tmp: fig.savefig(tmp, format="png", facecolor="white"))


def _frame_indices(num_frames: int, frames) -> list[int]:
    if frames is None:
        return sorted({0, num_frames // 2, num_frames - 1})
    if isinstance(frames, (int, np.integer)) and not isinstance(frames, bool):
        if frames < 1:
            raise MediaError(f"frames: give a positive count or a list of frame indices, got {frames}")
        return sorted({int(round(i)) for i in np.linspace(0, num_frames - 1, min(int(frames), num_frames))})
    out = []
    for i in frames:
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool) or not -num_frames <= i < num_frames:
            raise MediaError(f"frames: index {i!r} is out of range for {num_frames} frames")
        out.append(int(i) % num_frames)
    if not out:
        raise MediaError("frames: empty list of frame indices")
    return out


def sample_grid(
    videos,
    labels: Sequence[str],
    path: str | os.PathLike,
    frames: int | Sequence[int] | None = None,
    title: str | None = None,
) -> Path:
    """A PNG grid: one row per video (labelled with its prompt), one column per chosen frame.

    ``frames``: ``None`` -> first, middle and last frame; an int ``n`` -> ``n`` evenly spaced frames; a list -> those
    indices (negative ones count from the end).
    """
    v = _to_uint8(videos, "videos")
    b, f = v.shape[:2]
    labels = [str(x) for x in labels]
    if len(labels) != b:
        raise MediaError(f"labels: expected {b} labels (one per video), got {len(labels)}")
    idx = _frame_indices(f, frames)
    p = _prepare_path(path, IMAGE_SUFFIXES)

    h, w = v.shape[2:4]
    cell = 1.8
    fig = _new_figure((1.0 + 1.6 + cell * len(idx) * w / max(h, w), 0.4 + cell * b * h / max(h, w)))
    axes = fig.subplots(b, len(idx), squeeze=False)
    for r in range(b):
        for c, i in enumerate(idx):
            ax = axes[r][c]
            ax.imshow(v[r, i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {i}", fontsize=9)
        axes[r][0].set_ylabel(
            "\n".join(textwrap.wrap(labels[r], 24)[:5]) or "(no label)",
            rotation=0,
            ha="right",
            va="center",
            fontsize=8,
            labelpad=6,
        )
    if title:
        fig.suptitle(title, fontsize=10)
    return _save_figure(fig, p)


def _plan_rows(plan_or_matrix, roles) -> tuple[list[str], list[str], np.ndarray]:
    """-> (site names, kinds, float matrix sites x steps with 1 compute, 0 reuse, NaN no entry)."""
    if isinstance(plan_or_matrix, Mapping):
        names = [str(k) for k in plan_or_matrix]
        rows = [[bool(c) for c in row] for row in plan_or_matrix.values()]
        if roles is None:
            roles = getattr(plan_or_matrix, "roles", None)  # cachelab.plan.Plan carries its roles
    else:
        if isinstance(plan_or_matrix, (list, tuple)):
            rows = [[bool(c) for c in row] for row in plan_or_matrix]
        else:
            m = _to_numpy(plan_or_matrix, "plan_or_matrix")
            if m.ndim != 2:
                raise MediaError(f"plan_or_matrix: expected a 2-D sites x steps matrix, got shape {m.shape}")
            rows = [[bool(c) for c in row] for row in m.tolist()]
        names = [f"site {i}" for i in range(len(rows))]
    if not rows or not any(rows):
        raise MediaError("plan_or_matrix: nothing to draw (no sites or no steps)")
    if roles is None:
        kinds = ["sites"] * len(names)
    elif isinstance(roles, Mapping):
        kinds = [str(roles.get(n, roles.get(i, "?"))) for i, n in enumerate(names)]
    else:
        kinds = [str(k) for k in roles]
        if len(kinds) != len(names):
            raise MediaError(f"roles: expected {len(names)} kinds (one per site), got {len(kinds)}")
    steps = max(len(r) for r in rows)
    mat = np.full((len(rows), steps), np.nan)
    for i, row in enumerate(rows):
        mat[i, : len(row)] = row
    return names, kinds, mat


def reuse_map(
    plan_or_matrix,
    path: str | os.PathLike,
    title: str = "",
    roles: Mapping[str, str] | Sequence[str] | None = None,
) -> Path:
    """A PNG heat map of a compute/reuse plan: rows are sites grouped by kind, columns are denoising steps.

    ``plan_or_matrix``: a :class:`cachelab.plan.Plan` (its ``roles`` are used), a dict
    ``{site_key: [compute?] * steps}``, or a 2-D sites x steps matrix (tensor, array or nested lists; non-zero =
    compute). ``roles`` maps site keys to kinds (or lists one kind per matrix row). Rows shorter than the longest are
    drawn grey where they have no entry.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator
    from matplotlib.transforms import blended_transform_factory

    names, kinds, mat = _plan_rows(plan_or_matrix, roles)
    p = _prepare_path(path, IMAGE_SUFFIXES)

    order, groups = [], []  # kinds in order of first appearance, sites keep their order inside a kind
    for kind in dict.fromkeys(kinds):
        members = [i for i, k in enumerate(kinds) if k == kind]
        groups.append((kind, len(order), len(members)))
        order += members
    mat = mat[order]
    names = [names[i] for i in order]
    n_sites, n_steps = mat.shape

    show_names = n_sites <= 48
    label_w = max((len(n) for n in names), default=0) * 0.065 if show_names else 0.4
    rows_h = 0.17 * min(n_sites, 48) + 0.05 * max(0, n_sites - 48)  # inches; denser rows when names are hidden
    fig = _new_figure((min(24.0, 2.8 + label_w + 0.2 * n_steps), min(30.0, 1.6 + rows_h + 0.12 * len(groups))))
    ax = fig.add_subplot()
    cmap = ListedColormap([_REUSE_COLOR, _COMPUTE_COLOR]).with_extremes(bad=_MISSING_COLOR)
    ax.imshow(np.ma.masked_invalid(mat), aspect="auto", cmap=cmap, vmin=0, vmax=1, interpolation="nearest")

    trans = blended_transform_factory(ax.transAxes, ax.transData)
    for kind, start, count in groups:
        if start:
            ax.axhline(start - 0.5, color="black", linewidth=1.2)
        cells = mat[start : start + count]
        valid = cells[~np.isnan(cells)]
        reuse = 1.0 - valid.mean() if valid.size else 0.0
        ax.text(1.01, start + (count - 1) / 2, f"{kind}\n{reuse:.0%} reuse", transform=trans, va="center", fontsize=8)
    if show_names:
        ax.set_yticks(range(n_sites), names, fontsize=7 if n_sites > 24 else 8)
    else:
        ax.set_yticks([])
        ax.set_ylabel(f"{n_sites} sites")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(n_steps, 20)))
    ax.set_xlabel("denoising step")
    valid = mat[~np.isnan(mat)]
    total = f"{1.0 - valid.mean():.0%} of site-steps reuse"
    ax.set_title(f"{title}\n{total}" if title else total, fontsize=10)
    handles = [Patch(color=_COMPUTE_COLOR, label="compute"), Patch(color=_REUSE_COLOR, label="reuse")]
    if np.isnan(mat).any():
        handles.append(Patch(color=_MISSING_COLOR, label="no entry"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
    return _save_figure(fig, p)


def _point_values(points) -> list[tuple[float, float]]:
    if not isinstance(points, Sequence) or isinstance(points, (str, bytes)):
        raise MediaError("points: expected a list of dicts with 'cost' and 'quality'")
    out = []
    for i, pt in enumerate(points):
        if not isinstance(pt, Mapping) or "cost" not in pt or "quality" not in pt:
            raise MediaError(f"points[{i}]: expected a dict with 'cost' and 'quality', got {pt!r}")
        try:
            out.append((float(pt["cost"]), float(pt["quality"])))
        except (TypeError, ValueError) as exc:
            raise MediaError(f"points[{i}]: cost and quality must be numbers, got {pt!r}") from exc
    return out


def pareto_front(points: Sequence[Mapping]) -> list[int]:
    """Indices of the points no other point beats (cost <= and quality >=, one strictly), by increasing cost.

    Points with a non-finite cost or quality are left out; of exact duplicates the first is kept.
    """
    vals = _point_values(points)
    ranked = sorted(
        (i for i, (c, q) in enumerate(vals) if math.isfinite(c) and math.isfinite(q)),
        key=lambda i: (vals[i][0], -vals[i][1], i),
    )
    front, best = [], -math.inf
    for i in ranked:
        if vals[i][1] > best:
            front.append(i)
            best = vals[i][1]
    return front


def pareto_plot(
    points: Sequence[Mapping],
    path: str | os.PathLike,
    cost_label: str = "cost",
    quality_label: str = "quality",
    title: str | None = None,
) -> Path:
    """A PNG scatter of ``points`` (dicts with ``cost``, ``quality``, optional ``label`` and ``highlight``) and their
    Pareto front (lower cost and higher quality are better).

    Highlighted points are drawn as large stars and always labelled; other points are labelled when there are at most
    12 points. Points with non-finite values (e.g. PSNR inf of an identical video) are left out and counted in a note.
    """
    vals = _point_values(points)
    if not vals:
        raise MediaError("points: nothing to draw (empty list)")
    p = _prepare_path(path, IMAGE_SUFFIXES)
    finite = [i for i, (c, q) in enumerate(vals) if math.isfinite(c) and math.isfinite(q)]
    front = pareto_front(points)
    on_front = set(front)

    fig = _new_figure((6.4, 4.6))
    ax = fig.add_subplot()
    rest = [i for i in finite if i not in on_front]
    if rest:
        ax.scatter([vals[i][0] for i in rest], [vals[i][1] for i in rest], s=22, color="#9aa5b1", label="dominated")
    if front:
        ax.plot(
            [vals[i][0] for i in front],
            [vals[i][1] for i in front],
            "-o",
            color="#2b6cb0",
            markersize=5,
            linewidth=1.5,
            label="Pareto front",
        )
    stars = [i for i in finite if points[i].get("highlight")]
    if stars:
        ax.scatter(
            [vals[i][0] for i in stars],
            [vals[i][1] for i in stars],
            s=170,
            marker="*",
            color="#d62728",
            edgecolors="black",
            linewidths=0.6,
            zorder=5,
            label="highlighted",
        )
    for i in finite:
        label = points[i].get("label")
        if label and (points[i].get("highlight") or len(vals) <= 12):
            bold = bool(points[i].get("highlight"))
            ax.annotate(
                str(label),
                vals[i],
                xytext=(8, 6) if bold else (5, 5),
                textcoords="offset points",
                fontsize=8,
                fontweight="bold" if bold else "normal",
            )
    skipped = len(vals) - len(finite)
    if skipped:
        note = f"{skipped} point(s) with non-finite values not shown"
        ax.text(0.99, 0.01, note, transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="#555555")
    ax.set_xlabel(f"{cost_label}  (lower is better)")
    ax.set_ylabel(f"{quality_label}  (higher is better)")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    if finite:
        ax.legend(fontsize=8, loc="best")
    return _save_figure(fig, p)
