"""The built-in ``digits`` suite: ten digit classes, all data offline, 28 x 28 uint8.

Two versions, chosen by the factory's ``version`` option (``suite_options = {version = 1}``
in a run spec):

- version 2 (the default): MNIST pretraining, nine fine-tuning tasks that each model one
  of ImageNet-RIB's shifts (``mnist-v2``, ``uci``, ``fonts``, ``sketch``, ``cartoon``,
  ``drawing``, ``mnistm``, ``viewpoint``, ``hard``), the 15 MNIST-C corruptions at
  severities 1..5 and ``handdrawn`` as eval sets (``v2.py`` tables them);
- version 1: the original three tasks (``uci``, ``fonts``, ``mnistm``) and four legacy
  corruptions, bit for bit as published findings used it (``v1.py``).

Every image is ``uint8 [N, C, 28, 28]`` (white digit on black, MNIST convention, unless
a shift changes it), every label ``int64 [N]`` in 0..9 (classes ``"0"``..``"9"``). A
version is built once per ``(version, seed, inputs)`` and cached as one safetensors file;
later calls load it (well under a second). A corrupt cache file is rebuilt, and so is one
that records other inputs than this machine's. The offline sources live in ``sources.py``
(re-exported here), v2's shifts in ``shifts.py`` and its hard subset in ``hard.py``; the
glyph renderer, shared with ``mnist-rib`` and the corruptions, is ``ribench.data.render``.

Provenance (``provenance.py``): the data depends on package-provided inputs (font and data
files, the packages that compute on them, the CPU kernels torch runs). ``inputs_digest``
hashes them; ``Suite.inputs_digest`` holds it, and unless it is one of the layout's
``REFERENCE_INPUTS`` the suite's version, and so its cache file name and every cell key,
carry ``+i<its first 16 hex digits>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from types import ModuleType

import torch

from ....core.errors import ConfigError, DataError
from ....core.registry import register_suite
from ....core.runtime import fixed_threads
from ....core.types import Domain, Split, Suite
from . import provenance, v1, v2
from ...cache import data_cache_dir, load_metadata, load_tensors, save_tensors
from .sources import (  # noqa: F401  (re-exported: the sources used to live here)
    MIN_PATCH_MEAN, PATCH_CANDIDATES, PHOTOS, handdrawn_folder, load_handdrawn, load_mnist, load_photos, load_uci,
    mnistm_blend, random_patches,
)

#: the version the factory builds when none is asked for
SUITE_VERSION = "2"
VERSIONS: dict[str, ModuleType] = {"1": v1, "2": v2}
CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
PRETRAIN = "mnist"
#: metadata keys of a cache file: the inputs digest it was built from, and the inputs themselves (JSON)
INPUTS_DIGEST_KEY = "ribench.inputs_digest"
INPUTS_KEY = "ribench.inputs"


def check_version(version: int | str | None) -> str:
    """``version`` as a key of ``VERSIONS`` (None = ``SUITE_VERSION``); anything else is a
    ``ConfigError`` naming ``suite_options.version``."""
    if version is None:
        return SUITE_VERSION
    key = str(version)
    if isinstance(version, bool) or key not in VERSIONS:
        raise ConfigError("suite_options.version", f"digits has versions {', '.join(VERSIONS)}; got {version!r}")
    return key


def layout(version: int | str | None = None) -> ModuleType:
    """The module that defines ``version``: its ``TASKS``, ``AUX``, ``EVAL_ONLY``,
    ``CORRUPTIONS``, ``build_domains(seed)`` and ``description(name)``."""
    return VERSIONS[check_version(version)]


def inputs(version: int | str | None = None) -> dict[str, str]:
    """Every package-provided input of ``version``'s build: ``{name: sha256 or version}``
    (``provenance.inputs``)."""
    return provenance.inputs(layout(version))


def inputs_digest(version: int | str | None = None) -> str:
    """sha256 hex of ``inputs(version)``: the same inputs give the same digest everywhere."""
    return provenance.inputs_digest(layout(version))


def inputs_tag(version: int | str | None = None, digest: str | None = None) -> str:
    """What the inputs ``digest`` (default: this machine's) add to ``version``'s name:
    ``""`` for its reference inputs, else ``"+i<first 16 hex digits>"``."""
    spec = layout(version)
    return provenance.identity_tag(spec, digest or provenance.inputs_digest(spec))


def build_domains(seed: int = 0, version: int | str | None = None) -> dict[str, dict[str, Split]]:
    """Build every domain of ``version`` from scratch: ``{domain: {"train": Split, "test": Split}}``
    (eval-only domains have only ``"test"``). Deterministic for ``seed``.

    Runs on one thread (torch and BLAS): the bytes then do not depend on the machine's
    thread count, and on shared cores it is faster (digits v2: ~22 s against ~50 s with
    two threads on 2 busy cores)."""
    spec = layout(version)
    with fixed_threads(1):
        return spec.build_domains(seed)


def to_tensors(domains: dict[str, dict[str, Split]]) -> dict[str, torch.Tensor]:
    """Flatten to ``{"<domain>/<split>/images" | ".../labels": tensor}`` for safetensors."""
    return {
        f"{name}/{split}/{field}": getattr(s, field)
        for name, splits in domains.items()
        for split, s in splits.items()
        for field in ("images", "labels")
    }


def choose_corruption_sets(version: int | str | None = None, corruptions=None, severities=None) -> tuple[str, ...]:
    """The corruption eval sets of ``version`` that the suite options ``corruptions`` (short
    names, e.g. ``["fog", "zigzag"]``; None = all) and ``severities`` (None = 1..5) keep,
    in the version's order. Bad values raise ``ConfigError`` naming the option."""
    spec = layout(version)
    short = {name: name.split("/")[-2] for name in spec.CORRUPTIONS}
    known = sorted(set(short.values()))
    if corruptions is not None:
        if isinstance(corruptions, str) or not corruptions or any(not isinstance(c, str) for c in corruptions):
            raise ConfigError("suite_options.corruptions", f"must be a non-empty list of names, got {corruptions!r}")
        unknown = sorted(set(corruptions) - set(known))
        if unknown:
            raise ConfigError("suite_options.corruptions", f"unknown corruption(s) {unknown} of digits "
                                                           f"v{spec.SUITE_VERSION}; expected some of {known}")
    if severities is not None:
        ok = (not isinstance(severities, (str, bool)) and len(severities) > 0
              and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 5 for v in severities))
        if not ok:
            raise ConfigError("suite_options.severities", f"must be a non-empty list of severities in 1..5, "
                                                          f"got {severities!r}")
    return tuple(name for name, (_, sev) in spec.CORRUPTIONS.items()
                 if (corruptions is None or short[name] in corruptions) and (severities is None or sev in severities))


def _version_tag(spec: ModuleType, digest: str, corruptions, severities) -> str:
    """The suite's version: the layout's, plus its inputs (``provenance.identity_tag``), plus
    what a non-default choice of corruption sets kept."""
    tag = spec.SUITE_VERSION + provenance.identity_tag(spec, digest)
    if corruptions is not None:
        names = ",".join(sorted(set(corruptions)))
        tag += "+c" + hashlib.sha256(names.encode()).hexdigest()[:8]
    if severities is not None:
        tag += "+s" + "".join(str(v) for v in sorted(set(severities)))
    return tag


def assemble(tensors: dict[str, torch.Tensor], source: str | os.PathLike = "<memory>",
             version: int | str | None = None, corruptions=None, severities=None,
             inputs_digest: str | None = None) -> Suite:
    """The ``Suite`` of ``version`` from flattened tensors built from the inputs
    ``inputs_digest`` (default: this machine's), with the corruption sets that
    ``corruptions`` and ``severities`` keep (``choose_corruption_sets``); a missing tensor
    raises ``DataError`` naming ``source``."""
    spec = layout(version)
    chosen = choose_corruption_sets(version, corruptions, severities)
    digest = inputs_digest or provenance.inputs_digest(spec)

    def split(name: str, part: str) -> Split:
        try:
            return Split(tensors[f"{name}/{part}/images"], tensors[f"{name}/{part}/labels"])
        except KeyError as e:
            raise DataError(f"{source} lacks tensor {e.args[0]!r}; expected a digits suite "
                            f"v{spec.SUITE_VERSION}") from None

    def domain(name: str, trainable: bool) -> Domain:
        train = split(name, "train") if trainable else None
        return Domain(name=name, test=split(name, "test"), train=train, description=spec.description(name))

    return Suite(
        name="digits",
        classes=CLASSES,
        pretrain=domain(PRETRAIN, True),
        tasks={name: domain(name, True) for name in spec.TASKS},
        eval_sets={name: domain(name, False) for name in spec.EVAL_ONLY
                   if name not in spec.CORRUPTIONS or name in chosen},
        corruptions={name: spec.CORRUPTIONS[name] for name in chosen},
        aux={name: domain(name, True) for name in spec.AUX},
        reference_errors=None,
        version=_version_tag(spec, digest, corruptions, severities),
        inputs_digest=digest,
    )


def cache_path(seed: int = 0, cache_dir: str | os.PathLike | None = None, version: int | str | None = None,
               inputs_digest: str | None = None) -> Path:
    """Where ``version`` for ``seed``, built from the inputs ``inputs_digest`` (default: this
    machine's), is cached: ``<data cache>/digits-v<version>-seed<seed>.safetensors`` for
    the version's reference inputs, ``...-seed<seed>-i<16 hex digits>.safetensors`` for others."""
    spec = layout(version)
    digest = inputs_digest or provenance.inputs_digest(spec)
    tag = "" if provenance.is_reference(spec, digest) else f"-i{digest[:provenance.TAG_HEX]}"
    return data_cache_dir(cache_dir) / f"digits-v{spec.SUITE_VERSION}-seed{seed}{tag}.safetensors"


def check_cached_inputs(path: Path, version: int | str | None, digest: str) -> None:
    """Raise ``DataError`` if the cache file ``path`` records other inputs than ``digest``.

    Files written before inputs were recorded carry none; they are only ever looked up
    under a reference name (``cache_path``), so they are taken as built from reference inputs.
    """
    spec = layout(version)
    stored = load_metadata(path).get(INPUTS_DIGEST_KEY)
    if stored is None or stored == digest:
        return
    if provenance.is_reference(spec, stored) and provenance.is_reference(spec, digest):
        return  # reference inputs all build the recorded data
    raise DataError(f"{path} was built from other inputs (digest {stored[:16]}..., this machine's "
                    f"is {digest[:16]}...)")


@register_suite("digits")
def digits_suite(seed: int = 0, cache_dir: str | None = None, version: int | str | None = None,
                 corruptions: list[str] | None = None, severities: list[int] | None = None) -> Suite:
    """The ``digits`` suite for ``seed``, loaded from the cache or built and cached.

    ``version``: 1 or 2 (default ``SUITE_VERSION``). ``corruptions`` (short names, e.g.
    ``["fog", "zigzag"]``) and ``severities`` keep only those corruption eval sets (default:
    all); the cache always holds all of them, and the suite's version names the choice.
    The inputs of the build (``inputs``) are recorded in the cache file and named by the
    suite's ``inputs_digest`` and, unless they are the reference inputs, its version.
    """
    version = check_version(version)
    choose_corruption_sets(version, corruptions, severities)  # bad options fail before any build
    digest = inputs_digest(version)
    path = cache_path(seed, cache_dir, version, digest)
    if path.exists():
        try:
            check_cached_inputs(path, version, digest)
            return assemble(load_tensors(path), path, version, corruptions, severities, digest)
        except DataError as e:
            warnings.warn(f"{e}; rebuilding it", RuntimeWarning, stacklevel=2)
    tensors = to_tensors(build_domains(seed, version))
    save_tensors(path, tensors, {INPUTS_DIGEST_KEY: digest,
                                 INPUTS_KEY: json.dumps(inputs(version), sort_keys=True)})
    return assemble(tensors, path, version, corruptions, severities, digest)
