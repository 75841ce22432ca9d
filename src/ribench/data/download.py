"""Downloads with checksums and resume, safe archive extraction, and the data root.

The registry of known datasets (URLs, sizes, SHA-256 checksums, the source of each
checksum, manual steps) is the data file ``lists/datasets.toml``; more entries come
from ``register_dataset(...)`` or a user TOML file of the same shape
(``load_registry_file``, or every file named in ``$RIBENCH_DATASETS``, separated by
the path separator). Every entry's ``folder`` and each file's name are checked when
the entry is registered: relative, without ``..``, so nothing lands outside the root.

``get_dataset(name, root)`` downloads each file into ``<root>/<folder>/`` with HTTP
``Range`` resume (a ``.part`` file grows until complete), checks its size and
SHA-256, and extracts archives. A file without a published SHA-256 is downloaded
but never reported as verified (an MD5, where one is published, is still checked);
an archive with no published checksum at all is extracted only with
``allow_unverified=True`` (``ribench data get NAME --allow-unverified``).

``safe_extract`` (tar of any compression, zip, single-file ``.gz``/``.bz2``/``.xz``)
writes member by member with its own checks, not tarfile's extraction filter: names
must be relative without ``..``, NUL or drive letters; a link may only lead to what
this archive itself wrote inside the folder, resolved against the members written so
far (never the file system's ``realpath``); no member is written through a link;
device files and FIFOs are refused; the expanded size is counted while streaming and
capped (``MAX_EXPANSION_RATIO``, ``MAX_EXPANDED_BYTES``, ``MAX_MEMBER_BYTES``, or the
registry entry's ``expanded_size``). Members are written into a private folder
inside the target and moved into place only once the whole archive passed; a refusal
removes everything written and names the archive, the member and the reason.

Data root: ``--root`` (the ``root`` argument), else ``$RIBENCH_DATA``, else
``~/.cache/ribench/data``. Only the standard library is used (urllib, hashlib,
tarfile, zipfile), so downloads need no extra package.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import http.client
import json
import lzma
import os
import shutil
import stat
import tarfile
import tomllib
import urllib.error
import urllib.request
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, Iterator

from ..core.errors import DataError, UnknownNameError

DATA_ENV = "RIBENCH_DATA"
REGISTRY_ENV = "RIBENCH_DATASETS"
MAX_MEMBER_BYTES = 64 << 30  # 64 GiB: a larger archive member is refused
MAX_EXPANDED_BYTES = 64 << 30  # 64 GiB: an archive expanding to more is refused unless its entry declares expanded_size
MAX_EXPANSION_RATIO = 200  # expanded bytes per archive byte, unless the entry declares expanded_size
MEMBER_OVERHEAD_BYTES = 512  # each member counts this much (one tar header) on top of its data
MAX_LINK_HOPS = 40  # links followed to resolve one link, as Linux's MAXSYMLINKS
CHUNK = 1 << 20
STATE_FILE = ".ribench-download.json"
DOWNLOADS_DIR = ".downloads"
STAGING_DIR = ".ribench-extracting"  # members are written here, inside the target, until the archive passed
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def data_root(root: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else ``$RIBENCH_DATA``, else ``~/.cache/ribench/data``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ribench" / "data"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset. ``size``, ``expanded_size`` in bytes; ``expanded_size`` (archives only) is
    at most the size of the archive's uncompressed tar and replaces the default expansion limits."""

    url: str
    filename: str = ""
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    extract: bool = False
    expanded_size: int | None = None

    @property
    def name(self) -> str:
        return self.filename or PurePosixPath(self.url.split("?")[0]).name


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    folder: str
    files: tuple[RemoteFile, ...] = ()
    description: str = ""
    source: str = ""
    manual: str | None = None

    @property
    def verifiable(self) -> bool:
        return bool(self.files) and all(f.sha256 for f in self.files)


_REGISTRY: dict[str, DatasetInfo] = {}
_LOADED = False
_FILE_FIELDS = tuple(f.name for f in fields(RemoteFile))


def _path_problem(value: object, single: bool) -> str | None:
    """Why ``value`` is not a safe relative path (one plain name when ``single``); None when it is."""
    if not isinstance(value, str) or not value:
        return "expected a non-empty string"
    if "\0" in value:
        return "contains a NUL byte"
    if "\\" in value:
        return "contains a backslash"
    if value.startswith("/") or (len(value) > 1 and value[1] == ":" and value[0].isalpha()):
        return "is an absolute path"
    parts = value.split("/")
    if single and len(parts) > 1:
        return "must be a single file name, without '/'"
    if ".." in parts:
        return "contains '..'"
    if any(p in ("", ".") for p in parts):
        return "has an empty or '.' component"
    return None


def _validate(info: DatasetInfo, source: str) -> DatasetInfo:
    """Raise ``DataError`` naming the entry and field when ``folder`` or a file name could leave the root."""
    where = f"{source}: dataset {info.name!r}"
    problem = _path_problem(info.folder, single=False)
    if problem:
        raise DataError(f"{where}: field 'folder' = {info.folder!r} {problem}; expected a relative path under the "
                        f"data root")
    for i, f in enumerate(info.files):
        fieldname = f"files[{i}].filename" if f.filename else f"files[{i}].url (the file name taken from it)"
        problem = _path_problem(f.name, single=True)
        if problem:
            raise DataError(f"{where}: field {fieldname!r} = {f.name!r} {problem}; expected one plain file name")
        if f.name in (DOWNLOADS_DIR, STATE_FILE, STAGING_DIR):
            raise DataError(f"{where}: field {fieldname!r} = {f.name!r} is reserved for ribench's own files")
        for key in ("size", "expanded_size"):
            v = getattr(f, key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise DataError(f"{where}: field 'files[{i}].{key}' = {v!r}; expected a number of bytes")
    return info


def _remote_file(d: dict | RemoteFile, where: str) -> RemoteFile:
    if isinstance(d, RemoteFile):
        return d
    unknown = sorted(set(d) - set(_FILE_FIELDS)) if isinstance(d, dict) else None
    if unknown is None or unknown or "url" not in d:
        raise DataError(f"{where} is malformed ({'unknown fields ' + ', '.join(unknown) if unknown else 'no url'}); "
                        f"expected {', '.join(_FILE_FIELDS)} per file")
    return RemoteFile(**d)


def _parse(name: str, d: dict, source: str) -> DatasetInfo:
    if not isinstance(d, dict):
        raise DataError(f"{source}: dataset {name!r} is malformed; expected a table")
    files = tuple(_remote_file(f, f"{source}: dataset {name!r} files[{i}]") for i, f in enumerate(d.get("files", [])))
    info = DatasetInfo(name=name, folder=d.get("folder", name), files=files, description=d.get("description", ""),
                       source=d.get("source", ""), manual=d.get("manual"))
    return _validate(info, source)


def register_dataset(name: str, files: list[dict] | tuple[RemoteFile, ...] = (), folder: str | None = None,
                     description: str = "", source: str = "", manual: str | None = None,
                     replace: bool = False) -> DatasetInfo:
    """Add a dataset to the registry (``files``: dicts with url, filename, size, sha256, md5, extract,
    expanded_size). ``folder`` (default ``name``) and the file names are checked (``DataError``)."""
    _load_builtin()
    if name in _REGISTRY and not replace:
        raise DataError(f"dataset {name!r} is already registered (pass replace=True to override it)")
    fs = tuple(_remote_file(f, f"register_dataset: dataset {name!r} files[{i}]") for i, f in enumerate(files))
    info = _validate(DatasetInfo(name, folder or name, fs, description, source, manual), "register_dataset")
    _REGISTRY[name] = info
    return info


def unregister_dataset(name: str) -> None:
    _REGISTRY.pop(name, None)


def load_registry_file(path: str | os.PathLike) -> list[str]:
    """Register every table of a TOML file shaped like ``lists/datasets.toml``; returns the names."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise DataError(f"{p}: cannot read the dataset registry file ({e})") from None
    parsed = {name: _parse(name, d, str(p)) for name, d in data.items()}  # all checked before any is registered
    _REGISTRY.update(parsed)
    return list(parsed)


def _load_builtin() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    text = resources.files("ribench.data").joinpath("lists/datasets.toml").read_text()
    for name, d in tomllib.loads(text).items():
        _REGISTRY.setdefault(name, _parse(name, d, "lists/datasets.toml"))
    for extra in filter(None, os.environ.get(REGISTRY_ENV, "").split(os.pathsep)):
        load_registry_file(extra)


def list_datasets() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def dataset_info(name: str) -> DatasetInfo:
    _load_builtin()
    if name not in _REGISTRY:
        raise UnknownNameError("dataset", name, sorted(_REGISTRY))
    return _REGISTRY[name]


def get_command(name: str, root: str | os.PathLike | None = None) -> str:
    """The exact command that fetches ``name``."""
    return f"ribench data get {name}" + (f" --root {root}" if root is not None else "")


# ----------------------------------------------------------------- hashing and downloading


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the open file descriptor ``fd`` (every download and extraction write)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def download_file(url: str, dest: Path, size: int | None = None, sha256: str | None = None, md5: str | None = None,
                  timeout: float = 60.0, progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Download ``url`` to ``dest``, resuming a ``dest.part`` left by an interrupted run.

    The file is moved into place only once complete and matching ``size``, ``sha256``
    and ``md5`` (each when given). A short transfer or a full disk keeps the ``.part``
    file and raises ``DataError`` saying to run again; a checksum mismatch deletes it and raises.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is None or have < size:
        req = urllib.request.Request(url, headers={"Range": f"bytes={have}-", "User-Agent": "ribench"} if have
                                     else {"User-Agent": "ribench"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                if have and r.status != 206:  # the server ignored the range: start over
                    have = 0
                total = size
                length = r.headers.get("Content-Length")
                if total is None and length is not None:
                    total = have + int(length)
                fd = os.open(part, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if have else os.O_TRUNC), 0o644)
                try:
                    while True:
                        block = r.read(CHUNK)
                        if not block:
                            break
                        _write_all(fd, block)
                        have += len(block)
                        if progress is not None:
                            progress(have, total)
                finally:
                    os.close(fd)
                if total is not None and have < total:
                    raise http.client.IncompleteRead(b"", total - have)
        except urllib.error.HTTPError as e:
            if e.code == 416 and size is not None and have == size:
                pass  # already complete
            else:
                raise DataError(f"{url}: HTTP {e.code} {e.reason}") from None
        except (http.client.IncompleteRead, urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
            got = part.stat().st_size if part.exists() else 0
            if isinstance(e, OSError) and e.errno in _NO_SPACE:
                raise DataError(f"{url}: no space left on device while writing {part} ({got} bytes written); the "
                                f"partial file is kept: free space and run the same command again to resume") from None
            raise DataError(f"{url}: download interrupted after {got} bytes"
                            + (f" of {size}" if size else "") + f" ({type(e).__name__}); the partial file "
                            f"{part} is kept: run the same command again to resume") from None
    got = part.stat().st_size
    if size is not None and got != size:
        raise DataError(f"{url}: got {got} bytes, expected {size}; run the same command again to resume")
    for algorithm, want in (("sha256", sha256), ("md5", md5)):
        if want:
            actual = file_digest(part, algorithm)
            if actual != want.lower():
                part.unlink()
                raise DataError(f"{url}: {algorithm.upper()} mismatch: got {actual}, expected {want}; the download "
                                f"was deleted (a changed or corrupted file); nothing was extracted")
    os.replace(part, dest)
    return dest


# ----------------------------------------------------------------- extraction

_DIR, _FILE, _LINK = "directory", "file", "link"


class _Refused(Exception):
    """A member breaks a rule; ``safe_extract`` turns it into a ``DataError`` naming the archive."""

    def __init__(self, member: str, reason: str):
        self.member, self.reason = member, reason
        super().__init__(reason)


def _member_parts(name: str, member: str, what: str = "") -> tuple[str, ...]:
    """The path components of an archive name, or ``_Refused`` (absolute, ``..``, NUL, drive letter)."""
    label = f"{what} {name!r}: " if what else ""
    if "\0" in name:
        raise _Refused(member, f"{label}name contains a NUL byte")
    name = name.replace("\\", "/")
    if name.startswith("/"):
        raise _Refused(member, f"{label}absolute path")
    if len(name) > 1 and name[1] == ":" and name[0].isalpha():
        raise _Refused(member, f"{label}absolute path (drive letter)")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _Refused(member, f"{label}path contains '..'")
    return parts


class _Budget:
    """Counts expanded bytes while streaming (data plus ``MEMBER_OVERHEAD_BYTES`` per member)."""

    def __init__(self, limit: int, why: str, max_member_bytes: int):
        self.limit, self.why, self.max_member_bytes, self.used = limit, why, max_member_bytes, 0

    def charge(self, n: int, member: str) -> None:
        self.used += n
        if self.used > self.limit:
            raise _Refused(member, f"the archive expands to more than {self.limit} bytes ({self.why})")


@contextmanager
def _writing(member: str, path: Path) -> Iterator[None]:
    """File-system errors while writing ``path``: a full disk says so; any other names the errno."""
    try:
        yield
    except OSError as e:
        if e.errno in _NO_SPACE:
            raise _Refused(member, f"no space left on device while writing {path}") from None
        if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EEXIST):
            raise _Refused(member, f"{path} would be written through a link or over an earlier member "
                                   f"({e.strerror})") from None
        raise _Refused(member, f"cannot write {path} ({e.strerror})") from None


class _Tree:
    """What an archive wrote so far under ``root`` (a fresh private folder): the kind of every path and the
    text of every link. Paths are '/'-joined components; no stored path passes through a link member, so
    each is also where the file system puts it. Every write goes through directory descriptors opened
    with ``O_NOFOLLOW``: no link, old or new, is ever followed while writing."""

    def __init__(self, root: Path, shown: Path, reserved: tuple[str, ...]):
        self.root, self.shown, self.reserved = root, shown, reserved  # shown: the target folder named in messages
        self.kinds: dict[str, str] = {"": _DIR}
        self.targets: dict[str, str] = {}
        self._cached: tuple[str, int] | None = None
        self._root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)

    def close(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None
        os.close(self._root_fd)

    # -- checks against what was written

    def _parent_check(self, parts: tuple[str, ...], member: str) -> None:
        if parts[0] in self.reserved:
            raise _Refused(member, f"{parts[0]!r} is reserved for ribench's own files")
        for i in range(1, len(parts)):
            kind = self.kinds.get("/".join(parts[:i]))
            if kind == _LINK:
                raise _Refused(member, f"its path passes through the link {'/'.join(parts[:i])!r}, a member of "
                                       f"this archive")
            if kind == _FILE:
                raise _Refused(member, f"its path passes through {'/'.join(parts[:i])!r}, a file of this archive")

    def _replaceable(self, parts: tuple[str, ...], member: str, kind: str) -> bool:
        """Whether an earlier member sits at ``parts`` (files and links are replaced, directories kept)."""
        old = self.kinds.get("/".join(parts))
        if old is None:
            return False
        if (old == _DIR) != (kind == _DIR):
            raise _Refused(member, f"a {old} of the same name was extracted earlier from this archive")
        return old != _DIR

    def resolver(self) -> Callable[[str], list[str] | None]:
        """``where(link)``: the components a link member leads to, following the link members written so far
        (never the file system); None when it leaves the root. One memo per resolver, so resolving is
        linear in the links' text."""
        memo: dict[str, list[str] | None] = {}
        active: list[str] = []

        def where(key: str) -> list[str] | None:
            if key in memo:
                return memo[key]
            if key in active or len(active) >= MAX_LINK_HOPS:
                raise _Refused(active[0] if active else key,
                               f"a loop or a chain of more than {MAX_LINK_HOPS} links ({' -> '.join(active + [key])})")
            active.append(key)
            cur = key.split("/")[:-1]
            res: list[str] | None = cur
            for comp in self.targets[key].split("/"):
                if comp in ("", "."):
                    continue
                if comp == "..":
                    if not cur:
                        res = None
                        break
                    cur.pop()
                    continue
                cur.append(comp)
                if self.kinds.get("/".join(cur)) == _LINK:
                    sub = where("/".join(cur))
                    if sub is None:
                        res = None
                        break
                    cur = list(sub)
            else:
                res = cur
            active.pop()
            memo[key] = res
            return res

        return where

    def check_links(self) -> None:
        """Every link, resolved against the final set of members, stays inside the root."""
        where = self.resolver()
        for key in self.targets:
            if where(key) is None:
                raise _Refused(key, f"link to {self.targets[key]!r} points outside {self.shown} through the "
                                    f"links of this archive")

    # -- writing

    def _dir_fd(self, parts: tuple[str, ...], member: str) -> int:
        """A descriptor of folder ``parts`` (created as needed), owned by the cache; never follows a link."""
        key = "/".join(parts)
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1]
        fd = os.dup(self._root_fd)
        try:
            for i, comp in enumerate(parts):
                with _writing(member, self.shown.joinpath(*parts[:i + 1])):
                    try:
                        os.mkdir(comp, 0o777, dir_fd=fd)
                    except FileExistsError:
                        pass
                    nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = nfd
                self.kinds.setdefault("/".join(parts[:i + 1]), _DIR)
        except BaseException:
            os.close(fd)
            raise
        if self._cached is not None:
            os.close(self._cached[1])
        self._cached = (key, fd)
        return fd

    def _place(self, parts: tuple[str, ...], member: str, kind: str) -> int:
        """Checks for a new ``kind`` member at ``parts``; returns its folder's descriptor, old member removed."""
        if not parts:
            raise _Refused(member, "empty name")
        self._parent_check(parts, member)
        replace = self._replaceable(parts, member, kind)
        fd = self._dir_fd(parts[:-1], member)
        if replace:
            with _writing(member, self.shown.joinpath(*parts)):
                os.unlink(parts[-1], dir_fd=fd)
            self.kinds.pop("/".join(parts))
            self.targets.pop("/".join(parts), None)
        return fd

    def mkdir(self, parts: tuple[str, ...], member: str) -> None:
        if parts:
            self._parent_check(parts, member)
            self._replaceable(parts, member, _DIR)
            self._dir_fd(parts, member)

    def write_file(self, parts: tuple[str, ...], member: str, src: BinaryIO, budget: _Budget,
                   executable: bool = False) -> None:
        """Stream ``src`` into a new file at ``parts`` (``O_EXCL | O_NOFOLLOW``), counting into ``budget``."""
        fd_dir = self._place(parts, member, _FILE)
        path = self.shown.joinpath(*parts)
        budget.charge(MEMBER_OVERHEAD_BYTES, member)
        with _writing(member, path):
            fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                         0o755 if executable else 0o644, dir_fd=fd_dir)
        self.kinds["/".join(parts)] = _FILE
        try:
            copied = 0
            while True:
                block = src.read(CHUNK)
                if not block:
                    break
                copied += len(block)
                if copied > budget.max_member_bytes:
                    raise _Refused(member, f"more than {budget.max_member_bytes} bytes: exceeds the limit of "
                                           f"{budget.max_member_bytes} bytes per member")
                budget.charge(len(block), member)
                with _writing(member, path):
                    _write_all(fd, block)
        finally:
            os.close(fd)

    def symlink(self, parts: tuple[str, ...], member: str, target: str, budget: _Budget) -> None:
        """A link member: its text must be relative and lead inside the root through this archive's members."""
        if not target:
            raise _Refused(member, "link with an empty target")
        if "\0" in target or "\\" in target:
            raise _Refused(member, f"link to {target!r}: target contains a NUL byte or a backslash")
        if target.startswith("/") or (len(target) > 1 and target[1] == ":" and target[0].isalpha()):
            raise _Refused(member, f"link to {target!r} points outside {self.shown} (absolute link target)")
        fd_dir = self._place(parts, member, _LINK)
        budget.charge(MEMBER_OVERHEAD_BYTES, member)
        key = "/".join(parts)
        self.kinds[key], self.targets[key] = _LINK, target
        if self.resolver()(key) is None:
            raise _Refused(member, f"link to {target!r} points outside {self.shown}")
        with _writing(member, self.shown.joinpath(*parts)):
            os.symlink(target, parts[-1], dir_fd=fd_dir)

    def hardlink(self, parts: tuple[str, ...], member: str, target: str, budget: _Budget) -> None:
        """A hard link member: only to a regular file this archive wrote earlier."""
        tparts = _member_parts(target, member, "hard link to")
        kind = self.kinds.get("/".join(tparts)) if tparts else _DIR
        if kind != _FILE:
            raise _Refused(member, f"hard link to {target!r}, which is "
                                   + (f"a {kind}" if kind else "not a file extracted earlier from this archive")
                                   + " (it points outside or at a link)")
        src_fd = os.dup(self._dir_fd(tparts[:-1], member))
        try:
            fd_dir = self._place(parts, member, _FILE)
            budget.charge(MEMBER_OVERHEAD_BYTES, member)
            with _writing(member, self.shown.joinpath(*parts)):
                os.link(tparts[-1], parts[-1], src_dir_fd=src_fd, dst_dir_fd=fd_dir, follow_symlinks=False)
        finally:
            os.close(src_fd)
        self.kinds["/".join(parts)] = _FILE


def _extract_tar(a: Path, tree: _Tree, budget: _Budget) -> None:
    with tarfile.open(a, "r:*") as tf:
        for m in tf:
            if m.ischr() or m.isblk() or m.isfifo() or m.isdev():
                raise _Refused(m.name, "device file or FIFO")
            parts = _member_parts(m.name, m.name)
            if m.isdir():
                budget.charge(MEMBER_OVERHEAD_BYTES, m.name)
                tree.mkdir(parts, m.name)
            elif m.issym():
                tree.symlink(parts, m.name, m.linkname, budget)
            elif m.islnk():
                tree.hardlink(parts, m.name, m.linkname, budget)
            elif m.isreg():
                if m.size > budget.max_member_bytes:
                    raise _Refused(m.name, f"{m.size} bytes exceeds the limit of {budget.max_member_bytes} bytes "
                                           f"per member")
                src = tf.extractfile(m)
                tree.write_file(parts, m.name, src, budget, executable=bool(m.mode & 0o100))
            else:
                raise _Refused(m.name, f"unsupported member type {m.type!r}")


def _extract_zip(a: Path, tree: _Tree, budget: _Budget) -> None:
    with zipfile.ZipFile(a) as zf:
        for info in zf.infolist():
            name, mode = info.filename, info.external_attr >> 16
            parts = _member_parts(name, name)
            if stat.S_ISLNK(mode):
                raise _Refused(name, "symbolic link (zip archives are extracted without links)")
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
                raise _Refused(name, "device file or FIFO")
            if info.is_dir():
                budget.charge(MEMBER_OVERHEAD_BYTES, name)
                tree.mkdir(parts, name)
                continue
            if info.file_size > budget.max_member_bytes:
                raise _Refused(name, f"{info.file_size} bytes exceeds the limit of {budget.max_member_bytes} bytes "
                                     f"per member")
            if info.flag_bits & 0x1:
                raise _Refused(name, "encrypted member (unzip it by hand with its password)")
            with zf.open(info) as src:
                tree.write_file(parts, name, src, budget, executable=bool(mode & 0o100))


_SINGLE = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def _decompress_single(a: Path, tree: _Tree, budget: _Budget) -> None:
    parts = _member_parts(a.stem, a.stem)
    if len(parts) != 1:
        raise _Refused(a.stem, "not a plain file name")
    with _SINGLE[a.suffix](a, "rb") as src:
        tree.write_file(parts, a.stem, src, budget)


def _remove(path: Path) -> None:
    """Remove ``path`` (a folder with all it holds, a file, or a link; never what a link points at)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _move_into_place(src: Path, dst: Path) -> None:
    """Move every entry of folder ``src`` into folder ``dst``: folders merge, anything else replaces what
    was there (a link in ``dst`` is replaced, never followed)."""
    for entry in os.scandir(src):
        target = dst / entry.name
        if entry.is_dir(follow_symlinks=False) and target.is_dir() and not target.is_symlink():
            _move_into_place(Path(entry.path), target)
            os.rmdir(entry.path)
        else:
            _remove(target)
            os.replace(entry.path, target)


def _expansion_limit(archive_bytes: int, expanded_size: int | None, max_expanded_bytes: int,
                     max_ratio: float) -> tuple[int, str]:
    if expanded_size is not None:
        return expanded_size, "its declared expanded_size"
    by_ratio = int(max_ratio * archive_bytes)
    if by_ratio < max_expanded_bytes:
        return by_ratio, (f"{max_ratio:g}x its {archive_bytes} bytes; a registry entry that expands more declares "
                          f"expanded_size")
    return max_expanded_bytes, "the limit for archives without a declared expanded_size"


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike, max_member_bytes: int = MAX_MEMBER_BYTES,
                 expanded_size: int | None = None, max_expanded_bytes: int = MAX_EXPANDED_BYTES,
                 max_ratio: float = MAX_EXPANSION_RATIO, reserved: tuple[str, ...] = ()) -> Path:
    """Extract a tar (any compression), zip or single-file ``.gz``/``.bz2``/``.xz`` into ``dest``.

    The rules are the module doc's. Expanded bytes (data plus ``MEMBER_OVERHEAD_BYTES`` per
    member) are capped at ``expanded_size`` when given, else at the smaller of ``max_ratio``
    times the archive's size and ``max_expanded_bytes``; one member at ``max_member_bytes``.
    Top-level names in ``reserved`` are refused. Output is written into ``dest/.ribench-extracting``
    and moved into place only when every member passed; on any refusal (``DataError`` naming
    the archive, the member and the reason) everything written is removed, and ``dest`` (with
    any parents created for it) is left as it was.
    """
    a, d = Path(archive), Path(dest)
    if os.open not in os.supports_dir_fd or os.symlink not in os.supports_dir_fd:
        raise DataError(f"{a}: extracting archives needs a system whose os.open supports dir_fd (Linux, macOS, BSD); "
                        f"extract it by hand into {d}")
    if tarfile.is_tarfile(a):
        extract = _extract_tar
    elif zipfile.is_zipfile(a):
        extract = _extract_zip
    elif a.suffix in _SINGLE:
        extract = _decompress_single
    else:
        raise DataError(f"{a}: not a tar, zip, .gz, .bz2 or .xz archive")
    limit, why = _expansion_limit(a.stat().st_size, expanded_size, max_expanded_bytes, max_ratio)
    budget = _Budget(limit, why, max_member_bytes)
    created = d  # the topmost folder this call creates, removed again on a refusal
    while not created.parent.exists() and created.parent != created.parent.parent:
        created = created.parent
    made = not d.exists()
    staging = d / STAGING_DIR
    try:
        d.mkdir(parents=True, exist_ok=True)
        _remove(staging)  # left by a run that was killed
        os.mkdir(staging, 0o700)
    except OSError as e:
        raise DataError(f"{a}: cannot create {staging} ({e.strerror})") from None

    def discard() -> None:
        shutil.rmtree(staging, ignore_errors=True)
        if made:
            shutil.rmtree(created, ignore_errors=True)

    try:
        tree = _Tree(staging, d, reserved + (STAGING_DIR,))
        try:
            extract(a, tree, budget)
            tree.check_links()
        finally:
            tree.close()
    except _Refused as e:
        discard()
        verb = "cannot extract" if "no space left on device" in e.reason else "refusing to extract"
        raise DataError(f"{a}: {verb} {e.member!r}: {e.reason}; nothing was extracted") from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, NotImplementedError,
            OSError) as e:  # reading the archive: every write error became a _Refused above
        discard()
        kind = "compressed file" if extract is _decompress_single else "archive"
        raise DataError(f"{a}: corrupt {kind} ({e}); nothing was extracted") from None
    except BaseException:
        discard()
        raise
    try:
        _move_into_place(staging, d)
        os.rmdir(staging)
    except OSError as e:
        discard()
        raise DataError(f"{a}: cannot move the extracted files from {staging} into {d} ({e}); run again") from None
    return d


# ----------------------------------------------------------------- get / verify


@dataclass
class DatasetStatus:
    name: str
    folder: Path
    state: str  # "verified", "unverified", "manual", "missing", "corrupt"
    messages: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.state in ("verified", "unverified")


def _write_state(folder: Path, state: dict) -> None:
    (folder / STATE_FILE).write_text(json.dumps(state, indent=1))


def _read_state(folder: Path) -> dict:
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) and isinstance(state.get("files"), dict) else {}


def get_dataset(name: str, root: str | os.PathLike | None = None, timeout: float = 60.0,
                max_member_bytes: int = MAX_MEMBER_BYTES, allow_unverified: bool = False,
                progress: Callable[[str], None] | None = None) -> DatasetStatus:
    """Download, check and extract dataset ``name`` into ``<root>/<folder>``.

    Returns its status: ``verified`` (every file matched a published SHA-256),
    ``unverified`` (downloaded, but no SHA-256 is published for some file) or
    ``manual`` (a person must do the step in ``messages``). Raises ``DataError`` when
    a download fails, is short, or does not match its checksum, when an extraction is
    refused, and, before downloading anything, when an archive has no published checksum
    (SHA-256 or MD5) and ``allow_unverified`` is false. The state that ``verify_dataset``
    reads is written only once every file is in place.
    """
    info = dataset_info(name)
    folder = data_root(root) / info.folder
    say = progress or (lambda s: None)
    if info.manual and not info.files:
        return DatasetStatus(name, folder, "manual", [info.manual.replace("<root>", str(data_root(root)))])
    unchecked = [f.name for f in info.files if f.extract and not (f.sha256 or f.md5)]
    if unchecked and not allow_unverified:
        raise DataError(f"{name}: {', '.join(unchecked)} has no published checksum, so a tampered or corrupted "
                        f"download cannot be told from the real one, and archives are extracted only once verified. "
                        f"To download and extract it anyway (every member still passes the extraction checks), run "
                        f"`{get_command(name, root)} --allow-unverified`")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STATE_FILE).unlink(missing_ok=True)  # the set counts as fetched again only once this run finishes
    downloads = folder / DOWNLOADS_DIR  # archives are kept here, so `data verify` can check them later
    state: dict = {"name": name, "files": {}}
    messages = []
    for f in info.files:
        dest = (downloads if f.extract else folder) / f.name
        if dest.exists() and f.sha256 and file_digest(dest) == f.sha256:
            say(f"{f.name}: already downloaded, SHA-256 matches")
        else:
            say(f"{f.name}: downloading {f.url}")
            download_file(f.url, dest, f.size, f.sha256, f.md5, timeout=timeout)
        if f.extract:
            say(f"{f.name}: extracting into {folder}")
            safe_extract(dest, folder, max_member_bytes, expanded_size=f.expanded_size,
                         reserved=(DOWNLOADS_DIR, STATE_FILE))
        verified = bool(f.sha256)
        if not verified:
            messages.append(f"{f.name}: no published SHA-256; downloaded but NOT verified"
                            + (" (its published MD5 matched)" if f.md5 else ""))
        state["files"][f.name] = {"sha256": file_digest(dest), "verified": verified, "extracted": f.extract}
    _write_state(folder, state)
    return DatasetStatus(name, folder, "verified" if info.verifiable else "unverified", messages)


def verify_dataset(name: str, root: str | os.PathLike | None = None) -> DatasetStatus:
    """Check what is on disk for ``name``: each downloaded file against its published SHA-256, and that
    the last ``get_dataset`` finished (every archive extracted)."""
    info = dataset_info(name)
    folder = data_root(root) / info.folder
    if not folder.is_dir():
        return DatasetStatus(name, folder, "missing", [f"{folder} does not exist; run `{get_command(name, root)}`"])
    if not info.files:
        return DatasetStatus(name, folder, "unverified", [f"{folder} exists; {name} is placed by hand, so there is "
                                                          f"no archive checksum to check"])
    messages, state = [], "verified"
    done = _read_state(folder).get("files", {})
    for f in info.files:
        dest = (folder / DOWNLOADS_DIR if f.extract else folder) / f.name
        if not dest.exists():
            return DatasetStatus(name, folder, "missing", [f"{dest} is missing; run `{get_command(name, root)}`"])
        if f.extract and f.name not in done:
            return DatasetStatus(name, folder, "missing", [f"{dest} was downloaded but not extracted (the last "
                                                           f"`ribench data get` did not finish); run "
                                                           f"`{get_command(name, root)}`"])
        if f.size is not None and dest.stat().st_size != f.size:
            return DatasetStatus(name, folder, "corrupt", [f"{dest}: {dest.stat().st_size} bytes, expected {f.size}"])
        if f.sha256:
            actual = file_digest(dest)
            if actual != f.sha256:
                return DatasetStatus(name, folder, "corrupt", [f"{dest}: SHA-256 {actual}, expected {f.sha256}"])
            messages.append(f"{f.name}: SHA-256 matches")
        else:
            state = "unverified"
            messages.append(f"{f.name}: no published SHA-256; cannot be verified")
    return DatasetStatus(name, folder, state, messages)
