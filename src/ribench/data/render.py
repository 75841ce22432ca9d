"""Rendered digits from matplotlib's bundled TrueType fonts, and the batched 2-D
geometry they need.

Output follows the MNIST convention: ``uint8 [N, 1, 28, 28]``, white digit (255) on
black (0), the digit fitted into a ``20 x 20`` box centred in the frame, labels
``int64 [N]`` in 0..9.

How: each (font, stroke width, digit) glyph is drawn once with PIL at high resolution
(a *glyph atlas*); every sample is then one batched ``grid_sample`` of its glyph
through a random affine warp (rotation, shear, scale, shift, all in degrees / ratios /
28-px pixels) to a 4x supersampled canvas, average-pooled down to 28 x 28. Seeded and
deterministic.

Geometry conventions: ``theta`` matrices are ``[N, 3, 3]`` maps from *output* to
*input* coordinates, normalised to [-1, 1] as ``F.affine_grid(align_corners=False)``
expects; boxes are ``[N, 4]`` float ``(x0, y0, x1, y1)`` in input pixels, pixel edges
at integers.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from ..core.errors import DataError

#: Fonts the ``fonts`` task draws from: the DejaVu Sans, Sans Mono and Serif families.
TASK_FONTS: tuple[str, ...] = tuple(
    f"DejaVu{family}{style}.ttf"
    for family in ("Sans", "SansMono", "Serif")
    for style in (("", "-Bold", "-Oblique", "-BoldOblique") if family != "Serif" else ("", "-Bold", "-Italic", "-BoldItalic"))
)
#: Every bundled font with ordinary digit glyphs: the task fonts, STIX and Computer Modern.
ALL_FONTS: tuple[str, ...] = TASK_FONTS + (
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmti10.ttf", "cmtt10.ttf", "cmmi10.ttf",
)
#: PIL stroke widths (pixels at ``GLYPH_FONT_SIZE``) that thicken the glyphs.
STROKES: tuple[int, ...] = (0, 2, 4)

GLYPH_CANVAS = 160
GLYPH_FONT_SIZE = 96
IMAGE_SIZE = 28
DIGIT_BOX = 20
SUPERSAMPLE = 4
CHUNK = 512


# ---------------------------------------------------------------- geometry


def bounding_boxes(images: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Tight boxes of pixels above ``threshold`` in ``[N, C, H, W]``: float ``[N, 4]``.

    An image with no such pixel gets the whole frame.
    """
    h, w = images.shape[-2:]
    mask = (images > threshold).any(dim=1)  # [N, H, W]
    rows, cols = mask.any(dim=2), mask.any(dim=1)

    def first_last(hit: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        first = hit.int().argmax(dim=1)
        last = size - hit.flip(1).int().argmax(dim=1)
        empty = ~hit.any(dim=1)
        return first.masked_fill(empty, 0), last.masked_fill(empty, size)

    y0, y1 = first_last(rows, h)
    x0, x1 = first_last(cols, w)
    return torch.stack([x0, y0, x1, y1], dim=1).float()


def fit_theta(boxes: torch.Tensor, in_hw: tuple[int, int], out_size: int = IMAGE_SIZE,
              box: float | torch.Tensor = DIGIT_BOX) -> torch.Tensor:
    """``[N, 3, 3]`` maps that scale each box (aspect kept) to ``box`` px (a number, or one
    per box as float ``[N]``) and centre it in a square ``out_size`` canvas."""
    h, w = in_hw
    x0, y0, x1, y1 = boxes.unbind(1)
    extent = torch.maximum(x1 - x0, y1 - y0).clamp_min(1.0)
    per_px = out_size * extent / box  # input pixels spanned by the output frame
    theta = torch.zeros(len(boxes), 3, 3)
    theta[:, 0, 0] = per_px / w
    theta[:, 1, 1] = per_px / h
    theta[:, 0, 2] = (x0 + x1) / w - 1
    theta[:, 1, 2] = (y0 + y1) / h - 1
    theta[:, 2, 2] = 1
    return theta


def random_affine_theta(
    n: int,
    generator: torch.Generator,
    rotation: float = 0.0,
    shear: float = 0.0,
    scale: tuple[float, float] = (1.0, 1.0),
    shift: float = 0.0,
    size: int = IMAGE_SIZE,
) -> torch.Tensor:
    """``[N, 3, 3]`` inverse maps of random forward warps about the centre.

    Rotation ~ U(-rotation, rotation) degrees, horizontal shear ~ U(-shear, shear),
    isotropic scale ~ U(*scale), shift ~ U(-shift, shift) pixels of a ``size`` frame.
    """
    u = torch.rand(n, 5, generator=generator) * 2 - 1
    angle = u[:, 0] * math.radians(rotation)
    k = u[:, 1] * shear
    s = scale[0] + (u[:, 2] + 1) / 2 * (scale[1] - scale[0])
    t = u[:, 3:] * shift * 2 / size
    cos, sin = torch.cos(angle), torch.sin(angle)
    forward = torch.stack([cos, cos * k - sin, sin, sin * k + cos], dim=1).view(n, 2, 2) * s.view(n, 1, 1)
    inverse = torch.linalg.inv(forward)
    theta = torch.zeros(n, 3, 3)
    theta[:, :2, :2] = inverse
    theta[:, :2, 2] = -(inverse @ t.unsqueeze(2)).squeeze(2)
    theta[:, 2, 2] = 1
    return theta


def sampling_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[N, height, width, 2]`` grid for ``F.grid_sample`` (align_corners=False).

    Same result as ``F.affine_grid``, which is several times slower on CPU.
    """
    xs = (torch.arange(width, dtype=torch.float32) * 2 + 1) / width - 1
    ys = (torch.arange(height, dtype=torch.float32) * 2 + 1) / height - 1
    base = torch.stack([xs.repeat(height), ys.repeat_interleave(width), torch.ones(height * width)], dim=1)
    return torch.matmul(base, theta[:, :2, :].float().transpose(1, 2)).view(len(theta), height, width, 2)


def affine_warp(
    images: torch.Tensor, theta: torch.Tensor, out_hw: tuple[int, int], supersample: int = 1
) -> torch.Tensor:
    """Resample float ``[N, C, H, W]`` through ``theta`` ``[N, 3, 3]`` (or ``[N, 2, 3]``)
    to float ``[N, C, *out_hw]``; outside the input reads as 0.

    ``supersample`` renders at that many times the size and average-pools back down,
    which anti-aliases strong downscaling.
    """
    grid = sampling_grid(theta, out_hw[0] * supersample, out_hw[1] * supersample)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return F.avg_pool2d(out, supersample) if supersample > 1 else out


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float on the 0..255 scale -> uint8, rounded and clamped."""
    return x.round().clamp_(0, 255).to(torch.uint8)


def fit_to_box(images: torch.Tensor, box: int = DIGIT_BOX, size: int = IMAGE_SIZE) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` (bright ink on black) -> uint8 ``[N, C, size, size]``:
    crop each image to its ink, scale it (aspect kept) into ``box`` px, centre it."""
    theta = fit_theta(bounding_boxes(images), tuple(images.shape[-2:]), size, box)
    return to_uint8(affine_warp(images.float(), theta, (size, size), SUPERSAMPLE))


# ---------------------------------------------------------------- glyphs


def font_path(name: str) -> Path:
    """``name`` in matplotlib's bundled ``mpl-data/fonts/ttf`` folder (``matplotlib.get_data_path()``),
    found without importing matplotlib."""
    import importlib.util

    spec = importlib.util.find_spec("matplotlib")
    folder = Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None
    path = (folder / "mpl-data" / "fonts" / "ttf" / name) if folder else Path("mpl-data", "fonts", "ttf", name)
    if not path.is_file():
        raise DataError(f"font file {path} not found (is matplotlib installed with its mpl-data?)")
    return path


@lru_cache(maxsize=4)
def glyph_atlas(fonts: tuple[str, ...], strokes: tuple[int, ...] = STROKES) -> torch.Tensor:
    """uint8 ``[F, S, 10, GLYPH_CANVAS, GLYPH_CANVAS]``: digit d of font f with stroke s,
    white on black, centred."""
    out = np.zeros((len(fonts), len(strokes), 10, GLYPH_CANVAS, GLYPH_CANVAS), dtype=np.uint8)
    centre = GLYPH_CANVAS // 2
    for fi, name in enumerate(fonts):
        font = ImageFont.truetype(str(font_path(name)), GLYPH_FONT_SIZE)
        for si, stroke in enumerate(strokes):
            for d in range(10):
                img = Image.new("L", (GLYPH_CANVAS, GLYPH_CANVAS))
                ImageDraw.Draw(img).text(
                    (centre, centre), str(d), font=font, fill=255, anchor="mm", stroke_width=stroke, stroke_fill=255
                )
                out[fi, si, d] = np.asarray(img)
    return torch.from_numpy(out)


def render_digits(
    n_per_class: int,
    fonts: tuple[str, ...] = TASK_FONTS,
    seed: int = 0,
    rotation: float = 15.0,
    shear: float = 0.3,
    scale: tuple[float, float] = (0.8, 1.05),
    shift: float = 1.5,
    size: int = IMAGE_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_per_class`` rendered samples of each digit, shuffled.

    Returns ``(uint8 [10 * n_per_class, 1, size, size], int64 [10 * n_per_class])``. Each
    sample draws a font from ``fonts``, a stroke width from ``STROKES`` and a random
    affine warp (see ``random_affine_theta``; rotation in degrees, shift in pixels of a
    28-px frame). ``size`` renders the same samples at another resolution: the digit box
    stays ``DIGIT_BOX / IMAGE_SIZE`` of the frame, and the warp is sampled as densely as
    at 28 px (``SUPERSAMPLE * 28 / size`` times per output pixel).
    """
    g = torch.Generator().manual_seed(seed)
    n = 10 * n_per_class
    labels = torch.arange(10).repeat_interleave(n_per_class)[torch.randperm(n, generator=g)]
    font_idx = torch.randint(len(fonts), (n,), generator=g)
    stroke_idx = torch.randint(len(STROKES), (n,), generator=g)
    warp = random_affine_theta(n, g, rotation, shear, scale, shift)

    atlas = glyph_atlas(tuple(fonts))
    boxes = bounding_boxes(atlas.view(-1, 1, GLYPH_CANVAS, GLYPH_CANVAS)).view(*atlas.shape[:3], 4)
    box = DIGIT_BOX * size / IMAGE_SIZE
    supersample = max(1, SUPERSAMPLE * IMAGE_SIZE // size)  # the same sampling density at any size
    theta = fit_theta(boxes[font_idx, stroke_idx, labels], (GLYPH_CANVAS, GLYPH_CANVAS), size, box) @ warp

    images = torch.empty(n, 1, size, size, dtype=torch.uint8)
    for start in range(0, n, CHUNK):
        sl = slice(start, start + CHUNK)
        glyphs = atlas[font_idx[sl], stroke_idx[sl], labels[sl]].unsqueeze(1).float()
        images[sl] = to_uint8(affine_warp(glyphs, theta[sl], (size, size), supersample))
    return images, labels
