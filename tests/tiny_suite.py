"""A tiny synthetic suite, ``tiny``, for tests. Loaded as a plugin (RIBENCH_PLUGINS=tiny_suite)
so that worker processes of the pool and Ray runners register it too."""

from __future__ import annotations

import torch

from ribench.core import Domain, Split, Suite, register_suite  # noqa: E402
from ribench.core.registry import SUITES  # noqa: E402

CLASSES = ("a", "b", "c")


def _make_split(n: int, shift: int, noise: float, channels: int, g: torch.Generator,
                columns: bool = False, bar: float = 0.8) -> Split:
    """Three classes of 12x12 images: a bright bar at a class-specific row (or column),
    moved by ``shift`` pixels, under uniform noise of amplitude ``noise``."""
    y = torch.arange(n) % 3
    x = torch.rand(n, channels, 12, 12, generator=g) * noise
    pos = (2 + 4 * y + shift).clamp(0, 10)
    i = torch.arange(n)
    for off, v in ((0, bar), (1, 0.6 * bar)):
        if columns:
            x[i, :, :, pos + off] += v
        else:
            x[i, :, pos + off, :] += v
    return Split((x.clamp(0, 1) * 255).to(torch.uint8), y.long())


def tiny_suite(seed: int = 0, cache_dir: str | None = None) -> Suite:
    """Pretraining on row bars; task t1 has shifted, noisier row bars, task t2 column
    bars in colour (a new domain the pretrained model cannot read), two noise corruptions."""
    g = torch.Generator().manual_seed(seed)

    def split(m, **kw):
        return _make_split(m, kw.pop("shift", 0), kw.pop("noise", 0.3), kw.pop("ch", 1), g, **kw)

    def dom(name, train=True, **kw):
        return Domain(name, split(60, **kw), split(150, **kw) if train else None)

    pre = dom("pre")
    tasks = {"t1": dom("t1", shift=1, noise=0.6), "t2": dom("t2", ch=3, columns=True)}
    corr = {f"pre-c/noise/{s}": Domain(f"pre-c/noise/{s}", split(60, noise=1.0, bar=b)) for s, b in ((1, 0.4), (2, 0.2))}
    return Suite("tiny", CLASSES, pre, tasks, eval_sets={"extra": dom("extra", train=False, shift=1), **corr},
                 corruptions={k: ("noise", int(k[-1])) for k in corr}, aux={"rendered": dom("rendered", noise=0.5)})


PRETRAIN_CLASSES = ("p0", "p1", "p2", "p3")


def _bars4(n: int, g: torch.Generator) -> Split:
    """Four classes of 12x12 grey images: a bright row bar at row 1, 4, 7 or 10, under noise."""
    y = torch.arange(n) % 4
    x = torch.rand(n, 1, 12, 12, generator=g) * 0.3
    x[torch.arange(n), :, 1 + 3 * y, :] += 0.8
    return Split((x.clamp(0, 1) * 255).to(torch.uint8), y.long())


def tiny_label_space_suite(seed: int = 0, cache_dir: str | None = None, class_map: tuple[int, ...] | None = None,
                           name: str = "tiny_ls") -> Suite:
    """``tiny``'s tasks and extra set over classes a, b, c, with a pretraining domain of its own
    four classes p0..p3 (row bars at other rows) and two corrupted copies of it; ``class_map``
    sends task classes to pretraining classes (``tiny_lsmap``: a, b, c -> p0, p1, p2)."""
    base = tiny_suite(seed)
    g = torch.Generator().manual_seed(seed + 1)
    pre = Domain("pre", _bars4(80, g), _bars4(200, g))
    test = pre.test
    corr = {}
    for sev, amp in ((1, 80), (2, 160)):
        noise = torch.randint(-amp, amp + 1, test.images.shape, generator=g)
        corr[f"pre-c/noise/{sev}"] = Domain(f"pre-c/noise/{sev}", Split(
            (test.images.int() + noise).clamp(0, 255).to(torch.uint8), test.labels))
    return Suite(name, CLASSES, pre, base.tasks, eval_sets={"extra": base.eval_sets["extra"], **corr},
                 corruptions={k: ("noise", int(k[-1])) for k in corr}, pretrain_classes=PRETRAIN_CLASSES,
                 class_map=class_map)


def tiny_label_space_mapped(seed: int = 0, cache_dir: str | None = None) -> Suite:
    return tiny_label_space_suite(seed, cache_dir, class_map=(0, 1, 2), name="tiny_lsmap")


if "tiny" not in SUITES._items:
    register_suite("tiny")(tiny_suite)
    register_suite("tiny_ls")(tiny_label_space_suite)
    register_suite("tiny_lsmap")(tiny_label_space_mapped)


