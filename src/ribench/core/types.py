"""Data types shared by every layer: splits, domains, suites, input specs.

Images are always ``uint8`` tensors shaped ``[N, C, H, W]`` (C is 1 or 3) and labels
``int64`` tensors shaped ``[N]`` holding indices into the suite's class list. Images
stay uint8 until a model's own ``preprocess`` turns them into floats, batched, on the
device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import torch
import torch.utils.data

from .errors import DataError


@dataclass(frozen=True)
class Split:
    """An in-memory split: ``images`` uint8 [N, C, H, W], ``labels`` int64 [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        x, y = self.images, self.labels
        if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 4:
            raise DataError(
                f"split images must be a uint8 tensor [N, C, H, W], got "
                f"{getattr(x, 'dtype', type(x).__name__)} with shape {tuple(getattr(x, 'shape', ()))}"
            )
        if x.shape[1] not in (1, 3):
            raise DataError(f"split images must have 1 or 3 channels, got shape {tuple(x.shape)}")
        if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.dim() != 1:
            raise DataError(f"split labels must be an int64 tensor [N], got {getattr(y, 'dtype', type(y))}")
        if len(x) != len(y):
            raise DataError(f"split has {len(x)} images but {len(y)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None, *,
        num_workers: int = 0, pin_memory: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(uint8 images [B, C, H, W], int64 labels [B])``.

        ``num_workers`` > 0 gathers the batches in that many DataLoader worker processes
        (the same batches, in the same order); ``pin_memory`` yields them in pinned memory
        (CUDA only), ready for a non-blocking copy to the GPU.
        """
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else None
        if num_workers > 0:
            rows = [torch.arange(s, min(s + batch_size, n)) if order is None else order[s : s + batch_size]
                    for s in range(0, n, batch_size)]
            yield from _loader(_RowsDataset(self.images, self.labels, rows), num_workers, pin_memory)
            return
        for start in range(0, n, batch_size):
            if order is None:
                batch = self.images[start : start + batch_size], self.labels[start : start + batch_size]
            else:
                idx = order[start : start + batch_size]
                batch = self.images[idx], self.labels[idx]
            yield _pinned(batch) if pin_memory else batch

    def subset(self, index: torch.Tensor) -> "Split":
        return Split(self.images[index], self.labels[index])

    def holdout(self, fraction: float, seed: int) -> tuple["Split", "Split"]:
        """Split into (rest, held-out) with a stratified, seeded draw."""
        keep, held = stratified_holdout(self.labels, fraction, seed)
        return self.subset(keep), self.subset(held)

    def materialize(self) -> "Split":
        """This split (already in memory)."""
        return self


def stratified_holdout(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted indices (kept, held out) of a stratified, seeded draw of ``fraction`` per class."""
    g = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = max(1, int(round(len(idx) * fraction))) if len(idx) > 1 else 0
        held.append(idx[:k])
        keep.append(idx[k:])
    empty = torch.zeros(0, dtype=torch.int64)
    return torch.sort(torch.cat(keep or [empty])).values, torch.sort(torch.cat(held or [empty])).values


def iter_batches(split: "Split | StreamingSplit", batch_size: int, shuffle: bool = False,
                 generator: torch.Generator | None = None, *, workers: int = 0, pin_memory: bool = False
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``split.batches(batch_size, shuffle, generator)``, read by ``workers`` DataLoader worker
    processes when ``workers`` > 0 (a streaming split's decoders, an in-memory split's
    gathers) and yielded in pinned memory when ``pin_memory``. ``workers`` 0 and no pinning
    is exactly the split's own call (a streaming split keeps its own ``num_workers``).
    Every path yields the same batches in the same order, and draws the same numbers
    from ``generator``."""
    if workers == 0 and not pin_memory:
        return split.batches(batch_size, shuffle, generator)
    if workers == 0:
        return split.batches(batch_size, shuffle, generator, pin_memory=True)
    return split.batches(batch_size, shuffle, generator, num_workers=workers, pin_memory=pin_memory)


def _pinned(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return batch[0].pin_memory(), batch[1].pin_memory()


def _loader(dataset: torch.utils.data.Dataset, workers: int, pin_memory: bool
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Items of ``dataset`` (each one whole batch) in order, from ``workers`` processes,
    at most ``2 * workers`` batches in flight."""
    workers = min(workers, len(dataset))  # type: ignore[arg-type]
    if workers == 0:
        return
    yield from torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                                           prefetch_factor=2, persistent_workers=False, pin_memory=pin_memory)


class _RowsDataset(torch.utils.data.Dataset):
    """Batch ``i`` of an in-memory split: its rows ``rows[i]`` (gathered in a worker process)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, rows: list[torch.Tensor]):
        self.images, self.labels, self.rows = images, labels, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[self.rows[i]], self.labels[self.rows[i]]


class _BatchDataset(torch.utils.data.Dataset):
    """Batch ``i`` of a streaming split: decoded by ``load`` (run in a worker process)."""

    def __init__(self, load: Callable[[torch.Tensor], torch.Tensor], chunks: list[torch.Tensor]):
        self.load, self.chunks = load, chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.load(self.chunks[i]), self.chunks[i]


class StreamingSplit:
    """A split whose images stay on disk and are decoded batch by batch.

    ``load(indices) -> uint8 [B, C, H, W]`` decodes source items ``indices`` (a picklable
    callable: worker processes run it); ``labels`` int64 [N] stay in memory. ``index``
    maps this split's rows to source items (``subset`` and ``holdout`` compose it, no
    decoding). ``batches`` decodes with ``num_workers`` processes (a torch DataLoader,
    at most ``2 * num_workers`` batches in flight), so memory stays bounded by a few
    batches whatever the split's size. It yields exactly what ``Split.batches`` yields
    for the same images, order, batch size and generator. ``images`` decodes the whole
    split into memory: use it (or ``materialize``) only on small splits or subsets.
    """

    def __init__(self, load: Callable[[torch.Tensor], torch.Tensor], labels: torch.Tensor,
                 index: torch.Tensor | None = None, num_workers: int = 2, description: str = ""):
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.dim() != 1:
            raise DataError(f"split labels must be an int64 tensor [N], got {getattr(labels, 'dtype', type(labels))}")
        self.load, self._source_labels, self.num_workers, self.description = load, labels, num_workers, description
        self.index = torch.arange(len(labels)) if index is None else index.to(torch.int64)
        self.labels = labels[self.index]

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"StreamingSplit({len(self)} images{', ' + self.description if self.description else ''})"

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None, *,
        num_workers: int | None = None, pin_memory: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(uint8 images [B, C, H, W], int64 labels [B])``, decoded in worker processes.

        ``num_workers``: decoding processes for this pass (None: the split's own
        ``num_workers``; 0 decodes in this process). ``pin_memory``: yield pinned batches
        (CUDA only).
        """
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        rows = [order[s : s + batch_size] for s in range(0, n, batch_size)]
        chunks = [self.index[r] for r in rows]
        workers = min(self.num_workers if num_workers is None else num_workers, len(chunks))
        if workers == 0:
            for c in chunks:
                batch = self.load(c), self._source_labels[c]
                yield _pinned(batch) if pin_memory else batch
            return
        for images, c in _loader(_BatchDataset(self.load, chunks), workers, pin_memory):
            labels = self._source_labels[c]
            yield images, labels.pin_memory() if pin_memory else labels

    def subset(self, index: torch.Tensor) -> "StreamingSplit":
        return StreamingSplit(self.load, self._source_labels, self.index[index], self.num_workers, self.description)

    def holdout(self, fraction: float, seed: int) -> tuple["StreamingSplit", "StreamingSplit"]:
        """Split into (rest, held-out): the same stratified, seeded draw as ``Split.holdout``."""
        keep, held = stratified_holdout(self.labels, fraction, seed)
        return self.subset(keep), self.subset(held)

    def materialize(self, batch_size: int = 256) -> Split:
        """Decode every image into an in-memory ``Split``."""
        parts = list(self.batches(batch_size))
        if not parts:
            raise DataError(f"{self!r} is empty")
        return Split(torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts]))

    @property
    def images(self) -> torch.Tensor:
        """All images, decoded into memory: uint8 [N, C, H, W]."""
        return self.materialize().images


@dataclass(frozen=True)
class Domain:
    """A named set of images over the suite's classes.

    ``class_subset``: indices of the suite classes this domain covers, or None for
    all. Evaluation masks logits to this subset (as ImageNet-A/-R do).
    ``train`` is None for eval-only domains.
    """

    name: str
    test: Split
    train: Split | None = None
    class_subset: tuple[int, ...] | None = None
    description: str = ""

    @property
    def trainable(self) -> bool:
        return self.train is not None and len(self.train) > 0


@dataclass(frozen=True)
class Suite:
    """A label space, a pretraining domain, fine-tuning tasks and extra eval sets.

    ``pretrain_classes``: the pretraining domain's own classes where they differ from the
    tasks' ``classes`` (CLIP, ImageNet-21k, another problem); the pretraining domain's labels,
    those of its corrupted copies and of ``aux`` then index ``pretrain_classes``. None: one
    label space. ``class_map``: for each task class, the index of the same class among
    ``pretrain_classes`` where such a correspondence exists (as ImageNet-R/-A's 200 classes
    are a subset of ImageNet's), else None.

    ``corruptions`` maps an eval-set name to ``(corruption, severity)`` for the
    corrupted copies of the pretraining test split, which feed corruption accuracy
    and mCE. ``aux`` holds extra domains pretraining recipes may use (never tasks).
    ``reference_errors`` maps corruption -> per-severity errors of a published
    reference model for mCE; None means the suite's pretrained model is the reference.
    ``inputs_digest``: sha256 hex of everything installed packages provide to build the
    suite's data, for suites that track it (the built-in ``digits``); None otherwise.
    """

    name: str
    classes: tuple[str, ...]
    pretrain: Domain
    tasks: Mapping[str, Domain]
    eval_sets: Mapping[str, Domain] = field(default_factory=dict)
    corruptions: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    aux: Mapping[str, Domain] = field(default_factory=dict)
    reference_errors: Mapping[str, tuple[float, ...]] | None = None
    version: str = "1"
    inputs_digest: str | None = None
    pretrain_classes: tuple[str, ...] | None = None
    class_map: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.class_map is not None:
            if self.pretrain_classes is None:
                raise DataError(f"suite {self.name!r}: a class_map needs the pretraining domain's own classes")
            if len(self.class_map) != len(self.classes) or not all(
                    0 <= int(j) < len(self.pretrain_classes) for j in self.class_map):
                raise DataError(f"suite {self.name!r}: class_map must give, for each of the {len(self.classes)} task "
                                f"classes, the index of a pretraining class (0..{len(self.pretrain_classes) - 1})")
            if len(set(self.class_map)) != len(self.class_map):
                raise DataError(f"suite {self.name!r}: class_map sends two task classes to one pretraining class")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def separate_pretrain_labels(self) -> bool:
        """Whether the pretraining domain has its own label space (``pretrain_classes``)."""
        return self.pretrain_classes is not None and tuple(self.pretrain_classes) != tuple(self.classes)

    @property
    def pretrain_label_space(self) -> tuple[str, ...]:
        """The classes the pretraining domain's labels index (``pretrain_classes`` or ``classes``)."""
        return tuple(self.pretrain_classes) if self.pretrain_classes is not None else tuple(self.classes)

    def pretrain_space_sets(self) -> set[str]:
        """Eval sets labelled in the pretraining label space: the pretraining domain, its corrupted
        copies and the aux domains."""
        return {self.pretrain.name, *self.corruptions, *self.aux}

    def all_eval_sets(self) -> dict[str, Domain]:
        """Every set a model is evaluated on: pretraining test, tasks, extra sets."""
        out: dict[str, Domain] = {self.pretrain.name: self.pretrain}
        out.update(self.tasks)
        out.update(self.eval_sets)
        return out

    def domain(self, name: str) -> Domain:
        everything = {**self.all_eval_sets(), **self.aux}
        if name not in everything:
            from .errors import UnknownNameError

            raise UnknownNameError(f"domain of suite {self.name!r}", name, list(everything))
        return everything[name]


@dataclass(frozen=True)
class InputSpec:
    """What a model expects after preprocessing: channels, square size, per-channel mean/std."""

    channels: int = 3
    size: int = 28
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
