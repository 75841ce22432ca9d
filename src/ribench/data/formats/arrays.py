"""NumPy arrays: an ``.npz`` archive with named image and label arrays, or a pair of ``.npy``
files (CIFAR-10.1 ships ``cifar10.1_v6_data.npy`` and ``cifar10.1_v6_labels.npy``).

Labels are class indices (integers) or, when the reader is given the class list
(``classes=``), class names (a string array: ``np.array(["cat", "dog", ...])`` saves and
loads without pickle). Images must be uint8, laid out ``NHWC``, ``NCHW`` or ``NHW``
(``layout="auto"`` guesses, see ``base.array_to_images``). Arrays are loaded with ``allow_pickle=False``, so a
file cannot run code.
"""

from __future__ import annotations

import zipfile
from typing import Sequence

import numpy as np

from ...core.errors import DataError
from ...core.types import Split
from .base import PathLike, array_to_images, existing, make_split, names_to_labels, to_labels


def _load(path: PathLike, what: str):
    p = existing(path, what)
    try:
        return np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{p}: cannot read {what} ({e})") from None


def read_npz(path: PathLike, images_key: str = "images", labels_key: str = "labels", channels: int | None = 3,
             num_classes: int | None = None, layout: str = "auto", classes: Sequence[str] | None = None) -> Split:
    """``images_key`` (uint8 images) and ``labels_key`` (integers, or class names when
    ``classes`` is given) of an ``.npz`` file. ``channels`` None keeps the images' own."""
    with _load(path, "an .npz archive") as z:
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: is a single array; expected an .npz archive with {images_key!r} and {labels_key!r}")
        missing = [k for k in (images_key, labels_key) if k not in z.files]
        if missing:
            raise DataError(f"{path}: has arrays {z.files}; expected {images_key!r} and {labels_key!r} "
                            f"(name them with images_key= / labels_key=)")
        try:
            x, y = z[images_key], z[labels_key]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"{path}: corrupt array ({e})") from None
    if len(x) != len(y):
        raise DataError(f"{path}: {len(x)} images but {len(y)} labels")
    return make_split(array_to_images(x, channels, path, layout), _labels(y, path, num_classes, classes), path)


def _labels(y: np.ndarray, path: PathLike, num_classes: int | None, classes: Sequence[str] | None):
    if np.asarray(y).dtype.kind in "US":
        if classes is None:
            raise DataError(f"{path}: labels are names; give the class list to read them (or store class indices)")
        return names_to_labels(y, classes, path)
    return to_labels(y, path, len(classes) if classes is not None and num_classes is None else num_classes)


def read_npy_pair(images: PathLike, labels: PathLike, channels: int = 3, num_classes: int | None = None,
                  layout: str = "auto") -> Split:
    """An images ``.npy`` and a labels ``.npy``."""
    x, y = _load(images, "an .npy array of images"), _load(labels, "an .npy array of labels")
    if len(x) != len(y):
        raise DataError(f"{images} holds {len(x)} images but {labels} holds {len(y)} labels")
    return make_split(array_to_images(x, channels, images, layout), to_labels(y, labels, num_classes), images)
