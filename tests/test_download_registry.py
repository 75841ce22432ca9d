"""Registry entries cannot name paths outside the data root, and archives without a published
checksum are extracted only on request (`ribench data get NAME --allow-unverified`)."""

from __future__ import annotations

import hashlib
import re

import pytest
from download_helpers import file, registered, server, sha, tar  # noqa: F401  (fixtures)

from ribench.cli import main
from ribench.core.errors import DataError
from ribench.data import download as D


@pytest.mark.parametrize("kw, field, problem", [
    ({"folder": "../../x"}, "folder", "contains '..'"),
    ({"folder": "a/../../x"}, "folder", "contains '..'"),
    ({"folder": "/tmp/x"}, "folder", "is an absolute path"),
    ({"folder": "C:\\x"}, "folder", "contains a backslash"),
    ({"folder": "D:x"}, "folder", "is an absolute path"),
    ({"folder": "a//b"}, "folder", "has an empty or '.' component"),
    ({"folder": "."}, "folder", "has an empty or '.' component"),
    ({"folder": "a\0b"}, "folder", "contains a NUL byte"),
    ({"files": [{"url": "http://h/f", "filename": "../x"}]}, "files[0].filename", "must be a single file name"),
    ({"files": [{"url": "http://h/f", "filename": ".."}]}, "files[0].filename", "contains '..'"),
    ({"files": [{"url": "http://h/f", "filename": "/etc/x"}]}, "files[0].filename", "is an absolute path"),
    ({"files": [{"url": "http://h/ok"}, {"url": "http://h/.."}]}, "files[1].url (the file name taken from it)",
     "contains '..'"),
    ({"files": [{"url": "http://h/f", "filename": ".downloads"}]}, "files[0].filename", "is reserved"),
    ({"files": [{"url": "http://h/f", "expanded_size": -1}]}, "files[0].expanded_size", "expected a number of bytes"),
])
def test_registry_paths_are_checked_when_registered(kw, field, problem):
    with pytest.raises(DataError, match=rf"register_dataset: dataset 'evil': field {re.escape(repr(field))} = .* "
                                        rf"{re.escape(problem)}"):
        try:
            D.register_dataset("evil", replace=True, **kw)
        finally:
            registered_anyway = "evil" in D.list_datasets()
            D.unregister_dataset("evil")
    assert not registered_anyway


def test_registry_name_is_the_default_folder_and_is_checked():
    with pytest.raises(DataError, match=r"dataset '\.\./up': field 'folder' = '\.\./up' contains '\.\.'"):
        D.register_dataset("../up")


def test_registry_file_with_a_bad_entry_registers_nothing(tmp_path):
    user = tmp_path / "mine.toml"
    user.write_text('[fine]\nfiles = [{ url = "http://h/a" }]\n\n'
                    '[evil]\nfolder = "../../outside"\nfiles = [{ url = "http://h/b" }]\n')
    with pytest.raises(DataError, match=rf"{tmp_path / 'mine.toml'}: dataset 'evil': field 'folder' = "
                                        rf"'\.\./\.\./outside' contains '\.\.'"):
        D.load_registry_file(user)
    assert "fine" not in D.list_datasets() and "evil" not in D.list_datasets()
    user.write_text('[odd]\nfiles = [{ url = "http://h/a", sha1 = "00" }]\n')
    with pytest.raises(DataError, match=r"dataset 'odd' files\[0\] is malformed \(unknown fields sha1\)"):
        D.load_registry_file(user)


def test_built_in_entries_pass_the_checks():
    for name in D.list_datasets():
        info = D.dataset_info(name)
        assert D._validate(info, "lists/datasets.toml") is info


def test_unverified_archive_is_not_extracted_without_the_flag(tmp_path, server, registered, capsys):
    blob = tar([file("d/x.txt", b"x")])
    server.files["/u.tar.gz"] = blob
    registered("nochk", files=[{"url": server.url + "/u.tar.gz", "extract": True}])
    with pytest.raises(DataError, match=r"nochk: u\.tar\.gz has no published checksum, so a tampered or corrupted "
                                        r"download cannot be told from the real one.*`ribench data get nochk --root "
                                        rf"{tmp_path} --allow-unverified`"):
        D.get_dataset("nochk", root=tmp_path)
    assert server.requests == [] and not (tmp_path / "nochk").exists()  # nothing downloaded either
    assert main(["data", "get", "nochk", "--root", str(tmp_path)]) == 2
    assert "--allow-unverified" in capsys.readouterr().err and server.requests == []

    assert main(["data", "get", "nochk", "--root", str(tmp_path), "--allow-unverified"]) == 0
    out = capsys.readouterr().out
    assert "nochk: unverified" in out and "NOT verified" in out
    assert (tmp_path / "nochk" / "d" / "x.txt").read_bytes() == b"x"
    assert D.verify_dataset("nochk", root=tmp_path).state == "unverified"


def test_archive_with_only_an_md5_is_extracted_and_reported_unverified(tmp_path, server, registered):
    blob = tar([file("d/x.txt", b"x")])
    server.files["/m.tar.gz"] = blob
    registered("md5only", files=[{"url": server.url + "/m.tar.gz", "md5": hashlib.md5(blob).hexdigest(),
                                  "extract": True}])
    st = D.get_dataset("md5only", root=tmp_path)
    assert st.state == "unverified" and "its published MD5 matched" in st.messages[0]
    assert (tmp_path / "md5only" / "d" / "x.txt").exists()


@pytest.mark.parametrize("name", ["imagenet-c", "imagenet-sketch"])
def test_built_in_unchecked_archives_need_the_flag(tmp_path, name):
    with pytest.raises(DataError, match=rf"{name}: .* has no published checksum.*--allow-unverified"):
        D.get_dataset(name, root=tmp_path, timeout=1)
    assert not (tmp_path / D.dataset_info(name).folder).exists()


def test_state_of_an_earlier_complete_run_does_not_survive_a_refused_one(tmp_path, server, registered):
    good = tar([file("a.txt", b"a")])
    server.files["/s.tar.gz"] = good
    registered("swap", files=[{"url": server.url + "/s.tar.gz", "sha256": sha(good), "extract": True}])
    assert D.get_dataset("swap", root=tmp_path).state == "verified"
    assert D.verify_dataset("swap", root=tmp_path).state == "verified"
    bad = tar([file("../evil", b"x")])  # the entry changes to an archive that is refused
    server.files["/s.tar.gz"] = bad
    registered("swap", files=[{"url": server.url + "/s.tar.gz", "sha256": sha(bad), "extract": True}])
    with pytest.raises(DataError, match="contains '..'"):
        D.get_dataset("swap", root=tmp_path)
    v = D.verify_dataset("swap", root=tmp_path)
    assert v.state == "missing" and "not extracted" in v.messages[0] and "ribench data get swap" in v.messages[0]
    assert (tmp_path / "swap" / "a.txt").read_bytes() == b"a" and not (tmp_path / "evil").exists()
