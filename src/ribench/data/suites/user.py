"""User suites declared in a TOML file: domains from folders of images, ``.npz`` arrays or
the domains of registered suites.

::

    [suite]
    name = "pets"
    classes = ["cat", "dog"]          # or classes_file = "classes.txt" (one per line)
    channels = 3                      # optional, 1 or 3 (default: each domain keeps its images' own)
    image_size = 64                   # optional: resize every image (shorter side, centre crop)
    test_fraction = 0.2               # for domains given as one set (path = ..., or one npz pair)
    on_error = "fail"                 # or "skip": leave unreadable images out, with a warning

    [suite.pretrain]
    name = "photos"                   # optional: the pretraining domain's name in results (default "pretrain")
    train = "photos/train"            # folders of <class>/<images>, relative to this file
    test = "photos/test"
    classes = ["cat", "dog", "fox"]   # optional: the pretraining domain's own label space
    [suite.pretrain.class_map]        # optional: task class -> pretraining class
    cat = "cat"
    dog = "dog"

    [suite.tasks.sketches]
    path = "sketches"                 # one folder, split into train/test by test_fraction
    channels = 1                      # optional, overrides the suite's

    [suite.tasks.arrays]
    npz = "arrays.npz"                # images + labels, or train_images/_labels + test_images/_labels

    [suite.eval_sets.mnist]
    builtin = "digits:mnist"          # <registered suite>:<domain>, its own train/test splits

A domain gives exactly one source: ``train``/``test`` folders, one ``path`` folder,
``npz`` or ``builtin``. Every class folder, label name or built-in class must be one of
the classes of the domain's label space (``classes``; for the pretraining domain its own
``classes`` when given); a mismatch names it. A domain may cover only some classes (its
logits are then masked to them). A built-in domain's classes are matched by name; the
registered suite is built once per load, only when named. Channels: a domain's
``channels``, else the suite's, else its images' own (a model's preprocessing converts
channel counts); a suite-level ``channels`` that turns a colour domain gray, or a gray
one to colour, warns once naming the domain. The file may be the run spec itself (its
``[suite]`` table) or a separate file named by the spec's ``suite_file``.

``Suite.version`` is ``user+<fingerprint of the files read>``, followed by ``+<hash>`` of
whatever the file declares beyond the original folder keys (npz, built-in domains,
channels other than the original 3-by-default, the pretraining label space), so a file
that uses none of them keeps the version, and every cell key, it always had.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import tomllib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...core.errors import ConfigError, DataError, UnknownNameError
from ...core.registry import SUITES
from ...core.runtime import derive_seed
from ...core.types import Domain, Split, StreamingSplit, Suite
from ..formats import IN_MEMORY_LIMIT, convert_channels, read_image_folder, read_npz, scan_folder
from .common import fingerprint, split_task

KEYS = {"name", "classes", "classes_file", "channels", "image_size", "test_fraction", "on_error", "pretrain", "tasks",
        "eval_sets", "num_workers"}
SOURCES = ("train", "path", "npz", "builtin")  # what a domain is read from ("train" stands for train/test)
DOMAIN_KEYS = {"train", "test", "path", "npz", "builtin", "channels", "description"}
PRETRAIN_KEYS = DOMAIN_KEYS | {"name", "classes", "classes_file", "class_map"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}  # Pillow modes of one-channel images
LEGACY_CHANNELS = 3  # what every domain was converted to when `channels` was not given


def load_suite_table(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError("suite_file", f"{p} does not exist")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("suite_file", f"{p}: invalid TOML ({e})") from None
    if "suite" not in data or not isinstance(data["suite"], dict):
        raise ConfigError("suite", f"{p} has no [suite] table")
    return data["suite"]


def _class_list(table: dict[str, Any], field: str, base: Path) -> list[str] | None:
    """``classes`` or the lines of ``classes_file`` of ``table`` (None when neither is given)."""
    if "classes" in table:
        value = table["classes"]
        if isinstance(value, str) or not isinstance(value, list):
            raise ConfigError(f"{field}.classes", f"must be a list of class names, got {value!r}")
        classes = [str(c) for c in value]
    elif "classes_file" in table:
        cf = base / table["classes_file"]
        if not cf.is_file():
            raise ConfigError(f"{field}.classes_file", f"{cf} does not exist")
        classes = [ln.strip() for ln in cf.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    else:
        return None
    if len(set(classes)) != len(classes) or not classes:
        raise ConfigError(f"{field}.classes", "must be a non-empty list of distinct names")
    return classes


def _check_channels(field: str, value: Any) -> int:
    if isinstance(value, bool) or value not in (1, 3):
        raise ConfigError(field, f"must be 1 or 3, got {value!r}")
    return int(value)


def folder_channels(folders: list[Path], index: dict[str, int]) -> int:
    """3 when any image under ``folders`` (``<class>/<images>`` trees) is in colour, else 1.
    Reads headers only, and stops at the first colour image; unreadable files are passed over."""
    from PIL import Image

    for folder in folders:
        for f in scan_folder(folder, index)[0]:
            try:
                with Image.open(f) as img:
                    mode = img.mode
                    if mode == "P":  # a palette image is gray when every palette entry is
                        pal = img.getpalette() or []
                        mode = "L" if all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3)) else "P"
            except Exception:  # noqa: BLE001 - the reader reports (or skips) unreadable files
                continue
            if mode not in GRAY_MODES:
                return 3
    return 1


def _fit_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [N, C, H, W] -> [N, C, size, size]: shorter side to ``size`` (bilinear,
    antialiased), centre crop; unchanged when already that size."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    y = F.interpolate(x.float(), size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    return y[..., top:top + size, left:left + size].round().clamp(0, 255).to(torch.uint8).contiguous()


class ConvertedLoad:
    """Picklable ``load(indices)`` of a streaming split whose images are converted to
    ``channels`` and, when ``size`` is set, fitted to ``size x size``."""

    def __init__(self, load, channels: int, size: int | None, source: str):
        self.load, self.channels, self.size, self.source = load, channels, size, source

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        x = convert_channels(self.load(index), self.channels, self.source)
        return _fit_images(x, self.size) if self.size is not None else x


def _convert(split: Split | StreamingSplit, channels: int, size: int | None, source: str,
             labels: torch.Tensor | None = None) -> Split | StreamingSplit:
    """``split`` with its images converted to ``channels`` (and fitted to ``size``), its
    labels replaced by ``labels[old label]`` when ``labels`` (a lookup table) is given."""
    if isinstance(split, StreamingSplit):
        source_labels = split._source_labels if labels is None else labels[split._source_labels]
        return StreamingSplit(ConvertedLoad(split.load, channels, size, source), source_labels, split.index,
                              split.num_workers, split.description)
    x = convert_channels(split.images, channels, source)
    if size is not None:
        x = _fit_images(x, size)
    return Split(x, split.labels if labels is None else labels[split.labels])


def _split_channels(split: Split | StreamingSplit) -> int:
    if isinstance(split, StreamingSplit):
        return int(split.load(split.index[:1]).shape[1]) if len(split) else LEGACY_CHANNELS
    return int(split.images.shape[1])


def _npz_pairs(path: Path, field: str, trainable: bool) -> dict[str, tuple[str, str]]:
    """The (images, labels) array names of an ``.npz`` file to read: ``{"path": ("images",
    "labels")}`` (one set, split for a task) or ``{"test": ..., "train": ...}`` (``test_*`` and,
    for a ``trainable`` domain, ``train_*`` arrays)."""
    if not path.is_file():
        raise DataError(f"{path} ({field}) does not exist; expected an .npz archive")
    try:
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files) if isinstance(z, np.lib.npyio.NpzFile) else set()
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path} ({field}): cannot read an .npz archive ({e})") from None
    if {"test_images", "test_labels"} <= names:
        if trainable and not {"train_images", "train_labels"} <= names:
            raise DataError(f"{path} ({field}): has arrays {sorted(names)}; a task (or the pretraining domain) needs "
                            f"train_images and train_labels next to test_images and test_labels")
        return {"test": ("test_images", "test_labels"), **({"train": ("train_images", "train_labels")} if trainable
                                                           else {})}
    if {"images", "labels"} <= names:
        return {"path": ("images", "labels")}
    raise DataError(f"{path} ({field}): has arrays {sorted(names)}; expected images + labels, or test_images + "
                    f"test_labels (and train_images + train_labels for a task)")


def user_suite(table: dict[str, Any], base: str | os.PathLike, seed: int = 0,
               in_memory_limit: int = IN_MEMORY_LIMIT, data_root: str | None = None) -> Suite:
    """Build the suite a ``[suite]`` table declares; relative paths are under ``base``.
    ``data_root`` is passed to the registered real-data suites that built-in domains name."""
    base = Path(base)
    unknown = set(table) - KEYS
    if unknown:
        raise ConfigError(f"suite.{sorted(unknown)[0]}", f"unknown field (expected one of {sorted(KEYS)})")
    name = table.get("name") or "user"
    classes = _class_list(table, "suite", base)
    if classes is None:
        raise ConfigError("suite.classes", "give the class list (classes = [...] or classes_file = ...)")
    suite_channels = _check_channels("suite.channels", table["channels"]) if "channels" in table else None
    legacy_channels = suite_channels or LEGACY_CHANNELS
    fraction = float(table.get("test_fraction", 0.2))
    if not 0 < fraction < 1:
        raise ConfigError("suite.test_fraction", f"must be in (0, 1), got {fraction}")
    size = table.get("image_size")
    kw = dict(size=size, on_error=table.get("on_error", "fail"), num_workers=int(table.get("num_workers", 2)),
              in_memory_limit=in_memory_limit)
    files: list[Path] = []   # what the version fingerprints
    extras: list[Any] = []   # what the file declares beyond the original keys (hashed into the version)
    built: dict[str, Suite] = {}

    def builtin_suite(sname: str) -> Suite:
        if sname not in built:
            factory = SUITES.get(sname)
            kwargs = {"data_root": data_root} if data_root is not None and "data_root" in inspect.signature(
                factory).parameters else {}
            built[sname] = factory(seed=seed, **kwargs)
        return built[sname]

    def folder(field: str, rel: Any) -> Path:
        if not isinstance(rel, str):
            raise ConfigError(field, f"must be a folder path, got {rel!r}")
        path = base / rel
        if not path.is_dir():
            raise DataError(f"{path} (suite.{field.split('.', 1)[-1]}) does not exist; expected <class>/<images> folders")
        return path

    def read_builtin(field: str, spec: Any, space: list[str], label: str, trainable: bool):
        """(test, train or None, covered class indices, label lookup table, description) of a
        registered suite's domain, labels still in its own label space."""
        if not isinstance(spec, str) or spec.count(":") != 1:
            raise ConfigError(field, f"must be '<suite>:<domain>' (e.g. 'digits:mnist'), got {spec!r}")
        sname, dname = spec.split(":")
        try:
            src = builtin_suite(sname)
            dom = src.pretrain if dname == "pretrain" else src.domain(dname)
        except UnknownNameError as e:
            raise ConfigError(field, str(e)) from None
        own = src.pretrain_label_space if dom.name in src.pretrain_space_sets() else tuple(src.classes)
        covered = list(dom.class_subset) if dom.class_subset is not None else list(range(len(own)))
        missing = [own[i] for i in covered if own[i] not in space]
        if missing:
            raise DataError(f"{field} = {spec!r}: built-in classes {missing[:5]} are not in {label} {space} (the "
                            f"built-in domain's classes are {[own[i] for i in covered]})")
        lookup = torch.tensor([space.index(c) if c in space else -1 for c in own], dtype=torch.int64)
        if trainable and not dom.trainable:
            raise DataError(f"{field} = {spec!r} has no train split; use it as an eval set")
        splits = [dom.test] + ([dom.train] if trainable else [])
        if any(bool((lookup[s.labels] < 0).any()) for s in splits if len(s)):
            raise DataError(f"{field} = {spec!r}: holds labels outside the classes it declares; expected {list(own)}")
        extras.append([field, spec, src.version])
        return (dom.test, dom.train if trainable else None, sorted(int(lookup[i]) for i in covered), lookup,
                dom.description)

    def domain(field: str, dname: str, d: Any, trainable: bool, space: list[str], label: str,
               keys: set[str]) -> Domain:
        if not isinstance(d, dict):
            raise ConfigError(field, "must be a table with train/test, path, npz or builtin")
        bad = set(d) - keys
        if bad:
            raise ConfigError(f"{field}.{sorted(bad)[0]}", f"unknown field (expected {sorted(keys)})")
        given = [s for s in SOURCES if s in d or (s == "train" and "test" in d)]
        if len(given) != 1:
            raise ConfigError(field, "give exactly one of train/test (folders), path (one folder), npz (an .npz file) "
                                     f"or builtin ('<suite>:<domain>'); got {given or 'none'}")
        index = {c: i for i, c in enumerate(space)}
        own_channels = _check_channels(f"{field}.channels", d["channels"]) if "channels" in d else None
        if own_channels is not None:
            extras.append([field, "channels", own_channels])
        want = own_channels or suite_channels
        description = d.get("description", "")
        covered: list[int] | None = None
        lookup = None
        if "path" in d or "train" in d or "test" in d:
            parts = {k: folder(f"{field}.{k}", d[k]) for k in ("path", "train", "test") if k in d}
            if "path" not in parts and "test" not in parts:
                raise ConfigError(f"{field}.test", "missing (give test = <folder>, or path = <folder> to split one)")
            if not trainable:
                parts.pop("train", None)
            native = folder_channels(list(parts.values()), index) if own_channels is None else own_channels
            channels = want or native
            read = {k: read_image_folder(p, index, channels=channels, **kw) for k, p in parts.items()}
            files.extend(parts.values())
            test, train, whole = read.get("test"), read.get("train"), read.get("path")
        else:
            if "npz" in d:
                rel = d["npz"]
                if not isinstance(rel, str):
                    raise ConfigError(f"{field}.npz", f"must be an .npz file path, got {rel!r}")
                path = base / rel
                pairs = _npz_pairs(path, f"{field}.npz", trainable)
                files.append(path)
                extras.append([field, "npz", rel])
                read = {k: read_npz(path, xk, yk, channels=None, classes=space) for k, (xk, yk) in pairs.items()}
                source = str(path)
            else:
                test, train, covered, lookup, own_description = read_builtin(f"{field}.builtin", d["builtin"], space,
                                                                             label, trainable)
                read = {"test": test, **({"train": train} if train is not None else {})}
                description = description or own_description
                source = f"{field}.builtin = {d['builtin']!r}"
            native = max(_split_channels(s) for s in read.values())
            channels = want or native
            read = {k: _convert(s, channels, size, source, lookup) for k, s in read.items()}
            test, train, whole = read.get("test"), read.get("train"), read.get("path")
        if own_channels is None and suite_channels is not None and native != suite_channels:
            kind = "colour" if native == 3 else "grayscale"
            warnings.warn(f"{field}: suite.channels = {suite_channels} converts domain {dname!r} ({kind} images) to "
                          f"{'grayscale' if suite_channels == 1 else 'colour'}; set channels = {native} in {field} "
                          f"to keep its own", RuntimeWarning, stacklevel=2)
        if channels != legacy_channels:
            extras.append([field, "read with channels", channels])
        if whole is not None:
            dom = split_task(dname, whole, fraction, derive_seed("user-suite", name, dname, seed), description)
            if not trainable:
                dom = Domain(dname, test=whole, description=dom.description)
        else:
            dom = Domain(dname, test=test, train=train, description=description)
        if covered is None:
            covered = sorted(set(dom.test.labels.tolist()) | (set(dom.train.labels.tolist()) if dom.train is not None
                                                              else set()))
        subset = tuple(covered) if len(covered) < len(space) else None
        return Domain(dom.name, dom.test, dom.train, subset, dom.description)

    if "pretrain" not in table:
        raise ConfigError("suite.pretrain", "missing (a table with train = <folder> and test = <folder>)")
    pre_table = table["pretrain"]
    pretrain_classes = _class_list(pre_table, "suite.pretrain", base) if isinstance(pre_table, dict) else None
    class_map = None
    if pretrain_classes is not None:
        extras.append(["suite.pretrain.classes", pretrain_classes])
        if "class_map" in pre_table:
            class_map = _class_map(pre_table["class_map"], classes, pretrain_classes)
            extras.append(["suite.pretrain.class_map", list(class_map)])
    elif isinstance(pre_table, dict) and "class_map" in pre_table:
        raise ConfigError("suite.pretrain.class_map", "needs the pretraining domain's own classes "
                                                      "(classes = [...] or classes_file = ... in [suite.pretrain])")
    pre_name = pre_table.get("name", "pretrain") if isinstance(pre_table, dict) else "pretrain"
    if not isinstance(pre_name, str) or not pre_name or "/" in pre_name:
        raise ConfigError("suite.pretrain.name", f"must be a non-empty name without '/', got {pre_name!r}")
    if pre_name in (table.get("tasks") or {}) or pre_name in (table.get("eval_sets") or {}):
        raise ConfigError("suite.pretrain.name", f"{pre_name!r} is also the name of a task or eval set")
    if pre_name != "pretrain":  # the rows' eval-set name: a new version, so no stored row keeps the old one
        extras.append(["suite.pretrain.name", pre_name])
    pre = domain("suite.pretrain", pre_name, pre_table, True, pretrain_classes or classes,
                 "suite.pretrain.classes" if pretrain_classes is not None else "suite.classes", PRETRAIN_KEYS)
    tasks = {k: domain(f"suite.tasks.{k}", k, v, True, classes, "suite.classes", DOMAIN_KEYS)
             for k, v in (table.get("tasks") or {}).items()}
    if not tasks:
        raise ConfigError("suite.tasks", "declare at least one task ([suite.tasks.<name>])")
    evals = {k: domain(f"suite.eval_sets.{k}", k, v, False, classes, "suite.classes", DOMAIN_KEYS)
             for k, v in (table.get("eval_sets") or {}).items()}
    version = f"user+{fingerprint(files)}"
    if extras:
        version += "+" + hashlib.sha256(json.dumps(extras, sort_keys=True).encode()).hexdigest()[:8]
    return Suite(name, tuple(classes), pre, tasks, eval_sets=evals, version=version,
                 pretrain_classes=tuple(pretrain_classes) if pretrain_classes is not None else None,
                 class_map=class_map)


def _class_map(value: Any, classes: list[str], pretrain_classes: list[str]) -> tuple[int, ...]:
    """``[suite.pretrain.class_map]`` (task class -> pretraining class) as the index of each
    task class's pretraining class; every task class must be mapped."""
    field = "suite.pretrain.class_map"
    if not isinstance(value, dict):
        raise ConfigError(field, f"must be a table of <task class> = <pretraining class>, got {value!r}")
    unknown = [c for c in value if c not in classes]
    if unknown:
        raise ConfigError(f"{field}.{unknown[0]}", f"{unknown[0]!r} is not a task class (the classes are {classes})")
    bad = [(c, p) for c, p in value.items() if not isinstance(p, str) or p not in pretrain_classes]
    if bad:
        c, p = bad[0]
        raise ConfigError(f"{field}.{c}", f"{p!r} is not a pretraining class (suite.pretrain.classes are "
                                          f"{pretrain_classes})")
    unmapped = [c for c in classes if c not in value]
    if unmapped:
        raise ConfigError(field, f"maps no pretraining class for task classes {unmapped}; map every task class")
    targets = [value[c] for c in classes]
    twice = sorted({p for p in targets if targets.count(p) > 1})
    if twice:
        raise ConfigError(field, f"sends several task classes to pretraining class(es) {twice}; each task class "
                                 "needs its own")
    return tuple(pretrain_classes.index(value[c]) for c in classes)
