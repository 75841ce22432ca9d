"""Folder trees of image files: ``root/<class>/[sub/...]<image>`` (the ImageFolder layout).

Any extension Pillow reads (PNG, JPEG, BMP, GIF, TIFF, WebP...). Each image is
converted to the suite's channel count (see ``base``). Images of mixed sizes are
refused unless ``size`` is given; then every image is resized (shorter side to
``size``, centre crop) to ``size x size``. An unreadable file fails the read naming
it, or with ``on_error="skip"`` is left out and counted in one warning.

One mechanism for every size: the folder becomes a ``StreamingSplit`` whose batches
are decoded by worker processes (a torch DataLoader); when its decoded pixels fit
``in_memory_limit`` bytes it is decoded once, through those same batches, into an
in-memory ``Split`` (the fast path). Folders are scanned with ``os.scandir`` in sorted
order, so the same tree always gives the same rows. torchvision's ``ImageFolder`` is
not used because torchvision does not import here.
"""

from __future__ import annotations

import os
import warnings
from typing import Callable, Literal, Mapping, Sequence

import torch

from ...core.errors import DataError
from ...core.types import Split, StreamingSplit
from .base import IN_MEMORY_LIMIT, RESIZE_HINT, PathLike, check_channels, decode_image, existing

OnError = Literal["fail", "skip"]
VERIFY_LIMIT = 20_000  # folders with at most this many files have every header read while scanning


def image_extensions() -> set[str]:
    """Lower-case extensions Pillow can open (``.png``, ``.jpeg``...)."""
    from PIL import Image

    Image.init()
    return {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def _walk(folder: str, exts: set[str]) -> list[str]:
    out = []
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if e.name.startswith("."):
            continue
        if e.is_dir(follow_symlinks=True):
            out.extend(_walk(e.path, exts))
        elif os.path.splitext(e.name)[1].lower() in exts:
            out.append(e.path)
    return out


def scan_folder(root: PathLike, class_to_index: Mapping[str, int | Sequence[int]] | None = None,
                keep: Callable[[str], bool] | None = None, strict: bool = True) -> tuple[list[str], list[int], list[str]]:
    """``(files, labels, class folders)`` of ``root/<class>/...``.

    ``class_to_index`` maps a class folder name to its label (or a list of labels: the
    first is used); None numbers the folders in sorted order. With ``strict``, a
    folder that is not in ``class_to_index`` raises (a class list that does not match
    the data); without it such folders are ignored. ``keep(path)`` filters files.
    """
    r = existing(root, "a folder of class sub-folders")
    if not r.is_dir():
        raise DataError(f"{r} is not a folder; expected root/<class>/<images>")
    folders = sorted(e.name for e in os.scandir(r) if e.is_dir(follow_symlinks=True) and not e.name.startswith("."))
    if not folders:
        raise DataError(f"{r} holds no class sub-folders; expected root/<class>/<images>")
    if class_to_index is None:
        class_to_index = {name: i for i, name in enumerate(folders)}
    unknown = [f for f in folders if f not in class_to_index]
    if unknown and strict:
        raise DataError(f"{r}: class folders {unknown[:5]}{' ...' if len(unknown) > 5 else ''} are not in the class "
                        f"list ({len(class_to_index)} classes, e.g. {list(class_to_index)[:3]}); the class list does "
                        f"not match this data")
    exts = image_extensions()
    files: list[str] = []
    labels: list[int] = []
    for name in folders:
        if name not in class_to_index:
            continue
        target = class_to_index[name]
        label = target if isinstance(target, int) else int(list(target)[0])
        found = [f for f in _walk(str(r / name), exts) if keep is None or keep(f)]
        files.extend(found)
        labels.extend([label] * len(found))
    if not files:
        raise DataError(f"{r}: no image files ({', '.join(sorted(exts)[:6])} ...) under its class folders")
    return files, labels, folders


class FolderDecoder:
    """Picklable ``load(indices)`` for ``StreamingSplit``: decodes ``files[i]`` with Pillow
    (``border`` pixels cropped from every side first)."""

    def __init__(self, files: Sequence[str], channels: int, size: int | None, root: PathLike, border: int = 0):
        self.files, self.channels, self.size, self.root = list(files), channels, size, str(root)
        self.border = border

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        imgs = [decode_image(self.files[i], self.channels, self.size, self.files[i], self.border) for i in index.tolist()]
        shape = imgs[0].shape if imgs else None
        for img, i in zip(imgs, index.tolist()):
            if img.shape != shape:
                raise DataError(f"{self.root}: images of mixed sizes ({self.files[index[0]]} is {tuple(shape[1:])}, "
                                f"{self.files[i]} is {tuple(img.shape[1:])}); {RESIZE_HINT}")
        return torch.stack(imgs) if imgs else torch.zeros(0, self.channels, self.size or 0, self.size or 0, dtype=torch.uint8)


def _header(path: str, full: bool) -> tuple[int, int] | None:
    """``(width, height)`` of an image file, or None when it cannot be parsed (``full``: decode it all)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if full:
                img.load()
            return img.size
    except Exception:  # noqa: BLE001 - any failure to parse the file means it is unreadable
        return None


def read_image_folder(root: PathLike, class_to_index: Mapping[str, int | Sequence[int]] | None = None,
                      channels: int = 3, size: int | None = None, on_error: OnError = "fail",
                      keep: Callable[[str], bool] | None = None, strict: bool = True,
                      in_memory_limit: int = IN_MEMORY_LIMIT, num_workers: int = 2,
                      verify: bool | None = None, border: int = 0) -> Split | StreamingSplit:
    """A folder tree -> an in-memory ``Split`` or, above ``in_memory_limit`` bytes, a ``StreamingSplit``.

    ``verify``: read every file's header while scanning (default: when the folder has at
    most ``VERIFY_LIMIT`` files, or ``size`` is None, or ``on_error="skip"``); this is
    what finds unreadable files and mixed sizes before any batch is decoded. With
    ``on_error="skip"`` each file is decoded once while scanning, so truncated image
    data is found too; with ``"fail"`` a file whose data is broken fails when decoded.
    ``border``: pixels cropped from every side of each image before resizing (ObjectNet's
    images carry a 1-pixel red frame; its authors crop 2 pixels).
    """
    check_channels(channels)
    if border < 0:
        raise DataError(f"border must be >= 0 pixels, got {border}")
    if on_error not in ("fail", "skip"):
        raise DataError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    files, labels, _ = scan_folder(root, class_to_index, keep, strict)
    if verify is None:
        verify = len(files) <= VERIFY_LIMIT or size is None or on_error == "skip"
    first_size = None
    if verify:
        sizes = [_header(f, full=on_error == "skip") for f in files]
        bad = [f for f, s in zip(files, sizes) if s is None]
        if bad and on_error == "fail":
            raise DataError(f"{bad[0]}: cannot read this image ({len(bad)} unreadable file(s) under {root}); expected "
                            f"an image file Pillow reads (pass on_error='skip' to leave such files out)")
        if bad:
            warnings.warn(f"{root}: skipped {len(bad)} unreadable image file(s), e.g. {bad[0]}", RuntimeWarning,
                          stacklevel=2)
            ok = [s is not None for s in sizes]
            files = [f for f, o in zip(files, ok) if o]
            labels = [y for y, o in zip(labels, ok) if o]
            sizes = [s for s in sizes if s is not None]
        if not files:
            raise DataError(f"{root}: no readable images")
        if size is None:
            for f, s in zip(files, sizes):
                if s != sizes[0]:
                    raise DataError(f"{root}: images of mixed sizes ({files[0]} is {sizes[0][0]}x{sizes[0][1]}, {f} is "
                                    f"{s[0]}x{s[1]}); {RESIZE_HINT}")
        first_size = (sizes[0][0] - 2 * border, sizes[0][1] - 2 * border)
    h, w = (size, size) if size is not None else ((first_size[1], first_size[0]) if first_size else (224, 224))
    split = StreamingSplit(FolderDecoder(files, channels, size, root, border), torch.tensor(labels, dtype=torch.int64),
                           num_workers=num_workers, description=str(root))
    if len(files) * channels * h * w <= in_memory_limit:
        return split.materialize()
    return split
