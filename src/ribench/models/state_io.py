"""Reading weights: safetensors files and weights-only ``torch.load``; fitting them into a module.

``load_state_dict(path)`` returns ``(state_dict, metadata)`` on CPU; ``load_into(module,
state_dict, path)`` loads strictly and lists what does not fit. Both raise
CheckpointError naming the file. Full pickles are unpickled only with
``trust_checkpoint=True`` (the CLI's ``--trust-checkpoint``), because unpickling can run
arbitrary code; a pickle refused without it is described by the Python globals it
would call (``pickle_globals`` reads them from the pickle's opcodes, executing nothing).

This module is the bottom of ``models/``' file I/O: ``checkpoint`` (save and rebuild)
and ``external`` (outside backbones' weight files) both import it.
"""

from __future__ import annotations

import _compat_pickle
import io
import os
import pickle
import pickletools
import re
import sys
import warnings
import zipfile
from pathlib import Path
from typing import IO, Mapping

import torch
from safetensors import safe_open
from torch import nn

from ..core.errors import CheckpointError

StateDict = dict[str, torch.Tensor]
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
MAX_LISTED = 10
MAX_PICKLES = 8  # a legacy torch file is a few pickles followed by raw storage bytes

_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
               "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8"}


def load_state_dict(path: str | os.PathLike, trust_checkpoint: bool = False) -> tuple[StateDict, dict[str, str]]:
    """Read a checkpoint -> ``(state_dict, metadata)``; tensors on CPU.

    ``.safetensors`` files return their metadata; ``.pt``/``.pth``/``.bin`` files load
    with ``torch.load(weights_only=True)`` and return empty metadata. With
    ``trust_checkpoint=True`` a full pickle is unpickled (this can run code) and a
    pickled ``nn.Module`` yields its state dict. A mapping whose ``state_dict`` or
    ``model`` entry holds the weights (common training checkpoints) is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist" + (" (it is a directory)" if path.is_dir() else ""))
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        except Exception as e:  # SafetensorError, OSError: report, never a raw traceback
            raise CheckpointError(f"checkpoint {path} is not a readable safetensors file (truncated or corrupt?): {e}") from None
    if path.suffix not in TORCH_SUFFIXES:
        raise CheckpointError(
            f"checkpoint {path} has an unknown extension {path.suffix!r}; expected .safetensors, "
            + ", ".join(TORCH_SUFFIXES)
        )
    try:
        with warnings.catch_warnings():  # the error below says it better than torch's protocol warning
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except pickle.UnpicklingError as e:
        if not trust_checkpoint:
            refusal = _code_refusal(path, e)
            if refusal:
                raise CheckpointError(refusal) from None
        hint = "" if trust_checkpoint else "; if it is a full pickle from a trusted source, --trust-checkpoint may load it"
        raise CheckpointError(_unreadable(path, e) + hint) from None
    except Exception as e:
        raise CheckpointError(_unreadable(path, e)) from None
    return _as_state_dict(obj, path), {}


# ------------------------------------------------------------ what a pickle calls


def pickle_globals(path: str | os.PathLike) -> list[str]:
    """Dotted names (``module.qualname``) of the Python globals a pickle file refers to, in order.

    Read from the GLOBAL, INST and STACK_GLOBAL opcodes with ``pickletools`` (nothing is
    unpickled or executed); a zip archive written by ``torch.save`` is read member by
    member (its ``*.pkl`` files). Unparseable bytes end the scan of that stream.
    """
    path = Path(path)
    found: list[str] = []
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if name.endswith(".pkl"):
                    with z.open(name) as f:
                        _scan_stream(io.BytesIO(f.read()), found)
    else:
        with open(path, "rb") as f:
            _scan_stream(f, found)
    return list(dict.fromkeys(found))


def _scan_stream(f: IO[bytes], found: list[str]) -> None:
    """Append the globals of up to MAX_PICKLES consecutive pickles of ``f``."""
    for _ in range(MAX_PICKLES):
        start = f.tell()
        try:
            _scan_one(f, found)
        except Exception:  # not (or no longer) pickle opcodes: raw storage bytes, truncation
            return
        if f.tell() == start:
            return


def _scan_one(f: IO[bytes], found: list[str]) -> None:
    """One pickle up to its STOP; strings are followed through the memo for STACK_GLOBAL."""
    recent: list[object] = []  # what the last opcodes pushed (strings, or None for anything else)
    memo: dict[int, object] = {}
    for op, arg, _ in pickletools.genops(f):
        name = op.name
        if name in _STRING_OPS:
            recent.append(arg.decode("latin-1") if isinstance(arg, bytes) else arg)
        elif name in ("GLOBAL", "INST"):
            mod, _, qual = str(arg).partition(" ")
            found.append(_global_name(mod, qual))
            recent.append(None)
        elif name == "STACK_GLOBAL":
            mod, qual = (recent[-2], recent[-1]) if len(recent) >= 2 else (None, None)
            found.append(_global_name(mod, qual) if isinstance(mod, str) and isinstance(qual, str)
                         else "<unknown global>")
            recent.append(None)
        elif name == "MEMOIZE":
            memo[len(memo)] = recent[-1] if recent else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = recent[-1] if recent else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            recent.append(memo.get(int(arg)))
        elif name == "STOP":
            return
        elif op.stack_after:
            recent.append(None)
        del recent[:-4]  # STACK_GLOBAL needs the last two


def _global_name(module: str, qualname: str) -> str:
    """``module.qualname`` as Python 3 unpickles it (protocol <= 2 pickles name ``__builtin__``...)."""
    module, qualname = _compat_pickle.NAME_MAPPING.get((module, qualname), (module, qualname))
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{qualname}"


def _weights_only_globals() -> set[str]:
    """Names ``torch.load(weights_only=True)`` accepts: torch's default set (when this torch
    exposes it) and the globals added with ``torch.serialization.add_safe_globals``."""
    names: set[str] = set()
    try:
        from torch import _weights_only_unpickler

        names |= set(_weights_only_unpickler._get_allowed_globals())
    except Exception:  # another torch: fall back to the name prefixes below
        pass
    try:
        for obj in torch.serialization.get_safe_globals():
            obj = obj[0] if isinstance(obj, tuple) else obj
            names.add(f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}")
    except Exception:
        pass
    return names


def _allowed(name: str, allowed: set[str]) -> bool:
    if allowed:
        return name in allowed
    return name.split(".", 1)[0] == "torch" or name in ("collections.OrderedDict", "_codecs.encode")


def _standard_library(name: str) -> bool:
    return name.split(".", 1)[0] in sys.stdlib_module_names


def _code_refusal(path: Path, error: Exception) -> str | None:
    """The message for a pickle refused because it refers to globals outside the weights-only
    set (None when it refers to none: then the file is corrupt, not unsafe)."""
    try:
        names = pickle_globals(path)
    except Exception:
        names = []
    allowed = _weights_only_globals()
    unsafe = [n for n in names if not _allowed(n, allowed)]
    if not unsafe:  # torch names the global it refused in its message
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        unsafe = [found.group(1)] if found else []
    if not unsafe:
        return None
    calls = ", ".join(unsafe[:3]) + (f" and {len(unsafe) - 3} more" if len(unsafe) > 3 else "")
    std = [n for n in unsafe if _standard_library(n)]
    if std:
        return (f"checkpoint {path} is an unsafe full pickle that holds code, not weights: unpickling it would call "
                f"{std[0]} (the Python globals it names outside the weights-only set: {calls}). ribench refused it "
                "without running any of it. A model checkpoint has no reason to call the standard library; do not load this file, "
                "not even with --trust-checkpoint, unless you made it yourself")
    return (f"checkpoint {path} is an unsafe full pickle that holds code: unpickling it would call {calls} (Python "
            "globals outside the weights-only set), and unpickling can run arbitrary code; ribench refused it without "
            "running any of it. Re-save it as safetensors, or pass --trust-checkpoint (trust_checkpoint=True) if you trust its source")


def _unreadable(path: Path, error: Exception) -> str:
    text = str(error)
    _, marker, detail = text.partition("WeightsUnpickler error:")  # torch's actual reason follows this
    lines = [line.strip() for line in (detail if marker else text).splitlines() if line.strip()]
    reason = lines[0].split(". ")[0] if lines else type(error).__name__
    return f"checkpoint {path} is not a readable PyTorch weights file (truncated or corrupt?): {reason[:200]}"


def _as_state_dict(obj: object, path: Path) -> StateDict:
    if isinstance(obj, nn.Module):
        return dict(obj.state_dict())
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), (Mapping, nn.Module)):
                return _as_state_dict(obj[wrapper], path)
        for key, value in obj.items():
            if not isinstance(key, str) or not isinstance(value, torch.Tensor):
                raise CheckpointError(
                    f"checkpoint {path} is not a state dict: entry {key!r} holds a {type(value).__name__}, expected a tensor"
                )
        return dict(obj)
    raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a state dict of tensors")


# ---------------------------------------------------------------- fitting weights


def load_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], path_for_messages: str | os.PathLike) -> nn.Module:
    """Strictly load ``state_dict`` into ``model`` (in place) and return ``model``.

    Raises a CheckpointError listing missing keys, unexpected keys and shape
    mismatches (the first ``MAX_LISTED`` of each) when they do not fit.
    """
    expected = model.state_dict()
    name = getattr(model, "arch", type(model).__name__)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: expected {tuple(v.shape)}, found {tuple(state_dict[k].shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(getattr(state_dict[k], "shape", ())) != tuple(v.shape)
    ]
    problems = [
        _listing(title, items)
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
        if items
    ]
    if problems:
        raise CheckpointError(f"checkpoint {path_for_messages} does not fit model {name!r}:\n" + "\n".join(problems))
    try:
        model.load_state_dict(state_dict, strict=True)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise CheckpointError(f"checkpoint {path_for_messages} does not fit model {name!r}: {str(e).splitlines()[0]}") from None
    return model


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    more = f", ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return f"  {title} ({len(items)}): {shown}{more}"
