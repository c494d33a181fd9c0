"""Tests for the procedural moving-shapes videos and the prompt-following checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cachelab.zoo import shapes as S
from cachelab.zoo.shapes import (
    COLOUR_NAMES,
    COLOURS,
    DIRECTIONS,
    PROMPT_FORM,
    SHAPES,
    VOCABULARY,
    Attributes,
    ShapesDataset,
    all_attributes,
    analyse_videos,
    batch,
    check_videos,
    classify_colour,
    classify_motion,
    classify_shape,
    encode_prompt,
    parse_prompt,
    prompt_of,
    render_videos,
    sample_attributes,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _accuracy(predicted, truth) -> float:
    return sum(p == t for p, t in zip(predicted, truth)) / len(truth)


@pytest.fixture(scope="module")
def real():
    """300 rendered videos with their attributes, render parameters and analysis (computed once)."""
    g = _gen(1234)
    attrs = sample_attributes(300, g)
    videos, params = render_videos(attrs, generator=g, return_params=True)
    return videos, attrs, params, analyse_videos(videos)


# ------------------------------------------------------------------------------------------------ prompts


def test_vocabulary_order():
    assert VOCABULARY[:5] == ["<pad>", "</s>", "<unk>", "a", "moving"]
    assert VOCABULARY[5:] == [*COLOUR_NAMES, *SHAPES, *DIRECTIONS]
    assert COLOUR_NAMES == ("red", "green", "blue", "yellow", "magenta", "cyan", "white")
    assert SHAPES == ("circle", "square", "triangle")
    assert DIRECTIONS == ("left", "right", "up", "down")
    assert len(set(VOCABULARY)) == len(VOCABULARY)


def test_colours_well_separated():
    rgb = torch.tensor([COLOURS[c] for c in COLOUR_NAMES])
    assert rgb.min() >= 0 and rgb.max() <= 1
    d = torch.cdist(rgb, rgb) + torch.eye(len(rgb)) * 10
    assert d.min() >= 0.99


def test_prompt_round_trip_all_combinations():
    combos = all_attributes()
    assert len(combos) == len(set(combos)) == 7 * 3 * 4
    for a in combos:
        text = prompt_of(a)
        assert text == f"a {a.colour} {a.shape} moving {a.direction}"
        assert parse_prompt(text) == a
        assert a.prompt == text
    assert parse_prompt("  A Red CIRCLE moving   left. ") == Attributes("red", "circle", "left")


def test_parse_prompt_unknown_words_named_with_vocabulary():
    with pytest.raises(ValueError) as err:
        parse_prompt("a purple hexagon moving left")
    msg = str(err.value)
    assert "'purple'" in msg and "'hexagon'" in msg
    assert "vocabulary" in msg and all(w in msg for w in VOCABULARY[3:])
    with pytest.raises(ValueError, match="'sideways'"):
        parse_prompt("a red circle moving sideways")


@pytest.mark.parametrize(
    "text",
    ["a red circle moving", "a circle red moving left", "red circle moving left", "a red red circle moving left",
     "a red circle moving left up", ""],
)
def test_parse_prompt_wrong_form(text):
    with pytest.raises(ValueError) as err:
        parse_prompt(text)
    assert PROMPT_FORM in str(err.value)


def test_attributes_validate():
    with pytest.raises(ValueError, match="colour"):
        Attributes("purple", "circle", "left")
    with pytest.raises(ValueError, match="shape"):
        Attributes("red", "hexagon", "left")
    with pytest.raises(ValueError, match="direction"):
        Attributes("red", "circle", "sideways")


def test_encode_prompt():
    ids = encode_prompt("a red circle moving left")
    assert [VOCABULARY[i] for i in ids] == ["a", "red", "circle", "moving", "left", "</s>"]
    padded = encode_prompt("a red blob moving left", length=8)
    assert [VOCABULARY[i] for i in padded] == ["a", "red", "<unk>", "moving", "left", "</s>", "<pad>", "<pad>"]
    assert VOCABULARY[encode_prompt("a red circle moving left", length=3)[-1]] == "</s>"


def test_sample_attributes_uniform_and_deterministic():
    attrs = sample_attributes(8400, _gen(0))
    assert attrs == sample_attributes(8400, _gen(0))
    counts = {a: 0 for a in all_attributes()}
    for a in attrs:
        counts[a] += 1
    assert min(counts.values()) > 50 and max(counts.values()) < 150  # expected 100 each
    for names, field in ((COLOUR_NAMES, "colour"), (SHAPES, "shape"), (DIRECTIONS, "direction")):
        for name in names:
            frac = sum(getattr(a, field) == name for a in attrs) / len(attrs)
            assert abs(frac - 1 / len(names)) < 0.03


# ---------------------------------------------------------------------------------------------- rendering


def test_render_shape_range_and_colour():
    attrs = [Attributes(c, "square", "left") for c in COLOUR_NAMES]
    videos = render_videos(attrs, frames=5, size=32, generator=_gen(0))
    assert videos.shape == (7, 5, 3, 32, 32) and videos.dtype == torch.float32
    assert videos.min() >= -1.0 and videos.max() <= 1.0
    background = (videos == -1).all(dim=2).float().mean()
    assert 0.8 < background < 0.95  # one object of ~10% of the frame on black
    for i, c in enumerate(COLOUR_NAMES):
        x01 = (videos[i] + 1) / 2
        brightest = x01.amax(dim=(0, 2, 3))  # per channel
        assert torch.allclose(brightest, torch.tensor(COLOURS[c]), atol=1e-5)


def test_render_determinism_and_device():
    attrs = sample_attributes(8, _gen(3))
    a = render_videos(attrs, generator=_gen(7))
    b = render_videos([prompt_of(x) for x in attrs], generator=_gen(7), device="cpu")
    c = render_videos(attrs, generator=_gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_render_parameters_in_range():
    g = _gen(5)
    attrs = sample_attributes(200, g)
    for size in (32, 64):
        _, p = render_videos(attrs, frames=4, size=size, generator=g, return_params=True)
        scale = size / 32
        assert p["radius"].min() >= 5 * scale - 1e-4 and p["radius"].max() <= 6.5 * scale + 1e-4
        assert p["radius"].max() - p["radius"].min() > 1.2 * scale  # sizes really vary
        speed = p["velocity"].norm(dim=1)
        assert speed.min() >= 0.8 * scale - 1e-4 and speed.max() <= 1.2 * scale + 1e-4
        for a, v in zip(attrs, p["velocity"].tolist()):
            ux, uy = S._DIRECTION_VECTORS[a.direction]
            assert v[0] * ux + v[1] * uy > 0 and abs(v[0] * uy - v[1] * ux) < 1e-6


def test_shapes_geometry_and_equal_areas():
    n = torch.arange(3)
    cov = S._coverage(n, torch.full((3,), 16.0), torch.full((3,), 16.0), torch.full((3,), 6.0), 32, 32, 8)
    areas = cov.sum(dim=(1, 2))
    assert torch.allclose(areas, torch.full((3,), math.pi * 36), rtol=0.002)
    circle, square, triangle = cov > 0.5
    rows = lambda m: m.any(dim=1).nonzero().flatten()  # noqa: E731
    widths = lambda m: m.sum(dim=1)  # noqa: E731
    # square: full rows of equal width; triangle: width grows downwards (apex up); circle: widest in the middle
    sq_rows = rows(square)
    assert widths(square)[sq_rows].unique().numel() == 1
    tr_rows = rows(triangle)
    tw = widths(triangle)[tr_rows]
    assert tw[0] <= 3 and tw[-1] > 12 and (tw[1:] >= tw[:-1]).all()
    cw = widths(circle)[rows(circle)]
    assert cw[0] < cw[len(cw) // 2] > cw[-1]
    assert torch.equal(circle, circle.flip(0)) and torch.equal(circle, circle.flip(1))
    # fill ratio of the bounding box: square ~1, circle ~pi/4, triangle ~1/2
    def fill(m):
        r, c = rows(m), m.any(dim=0).nonzero().flatten()
        return m.sum().item() / ((r.max() - r.min() + 1) * (c.max() - c.min() + 1)).item()

    assert fill(square) > 0.95 and 0.7 < fill(circle) < 0.85 and 0.4 < fill(triangle) < 0.6


def test_wrap_around_keeps_object_fully_visible(real):
    videos, attrs, params, _ = real
    coverage = ((videos + 1) / 2).amax(dim=2).sum(dim=(2, 3))  # (B, F) object area in px
    expected = math.pi * params["radius"] ** 2
    assert torch.allclose(coverage, expected[:, None].expand_as(coverage), rtol=0.003)
    assert (coverage.std(dim=1) / coverage.mean(dim=1)).max() < 0.002
    # many videos really cross an edge during the clip
    centres, r = params["centres"], params["radius"][:, None, None]
    crossing = ((centres < 1.6 * r) | (centres > 32 - 1.6 * r)).any(dim=2).any(dim=1)
    assert crossing.float().mean() > 0.5


def test_motion_is_continuous_on_the_torus(real):
    _, _, params, analysis = real
    # measured per-frame shift equals the velocity, including frames where the object wraps across an edge
    assert (analysis.shift - params["velocity"]).abs().max() < 0.25
    d = S._wrap(analysis.centroids - params["centres"], 32)
    assert d.abs().max() < 0.5


def test_no_start_position_leak():
    g = _gen(11)
    attrs = [Attributes("white", "circle", d) for d in DIRECTIONS for _ in range(400)]
    first = render_videos(attrs, frames=1, generator=g)[:, 0]
    # circular centroid of the first frame, measured directly from the pixels
    mass = (first + 1).amax(dim=1) / 2  # (B, H, W)
    angle = (torch.arange(32) + 0.5) * (2 * math.pi / 32)
    centroids = torch.stack(
        [
            torch.remainder(torch.atan2((m * torch.sin(angle)).sum(1), (m * torch.cos(angle)).sum(1)), 2 * math.pi)
            for m in (mass.sum(dim=1), mass.sum(dim=2))  # marginals over x, then over y
        ],
        dim=1,
    ) * (32 / (2 * math.pi))
    per_dir = centroids.view(len(DIRECTIONS), 400, 2)
    mean, std = per_dir.mean(dim=1), per_dir.std(dim=1)
    # uniform over [0, 32): mean 16 (standard error ~0.46 px), std 32 / sqrt(12) ~ 9.2
    assert (mean - 16).abs().max() < 1.6, mean
    assert (mean[:, None] - mean[None]).abs().max() < 2.2, mean
    assert ((std > 8.0) & (std < 10.5)).all(), std


# ------------------------------------------------------------------------------------------------- checks


def test_checks_on_real_data(real):
    videos, attrs, _, analysis = real
    scores = check_videos(videos, attrs, analysis=analysis)
    assert set(scores) == {"colour", "shape", "motion", "found", "consistency"}
    assert scores["found"] == 1.0
    assert scores["colour"] >= 0.98 and scores["shape"] >= 0.98 and scores["motion"] >= 0.98, scores
    assert scores["consistency"] > 0.98
    assert scores["colour"] == _accuracy(analysis.colours, [a.colour for a in attrs])
    assert scores["shape"] == _accuracy(analysis.shapes, [a.shape for a in attrs])
    assert scores["motion"] == _accuracy(analysis.motions, [a.direction for a in attrs])
    assert classify_colour(videos[:10]) == analysis.colours[:10]
    assert classify_shape(videos[:10]) == analysis.shapes[:10]
    assert classify_motion(videos[:10]) == analysis.motions[:10]


def test_checks_accept_prompts_and_check_lengths(real):
    videos, attrs, _, _ = real
    scores = check_videos(videos[:40], [prompt_of(a) for a in attrs[:40]])  # analyses the videos itself
    assert min(scores.values()) > 0.98, scores
    with pytest.raises(ValueError):
        check_videos(videos[:10], attrs[:9])
    with pytest.raises(ValueError):
        analyse_videos(videos[0])


def test_checks_fail_on_relabelled_attributes(real):
    _, attrs, _, a = real
    nxt = lambda names, x: names[(names.index(x) + 1) % len(names)]  # noqa: E731
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    assert _accuracy(a.colours, [nxt(COLOUR_NAMES, x.colour) for x in attrs]) <= 0.02
    assert _accuracy(a.shapes, [nxt(SHAPES, x.shape) for x in attrs]) <= 0.02
    assert _accuracy(a.motions, [opposite[x.direction] for x in attrs]) <= 0.02
    assert _accuracy(a.motions, [nxt(DIRECTIONS, x.direction) for x in attrs]) <= 0.02
    # time-reversed videos move the other way
    videos = real[0][:60].flip(1)
    assert _accuracy(classify_motion(videos), [opposite[x.direction] for x in attrs[:60]]) >= 0.98


def test_checks_near_chance_on_shuffled_labels(real):
    _, _, _, a = real
    other = sample_attributes(300, _gen(99))
    assert _accuracy(a.colours, [x.colour for x in other]) < 1 / 7 + 0.1
    assert _accuracy(a.shapes, [x.shape for x in other]) < 1 / 3 + 0.12
    assert _accuracy(a.motions, [x.direction for x in other]) < 1 / 4 + 0.12


@pytest.mark.parametrize("kind", ["uniform", "gaussian", "black", "grey"])
def test_checks_fail_on_noise_and_empty_videos(kind):
    g = _gen(4)
    shape = (32, 16, 3, 32, 32)
    videos = {
        "uniform": torch.rand(shape, generator=g) * 2 - 1,
        "gaussian": torch.randn(shape, generator=g).clamp(-1, 1),
        "black": -torch.ones(shape),
        "grey": torch.zeros(shape),
    }[kind]
    scores = check_videos(videos, sample_attributes(32, g))
    assert scores["found"] <= 0.05
    assert max(scores["colour"], scores["shape"], scores["motion"], scores["consistency"]) <= 0.1, scores


def test_static_video_has_no_motion(real):
    videos, attrs, _, _ = real
    static = videos[:50, :1].expand(-1, 16, -1, -1, -1)
    a = analyse_videos(static)
    assert a.motions == [None] * 50
    assert a.shift.abs().max() < 1e-4
    assert _accuracy(a.colours, [x.colour for x in attrs[:50]]) == 1.0
    assert _accuracy(a.shapes, [x.shape for x in attrs[:50]]) >= 0.98
    assert a.consistency.min() > 0.999


def test_slow_motion_still_detected_but_jitter_is_not():
    g = _gen(21)
    attrs = sample_attributes(40, g)
    videos = render_videos(attrs, frames=16, generator=g)
    # random frame order: the object jumps around without a consistent direction
    perm = torch.randperm(16, generator=g)
    jitter = classify_motion(videos[:, perm])
    assert _accuracy(jitter, [a.direction for a in attrs]) < 0.6
    # the same object moving 0.5 px/frame (every other frame) is still moving
    slow = videos.repeat_interleave(2, dim=1)[:, :16]
    assert _accuracy(classify_motion(slow), [a.direction for a in attrs]) >= 0.98


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    k = torch.arange(-4, 5, dtype=torch.float32)
    k = torch.exp(-(k**2) / (2 * sigma**2))
    k = k / k.sum()
    b, f, c, h, w = x.shape
    y = x.reshape(-1, 1, h, w)
    y = F.conv2d(F.pad(y, (4, 4, 0, 0), mode="circular"), k.view(1, 1, 1, 9))
    y = F.conv2d(F.pad(y, (0, 0, 4, 4), mode="circular"), k.view(1, 1, 9, 1))
    return y.view(b, f, c, h, w)


def test_checks_robust_to_imperfect_videos(real):
    videos, attrs, _, _ = real
    videos, attrs = videos[:50], attrs[:50]
    g = _gen(8)
    x01 = (videos + 1) / 2
    degraded = {
        "blurry": _blur(x01, 1.2),
        "faint on grey": 0.25 + 0.35 * x01,
        "noisy": x01 + 0.1 * torch.randn(x01.shape, generator=g),
        "flickering": x01 * (0.4 + 0.6 * torch.rand(50, 16, 1, 1, 1, generator=g)),
    }
    for name, x in degraded.items():
        scores = check_videos((x * 2 - 1).clamp(-1, 1), attrs)
        assert min(scores["colour"], scores["shape"], scores["motion"]) >= 0.95, (name, scores)


def test_consistency_penalises_changing_size():
    frames = 16
    n = torch.zeros(frames, dtype=torch.long)
    cx = 4.0 + torch.arange(frames, dtype=torch.float32)
    growing = torch.linspace(3.0, 8.0, frames)
    steady = torch.full((frames,), 6.0)
    cov = torch.stack([S._coverage(n, cx, torch.full((frames,), 16.0), r, 32, 32) for r in (growing, steady)])
    videos = cov[:, :, None] * torch.tensor([1.0, 0.0, 0.0]).view(1, 1, 3, 1, 1) * 2 - 1
    a = analyse_videos(videos)
    assert a.found.all() and a.motions == ["right", "right"]
    assert a.consistency[0] < 0.75 and a.consistency[1] > 0.98


# ------------------------------------------------------------------------------------------------- stream


def test_batch_stream():
    videos, prompts, attrs = batch(6, _gen(2), frames=4, size=16)
    assert videos.shape == (6, 4, 3, 16, 16)
    assert [parse_prompt(p) for p in prompts] == attrs
    again = ShapesDataset(frames=4, size=16).batch(6, _gen(2))
    assert torch.equal(again[0], videos) and again[1] == prompts
    it = ShapesDataset(frames=2, size=16).stream(3, _gen(0))
    first, second = next(it), next(it)
    assert first[0].shape == (3, 2, 3, 16, 16) and not torch.equal(first[0], second[0])
