"""``mnist-rib``: real digits, ImageNet-RIB's protocol at MNIST scale.

======================  ====  =========================================================
domain                  C     source (under the data root)
======================  ====  =========================================================
``mnist`` (pretrain)    1     MNIST IDX files, ``mnist/{train,t10k}-*-ubyte.gz``
``usps`` (task)         1     USPS, ``usps/usps.bz2`` (train), ``usps/usps.t.bz2`` (test), 16x16
``svhn`` (task)         3     SVHN cropped digits, ``svhn/{train,test}_32x32.mat``, 32x32
``mnistm`` (task)       3     MNIST-M style: ``|photo patch - digit|`` over skimage photos (digits' code)
``fonts`` (task)        1     digits rendered from DejaVu fonts (digits' renderer)
``mnist-c/<c>/<s>``     1     the 15 MNIST-C corruptions at severities 1..5 (option ``severities``) of
                              1000 MNIST test images
``rendered`` (aux)      1     digits rendered from every bundled font (the ``rich`` recipe)
======================  ====  =========================================================

``fonts`` and ``rendered`` hold 600 train and 200 test images per class
(``suite_options = {rendered_per_class = [train, test]}`` changes it).

Images keep their native sizes (models resize in ``preprocess``). Get the data with
``ribench data get mnist``, ``usps``, ``svhn``.
"""

from __future__ import annotations

import os

import torch

from ...core.errors import ConfigError
from ...core.registry import register_suite
from ...core.runtime import derive_seed
from ...core.types import Domain, Split, Suite
from ..formats import read_idx, read_svhn_mat, read_usps_libsvm
from ..render import ALL_FONTS, TASK_FONTS, render_digits
from .common import (check_severities, clean_subset, corrupted_sets, corruption_tag, data_state, fingerprint,
                     pick_corruptions, require)
from .digits import CLASSES
from .digits.sources import load_photos, mnistm_blend, random_patches

SUITE_VERSION = "1"
NEEDS = {
    "mnist": ["mnist/train-images-idx3-ubyte.gz", "mnist/train-labels-idx1-ubyte.gz",
              "mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz"],
    "usps": ["usps/usps.bz2", "usps/usps.t.bz2"],
    "svhn": ["svhn/train_32x32.mat", "svhn/test_32x32.mat"],
}
SEVERITIES = (1, 2, 3, 4, 5)
CORRUPTED_IMAGES = 1000
RENDERED_PER_CLASS = (600, 200)


def _rendered(fonts, seed: int, name: str, per_class: tuple[int, int]) -> Domain:
    images, labels = render_digits(sum(per_class), fonts, seed)
    train, test = Split(images, labels).holdout(per_class[1] / sum(per_class), seed)
    return Domain(name, test=test, train=train)


def _per_class(value) -> tuple[int, int]:
    try:
        train, test = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError("suite_options.rendered_per_class", f"must be [train, test] image counts, got {value!r}") from None
    if train < 1 or test < 1:
        raise ConfigError("suite_options.rendered_per_class", f"counts must be >= 1, got {value!r}")
    return train, test


@register_suite("mnist-rib")
def mnist_rib(seed: int = 0, cache_dir: str | None = None, data_root: str | os.PathLike | None = None,
              rendered_per_class: tuple[int, int] | list[int] = RENDERED_PER_CLASS,
              severities: tuple[int, ...] | list[int] = SEVERITIES, corruptions: list[str] | None = None) -> Suite:
    """Real digits: MNIST pretraining; USPS, SVHN, MNIST-M-style, rendered-font tasks; MNIST-C.

    ``rendered_per_class``: (train, test) images per class of the ``fonts`` task and the
    ``rendered`` aux domain (default 600, 200). ``severities`` and ``corruptions``
    (short names, e.g. ``["fog", "zigzag"]``) choose the MNIST-C sets (default: all 15 at 1..5).
    """
    per_class = _per_class(rendered_per_class)
    severities = check_severities(severities)
    names = pick_corruptions("mnist-c", corruptions)
    root = require("mnist-rib", NEEDS, data_root)
    m = root / "mnist"
    train = read_idx(m / "train-images-idx3-ubyte.gz", m / "train-labels-idx1-ubyte.gz", num_classes=10)
    test = read_idx(m / "t10k-images-idx3-ubyte.gz", m / "t10k-labels-idx1-ubyte.gz", num_classes=10)
    pretrain = Domain("mnist", test=test, train=train, description="MNIST (IDX files)")
    usps = Domain("usps", test=read_usps_libsvm(root / "usps/usps.t.bz2"), train=read_usps_libsvm(root / "usps/usps.bz2"),
                  description="USPS 16x16 (LIBSVM)")
    svhn = Domain("svhn", test=read_svhn_mat(root / "svhn/test_32x32.mat"),
                  train=read_svhn_mat(root / "svhn/train_32x32.mat"), description="SVHN cropped digits 32x32")
    photos = load_photos()
    g = torch.Generator().manual_seed(derive_seed("mnist-rib", "mnistm", seed))
    mnistm = Domain("mnistm", test=Split(mnistm_blend(test.images, random_patches(len(test), photos, g)), test.labels),
                    train=Split(mnistm_blend(train.images, random_patches(len(train), photos, g)), train.labels),
                    description="MNIST-M style: |photo patch - MNIST digit| over skimage.data photographs")
    fonts = _rendered(TASK_FONTS, derive_seed("mnist-rib", "fonts", seed), "fonts", per_class)
    rendered = _rendered(ALL_FONTS, derive_seed("mnist-rib", "rendered", seed), "rendered", per_class)
    clean = clean_subset(test, CORRUPTED_IMAGES, derive_seed("mnist-rib", "mnist-c", seed))
    sets, mapping = corrupted_sets("mnist-c", clean, names, severities, seed, "mnist-rib")
    files = [root / p for paths in NEEDS.values() for p in paths]
    return Suite("mnist-rib", CLASSES, pretrain, {d.name: d for d in (usps, svhn, mnistm, fonts)}, eval_sets=sets,
                 corruptions=mapping, aux={"rendered": rendered},
                 version=f"{SUITE_VERSION}+{fingerprint(files)}" + ("" if per_class == RENDERED_PER_CLASS else
                                                                   f"+rendered{per_class[0]}-{per_class[1]}")
                 + corruption_tag("mnist-c", names, severities, SEVERITIES))


def state(data_root: str | os.PathLike | None = None) -> dict[str, str]:
    return data_state(NEEDS, data_root)
