"""Archive extraction never writes outside its folder: crafted tar/zip archives (the CVE-2025-4517
long-symlink chain, hard links, symlink chains, writes through links, bombs, a full disk) are refused
with nothing left behind; a benign archive with internal links is still extracted."""

from __future__ import annotations

import bz2
import errno
import gzip
import io
import os
import tarfile
import zipfile

import pytest
from download_helpers import directory, file, hardlink, sha, snapshot, special, symlink, tar
from download_helpers import registered, server  # noqa: F401  (fixtures)

from ribench.cli import main
from ribench.core.errors import DataError
from ribench.data import download as D

STEPS = "abcdefghijklmnop"


def _long_chain(dest_len: int, victim: str, levels_up: int) -> list:
    """The CVE-2025-4517 shape: 16 nested folders with long names, each reachable through a one-letter
    link, then a link at the end of the chain whose own path (through the links) is longer than PATH_MAX,
    so a ``realpath`` check stops resolving there; ``escape`` leads ``levels_up`` folders above the
    destination through it. Component lengths are chosen from ``dest_len`` (the destination path)."""
    comp = "d" * ((4096 - dest_len - 100) // len(STEPS) - 1)
    members, path = [], ""
    for step in STEPS:
        members.append(directory(path + comp))
        members.append(symlink(path + step, comp))
        path += comp + "/"
    linkpath = "/".join(STEPS) + "/" + "l" * 254
    members.append(symlink(linkpath, "../" * len(STEPS)))  # physically: the destination itself
    members.append(symlink("escape", linkpath + "/.." * levels_up + ("/" + victim if victim else "")))
    return members


def _set_up_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "victim.txt").write_bytes(b"original")
    return root


@pytest.mark.parametrize("attack", ["write", "hardlink-overwrite"])
def test_cve_2025_4517_long_symlink_chain_is_refused(tmp_path, server, registered, capsys, attack):
    root = _set_up_root(tmp_path)
    dest = root / "set"
    chain = _long_chain(len(str(dest)), "", levels_up=2)  # escape -> <dest>/../.. = tmp_path
    if attack == "write":  # a new file two levels above the destination
        tail = [file("escape/created.txt", b"pwned")]
    else:  # a hard link to a file outside, then a regular member of the same name writing through it
        tail = [hardlink("h", "escape/victim.txt"), file("h", b"overwritten")]
    blob = tar(chain + tail, mode="w")
    server.files["/cve.tar"] = blob
    registered("cve", folder="set", files=[{"url": server.url + "/cve.tar", "sha256": sha(blob), "extract": True}])
    before = snapshot(tmp_path)

    assert main(["data", "get", "cve", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "cve.tar: refusing to extract" in err and "passes through the link 'a'" in err
    assert "nothing was extracted" in err
    after = snapshot(tmp_path)
    assert after == {**before, "root/set": ("dir",), "root/set/.downloads": ("dir",),
                     "root/set/.downloads/cve.tar": ("file", blob, 0o644)}  # only the archive, kept
    assert (tmp_path / "victim.txt").read_bytes() == b"original" and not (tmp_path / "created.txt").exists()
    # not reported verified, neither by get nor by verify; a rerun starts clean and is refused the same way
    assert main(["data", "verify", "cve", "--root", str(root)]) == 1
    assert "not extracted" in capsys.readouterr().out
    assert main(["data", "get", "cve", "--root", str(root)]) == 2
    assert "passes through the link 'a'" in capsys.readouterr().err
    assert snapshot(tmp_path) == after


def test_chain_without_member_names_through_links_is_refused(tmp_path):
    """The same escape written with physical member names (no member path through a link): the link
    resolution against what was written finds the way out."""
    dest = tmp_path / "root" / "set"
    (tmp_path / "root").mkdir()
    comp = "d" * 200
    members, path = [], ""
    for step in STEPS[:4]:
        members += [directory(path + comp), symlink(path + step, comp)]
        path += comp + "/"
    members.append(symlink(path + "up", "../" * 4))  # physically the destination
    members.append(symlink("escape", "/".join(STEPS[:4]) + "/up/.."))  # its parent
    members.append(file("escape/created.txt", b"pwned"))
    archive = tmp_path / "chain.tar"
    archive.write_bytes(tar(members, mode="w"))
    before = snapshot(tmp_path)
    with pytest.raises(DataError, match=r"chain\.tar: refusing to extract 'escape': link to .* points outside"):
        D.safe_extract(archive, dest)
    assert snapshot(tmp_path) == before


def _refused(tmp_path, members, reason, name="m.tar.gz", **limits):
    """Extract ``members`` into <tmp>/root/set; assert the refusal names the archive, the member and
    ``reason`` (a regex; one starting with a quote names the member), and that <tmp> holds exactly what
    it held before."""
    (tmp_path / "root").mkdir(parents=True, exist_ok=True)
    (tmp_path / "victim.txt").write_bytes(b"original")
    archive = tmp_path / name
    archive.write_bytes(tar(members) if isinstance(members, list) else members)
    before = snapshot(tmp_path)
    member = "" if reason.startswith("'") else "'.*': .*"
    with pytest.raises(DataError, match=rf"{name.replace('.', '[.]')}: (refusing to|cannot) extract {member}{reason}"):
        D.safe_extract(archive, tmp_path / "root" / "set", **limits)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("members, reason", [
    ([symlink("a", "."), symlink("a/b", "..")], "passes through the link 'a'"),
    ([directory("d"), symlink("d/l2", ".."), symlink("l1", "d/l2/..")], "'l1': link to 'd/l2/..' points outside"),
    ([symlink("x", "y/.."), symlink("y", ".")], "'x': link to 'y/..' points outside"),  # a forward reference
    ([symlink("l1", "l2"), symlink("l2", "..")], "'l2': link to '..' points outside"),
    ([symlink("p", "q"), symlink("q", "p")], "a loop or a chain of more than 40 links"),
    ([symlink(".", "sub")], "empty name"),
    ([symlink("e", "")], "empty target"),
], ids=["a->.,a/b->..", "through-inner-link", "forward-reference", "to-escaping-link", "loop", "empty-name",
        "empty-target"])
def test_symlink_chains_are_refused(tmp_path, members, reason):
    _refused(tmp_path, [file("ok.txt", b"fine"), *members], reason)


@pytest.mark.parametrize("members, reason", [
    ([directory("sub"), symlink("s", "sub"), file("s/f", b"x")], "'s/f': its path passes through the link 's'"),
    ([symlink("s", "sub"), directory("s/deeper")], "passes through the link 's'"),
    ([symlink("s", "sub"), hardlink("s/h", "ok.txt")], "passes through the link 's'"),
    ([file("f", b"1"), file("f/g", b"2")], "passes through 'f', a file"),
    ([directory("d"), file("d", b"x")], "a directory of the same name was extracted earlier"),
])
def test_writing_through_a_link_member_is_refused(tmp_path, members, reason):
    _refused(tmp_path, [file("ok.txt", b"fine"), *members], reason)


@pytest.mark.parametrize("members, reason", [
    ([hardlink("h", "../victim.txt")], "hard link to '../victim.txt': path contains '..'"),
    ([hardlink("h", "/etc/passwd")], "absolute path"),
    ([symlink("s", "ok.txt"), hardlink("h", "s")], "hard link to 's', which is a link"),
    ([hardlink("h", "later.txt"), file("later.txt", b"x")], "not a file extracted earlier"),
    ([directory("d"), hardlink("h", "d")], "which is a directory"),
    ([special("fifo", tarfile.FIFOTYPE)], "device file or FIFO"),
    ([special("blk", tarfile.BLKTYPE)], "device file or FIFO"),
    ([file("C:/evil", b"x")], "absolute path \\(drive letter\\)"),
    ([file("..\\evil", b"x")], "contains '..'"),
    ([file("bad\0name", b"x")], "NUL byte"),
    ([file(".downloads/m.tar.gz", b"x")], "'.downloads/m.tar.gz': '.downloads' is reserved"),
    ([file(".ribench-extracting/x", b"x")], "reserved"),
], ids=["hardlink-up", "hardlink-abs", "hardlink-to-link", "hardlink-forward", "hardlink-dir", "fifo", "block",
        "drive", "backslash-up", "nul", "reserved-downloads", "reserved-staging"])
def test_other_bad_members_are_refused(tmp_path, members, reason):
    if "NUL" in reason:  # a NUL can only come through a pax header
        info = tarfile.TarInfo("placeholder")
        info.pax_headers = {"path": "bad\0name"}
        members = [(info, b"x")]
    _refused(tmp_path, [file("ok.txt", b"fine"), *members], reason, reserved=(".downloads",))


def test_link_already_in_the_destination_is_replaced_not_followed(tmp_path):
    """Two-step attack: a link planted in the destination by an earlier extraction is never written through."""
    dest = tmp_path / "set"
    (tmp_path / "outside").mkdir()
    dest.mkdir()
    os.symlink("../outside", dest / "x")
    archive = tmp_path / "second.tar.gz"
    archive.write_bytes(tar([file("x/authorized_keys", b"key")]))
    D.safe_extract(archive, dest)
    assert list((tmp_path / "outside").iterdir()) == []
    assert not (dest / "x").is_symlink() and (dest / "x" / "authorized_keys").read_bytes() == b"key"


def test_file_member_replaces_an_earlier_link_instead_of_writing_through_it(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(tar([directory("sub"), file("sub/x", b"target"), symlink("f", "sub/x"), file("f", b"new")]))
    dest = D.safe_extract(archive, tmp_path / "out")
    assert (dest / "sub" / "x").read_bytes() == b"target"
    assert not (dest / "f").is_symlink() and (dest / "f").read_bytes() == b"new"


# ----------------------------------------------------------------- bombs


def _zeros_tar_gz(n: int) -> bytes:
    return tar([file("ok.txt", b"fine"), file("zeros.bin", bytes(n))])


def _zeros_zip(n: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ok.txt", b"fine")
        zf.writestr("zeros.bin", bytes(n))
    return buf.getvalue()


@pytest.mark.parametrize("name, build", [("bomb.tar.gz", _zeros_tar_gz), ("bomb.zip", _zeros_zip),
                                         ("bomb.bin.bz2", lambda n: bz2.compress(b"\1" * n)),
                                         ("bomb.bin.gz", lambda n: gzip.compress(b"\1" * n))])
def test_bombs_are_refused_by_the_expansion_ratio(tmp_path, name, build):
    blob = build(8 << 20)  # 8 MiB of one repeated byte in a few kB: far over 200x
    assert len(blob) * D.MAX_EXPANSION_RATIO < 8 << 20
    _refused(tmp_path, blob, rf"expands to more than {len(blob) * D.MAX_EXPANSION_RATIO} bytes \(200x its "
                             rf"{len(blob)} bytes", name=name)


def test_total_cap_counts_streamed_bytes_and_members(tmp_path):
    real = os.urandom(4000)  # incompressible: ratio ~1, so only the total cap applies
    members = [file(f"f{i}.bin", real) for i in range(5)]
    # 5 x (4000 + 512) = 22560 counted bytes
    _refused(tmp_path, tar(members, mode="w"), "expands to more than 20000 bytes", name="many.tar",
             max_expanded_bytes=20_000)
    D.safe_extract(tmp_path / "many.tar", tmp_path / "ok", max_expanded_bytes=22_560)
    # many empty members count too (one tar header each)
    _refused(tmp_path, tar([file(f"e{i}", b"") for i in range(50)]), "expands to more than 10000 bytes",
             name="empty.tar.gz", max_expanded_bytes=10_000)


def test_zip_header_size_is_not_trusted(tmp_path):
    """A zip whose headers understate a member's size: never more than the declared size is written, and
    the archive is refused as corrupt."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", bytes(100_000))
    blob = bytearray(buf.getvalue())
    # both headers hold the uncompressed size; shrink them to 10 bytes
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = blob.index(sig) + off
        blob[at:at + 4] = (10).to_bytes(4, "little")
    archive = tmp_path / "lie.zip"
    archive.write_bytes(bytes(blob))
    before = snapshot(tmp_path)
    with pytest.raises(DataError, match=r"lie\.zip: corrupt archive \(Bad CRC-32 for file 'zeros.bin'\); nothing was "
                                        r"extracted"):
        D.safe_extract(archive, tmp_path / "out")
    assert snapshot(tmp_path) == before


def test_declared_expanded_size_replaces_the_ratio(tmp_path, server, registered):
    blob = _zeros_tar_gz(1 << 20)  # 1 MiB of zeros: over 200x, accepted only because the entry declares it
    server.files["/z.tar.gz"] = blob
    counted = (1 << 20) + 4 + 2 * D.MEMBER_OVERHEAD_BYTES
    registered("zeros", files=[{"url": server.url + "/z.tar.gz", "sha256": sha(blob), "extract": True,
                                "expanded_size": counted}])
    st = D.get_dataset("zeros", root=tmp_path)
    assert st.state == "verified" and (tmp_path / "zeros" / "zeros.bin").stat().st_size == 1 << 20
    registered("zeros-small", files=[{"url": server.url + "/z.tar.gz", "sha256": sha(blob), "extract": True,
                                      "expanded_size": counted - 1}])
    with pytest.raises(DataError, match=rf"refusing to extract 'zeros.bin': the archive expands to more than "
                                        rf"{counted - 1} bytes \(its declared expanded_size\)"):
        D.get_dataset("zeros-small", root=tmp_path)
    assert sorted(p.name for p in (tmp_path / "zeros-small").iterdir()) == [".downloads"]


def test_zip_bad_members_are_refused(tmp_path):
    def z(name, data=b"x", attr=None):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("ok.txt", b"fine")
            info = zipfile.ZipInfo(name)
            if attr is not None:
                info.external_attr = attr << 16
            zf.writestr(info, data)
        return buf.getvalue()

    for i, (blob, reason) in enumerate([
            (z("link", b"ok.txt", 0o120777), "symbolic link"),
            (z("fifo", b"", 0o010644), "device file or FIFO"),
            (z("C:\\evil"), "drive letter"),
            (z("a\\..\\..\\evil"), "contains '..'"),
            (z(".ribench-extracting/x"), "reserved")]):
        _refused(tmp_path / str(i), blob, reason, name="a.zip")


# ----------------------------------------------------------------- a full disk


def _no_space_after(n_calls: int):
    calls = []

    def write_all(fd, data):
        calls.append(len(data))
        if len(calls) > n_calls:
            raise OSError(errno.ENOSPC, "No space left on device")
        os.write(fd, data)

    return write_all


@pytest.mark.parametrize("name, blob, writes, member", [
    ("full.tar.gz", tar([file("ok/first.txt", b"fine"), file("ok/2.txt", b"x")]), 1, "ok/2.txt"),
    ("full.bin.gz", gzip.compress(b"payload"), 0, "full.bin")], ids=["tar", "single-file-gz"])
def test_full_disk_while_extracting_says_so(tmp_path, monkeypatch, name, blob, writes, member):
    monkeypatch.setattr(D, "_write_all", _no_space_after(writes), raising=False)
    _refused(tmp_path, blob, "no space left on device while writing " + str(tmp_path / "root" / "set" / member),
             name=name)


def test_full_disk_while_downloading_says_so(tmp_path, server, registered, monkeypatch):
    body = os.urandom(3 << 20)
    server.files["/big.bin"] = body
    registered("full", files=[{"url": server.url + "/big.bin", "size": len(body), "sha256": sha(body)}])
    monkeypatch.setattr(D, "_write_all", _no_space_after(1), raising=False)
    part = tmp_path / "full" / "big.bin.part"
    with pytest.raises(DataError, match=rf"no space left on device while writing {part} \(1048576 bytes written\); "
                                        rf"the partial file is kept"):
        D.get_dataset("full", root=tmp_path)
    assert part.stat().st_size == 1 << 20
    monkeypatch.undo()
    assert D.get_dataset("full", root=tmp_path).state == "verified"  # the rerun resumes


# ----------------------------------------------------------------- what is still accepted


def test_benign_archive_with_internal_links_is_extracted(tmp_path, server, registered):
    members = [
        directory("data"), file("data/x.bin", b"x" * 100), file("data/run.sh", b"#!/bin/sh\n", mode=0o755),
        symlink("data/latest", "x.bin"), directory("data/sub"), symlink("data/sub/up", "../x.bin"),
        symlink("top", "data"), symlink("self", "."), symlink("chain", "data/latest"),
        symlink("via", "top/sub/../x.bin"), hardlink("data/copy", "data/x.bin"), file("./dot/y.txt", b"y"),
        symlink("dangling", "not/there"), file("data/x.bin", b"z" * 10),  # a later member of the same name wins
    ]
    blob = tar(members)
    server.files["/good.tar.gz"] = blob
    registered("good", files=[{"url": server.url + "/good.tar.gz", "sha256": sha(blob), "extract": True}])
    folder = tmp_path / "good"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "old.txt").write_bytes(b"kept")  # what was there merges with the archive
    st = D.get_dataset("good", root=tmp_path)
    assert st.state == "verified" and D.verify_dataset("good", root=tmp_path).state == "verified"
    got = snapshot(folder)
    for link, text in (("data/latest", "x.bin"), ("data/sub/up", "../x.bin"), ("top", "data"), ("self", "."),
                       ("chain", "data/latest"), ("via", "top/sub/../x.bin"), ("dangling", "not/there")):
        assert got[link] == ("link", text)
    assert (folder / "via").read_bytes() == (folder / "chain").read_bytes() == b"z" * 10
    assert got["data/copy"][1] == b"x" * 100  # the hard link kept the first file's content
    assert got["data/run.sh"][2] & 0o100 and got["data/old.txt"][1] == b"kept" and got["dot/y.txt"][1] == b"y"
    assert not (folder / D.STAGING_DIR).exists()


def test_rerun_removes_what_a_killed_extraction_left(tmp_path):
    dest = tmp_path / "set"
    (dest / D.STAGING_DIR / "half").mkdir(parents=True)
    (dest / D.STAGING_DIR / "half" / "junk").write_bytes(b"junk")
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(tar([file("a.txt", b"a")]))
    D.safe_extract(archive, dest)
    assert snapshot(dest) == {"a.txt": ("file", b"a", 0o644)}
