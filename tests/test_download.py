"""Downloads against an HTTP server on 127.0.0.1: good, resumed, truncated, wrong checksum,
malicious archives; the registry and `ribench data get/verify`."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile

import pytest
from download_helpers import file as _file
from download_helpers import registered, server  # noqa: F401  (fixtures)
from download_helpers import sha as _sha
from download_helpers import special as _device
from download_helpers import symlink as _symlink
from download_helpers import tar as _tar

from ribench.cli import main
from ribench.core.errors import DataError
from ribench.data import download as D


def test_good_download_extracts_and_verifies(tmp_path, server, registered):
    blob = _tar([_file("toy/a/1.txt", b"hello"), _file("toy/b/2.txt", b"world" * 100)])
    server.files["/toy.tar.gz"] = blob
    raw = os.urandom(3000)
    server.files["/raw.bin"] = raw
    registered("toy", folder="toy", files=[
        {"url": server.url + "/toy.tar.gz", "size": len(blob), "sha256": _sha(blob), "extract": True},
        {"url": server.url + "/raw.bin", "size": len(raw), "sha256": _sha(raw)}])
    st = D.get_dataset("toy", root=tmp_path)
    assert st.state == "verified" and st.ok
    assert (tmp_path / "toy" / "toy" / "b" / "2.txt").read_bytes() == b"world" * 100
    assert (tmp_path / "toy" / "raw.bin").read_bytes() == raw
    assert D.verify_dataset("toy", root=tmp_path).state == "verified"
    # a changed file on disk is caught by verify
    (tmp_path / "toy" / "raw.bin").write_bytes(raw[:-1] + b"x")
    v = D.verify_dataset("toy", root=tmp_path)
    assert v.state == "corrupt" and "SHA-256" in v.messages[0] and "raw.bin" in v.messages[0]


def test_truncated_then_resumed_download(tmp_path, server, registered):
    body = os.urandom(200_000)
    server.files["/big.bin"] = body
    server.cut.add("/big.bin")
    registered("big", files=[{"url": server.url + "/big.bin", "size": len(body), "sha256": _sha(body)}])
    with pytest.raises(DataError, match=r"big\.bin: download interrupted after 100000 bytes of 200000 .*run the same "
                                        r"command again to resume"):
        D.get_dataset("big", root=tmp_path)
    part = tmp_path / "big" / "big.bin.part"
    assert part.stat().st_size == 100_000 and not (tmp_path / "big" / "big.bin").exists()
    st = D.get_dataset("big", root=tmp_path)
    assert server.ranges[-1] == "bytes=100000-"  # the second request resumed where the first stopped
    assert st.state == "verified" and (tmp_path / "big" / "big.bin").read_bytes() == body and not part.exists()


def test_wrong_checksum_is_refused(tmp_path, server, registered):
    server.files["/f.bin"] = b"tampered content"
    registered("bad", files=[{"url": server.url + "/f.bin", "size": 16, "sha256": _sha(b"original content")}])
    with pytest.raises(DataError, match=r"f\.bin: SHA256 mismatch: got [0-9a-f]{64}, expected .*deleted"):
        D.get_dataset("bad", root=tmp_path)
    assert not list((tmp_path / "bad").glob("f.bin*"))
    registered("bad-md5", files=[{"url": server.url + "/f.bin", "md5": "0" * 32}])
    with pytest.raises(DataError, match=r"MD5 mismatch"):
        D.get_dataset("bad-md5", root=tmp_path)


def test_dataset_without_sha256_is_never_verified(tmp_path, server, registered):
    body = b"no checksum published"
    server.files["/n.bin"] = body
    registered("nosha", files=[{"url": server.url + "/n.bin", "md5": hashlib.md5(body).hexdigest()}])
    st = D.get_dataset("nosha", root=tmp_path)
    assert st.state == "unverified" and "NOT verified" in st.messages[0]
    assert D.verify_dataset("nosha", root=tmp_path).state == "unverified"


@pytest.mark.parametrize("members, reason", [
    ([_file("/etc/evil", b"x")], "absolute path"),
    ([_file("ok/../../evil", b"x")], "contains '..'"),
    ([_symlink("ok/link", "../../outside")], "points outside"),
    ([_symlink("ok/abs", "/etc/passwd")], "points outside"),
    ([_device("ok/dev")], "device file"),
    ([_file("ok/huge", b"y" * 5000)], "exceeds the limit of 4096"),
])
def test_malicious_tar_is_refused_before_writing(tmp_path, server, registered, members, reason):
    blob = _tar([_file("ok/first.txt", b"fine"), *members])
    server.files["/m.tar.gz"] = blob
    registered("mal", files=[{"url": server.url + "/m.tar.gz", "sha256": _sha(blob), "extract": True}])
    with pytest.raises(DataError, match=rf"m\.tar\.gz: refusing to extract .*{reason}"):
        D.get_dataset("mal", root=tmp_path, max_member_bytes=4096)
    assert not (tmp_path / "mal" / "ok").exists()  # nothing was extracted
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()


def test_malicious_zip_is_refused(tmp_path):
    for name, data, reason in (("../z", b"x", "contains '..'"), ("/abs", b"x", "absolute path"),
                               ("big", b"z" * 10_000, "exceeds the limit")):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(name, data)
        p = tmp_path / "a.zip"
        p.write_bytes(buf.getvalue())
        with pytest.raises(DataError, match=rf"a\.zip: refusing to extract .*{reason}"):
            D.safe_extract(p, tmp_path / "out", max_member_bytes=4096)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "../../etc")
    p.write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="symbolic link"):
        D.safe_extract(p, tmp_path / "out")
    good = io.BytesIO()
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("d/e.txt", b"ok")
    p.write_bytes(good.getvalue())
    assert (D.safe_extract(p, tmp_path / "out") / "d" / "e.txt").read_bytes() == b"ok"


def test_registry_data_root_and_cli(tmp_path, server, registered, monkeypatch, capsys):
    names = D.list_datasets()
    for n in ("mnist", "fashion-mnist", "kmnist", "emnist", "usps", "svhn", "cifar10", "cifar100", "cifar10.1",
              "cinic10", "stl10", "imagenet-val", "imagenet-v2", "imagenet-a", "imagenet-r", "imagenet-sketch",
              "objectnet", "imagenet-c"):
        assert n in names
        info = D.dataset_info(n)
        assert info.source and all(f.sha256 is None or len(f.sha256) == 64 for f in info.files)
    assert D.dataset_info("mnist").verifiable and not D.dataset_info("usps").verifiable
    monkeypatch.setenv("RIBENCH_DATA", str(tmp_path / "env-root"))
    assert D.data_root() == tmp_path / "env-root" and D.data_root(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("RIBENCH_DATA")
    assert D.data_root() == D.Path.home() / ".cache" / "ribench" / "data"

    body = b"payload"
    server.files["/p.bin"] = body
    user = tmp_path / "mine.toml"
    user.write_text(f'[mine]\nfolder = "m"\nfiles = [{{ url = "{server.url}/p.bin", size = 7, sha256 = "{_sha(body)}" }}]\n')
    assert D.load_registry_file(user) == ["mine"]
    try:
        assert main(["data", "get", "mine", "--root", str(tmp_path)]) == 0
        assert "mine: verified" in capsys.readouterr().out
        assert main(["data", "verify", "mine", "--root", str(tmp_path)]) == 0
        (tmp_path / "m" / "p.bin").unlink()
        assert main(["data", "verify", "mine", "--root", str(tmp_path)]) == 1
        assert "ribench data get mine --root" in capsys.readouterr().out
    finally:
        D.unregister_dataset("mine")
    assert main(["data", "get", "objectnet", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "objectnet: manual step needed" in out and "objectnet.dev" in out and str(tmp_path / "objectnet") in out
