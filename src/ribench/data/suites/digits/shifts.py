"""Batched image operations that make the distribution shifts of the ``digits`` suite (v2).

The low-level operations take float images ``[N, C, H, W]`` on the 0..1 scale (white ink
on black) and return the same unless said otherwise; lengths are in pixels of the image
they are given. The domain transforms at the end (``fresh_handwriting``, ``sketch``,
``cartoon``, ``line_drawing``, ``viewpoint``, ``wild_handwriting``) take and return uint8
``[N, C, 28, 28]`` and draw every random number from one CPU ``torch.Generator``, in a
fixed order, so a seed fixes the output. Morphology and strokes work at ``WORK_SCALE``
times the resolution (56 px for 28-px digits), where a 3 x 3 step is half a 28-px pixel,
and are average-pooled back down.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ....core.errors import DataError
from ...render import IMAGE_SIZE, affine_warp, bounding_boxes, fit_theta, random_affine_theta, sampling_grid, to_uint8
from .sources import TEXTURES

WORK_SCALE = 2
CHUNK = 512


# ---------------------------------------------------------------- morphology and fields


def _window_max(x: torch.Tensor, k: int) -> torch.Tensor:
    """Maximum over a ``k x k`` square (``k`` odd) around each pixel, outside the frame read
    as 0 (so ``-_window_max(-x)`` is a minimum with outside 0): separable running maxima of
    shifted views, several times faster than ``F.max_pool2d`` on CPU for one channel."""
    if k % 2 != 1 or k < 1:
        raise DataError(f"morphology window must be an odd size >= 1, got {k}")
    r, (h, w) = k // 2, x.shape[-2:]
    padded = F.pad(x, (r, r, 0, 0))
    rows = padded[..., :, :w].clone()
    for i in range(1, k):
        torch.maximum(rows, padded[..., :, i : i + w], out=rows)
    padded = F.pad(rows, (0, 0, r, r))
    out = padded[..., :h, :].clone()
    for i in range(1, k):
        torch.maximum(out, padded[..., i : i + h, :], out=out)
    return out


def dilate(x: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Grey-level dilation (maximum) over a ``k x k`` square, ``k`` odd; outside reads as 0."""
    return _window_max(x, k)


def erode(x: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Grey-level erosion (minimum) over a ``k x k`` square, ``k`` odd, of non-negative
    images; outside reads as 0 (black), so ink touching the frame erodes from it too."""
    return -_window_max(-x, k)


def upsample(x: torch.Tensor, factor: int = WORK_SCALE) -> torch.Tensor:
    """Bilinear ``factor``-times enlargement (align_corners=False)."""
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def downsample(x: torch.Tensor, factor: int = WORK_SCALE) -> torch.Tensor:
    """Average-pool ``factor x factor`` blocks (the inverse of rendering at ``factor`` times the size)."""
    return F.avg_pool2d(x, factor)


def smooth_field(n: int, size: int, cells: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` smooth random fields in [-1, 1]: uniform values on a ``(cells + 1)^2`` lattice,
    bicubic-interpolated to ``[n, 1, size, size]`` (one lattice cell spans ``size / cells`` px)."""
    lattice = torch.rand(n, 1, cells + 1, cells + 1, generator=generator) * 2 - 1
    return F.interpolate(lattice, size=(size, size), mode="bicubic", align_corners=True).clamp_(-1, 1)


def displace(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Output pixel ``(r, c)`` reads input ``(r + dy, c + dx)`` (bilinear, 0 outside).

    ``dx``, ``dy``: float ``[N, 1, H, W]`` displacements in pixels."""
    n, _, h, w = x.shape
    xs = (torch.arange(w, dtype=torch.float32) * 2 + 1) / w - 1
    ys = (torch.arange(h, dtype=torch.float32) * 2 + 1) / h - 1
    gx = xs.view(1, 1, w) + dx[:, 0] * (2 / w)
    gy = ys.view(1, h, 1) + dy[:, 0] * (2 / h)
    return F.grid_sample(x, torch.stack([gx, gy], dim=3), mode="bilinear", padding_mode="zeros", align_corners=False)


def elastic(x: torch.Tensor, amplitude: float, cells: int, generator: torch.Generator) -> torch.Tensor:
    """Smooth random deformation: each pixel moves by up to ``amplitude`` px along each axis,
    the displacement varying over ``cells`` lattice cells per side (2 draws of ``smooth_field``)."""
    n, _, h, _ = x.shape
    dx = smooth_field(n, h, cells, generator) * amplitude
    dy = smooth_field(n, h, cells, generator) * amplitude
    return displace(x, dx, dy)


def stroke_width(x: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Thicken (``amount`` > 0, towards a 3 x 3 dilation) or thin (< 0, towards an erosion)
    each image's strokes; ``amount`` float ``[N]`` in [-1, 1]. One full step moves every
    edge by one pixel of ``x``."""
    a = amount.view(-1, 1, 1, 1)
    return x + a.clamp(min=0) * (dilate(x) - x) + a.clamp(max=0) * (x - erode(x))


#: bit i of a neighbourhood code is neighbour P(i + 2) of Zhang & Suen, as (row, column)
#: offsets into the 1-padded frame: north, north-east, east, south-east, south, south-west,
#: west, north-west (clockwise from north)
NEIGHBOURS = ((0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0), (0, 0))


def neighbourhood_codes(mask: torch.Tensor) -> torch.Tensor:
    """int64 ``[N, 1, H, W]`` codes in 0..255 of each pixel's 8 neighbours (``NEIGHBOURS``)
    in a boolean ``[N, 1, H, W]`` mask; outside the frame is 0."""
    h, w = mask.shape[-2:]
    padded = F.pad(mask.to(torch.uint8), (1, 1, 1, 1))
    code = torch.zeros(mask.shape, dtype=torch.uint8)
    for bit, (r, c) in enumerate(NEIGHBOURS):
        code |= padded[..., r : r + h, c : c + w] << bit
    return code.long()


def _zhang_suen_tables() -> tuple[torch.Tensor, torch.Tensor]:
    """Deletion tables of the two sub-iterations, bool ``[256]`` indexed by neighbourhood code:
    2 <= B <= 6 neighbours set, A == 1 0->1 transition around the ring, and P2.P4.P6 = 0,
    P4.P6.P8 = 0 (first) or P2.P4.P8 = 0, P2.P6.P8 = 0 (second)."""
    first, second = torch.zeros(256, dtype=torch.bool), torch.zeros(256, dtype=torch.bool)
    for code in range(256):
        p = [(code >> i) & 1 for i in range(8)]  # p[0] = P2 ... p[7] = P9
        b = sum(p)
        a = sum(p[i] == 0 and p[(i + 1) % 8] == 1 for i in range(8))
        if 2 <= b <= 6 and a == 1:
            first[code] = p[0] * p[2] * p[4] == 0 and p[2] * p[4] * p[6] == 0
            second[code] = p[0] * p[2] * p[6] == 0 and p[0] * p[4] * p[6] == 0
    return first, second


ZHANG_SUEN_TABLES = _zhang_suen_tables()


def thin(mask: torch.Tensor, max_iter: int = 200) -> torch.Tensor:
    """Zhang & Suen (1984) thinning of a boolean ``[N, 1, H, W]`` mask to 1-px skeletons.

    Each sub-iteration looks every pixel's neighbourhood code up in its deletion table
    (``ZHANG_SUEN_TABLES``), batched over the images that changed in the previous
    iteration; an image is done when a full iteration deletes nothing (at most
    ``max_iter`` iterations). Pixels outside the frame are 0.
    """
    if mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[1] != 1:
        raise DataError(f"thin() needs a boolean mask [N, 1, H, W], got {mask.dtype} {tuple(mask.shape)}")
    x = mask.clone()
    active = torch.arange(len(x))  # images that changed in the last iteration
    for _ in range(max_iter):
        part = x[active]
        changed = torch.zeros(len(active), dtype=torch.bool)
        for table in ZHANG_SUEN_TABLES:
            delete = part & table[neighbourhood_codes(part)]
            part &= ~delete
            changed |= delete.flatten(1).any(dim=1)
        x[active] = part
        active = active[changed]
        if len(active) == 0:
            break
    return x


# ---------------------------------------------------------------- geometry and strokes


def homography_from_corners(corners: torch.Tensor) -> torch.Tensor:
    """``[N, 3, 3]`` maps sending the frame's corners (-1, -1), (1, -1), (1, 1), (-1, 1)
    (normalised coordinates) to ``corners`` ``[N, 4, 2]`` (x, y), last entry 1."""
    src = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    n = len(corners)
    a = torch.zeros(n, 8, 8)
    x, y = src[:, 0], src[:, 1]
    u, v = corners[..., 0], corners[..., 1]
    a[:, 0::2, 0], a[:, 0::2, 1], a[:, 0::2, 2] = x, y, 1
    a[:, 1::2, 3], a[:, 1::2, 4], a[:, 1::2, 5] = x, y, 1
    a[:, 0::2, 6], a[:, 0::2, 7] = -u * x, -u * y
    a[:, 1::2, 6], a[:, 1::2, 7] = -v * x, -v * y
    b = torch.stack([u, v], dim=2).reshape(n, 8)
    h = torch.linalg.solve(a.double(), b.double()).float()
    return torch.cat([h, torch.ones(n, 1)], dim=1).view(n, 3, 3)


def random_homography_theta(
    n: int, generator: torch.Generator, rotation: float, scale: tuple[float, float], corner: float
) -> torch.Tensor:
    """``[N, 3, 3]`` output-to-input maps of random forward homographies about the centre:
    rotation ~ U(-rotation, rotation) degrees and isotropic scale ~ U(*scale), then each
    frame corner moved by U(-corner, corner) along each axis (normalised units, 1 = half
    the frame). Draws: ``rand(n, 2)`` then ``rand(n, 4, 2)``."""
    u = torch.rand(n, 2, generator=generator)
    angle = (u[:, 0] * 2 - 1) * math.radians(rotation)
    s = scale[0] + u[:, 1] * (scale[1] - scale[0])
    cos, sin = torch.cos(angle) * s, torch.sin(angle) * s
    linear = torch.zeros(n, 3, 3)
    linear[:, 0, 0], linear[:, 0, 1], linear[:, 1, 0], linear[:, 1, 1], linear[:, 2, 2] = cos, -sin, sin, cos, 1
    square = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    corners = square + (torch.rand(n, 4, 2, generator=generator) * 2 - 1) * corner
    forward = homography_from_corners(corners) @ linear
    return torch.linalg.inv(forward)


def homography_warp(x: torch.Tensor, theta: torch.Tensor, supersample: int = 1) -> torch.Tensor:
    """Resample ``x`` ``[N, C, H, W]`` through output-to-input homographies ``theta``
    ``[N, 3, 3]`` (normalised coordinates, align_corners=False); 0 outside the input."""
    n, _, h, w = x.shape
    hs, ws = h * supersample, w * supersample
    xs = (torch.arange(ws, dtype=torch.float32) * 2 + 1) / ws - 1
    ys = (torch.arange(hs, dtype=torch.float32) * 2 + 1) / hs - 1
    base = torch.stack([xs.repeat(hs), ys.repeat_interleave(ws), torch.ones(hs * ws)], dim=1)
    q = torch.matmul(base, theta.transpose(1, 2))  # [N, hs * ws, 3]
    grid = (q[..., :2] / q[..., 2:].clamp_min(1e-6)).view(n, hs, ws, 2)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return F.avg_pool2d(out, supersample) if supersample > 1 else out


def polyline_ink(points: torch.Tensor, width: float, size: int) -> torch.Tensor:
    """Anti-aliased ink of polylines: ``points`` ``[N, K, P, 2]`` (K lines of P points,
    (x, y) in pixels, pixel centres at i + 0.5) drawn ``width`` px wide on a ``size x size``
    frame. Returns float ``[N, K, size, size]`` in [0, 1], one channel per line (1 within
    width / 2 of the line, falling linearly to 0 one pixel further)."""
    n, k, p, _ = points.shape
    a = points[:, :, :-1].unsqueeze(3)  # [N, K, P - 1, 1, 2]
    ab = points[:, :, 1:].unsqueeze(3) - a
    c = torch.arange(size, dtype=torch.float32) + 0.5
    pix = torch.stack([c.repeat(size), c.repeat_interleave(size)], dim=1)  # [size * size, 2]
    out = torch.empty(n, k, size * size)
    for s in range(0, n, CHUNK):
        sl = slice(s, s + CHUNK)
        ap = pix - a[sl]
        t = ((ap * ab[sl]).sum(-1) / (ab[sl] ** 2).sum(-1).clamp_min(1e-9)).clamp(0, 1)
        d = (ap - t.unsqueeze(-1) * ab[sl]).norm(dim=-1).amin(dim=2)
        out[sl] = (1 - (d - width / 2)).clamp(0, 1)
    return out.view(n, k, size, size)


def random_strokes(n: int, k: int, generator: torch.Generator, size: int = IMAGE_SIZE,
                   length: tuple[float, float] = (6.0, 14.0), bend: float = 4.0, points: int = 8) -> torch.Tensor:
    """``k`` random quadratic Bezier strokes per image as ``[N, k, points, 2]`` polylines (px):
    start uniform in the frame, end ``U(*length)`` px away in a uniform direction, the
    control point off the midpoint by ``U(-bend, bend)`` px across the chord."""
    u = torch.rand(n, k, 5, generator=generator)
    p0 = u[..., :2] * size
    angle = u[..., 2] * 2 * math.pi
    chord = length[0] + u[..., 3] * (length[1] - length[0])
    direction = torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)
    p2 = p0 + direction * chord.unsqueeze(-1)
    normal = torch.stack([-direction[..., 1], direction[..., 0]], dim=-1)
    p1 = (p0 + p2) / 2 + normal * ((u[..., 4] * 2 - 1) * bend).unsqueeze(-1)
    t = torch.linspace(0, 1, points).view(1, 1, points, 1)
    p0, p1, p2 = (p.unsqueeze(2) for p in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def texture_crops(textures: list[torch.Tensor], n: int, generator: torch.Generator, size: int = IMAGE_SIZE) -> torch.Tensor:
    """``n`` random ``size x size`` crops of randomly chosen grey ``textures`` (uint8 ``[H, W]``
    each): float ``[n, 1, size, size]`` in [0, 1]. Draws: ``randint(len(textures), (n,))``,
    then ``rand(n, 2)`` for the relative top-left corners."""
    which = torch.randint(len(textures), (n,), generator=generator)
    corner = torch.rand(n, 2, generator=generator)
    offsets = torch.arange(size)
    out = torch.empty(n, 1, size, size)
    for j, tex in enumerate(textures):
        idx = torch.nonzero(which == j).flatten()
        h, w = tex.shape
        top = (corner[idx, 0] * (h - size + 1)).long()
        left = (corner[idx, 1] * (w - size + 1)).long()
        out[idx, 0] = tex[(top[:, None] + offsets)[:, :, None], (left[:, None] + offsets)[:, None, :]].float() / 255
    return out


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """``[..., 3]`` hue, saturation, value in [0, 1] -> ``[..., 3]`` RGB in [0, 1]
    (the hexcone model, as ``matplotlib.colors.hsv_to_rgb``)."""
    h, s, v = hsv.unbind(-1)
    k = (torch.tensor([5.0, 3.0, 1.0]) + (h * 6).unsqueeze(-1)) % 6
    return v.unsqueeze(-1) - (v * s).unsqueeze(-1) * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


# ---------------------------------------------------------------- the domain transforms


def _unit(images: torch.Tensor, what: str) -> torch.Tensor:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 1:
        raise DataError(f"{what} needs uint8 grey digits [N, 1, H, W], got {images.dtype} {tuple(images.shape)}")
    return images.float() / 255


def fresh_handwriting(images: torch.Tensor, generator: torch.Generator,
                      thickness: tuple[float, float] = (-0.6, 1.0), box: tuple[float, float] = (18.0, 22.0)) -> torch.Tensor:
    """A fresh sample's collection differences (``mnist-v2``): each digit's stroke width
    changes by ``U(*thickness)`` steps of half a pixel per edge (``stroke_width`` at 56 px),
    then its ink's bounding box (not its centre of mass, as MNIST) is centred in the frame
    and scaled to ``U(*box)`` px (MNIST: 20). Draws: ``rand(n)`` twice.
    uint8 ``[N, 1, 28, 28]`` -> same."""
    x = upsample(_unit(images, "fresh_handwriting"))
    n = len(x)
    x = stroke_width(x, thickness[0] + torch.rand(n, generator=generator) * (thickness[1] - thickness[0]))
    side = box[0] + torch.rand(n, generator=generator) * (box[1] - box[0])
    theta = fit_theta(bounding_boxes(x, 0.1), tuple(x.shape[-2:]), IMAGE_SIZE, side)
    return to_uint8(affine_warp(x.clamp(0, 1), theta, (IMAGE_SIZE, IMAGE_SIZE), WORK_SCALE) * 255)


def sketch(images: torch.Tensor, generator: torch.Generator, thicken: int = 5, pressure: tuple[float, float] = (0.55, 1.0),
           cells: int = 4) -> torch.Tensor:
    """An outline sketch of each digit (``sketch``): at 56 px the strokes are dilated by a
    ``thicken x thicken`` square, replaced by their morphological gradient (dilation minus
    erosion, 3 x 3: a line along both edges of every stroke, the inside left hollow),
    scaled by a smooth pencil-pressure field in ``[*pressure]`` and pooled back to 28 px.
    Draws: one ``smooth_field``. uint8 ``[N, 1, 28, 28]`` -> same."""
    x = dilate(upsample(_unit(images, "sketch")), thicken)
    outline = (dilate(x) - erode(x)).clamp_(0, 1)
    lo, hi = pressure
    field = lo + (smooth_field(len(x), x.shape[-1], cells, generator) + 1) / 2 * (hi - lo)
    return to_uint8(downsample(outline * field) * 255)


def cartoon(images: torch.Tensor, generator: torch.Generator, outline: int = 7) -> torch.Tensor:
    """A flat-colour cartoon of each digit (``cartoon``), RGB: at 56 px the digit becomes a
    hard-edged mask filled with one flat colour, ringed by a dark outline ``(outline - 1) / 2``
    px wide (56-px units), on a flat background colour of another hue, pooled back to 28 px.
    Colours (HSV): background hue U(0, 1), saturation U(.25, .7), value U(.35, .75); fill
    hue the background's + U(.25, .75), saturation U(.4, .9), value U(.85, 1); outline value
    U(0, .15). Draws: ``rand(n, 7)``. uint8 ``[N, 1, 28, 28]`` -> uint8 ``[N, 3, 28, 28]``."""
    x = upsample(_unit(images, "cartoon"))
    mask = ((dilate(x) - 0.35) * 5).clamp_(0, 1)
    ring = (dilate(mask, outline) - mask).clamp_(0, 1)
    u = torch.rand(len(x), 7, generator=generator)
    bg = hsv_to_rgb(torch.stack([u[:, 0], 0.25 + 0.45 * u[:, 1], 0.35 + 0.4 * u[:, 2]], dim=1))
    fg = hsv_to_rgb(torch.stack([(u[:, 0] + 0.25 + 0.5 * u[:, 3]) % 1, 0.4 + 0.5 * u[:, 4], 0.85 + 0.15 * u[:, 5]], dim=1))
    ink = (0.15 * u[:, 6]).view(-1, 1, 1, 1)
    out = bg.view(-1, 3, 1, 1) * (1 - mask - ring) + ink * ring + fg.view(-1, 3, 1, 1) * mask
    return to_uint8(downsample(out) * 255)


def line_drawing(glyphs: torch.Tensor, generator: torch.Generator, passes: int = 2, jitter: float = 4.0,
                 cells: int = 3, pressure: tuple[float, float] = (0.6, 1.0)) -> torch.Tensor:
    """A pen drawing traced over each glyph (``drawing``): the glyph (uint8 ``[N, 1, 56, 56]``,
    rendered at 2x) is thinned to its 1-px skeleton (``thin``), and each of ``passes`` pen
    strokes draws that skeleton 3 px wide, moved by its own smooth jitter of up to ``jitter``
    px (``elastic``, ``cells`` lattice cells) and scaled by a pen-pressure field in
    ``[*pressure]``; the passes overlap (maximum) and are pooled to 28 px. Draws per pass:
    two fields for the jitter, one for the pressure. Returns uint8 ``[N, 1, 28, 28]``."""
    x = _unit(glyphs, "line_drawing")
    if x.shape[-1] != IMAGE_SIZE * WORK_SCALE:
        raise DataError(f"line_drawing needs glyphs rendered at {IMAGE_SIZE * WORK_SCALE} px, got {tuple(x.shape)}")
    pen = dilate(thin(x > 0.5).float())
    lo, hi = pressure
    out = torch.zeros_like(pen)
    for _ in range(passes):
        stroke = elastic(pen, jitter, cells, generator)
        field = lo + (smooth_field(len(x), x.shape[-1], cells, generator) + 1) / 2 * (hi - lo)
        out = torch.maximum(out, stroke * field)
    return to_uint8(downsample(out).clamp_(0, 1) * 255)


def viewpoint(images: torch.Tensor, textures: list[torch.Tensor], generator: torch.Generator,
              rotation: float = 45.0, scale: tuple[float, float] = (0.7, 0.95), corner: float = 0.2,
              strokes: int = 2, stroke_level: tuple[float, float] = (0.35, 0.75),
              texture_level: tuple[float, float] = (0.15, 0.35)) -> torch.Tensor:
    """Another viewpoint in a cluttered scene (``viewpoint``): a random homography
    (``random_homography_theta``: rotation up to ``rotation`` degrees, scale, corners moved
    by up to ``corner``), ``strokes`` random distractor strokes 1.5 px wide at ``U(*stroke_level)``
    of full ink, over a crop of a grey texture (``skimage.data`` brick, grass, gravel)
    at ``U(*texture_level)`` contrast; ink, strokes and texture combine by maximum.
    Draws, in order: the homography, the strokes, ``rand(n, 1 + strokes)`` for the levels,
    the texture crops. uint8 ``[N, 1, 28, 28]`` -> same."""
    x = _unit(images, "viewpoint")
    n = len(x)
    warped = homography_warp(x, random_homography_theta(n, generator, rotation, scale, corner), WORK_SCALE)
    lines = random_strokes(n, strokes, generator, length=(5.0, 12.0))
    levels = torch.rand(n, 1 + strokes, generator=generator)
    level = stroke_level[0] + levels[:, 1:] * (stroke_level[1] - stroke_level[0])
    stroke_ink = (polyline_ink(lines, 1.5, IMAGE_SIZE) * level.view(n, strokes, 1, 1)).amax(dim=1, keepdim=True)
    tex = texture_crops(textures, n, generator)
    lo, hi = texture_level
    tex = tex * (lo + levels[:, 0] * (hi - lo)).view(-1, 1, 1, 1)
    return to_uint8(torch.maximum(torch.maximum(warped, stroke_ink), tex) * 255)


def wild_handwriting(images: torch.Tensor, generator: torch.Generator, amplitude: float = 1.5, cells: int = 3,
                     rotation: float = 15.0, shear: float = 0.25, scale: tuple[float, float] = (0.9, 1.1),
                     shift: float = 1.0, thickness: tuple[float, float] = (-0.6, 1.0)) -> torch.Tensor:
    """Handwriting varied as in the wild, the candidate pool of the ``hard`` task: a random
    affine warp (``random_affine_theta``) and an elastic deformation of up to ``amplitude``
    px along each axis (28-px units, ``cells`` lattice cells), resampled in one bilinear
    pass to 56 px, then a stroke-width change of ``U(*thickness)`` steps. Draws, in order:
    the affine warp, two ``smooth_field`` for the deformation, ``rand(n)``.
    uint8 ``[N, 1, 28, 28]`` -> same."""
    x = _unit(images, "wild_handwriting")
    n, size = len(x), x.shape[-1] * WORK_SCALE
    grid = sampling_grid(random_affine_theta(n, generator, rotation, shear, scale, shift), size, size)
    shift_px = torch.stack([smooth_field(n, size, cells, generator)[:, 0] for _ in range(2)], dim=3)
    grid = grid + shift_px * (amplitude * 2 / x.shape[-1])
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    x = stroke_width(x, thickness[0] + torch.rand(n, generator=generator) * (thickness[1] - thickness[0]))
    return to_uint8(downsample(x.clamp(0, 1)) * 255)


def load_textures(names: tuple[str, ...] = TEXTURES) -> list[torch.Tensor]:
    """Grey textures from ``skimage.data`` as uint8 ``[H, W]`` tensors."""
    import skimage.data

    out = []
    for name in names:
        img = np.asarray(getattr(skimage.data, name)())
        if img.ndim != 2 or img.dtype != np.uint8:
            raise DataError(f"skimage.data.{name}() should be a grey uint8 image [H, W], got {img.dtype} {img.shape}")
        out.append(torch.from_numpy(np.ascontiguousarray(img)))
    return out


__all__ = [
    "cartoon", "dilate", "displace", "downsample", "elastic", "erode", "fresh_handwriting",
    "homography_from_corners", "homography_warp", "hsv_to_rgb", "line_drawing", "load_textures", "polyline_ink",
    "random_homography_theta", "random_strokes", "sketch", "smooth_field", "stroke_width", "texture_crops", "thin",
    "upsample", "viewpoint", "wild_handwriting",
]
