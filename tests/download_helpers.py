"""An HTTP server on 127.0.0.1, registry fixtures and archive builders, shared by the download tests."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ribench.data import download as D


class Server:
    """Serves ``files`` (path -> bytes) with Range support; paths in ``cut`` send half their
    bytes (while announcing the full length) then close, once each. ``requests`` lists the paths asked for."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()
        self.ranges: list[str | None] = []
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.requests.append(self.path)
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                outer.ranges.append(rng)
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if self.path in outer.cut:
                    outer.cut.discard(self.path)
                    self.wfile.write(body[start:start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def registered():
    names = []

    def reg(name, **kw):
        D.register_dataset(name, replace=True, **kw)
        names.append(name)

    yield reg
    for n in names:
        D.unregister_dataset(n)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def tar(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def file(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    i = tarfile.TarInfo(name)
    i.mode = mode
    return i, data


def directory(name: str) -> tuple[tarfile.TarInfo, None]:
    i = tarfile.TarInfo(name)
    i.type, i.mode = tarfile.DIRTYPE, 0o755
    return i, None


def symlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    i = tarfile.TarInfo(name)
    i.type, i.linkname = tarfile.SYMTYPE, target
    return i, None


def hardlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    i = tarfile.TarInfo(name)
    i.type, i.linkname = tarfile.LNKTYPE, target
    return i, None


def special(name: str, kind: bytes = tarfile.CHRTYPE) -> tuple[tarfile.TarInfo, None]:
    i = tarfile.TarInfo(name)
    i.type = kind
    return i, None


def snapshot(top: Path) -> dict[str, tuple]:
    """Every path under ``top`` (links not followed): ('dir',), ('link', text) or ('file', bytes, mode)."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, top)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            else:
                with open(p, "rb") as f:
                    out[rel] = ("file", f.read(), stat.S_IMODE(st.st_mode))
    return out
