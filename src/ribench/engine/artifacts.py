"""Content-addressed artifact store: tensors saved as safetensors under their cell key.

Files live at ``<root>/<key[:2]>/<key>.safetensors``, written to a temporary name
(``.<name>.<pid>.<random>.tmp``) in the same folder and renamed, so a reader never sees a
half-written artifact. Once written, an artifact is *sealed*: its size (bytes) and SHA-256
are recorded beside it in ``<key>.sum`` (JSON). ``has`` compares the size (one ``stat``);
``check`` also compares the SHA-256 and is what a run uses before it reads an artifact
again.
Artifacts written before sealing existed count when their size is the one their own
safetensors header implies (which catches truncation).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import time
import uuid
from contextlib import suppress
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..core.errors import CheckpointError

_TMP = re.compile(r"^\..+\.(\d+)\.[0-9a-f]+\.tmp$")  # .<name>.<pid>.<random>.tmp (here and in save_model)
_CHUNK = 8 << 20  # bytes hashed per read


def temporary_name(dest: Path) -> Path:
    """Where the writer with this pid writes ``dest`` before renaming it (a name ``clean_temporary`` knows)."""
    return dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _implied_size(path: Path) -> int | None:
    """Bytes a safetensors file must have by its own header (8 + header + data), or None if it has no valid header."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return None
            n = struct.unpack("<Q", head)[0]
            if n > 100 << 20:
                return None
            header = json.loads(f.read(n))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        return 8 + n + max(ends, default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


class ArtifactStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def seal_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.sum"

    def _sealed(self, key: str) -> dict | None:
        try:
            rec = json.loads(self.seal_path(key).read_text())
            return rec if isinstance(rec, dict) and {"bytes", "sha256"} <= rec.keys() else None
        except (OSError, ValueError):
            return None

    def has(self, key: str) -> bool:
        """The artifact exists and has the size it was sealed with (cheap: no hashing)."""
        return self.check(key, full=False) is None

    def check(self, key: str, full: bool = True) -> str | None:
        """What is wrong with the artifact of ``key`` (missing, truncated, altered), or None when it is intact.

        ``full``: also compare its SHA-256 with the one recorded when it was written (reads
        the whole file once); otherwise only its size.
        """
        p = self.path(key)
        try:
            size = p.stat().st_size
        except OSError:
            return f"{p} is missing"
        rec = self._sealed(key)
        if rec is None:
            implied = _implied_size(p)
            if implied is None:
                return f"{p} is not a safetensors file"
            return None if size == implied else f"{p} has {size} bytes, its header says {implied}"
        if size != rec["bytes"]:
            return f"{p} has {size} bytes, {rec['bytes']} when it was written"
        if full and _sha256(p) != rec["sha256"]:
            return f"{p} differs from what was written (SHA-256)"
        return None

    def seal(self, key: str) -> dict:
        """Record the size and SHA-256 of the artifact of ``key`` as it is now; returns the record."""
        p = self.path(key)
        st = p.stat()
        rec = self._sealed(key)
        if rec and rec["bytes"] == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
            return rec  # sealed since it was last written
        rec = {"bytes": st.st_size, "sha256": _sha256(p), "mtime_ns": st.st_mtime_ns}
        dest = self.seal_path(key)
        tmp = temporary_name(dest)
        try:
            tmp.write_text(json.dumps(rec))
            os.replace(tmp, dest)
        finally:
            with suppress(FileNotFoundError):
                tmp.unlink()
        return rec

    def discard(self, key: str) -> None:
        """Remove the artifact of ``key`` and its seal (a damaged artifact, about to be computed again)."""
        for p in (self.seal_path(key), self.path(key)):
            with suppress(FileNotFoundError):
                p.unlink()

    def save(self, key: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
        dest = self.path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_name(dest)
        try:
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
            os.replace(tmp, dest)
        finally:
            with suppress(FileNotFoundError):
                tmp.unlink()
        self.seal(key)
        return dest

    def clean_temporary(self, local_writers: bool = True, max_age: float = 3600.0) -> list[Path]:
        """Remove temporary files a killed writer left behind; returns what was removed.

        A temporary file goes when the process named in it is gone (``local_writers``: every
        writer runs on this host) or when it has not changed for ``max_age`` seconds (writers
        on other hosts of a shared folder, or names without a pid).
        """
        removed = []
        now = time.time()
        for p in self.root.glob("*/*.tmp"):
            m = _TMP.match(p.name)
            try:
                old = now - p.stat().st_mtime > max_age
            except FileNotFoundError:
                continue  # renamed by its writer a moment ago
            if old or (local_writers and m is not None and not pid_alive(int(m.group(1)))):
                with suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
        return removed

    def metadata(self, key: str) -> dict[str, str]:
        from safetensors import safe_open

        try:
            with safe_open(str(self.path(key)), framework="pt") as f:
                return dict(f.metadata() or {})
        except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
            raise CheckpointError(f"artifact {self.path(key)} is corrupt ({e}); delete it to recompute") from None

    def load(self, key: str) -> dict[str, torch.Tensor]:
        p = self.path(key)
        if not p.is_file():
            raise CheckpointError(f"artifact {p} is missing")
        try:
            return load_file(p)
        except Exception as e:  # safetensors raises its own error type for corrupt files
            raise CheckpointError(f"artifact {p} is corrupt ({e}); delete it to recompute") from None
