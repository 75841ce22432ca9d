"""What every reader shares: channel conversion, label checks, the in-memory/streaming choice.

A reader returns a ``Split`` (uint8 images [N, C, H, W] in memory, int64 labels [N])
or, for image folders too large to hold, a ``StreamingSplit`` that decodes batches
from disk. ``channels`` (1 or 3) is the suite's channel count: grayscale images are
repeated to 3 channels, colour images turned to luma (ITU-R 601-2, Pillow's ``L``)
for 1 channel, an alpha channel is dropped. Every error is a ``DataError`` naming the
file and what was expected.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ...core.errors import DataError
from ...core.types import Split

PathLike = str | os.PathLike
IN_MEMORY_LIMIT = 1 << 30  # bytes of uint8 pixels a folder may decode into memory (1 GiB)


def check_channels(channels: int) -> int:
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    return channels


def convert_channels(images: torch.Tensor, channels: int, source: PathLike) -> torch.Tensor:
    """uint8 [N, c, H, W] with c in 1, 3, 4 -> uint8 [N, channels, H, W] (see the module doc)."""
    c = images.shape[1]
    if c == 4:
        images, c = images[:, :3], 3
    if c == channels:
        return images.contiguous()
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        w = torch.tensor([299, 587, 114], dtype=torch.int32).view(1, 3, 1, 1)  # Pillow's L: (299R+587G+114B)/1000
        return ((images.to(torch.int32) * w).sum(1, keepdim=True) + 500).div(1000, rounding_mode="floor").to(torch.uint8)
    raise DataError(f"{source}: images have {c} channels; expected 1 (gray), 3 (RGB) or 4 (RGBA)")


def array_to_images(x: np.ndarray, channels: int | None, source: PathLike, layout: str = "auto") -> torch.Tensor:
    """A uint8 array of images -> uint8 tensor [N, channels, H, W] (``channels`` None: the
    array's own, 1 or 3, an alpha channel dropped).

    ``layout``: ``"NHWC"``, ``"NCHW"``, ``"NHW"`` or ``"auto"`` (3-d is NHW; 4-d is NCHW
    when dim 1 is 1, 3 or 4 and the last dim is not, else NHWC).
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
        raise DataError(f"{source}: images must be a uint8 array, got {getattr(x, 'dtype', type(x).__name__)}")
    if layout == "auto":
        layout = "NHW" if x.ndim == 3 else ("NCHW" if x.ndim == 4 and x.shape[1] in (1, 3, 4) and x.shape[3] not in (1, 3, 4) else "NHWC")
    want = {"NHW": 3, "NHWC": 4, "NCHW": 4}.get(layout)
    if want is None or x.ndim != want:
        raise DataError(f"{source}: images have shape {x.shape}; expected a {want or 3}-d array laid out {layout}")
    x = np.ascontiguousarray(x)
    t = torch.from_numpy(x if x.flags.writeable else x.copy())
    t = t.unsqueeze(1) if layout == "NHW" else (t.permute(0, 3, 1, 2) if layout == "NHWC" else t)
    if channels is None:
        channels = 1 if t.shape[1] == 1 else 3
    return convert_channels(t, check_channels(channels), source)


def names_to_labels(y: np.ndarray, classes: Sequence[str], source: PathLike) -> torch.Tensor:
    """Class names (a 1-d string array) -> int64 [N] indices into ``classes``; a name not in
    ``classes`` raises naming the file, the name and the class list."""
    index = {c: i for i, c in enumerate(classes)}
    names = [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(y).tolist()]
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise DataError(f"{source}: label names {unknown[:5]} are not in the class list {list(classes)}")
    return torch.tensor([index[n] for n in names], dtype=torch.int64)


def to_labels(y: np.ndarray | Sequence[int], source: PathLike, num_classes: int | None = None) -> torch.Tensor:
    """Integer labels -> int64 [N]; a label outside 0..num_classes-1 raises naming the file."""
    a = np.asarray(y)
    if a.ndim != 1 or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
        raise DataError(f"{source}: labels must be a 1-d integer array, got dtype {a.dtype} shape {a.shape}")
    t = torch.from_numpy(a.astype(np.int64))
    if len(t) and (int(t.min()) < 0 or (num_classes is not None and int(t.max()) >= num_classes)):
        bad = int(t.min()) if int(t.min()) < 0 else int(t.max())
        raise DataError(f"{source}: label {bad} is out of range; expected 0..{(num_classes or 1) - 1}"
                        + ("" if num_classes is not None else " (labels must be >= 0)"))
    return t


def make_split(images: torch.Tensor, labels: torch.Tensor, source: PathLike) -> Split:
    if len(images) != len(labels):
        raise DataError(f"{source}: {len(images)} images but {len(labels)} labels")
    return Split(images, labels)


def decode_image(data: bytes | PathLike, channels: int, size: int | None, source: PathLike,
                 border: int = 0) -> torch.Tensor:
    """One encoded image (bytes or a file) -> uint8 [channels, H, W] (see ``fit_size`` for ``size``).

    ``border``: pixels cropped from every side before resizing (ObjectNet's frame).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if border:
                w, h = img.size
                if min(w, h) <= 2 * border:
                    raise DataError(f"{source}: {w}x{h} image is too small to crop a {border}-pixel border")
                img = img.crop((border, border, w - border, h - border))
            if size is not None:
                img = fit_size(img, size)
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{source}: cannot decode image ({e}); expected an image file Pillow reads") from None
    t = torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True))
    return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1).contiguous()


def fit_size(img, size: int):
    """Resize the shorter side to ``size`` (bilinear, antialiased) and centre-crop ``size x size``."""
    from PIL import Image

    w, h = img.size
    if (w, h) == (size, size):
        return img
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


# what a user sets to resize: the suite table's (or suite_options') key, or the readers' argument
RESIZE_HINT = ("to resize them all (shorter side, centre crop), set image_size = <pixels> in the suite's table "
               "(or suite_options), or pass size=<pixels> to the reader")


def stack_images(images: list[torch.Tensor], sources: Sequence[PathLike], container: PathLike) -> torch.Tensor:
    """Stack [C, H, W] images; images of different sizes raise naming two of them."""
    if not images:
        raise DataError(f"{container}: holds no images")
    first = images[0].shape
    for img, src in zip(images, sources):
        if img.shape != first:
            raise DataError(f"{container}: images of mixed sizes ({sources[0]} is {tuple(first[1:])}, {src} is "
                            f"{tuple(img.shape[1:])}); {RESIZE_HINT}")
    return torch.stack(images)


def existing(path: PathLike, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{p} does not exist; expected {what}")
    return p
