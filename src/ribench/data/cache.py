"""Where built data lives, and atomic safetensors I/O for dicts of tensors.

The cache root is ``$RIBENCH_CACHE`` when set, else ``~/.cache/ribench``; built
suites go to ``<root>/data``. Files are written under a temporary name in the same
folder and moved into place with ``os.replace``, so a reader never sees half a file,
even if the writer is killed. A file that cannot be parsed raises ``DataError``
naming it; callers are expected to rebuild it. A file can carry string metadata (what
it was built from), read back by ``load_metadata`` without loading its tensors.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..core.errors import DataError

CACHE_ENV = "RIBENCH_CACHE"


def cache_root() -> Path:
    """``$RIBENCH_CACHE`` if set, else ``~/.cache/ribench``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ribench"


def data_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder built data is stored in: ``cache_dir`` if given, else ``<root>/data``."""
    return Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "data"


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` (and the ``metadata`` strings, if any) to ``path`` (safetensors)
    atomically; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # safetensors refuses tensors that share memory (e.g. one labels tensor in two splits)
        save_file({k: v.clone(memory_format=torch.contiguous_format) for k, v in tensors.items()}, tmp,
                  metadata=metadata)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing or unreadable file raises ``DataError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"cache file {path} does not exist")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise DataError(f"cache file {path} is corrupt or unreadable ({e})") from None


def load_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata strings of a safetensors file (``{}`` if it has none); a missing or
    unreadable file raises ``DataError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"cache file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise DataError(f"cache file {path} is corrupt or unreadable ({e})") from None
