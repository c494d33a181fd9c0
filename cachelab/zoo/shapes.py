"""Procedural "moving shapes" videos for the small text-to-video DiTs, and checks that generated videos follow
their prompts.

Every video shows one filled, antialiased shape (circle, square or upright equilateral triangle) in one of seven
colours on a black background, moving at a constant speed in one of four directions. Motion is toroidal: the
frame is rendered on a torus, so a shape crossing an edge re-enters on the opposite side, and start positions are
uniform over the frame. No single frame therefore reveals the direction; only motion does.

Prompts have the form ``"a <colour> <shape> moving <direction>"``, e.g. ``"a red circle moving left"``.

The checks (:func:`classify_colour`, :func:`classify_shape`, :func:`classify_motion`, :func:`check_videos`)
work on any videos of shape ``(B, F, 3, H, W)`` in ``[-1, 1]``, including imperfect generated ones (blurry,
faint, flickering, noisy, on a grey background). They score 1.00 on colour, shape and motion on rendered data
(2000 videos), so that a low score measures the generator rather than the checks. Videos without a detectable
object, and static videos for motion, are predicted ``None`` and count as wrong; on noise nothing is found.

Coordinates: pixel ``i`` covers ``[i, i + 1)``; ``x`` is the column, ``y`` the row; "up" decreases ``y``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

__all__ = [
    "COLOURS",
    "COLOUR_NAMES",
    "SHAPES",
    "DIRECTIONS",
    "VOCABULARY",
    "PROMPT_FORM",
    "Attributes",
    "all_attributes",
    "prompt_of",
    "parse_prompt",
    "encode_prompt",
    "sample_attributes",
    "render_videos",
    "VideoAnalysis",
    "analyse_videos",
    "classify_colour",
    "classify_shape",
    "classify_motion",
    "check_videos",
    "ShapesDataset",
    "batch",
]

#: Colour name -> RGB in [0, 1]. Every colour has its largest channel at 1, so colour is read from chromaticity.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "magenta": (1.0, 0.0, 1.0),
    "cyan": (0.0, 1.0, 1.0),
    "white": (1.0, 1.0, 1.0),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")

#: Ordered word list of the prompt tokenizer: special tokens, then prompt words.
VOCABULARY: list[str] = ["<pad>", "</s>", "<unk>", "a", "moving", *COLOUR_NAMES, *SHAPES, *DIRECTIONS]

PROMPT_FORM = "a <colour> <shape> moving <direction>"

#: Unit motion per direction as (dx, dy); y grows downwards, so "up" is -y.
_DIRECTION_VECTORS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
}

# Size parameter r is the radius of the circle of the same area: all three shapes have area pi * r**2.
_SQUARE_HALF_SIDE = math.sqrt(math.pi) / 2.0  # 4 h^2 = pi r^2
_TRIANGLE_CIRCUMRADIUS = math.sqrt(4.0 * math.pi / (3.0 * math.sqrt(3.0)))  # (3 sqrt3 / 4) R^2 = pi r^2
_SQRT3 = math.sqrt(3.0)

#: Size range ("radius" r, as a fraction of the frame side): 5 to 6.5 px on 32 px.
RADIUS_RANGE = (5.0 / 32.0, 6.5 / 32.0)
#: Speed range in px/frame at 32 px (scales with the frame side).
SPEED_RANGE = (0.8, 1.2)


# --------------------------------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class Attributes:
    """What a prompt asks for."""

    colour: str
    shape: str
    direction: str

    def __post_init__(self) -> None:
        for value, allowed, what in (
            (self.colour, COLOUR_NAMES, "colour"),
            (self.shape, SHAPES, "shape"),
            (self.direction, DIRECTIONS, "direction"),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")

    @property
    def prompt(self) -> str:
        return prompt_of(self)


def all_attributes() -> list[Attributes]:
    """Every combination, in a fixed order (colour-major)."""
    return [Attributes(c, s, d) for c in COLOUR_NAMES for s in SHAPES for d in DIRECTIONS]


def prompt_of(attrs: Attributes) -> str:
    """``Attributes("red", "circle", "left") -> "a red circle moving left"``."""
    return f"a {attrs.colour} {attrs.shape} moving {attrs.direction}"


def parse_prompt(text: str) -> Attributes:
    """Inverse of :func:`prompt_of`. Case and surrounding whitespace are ignored, as is one trailing period.

    Raises:
        ValueError: a word is outside :data:`VOCABULARY` (the message names the words and lists the vocabulary),
            or the prompt does not have the form ``a <colour> <shape> moving <direction>``.
    """
    if not isinstance(text, str):
        raise TypeError(f"prompt must be a str, not {type(text).__name__}")
    cleaned = text.strip().lower()
    if cleaned.endswith("."):
        cleaned = cleaned[:-1]
    words = cleaned.split()
    prompt_words = set(VOCABULARY[3:])
    unknown = [w for w in words if w not in prompt_words]
    if unknown:
        listed = ", ".join(repr(w) for w in dict.fromkeys(unknown))
        raise ValueError(
            f"unknown word{'s' if len(set(unknown)) > 1 else ''} {listed} in prompt {text!r}; "
            f"vocabulary: {' '.join(VOCABULARY[3:])}"
        )
    if (
        len(words) != 5
        or words[0] != "a"
        or words[1] not in COLOURS
        or words[2] not in SHAPES
        or words[3] != "moving"
        or words[4] not in DIRECTIONS
    ):
        raise ValueError(
            f"prompt {text!r} does not have the form {PROMPT_FORM!r} "
            f"(colours: {', '.join(COLOUR_NAMES)}; shapes: {', '.join(SHAPES)}; "
            f"directions: {', '.join(DIRECTIONS)})"
        )
    return Attributes(words[1], words[2], words[4])


def encode_prompt(text: str, length: int | None = None) -> list[int]:
    """Token ids of ``text`` (lower-cased, whitespace-split) in :data:`VOCABULARY`, then ``</s>``.

    Unknown words become ``<unk>``; with ``length``, the ids are padded with ``<pad>`` or truncated (keeping
    ``</s>`` last) to exactly ``length``.
    """
    index = {w: i for i, w in enumerate(VOCABULARY)}
    ids = [index.get(w, index["<unk>"]) for w in text.strip().lower().split()] + [index["</s>"]]
    if length is not None:
        if length < 1:
            raise ValueError("length must be >= 1")
        if len(ids) > length:
            ids = ids[: length - 1] + [index["</s>"]]
        ids = ids + [index["<pad>"]] * (length - len(ids))
    return ids


def _as_attributes(items: Sequence[Attributes | str]) -> list[Attributes]:
    return [a if isinstance(a, Attributes) else parse_prompt(a) for a in items]


def sample_attributes(n: int, generator: torch.Generator | None = None) -> list[Attributes]:
    """``n`` attributes drawn independently and uniformly over all colour x shape x direction combinations."""
    combos = all_attributes()
    idx = torch.randint(len(combos), (n,), generator=generator)
    return [combos[i] for i in idx.tolist()]


# ------------------------------------------------------------------------------------------------- rendering


def _wrap(d: torch.Tensor, period: float) -> torch.Tensor:
    """Map differences to ``[-period / 2, period / 2)``."""
    return torch.remainder(d + period / 2.0, period) - period / 2.0


def _coverage(
    shape_idx: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    radius: torch.Tensor,
    height: int,
    width: int,
    supersample: int = 4,
    max_elements: int = 1 << 24,
) -> torch.Tensor:
    """Antialiased coverage in [0, 1] of ``N`` shapes on an ``height x width`` torus, shape ``(N, H, W)``.

    ``shape_idx`` indexes :data:`SHAPES`; ``cx, cy`` are centres (the centroid, for triangles); ``radius`` is the
    radius of the circle of equal area. All are ``(N,)`` tensors on one device.

    Antialiasing: every pixel row is supersampled with ``supersample`` sub-rows; along a sub-row the shape is one
    interval centred on ``cx`` (all three shapes are symmetric about their vertical axis), whose overlap with each
    pixel is computed exactly. This equals ``supersample x infinity`` supersampling at the cost of
    ``supersample`` samples per pixel. Sub-rows that cross a horizontal edge (square, triangle base) count with
    the fraction of their height inside the shape, so squares are exact and every area is within 0.2% of
    ``pi * radius**2`` (at ``supersample=4``).
    """
    n = cx.shape[0]
    device = cx.device
    s = supersample
    out = torch.empty(n, height, width, device=device)
    if n == 0:
        return out
    sub = (torch.arange(s, device=device, dtype=torch.float32) + 0.5) / s
    ys = (torch.arange(height, device=device, dtype=torch.float32)[:, None] + sub).view(1, height, 1, s)
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5).view(1, 1, width, 1)
    half_sub = 0.5 / s
    chunk = max(1, max_elements // (height * width * s))
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        view = (-1, 1, 1, 1)
        k = shape_idx[sl].view(view)
        r = radius[sl].view(view)
        dy = _wrap(ys - cy[sl].view(view), height)  # (n, H, 1, s): sub-row centre offsets
        h = r * _SQUARE_HALF_SIDE
        big_r = r * _TRIANGLE_CIRCUMRADIUS
        # vertical extent [-top, bottom] of each shape; a sub-row only partly inside it (the square's edges, the
        # triangle's base) counts with the inside fraction of its height, at the middle of that part
        top = torch.where(k == 0, r, torch.where(k == 1, h, big_r))
        bottom = torch.where(k == 0, r, torch.where(k == 1, h, big_r / 2))
        lo = torch.maximum(dy - half_sub, -top)
        hi = torch.minimum(dy + half_sub, bottom)
        frac = ((hi - lo) / (2 * half_sub)).clamp(0.0, 1.0)
        mid = (lo + hi) / 2
        circle = torch.sqrt((r * r - mid * mid).clamp_min(0.0))
        triangle = ((mid + big_r) / _SQRT3).clamp_min(0.0)
        half_width = torch.where(k == 0, circle, torch.where(k == 1, h.expand_as(mid), triangle))
        d = _wrap(xs - cx[sl].view(view), width)  # (n, 1, W, 1): pixel centre offset
        # overlap of [-half_width, half_width] with the pixel [d - 0.5, d + 0.5]
        a = d.abs()
        overlap = torch.minimum(a + 0.5, half_width).add_(torch.minimum(0.5 - a, half_width))
        cov = (overlap.clamp_(0.0, 1.0) * frac).mean(dim=3)  # (n, H, W)
        out[sl] = cov
    return out


def render_videos(
    attrs_list: Sequence[Attributes | str],
    frames: int = 16,
    size: int = 32,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    *,
    supersample: int = 4,
    return_params: bool = False,
):
    """Render one video per attributes (or prompt), shape ``(B, frames, 3, size, size)``, values in ``[-1, 1]``.

    Per video: size ("radius" of the equal-area circle) uniform in 5-6.5 px at 32 px, speed uniform in
    0.8-1.2 px/frame at 32 px (both scale with ``size``), start position uniform over the frame, toroidal motion.
    Random numbers are drawn on the CPU from ``generator`` (the global generator when ``None``), so the result is
    the same on every device for a given generator state.

    With ``return_params=True`` returns ``(videos, params)``, where ``params`` holds ``centres`` (``(B, F, 2)``
    as (x, y) in pixels), ``radius`` (``(B,)``), and ``velocity`` (``(B, 2)`` as (dx, dy) px/frame).
    """
    attrs = _as_attributes(attrs_list)
    b = len(attrs)
    if frames < 1 or size < 4:
        raise ValueError("need frames >= 1 and size >= 4")
    dev = torch.device(device) if device is not None else torch.device("cpu")

    u = torch.rand(b, 4, generator=generator, dtype=torch.float64)  # radius, speed, x0, y0
    radius = (RADIUS_RANGE[0] + (RADIUS_RANGE[1] - RADIUS_RANGE[0]) * u[:, 0]) * size
    speed = (SPEED_RANGE[0] + (SPEED_RANGE[1] - SPEED_RANGE[0]) * u[:, 1]) * (size / 32.0)
    start = u[:, 2:] * size
    unit = torch.tensor([_DIRECTION_VECTORS[a.direction] for a in attrs], dtype=torch.float64).view(b, 2)
    velocity = unit * speed[:, None]
    t = torch.arange(frames, dtype=torch.float64)
    centres = torch.remainder(start[:, None, :] + t[None, :, None] * velocity[:, None, :], size)  # (B, F, 2)

    shape_idx = torch.tensor([SHAPES.index(a.shape) for a in attrs], dtype=torch.long).view(b)
    rgb = torch.tensor([COLOURS[a.colour] for a in attrs], dtype=torch.float32).view(b, 3)

    cov = _coverage(
        shape_idx.repeat_interleave(frames).to(dev),
        centres[..., 0].reshape(-1).float().to(dev),
        centres[..., 1].reshape(-1).float().to(dev),
        radius.repeat_interleave(frames).float().to(dev),
        size,
        size,
        supersample,
    ).view(b, frames, 1, size, size)
    videos = cov * rgb.to(dev).view(b, 1, 3, 1, 1) * 2.0 - 1.0
    if return_params:
        params = {"centres": centres.float(), "radius": radius.float(), "velocity": velocity.float()}
        return videos, params
    return videos


# ---------------------------------------------------------------------------------------------------- checks

#: A frame holds an object when its foreground covers this fraction of the frame ...
_AREA_FRACTION = (0.003, 0.4)
#: ... is this much brighter than the background (in [0, 1] units) ...
_MIN_CONTRAST = 0.12
#: ... and is compact on the torus (mean resultant length of the foreground along each axis).
_MIN_CONCENTRATION = 0.5
#: A video holds an object when at least this fraction of its frames do.
_MIN_FOUND_FRAMES = 0.5
#: Template blurs (Gaussian sigma in px at 32 px; scaled with the frame side) tried when matching shapes.
_BLUR_SIGMAS = (0.0, 1.5)
#: Frames per video used for shape matching (found frames first, spread over the video).
_SHAPE_FRAMES = 8
#: Below this mean shift (px/frame along the dominant axis, at 32 px; scaled with the frame side) a video is
#: static: motion None.
_MIN_SHIFT = 0.3


@dataclass
class VideoAnalysis:
    """Per-frame and per-video measurements made by :func:`analyse_videos`.

    Tensors are on the videos' device. ``weights`` is the soft foreground (0 = background, 1 = object).
    """

    weights: torch.Tensor  # (B, F, H, W)
    frame_found: torch.Tensor  # (B, F) bool
    found: torch.Tensor  # (B,) bool
    centroids: torch.Tensor  # (B, F, 2) as (x, y), pixels
    areas: torch.Tensor  # (B, F) soft area in pixels
    colour_rgb: torch.Tensor  # (B, 3), mean object colour minus background, [0, 1] units
    shape_scores: torch.Tensor  # (B, 3) mean template IoU per shape over found frames
    shift: torch.Tensor  # (B, 2) mean (dx, dy) px/frame over consecutive found frame pairs
    colours: list[str | None]
    shapes: list[str | None]
    motions: list[str | None]
    consistency: torch.Tensor  # (B,)


def _circular_centroid(
    w: torch.Tensor, axis_coords: torch.Tensor, period: int, dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted centroid of ``w`` (N, H, W) along one axis on a circle, refined to the exact wrapped mean.

    Returns ``(centre, concentration)`` each (N,); concentration is the mean resultant length in [0, 1].
    """
    marginal = w.sum(dim=dim)  # (N, period)
    total = marginal.sum(dim=1).clamp_min(1e-8)
    angle = axis_coords * (2 * math.pi / period)
    c = (marginal * torch.cos(angle)).sum(dim=1) / total
    s = (marginal * torch.sin(angle)).sum(dim=1) / total
    concentration = torch.sqrt(c * c + s * s)
    centre = torch.remainder(torch.atan2(s, c) * (period / (2 * math.pi)), period)
    # The circular mean is biased for asymmetric shapes (triangles): refine to the mean of the wrapped offsets.
    for _ in range(2):
        d = _wrap(axis_coords[None, :] - centre[:, None], period)
        centre = torch.remainder(centre + (marginal * d).sum(dim=1) / total, period)
    return centre, concentration


def analyse_videos(videos: torch.Tensor) -> VideoAnalysis:
    """Find the object in every frame and measure its colour, shape, motion and size.

    Foreground: per frame, brightness ``v`` (max over channels, in [0, 1]) is normalised between the background
    level (median) and the object level (98th percentile): ``w = clip((v - bg) / (peak - bg), 0, 1)``; pixels with
    ``w > 0.5`` form the object mask. A frame holds an object when the contrast is high enough, the mask covers a
    plausible fraction of the frame and is compact on the torus; a video when half of its frames do.

    Colour: nearest palette colour to the chromaticity (RGB divided by its largest channel) of the mean object
    colour minus the background colour. Shape: soft IoU with templates of the three shapes rendered at the
    measured centroid (on the torus) and equal-area radius, sharp and blurred; best mean over up to 8 frames.
    Motion: FFT circular cross-correlation of consecutive frames' foregrounds, sub-pixel peak, mean over pairs;
    the dominant axis gives the direction, ``None`` under 0.3 px/frame (at 32 px).
    """
    if videos.dim() != 5 or videos.shape[2] != 3:
        raise ValueError(f"videos must have shape (B, F, 3, H, W), got {tuple(videos.shape)}")
    if videos.shape[0] == 0 or videos.shape[1] == 0:
        raise ValueError("no videos or no frames to analyse")
    videos = videos.detach().float()
    b, f, _, h, w_ = videos.shape
    dev = videos.device
    x01 = ((videos + 1.0) / 2.0).clamp(0.0, 1.0)
    v = x01.amax(dim=2)  # (B, F, H, W)
    flat = v.reshape(b * f, h * w_)
    sorted_v = flat.sort(dim=1).values
    n_pix = h * w_
    bg = sorted_v[:, n_pix // 2]
    peak = sorted_v[:, min(n_pix - 1, int(0.98 * n_pix))]
    contrast = peak - bg
    wts = ((flat - bg[:, None]) / contrast.clamp_min(1e-6)[:, None]).clamp(0.0, 1.0)
    mask = wts > 0.5
    wts = wts * (wts > 0.25)  # drop faint background speckle from the soft foreground
    wts3 = wts.view(b * f, h, w_)

    ys = torch.arange(h, device=dev, dtype=torch.float32) + 0.5
    xs = torch.arange(w_, device=dev, dtype=torch.float32) + 0.5
    m3 = mask.view(b * f, h, w_).float()
    _, conc_x = _circular_centroid(m3, xs, w_, dim=1)
    _, conc_y = _circular_centroid(m3, ys, h, dim=2)
    cx, _ = _circular_centroid(wts3, xs, w_, dim=1)
    cy, _ = _circular_centroid(wts3, ys, h, dim=2)
    area_frac = mask.float().mean(dim=1)
    frame_found = (
        (contrast > _MIN_CONTRAST)
        & (area_frac >= _AREA_FRACTION[0])
        & (area_frac <= _AREA_FRACTION[1])
        & (conc_x >= _MIN_CONCENTRATION)
        & (conc_y >= _MIN_CONCENTRATION)
    ).view(b, f)
    found = frame_found.float().mean(dim=1) >= _MIN_FOUND_FRAMES
    ff = frame_found.float()
    n_found = ff.sum(dim=1).clamp_min(1.0)
    areas = wts.sum(dim=1).view(b, f)
    centroids = torch.stack([cx, cy], dim=-1).view(b, f, 2)

    # Colour: mean RGB of the object mask minus the mean background colour, over found frames.
    rgb_flat = x01.permute(0, 1, 3, 4, 2).reshape(b * f, n_pix, 3)
    background = (wts == 0).float()  # pixels not brighter than the background level
    bg_rgb = (rgb_flat * background[..., None]).sum(dim=1) / background.sum(dim=1, keepdim=True).clamp_min(1.0)
    mw = mask.float() * wts
    obj_rgb = (rgb_flat * mw[..., None]).sum(dim=1) / mw.sum(dim=1, keepdim=True).clamp_min(1e-8)
    diff = (obj_rgb - bg_rgb).clamp_min(0.0).view(b, f, 3)
    colour_rgb = (diff * ff[..., None]).sum(dim=1) / n_found[:, None]
    chroma = colour_rgb / colour_rgb.amax(dim=1, keepdim=True).clamp_min(1e-6)
    palette = torch.tensor([COLOURS[c] for c in COLOUR_NAMES], device=dev)
    colour_idx = torch.cdist(chroma, palette).argmin(dim=1)

    # Shape: soft IoU against templates of the three shapes at the measured centroid and equal-area radius,
    # each also blurred (generated videos are often blurry) and normalised exactly like the data; the best blur
    # counts.
    # Videos with an object only; at most _SHAPE_FRAMES frames each, found ones first, spread over the video.
    m = min(f, _SHAPE_FRAMES)
    videos_found = found.nonzero().flatten()
    nb = videos_found.numel()
    spread = torch.cat([torch.arange(0, f, 2), torch.arange(1, f, 2)]).to(dev)
    preference = torch.empty(f, device=dev)
    preference[spread] = torch.arange(f, 0, -1, device=dev, dtype=torch.float32)
    pick = (ff[videos_found] * 2 * f + preference).topk(m, dim=1).indices  # (nb, m)
    flat_pick = (pick + videos_found[:, None] * f).reshape(-1)
    pick_found = ff[videos_found].gather(1, pick)  # (nb, m)
    n = nb * m
    data = wts[flat_pick]  # (n, H*W)
    r_eq = torch.sqrt(areas.reshape(-1)[flat_pick].clamp_min(1.0) / math.pi)
    templates = _coverage(
        torch.arange(3, device=dev).repeat(n),
        cx[flat_pick].repeat_interleave(3),
        cy[flat_pick].repeat_interleave(3),
        r_eq.repeat_interleave(3),
        h,
        w_,
        supersample=2,
    ).view(n, 3, h, w_)
    iou = torch.zeros(n, 3, device=dev)
    if n > 0:  # (an FFT of nothing fails on some backends)
        t_spec = torch.fft.rfft2(templates)
        freq2 = torch.fft.fftfreq(h, device=dev)[:, None] ** 2 + torch.fft.rfftfreq(w_, device=dev)[None, :] ** 2
        k_peak = max(1, n_pix - min(n_pix - 1, int(0.98 * n_pix)))
        data_sum = data.sum(dim=1, keepdim=True)
        for sigma in _BLUR_SIGMAS:
            sigma = sigma * min(h, w_) / 32.0
            if sigma > 0:
                tb = torch.fft.irfft2(t_spec * torch.exp(-2.0 * math.pi**2 * sigma**2 * freq2), s=(h, w_))
            else:
                tb = templates
            tb = tb.reshape(n, 3, n_pix)
            t_peak = tb.topk(k_peak, dim=2).values[..., -1:]
            tn = (tb / t_peak.clamp_min(1e-6)).clamp_(0.0, 1.0)
            tn = tn.masked_fill_(tn <= 0.25, 0.0)
            inter = torch.minimum(tn, data[:, None, :]).sum(dim=2)
            union = (tn.sum(dim=2) + data_sum - inter).clamp_min(1e-8)
            iou = torch.maximum(iou, inter / union)
    iou = iou.view(nb, m, 3)
    shape_scores = torch.zeros(b, 3, device=dev)
    n_picked = pick_found.sum(dim=1).clamp_min(1.0)[:, None]
    shape_scores[videos_found] = (iou * pick_found[..., None]).sum(dim=1) / n_picked
    shape_idx = shape_scores.argmax(dim=1)

    # Motion: circular cross-correlation of consecutive soft masks -> shift per pair (integer peak, refined to
    # sub-pixel by a parabola through its neighbours), averaged over pairs of found frames.
    if f >= 2:
        spec = torch.fft.rfft2(wts.view(b, f, h, w_))
        corr = torch.fft.irfft2(torch.conj(spec[:, :-1]) * spec[:, 1:], s=(h, w_))  # peak at displacement
        corr = corr.reshape(b * (f - 1), h, w_)
        arg = corr.reshape(b * (f - 1), n_pix).argmax(dim=1)
        iy, ix = arg // w_, arg % w_
        rows = torch.arange(b * (f - 1), device=dev)

        def refine(c_minus: torch.Tensor, c0: torch.Tensor, c_plus: torch.Tensor) -> torch.Tensor:
            # vertex of the parabola through the peak and its two neighbours, within half a pixel
            denom = c_minus - 2.0 * c0 + c_plus
            off = 0.5 * (c_minus - c_plus) / torch.where(denom.abs() > 1e-8, denom, torch.full_like(denom, -1e8))
            return off.clamp(-0.5, 0.5)

        c0 = corr[rows, iy, ix]
        sy = iy.float() + refine(corr[rows, (iy - 1) % h, ix], c0, corr[rows, (iy + 1) % h, ix])
        sx = ix.float() + refine(corr[rows, iy, (ix - 1) % w_], c0, corr[rows, iy, (ix + 1) % w_])
        sy = _wrap(sy, h).view(b, f - 1)
        sx = _wrap(sx, w_).view(b, f - 1)
        pair_ok = (frame_found[:, :-1] & frame_found[:, 1:]).float()
        n_pairs = pair_ok.sum(dim=1)
        shift = torch.stack([(sx * pair_ok).sum(1), (sy * pair_ok).sum(1)], dim=1) / n_pairs.clamp_min(1.0)[:, None]
    else:
        n_pairs = torch.zeros(b, device=dev)
        shift = torch.zeros(b, 2, device=dev)

    # Consistency: 1 - relative std of the object area over found frames.
    mean_area = (areas * ff).sum(1) / n_found
    var_area = (((areas - mean_area[:, None]) ** 2) * ff).sum(1) / n_found
    consistency = (1.0 - var_area.sqrt() / mean_area.clamp_min(1e-8)).clamp(0.0, 1.0)
    consistency = torch.where(found, consistency, torch.zeros_like(consistency))

    min_shift = _MIN_SHIFT * min(h, w_) / 32.0
    found_l = found.tolist()
    colours = [COLOUR_NAMES[i] if ok else None for i, ok in zip(colour_idx.tolist(), found_l)]
    shapes = [SHAPES[i] if ok else None for i, ok in zip(shape_idx.tolist(), found_l)]
    motions: list[str | None] = []
    for (dx, dy), ok, pairs in zip(shift.tolist(), found_l, n_pairs.tolist()):
        if not ok or pairs < 1 or max(abs(dx), abs(dy)) < min_shift:
            motions.append(None)
        elif abs(dx) >= abs(dy):
            motions.append("right" if dx > 0 else "left")
        else:
            motions.append("down" if dy > 0 else "up")

    return VideoAnalysis(
        weights=wts.view(b, f, h, w_),
        frame_found=frame_found,
        found=found,
        centroids=centroids,
        areas=areas,
        colour_rgb=colour_rgb,
        shape_scores=shape_scores,
        shift=shift,
        colours=colours,
        shapes=shapes,
        motions=motions,
        consistency=consistency,
    )


def classify_colour(videos: torch.Tensor) -> list[str | None]:
    """Nearest palette colour (by chromaticity) of each video's object; ``None`` where no object is found."""
    return analyse_videos(videos).colours


def classify_shape(videos: torch.Tensor) -> list[str | None]:
    """Best-matching shape template of each video's object; ``None`` where no object is found."""
    return analyse_videos(videos).shapes


def classify_motion(videos: torch.Tensor) -> list[str | None]:
    """Direction of each video's object; ``None`` where no object is found or it moves < 0.3 px/frame."""
    return analyse_videos(videos).motions


def check_videos(
    videos: torch.Tensor,
    attrs_list: Sequence[Attributes | str],
    *,
    analysis: VideoAnalysis | None = None,
) -> dict[str, float]:
    """How well videos follow their prompts (attributes or prompt strings, one per video).

    Returns ``colour``, ``shape``, ``motion`` (accuracy; ``None`` predictions count as wrong), ``found`` (fraction
    of videos with a detectable object) and ``consistency`` (mean over videos of 1 - relative std of the object's
    area across frames, clipped to [0, 1]; 0 for videos without an object). Pass ``analysis`` (from
    :func:`analyse_videos` of the same videos) to score without analysing again.
    """
    attrs = _as_attributes(attrs_list)
    if len(attrs) != videos.shape[0]:
        raise ValueError(f"{videos.shape[0]} videos but {len(attrs)} attributes")
    if not attrs:
        raise ValueError("no videos to check")
    a = analysis if analysis is not None else analyse_videos(videos)
    if len(a.colours) != len(attrs):
        raise ValueError(f"analysis of {len(a.colours)} videos for {len(attrs)} attributes")
    n = len(attrs)
    return {
        "colour": sum(p == t.colour for p, t in zip(a.colours, attrs)) / n,
        "shape": sum(p == t.shape for p, t in zip(a.shapes, attrs)) / n,
        "motion": sum(p == t.direction for p, t in zip(a.motions, attrs)) / n,
        "found": float(a.found.float().mean()),
        "consistency": float(a.consistency.mean()),
    }


# ---------------------------------------------------------------------------------------------------- stream


class ShapesDataset:
    """Endless stream of (videos, prompts, attributes) batches with uniform attributes."""

    def __init__(self, frames: int = 16, size: int = 32, device: torch.device | str | None = None):
        self.frames = frames
        self.size = size
        self.device = device

    def batch(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        frames: int | None = None,
        size: int | None = None,
    ) -> tuple[torch.Tensor, list[str], list[Attributes]]:
        return batch(
            n,
            generator,
            device if device is not None else self.device,
            frames if frames is not None else self.frames,
            size if size is not None else self.size,
        )

    def stream(self, batch_size: int, generator: torch.Generator | None = None):
        """Yield batches of ``batch_size`` forever."""
        while True:
            yield self.batch(batch_size, generator)


def batch(
    n: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    frames: int = 16,
    size: int = 32,
) -> tuple[torch.Tensor, list[str], list[Attributes]]:
    """``n`` random videos ``(n, frames, 3, size, size)`` with their prompts and attributes."""
    attrs = sample_attributes(n, generator)
    videos = render_videos(attrs, frames=frames, size=size, generator=generator, device=device)
    return videos, [prompt_of(a) for a in attrs], attrs
