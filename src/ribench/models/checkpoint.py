"""Checkpoint I/O: safetensors by default, weights-only ``torch.load`` for .pt files.

A checkpoint written by ``save_model`` is a safetensors file of ``model.state_dict()``
(tensor name -> tensor, on CPU) whose string metadata records how to rebuild the
model: ``arch`` (registry name), ``hparams`` (JSON kwargs), ``num_classes`` and
``spec`` (JSON InputSpec), ``modules`` (JSON list: the modules whose import registers
the model kinds it is built from, its own and those of the models it wraps), plus any
caller metadata. Models with non-finite weights are refused: a diverged model is
never stored.

``load_model`` imports the recorded modules that lie inside the ``ribench`` package
(and no other: loading a checkpoint never imports code the file names; kinds that
plugins register come from the registry's entry points and ``RIBENCH_PLUGINS``),
then rebuilds the model through ``MODEL_KINDS`` (backbones and the kinds methods make), or, for ``arch =
"external"`` (an outside backbone), through ``external.rebuild`` from the source its
hparams record. Checkpoints written before ``modules`` was recorded name only their
``arch``; ``LEGACY_MODULES`` says where the kinds that ribench's methods registered
at that time live, so those files load as they did.

Reading files and fitting weights (``load_state_dict``, ``load_into``) live in
``state_io``; full pickles load only with ``trust_checkpoint=True`` (the CLI's
``--trust-checkpoint``). Every failure is a ``CheckpointError`` naming the file, and
the key where one is at fault.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

from ..core.errors import CheckpointError, ConfigError, UnknownNameError
from ..core.registry import MODEL_KINDS
from ..core.types import InputSpec
from . import external
from .base import Model, attach_pretrain_heads, first_nonfinite, model_name
from .state_io import load_into, load_state_dict

__all__ = ["LEGACY_MODULES", "load_into", "load_model", "load_state_dict", "save_model"]

RESERVED_KEYS = ("arch", "hparams", "num_classes", "spec", "modules")
PACKAGE = __name__.split(".")[0]  # "ribench": the only package load_model imports from
# Model kinds registered outside models/ when checkpoints recorded no `modules` (frozen: new kinds record theirs).
LEGACY_MODULES = {
    "dawin": f"{PACKAGE}.methods.weightspace.dawin",
    "prompted": f"{PACKAGE}.methods.prompt",
    "with_head": f"{PACKAGE}.methods.training_free",
    external.ARCH: external.__name__,
}


def save_model(model: nn.Module, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model.state_dict()`` to a ``.safetensors`` file, atomically; return its path.

    Tensors are saved as contiguous CPU copies, so tied (shared) tensors are stored
    once per key. The file is first written next to ``path`` and then renamed over
    it, so a crash never leaves a half-written checkpoint under the final name.
    A floating tensor holding a NaN or an infinity is a CheckpointError naming the
    model and the tensor (nothing is written).
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"save_model writes safetensors; name the file *.safetensors, got {path}")
    meta = dict(metadata or {})
    bad = [k for k, v in meta.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise ConfigError("metadata", f"keys and values must be strings, got {bad[0]!r}: {meta[bad[0]]!r}")
    clash = [k for k in meta if k in RESERVED_KEYS]
    if clash:
        raise ConfigError("metadata", f"{clash} are written by save_model itself; use other keys")
    state = model.state_dict()
    nonfinite = first_nonfinite(state.items())
    if nonfinite is not None:
        raise CheckpointError(f"refusing to save model {model_name(model)!r} to {path}: tensor {nonfinite[0]!r} holds "
                              f"{nonfinite[1]} values (diverged training?); ribench stores no model with non-finite "
                              "weights")
    if hasattr(model, "arch"):
        meta["arch"] = model.arch
        meta["hparams"] = json.dumps(getattr(model, "hparams", {}), sort_keys=True)
        meta["modules"] = json.dumps(registering_modules(model))
    if isinstance(model, Model):
        meta["num_classes"] = str(model.num_classes)
        meta["spec"] = json.dumps(dataclasses.asdict(model.spec))
    tensors = {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in state.items()}
    _write_atomic(path, safetensors_bytes(tensors, metadata=meta))
    return path


def registering_modules(model: nn.Module) -> list[str]:
    """Sorted modules whose import registers the model kinds ``model`` is built from.

    The kinds are the ``arch`` of ``model`` and of its submodules, and every registered
    model name that appears as a string in their ``hparams`` (a wrapper records its
    base's name there). Kinds that are not registered (a model built by hand) add none.
    """
    kinds: set[str] = set()
    for m in model.modules():
        arch = getattr(m, "arch", None)
        if isinstance(arch, str):
            kinds.add(arch)
            kinds.update(s for s in _strings(getattr(m, "hparams", {})) if s in MODEL_KINDS)
    modules = set()
    for kind in kinds:
        if kind == external.ARCH:
            modules.add(external.__name__)
        elif kind in MODEL_KINDS:
            modules.add(getattr(MODEL_KINDS.get(kind), "__module__", None) or "")
    return sorted(m for m in modules if m)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _recorded_modules(meta: Mapping[str, str], arch: str, hparams: Any, path: str | os.PathLike) -> list[str]:
    """The checkpoint's ``modules``, or, for a file that records none, the legacy ones of its kinds."""
    if "modules" not in meta:
        kinds = {arch, *_strings(hparams)}
        return sorted({LEGACY_MODULES[k] for k in kinds if k in LEGACY_MODULES})
    try:
        modules = json.loads(meta["modules"])
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path} has malformed metadata 'modules' ({e})") from None
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise CheckpointError(f"checkpoint {path} has malformed metadata 'modules': expected a list of module "
                              f"names, got {meta['modules'][:200]!r}")
    return modules


def _import_registering(modules: list[str], path: str | os.PathLike) -> list[str]:
    """Import the ``ribench`` modules of ``modules``; return the others (never imported)."""
    outside = []
    for name in modules:
        if name != PACKAGE and not name.startswith(PACKAGE + "."):
            outside.append(name)
            continue
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise CheckpointError(f"checkpoint {path} needs module {name!r} to rebuild its model, which does not "
                                  f"import in this version of {PACKAGE}: {e}") from None
    return outside


def load_model(path: str | os.PathLike, trust_checkpoint: bool = False) -> Model:
    """Rebuild a model saved by ``save_model`` from its metadata and load its weights (on CPU).

    ``trust_checkpoint`` also lets an outside backbone's ``module:`` source name a
    factory that ``external`` refuses by default (see ``external.import_factory``).
    """
    state_dict, meta = load_state_dict(path, trust_checkpoint)
    if "arch" not in meta:
        raise CheckpointError(
            f"checkpoint {path} records no architecture (metadata key 'arch'; only files written by "
            "save_model do). Build the model with create_model(...) and call load_into(model, state_dict, path)"
        )
    arch = meta["arch"]
    try:
        hparams = json.loads(meta.get("hparams", "{}"))
        num_classes = int(meta["num_classes"])
        spec_fields = json.loads(meta["spec"])
        spec = InputSpec(
            channels=int(spec_fields["channels"]),
            size=int(spec_fields["size"]),
            mean=tuple(spec_fields["mean"]),
            std=tuple(spec_fields["std"]),
        )
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} has malformed metadata ({type(e).__name__}: {e})") from None
    outside = _import_registering(_recorded_modules(meta, arch, hparams, path), path)
    try:
        if arch == external.ARCH:  # an outside backbone records how to rebuild it
            model = external.rebuild(hparams, num_classes, spec, str(path), trust_checkpoint)
        else:
            model = MODEL_KINDS.create(arch, num_classes=num_classes, spec=spec, **hparams)
    except UnknownNameError as e:
        where = (f"; it was registered by {', '.join(map(repr, outside))}, outside {PACKAGE}, which loading a "
                 "checkpoint never imports: import it first, name it in RIBENCH_PLUGINS, or register it through a "
                 f"'{PACKAGE}.models' entry point") if outside else ""
        needs = "" if e.name == arch else f", built on model {e.name!r},"
        raise CheckpointError(f"checkpoint {path} was saved from model {arch!r}{needs} which is not registered"
                              f"{where}. {e}") from None
    except (TypeError, ConfigError) as e:
        raise CheckpointError(f"checkpoint {path}: cannot rebuild {arch!r} from hparams {hparams}: {e}") from None
    attach_pretrain_heads(model, state_dict)
    return load_into(model, state_dict, path)
