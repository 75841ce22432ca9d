"""User suites (``data/suites/user.py``): built-in domains matched by class name, ``.npz``
domains, channels per domain, the pretraining domain's own label space, the version an
existing file keeps, and ``ribench data show`` on a suite file or a run spec."""

from __future__ import annotations

import hashlib
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from ribench.cli import main
from ribench.core.errors import ConfigError, DataError
from ribench.core.registry import SUITES
from ribench.data import build_suite
from ribench.data.suites.user import user_suite
from tiny_suite import tiny_suite


def _pngs(folder, n, rng, gray=False, size=8):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        shape = (size, size) if gray else (size, size, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{i}.png")


def _tree(root, domain, classes, n=3, gray=False, seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        _pngs(root / domain / c, n, rng, gray)
    return root / domain


def _old_fingerprint(paths):
    """The version recipe of user suites before built-in and npz domains: sha256 over the
    sorted ``path|size|mtime`` lines of the folders read, first 12 hex digits."""
    h = hashlib.sha256()
    for p in sorted(map(str, paths)):
        st = os.stat(p)
        h.update(f"{p}|{st.st_size}|{int(st.st_mtime)}".encode())
    return "user+" + h.hexdigest()[:12]


def _table(**extra):
    t = {"name": "u", "classes": ["a", "b"], "pretrain": {"train": "pre/train", "test": "pre/test"},
         "tasks": {"sk": {"path": "sk"}}}
    t.update(extra)
    return t


@pytest.fixture
def colour_tree(tmp_path):
    for d in ("pre/train", "pre/test", "sk"):
        _tree(tmp_path, d, ["a", "b"], seed=len(d))
    return tmp_path


# ---------------------------------------------------------------- version and channels

def test_an_existing_file_keeps_its_version(colour_tree):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = user_suite(_table(), colour_tree)
    folders = [colour_tree / "pre/train", colour_tree / "pre/test", colour_tree / "sk"]
    assert s.version == _old_fingerprint(folders)
    assert s.pretrain.test.images.shape[1] == 3 and s.pretrain_classes is None and s.class_map is None
    # an explicit suite-level channel count that matches the images keeps it too
    assert user_suite(_table(channels=3), colour_tree).version == s.version


def test_gray_folders_keep_one_channel_and_change_the_version(tmp_path):
    for d in ("pre/train", "pre/test"):
        _tree(tmp_path, d, ["a", "b"], gray=True)
    _tree(tmp_path, "sk", ["a", "b"], gray=False)
    s = user_suite(_table(), tmp_path)
    assert s.pretrain.train.images.shape[1] == 1 and s.tasks["sk"].train.images.shape[1] == 3
    # the old loader made every domain 3 channels: these data differ, so does the version
    folders = [tmp_path / "pre/train", tmp_path / "pre/test", tmp_path / "sk"]
    assert s.version != _old_fingerprint(folders)
    # a gray image read as 1 channel is the file's own pixels
    first = sorted((tmp_path / "pre/train/a").glob("*.png"))[0]
    assert torch.equal(s.pretrain.train.images[0, 0], torch.from_numpy(np.array(Image.open(first))))


def test_suite_channels_converting_a_domain_warns_once_naming_it(tmp_path):
    for d in ("pre/train", "pre/test"):
        _tree(tmp_path, d, ["a", "b"], gray=True)
    _tree(tmp_path, "sk", ["a", "b"])
    with pytest.warns(RuntimeWarning) as rec:
        s = user_suite(_table(channels=1), tmp_path)
    msgs = [str(w.message) for w in rec if "converts" in str(w.message)]
    assert len(msgs) == 1 and "'sk'" in msgs[0] and "grayscale" in msgs[0]
    assert s.tasks["sk"].test.images.shape[1] == 1
    # a domain's own channels override the suite's, without a warning
    t = _table(channels=1)
    t["tasks"]["sk"]["channels"] = 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s2 = user_suite(t, tmp_path)
    assert s2.tasks["sk"].test.images.shape[1] == 3 and s2.pretrain.test.images.shape[1] == 1
    assert s2.version != s.version
    t["tasks"]["sk"]["channels"] = 2
    with pytest.raises(ConfigError, match=r"suite\.tasks\.sk\.channels"):
        user_suite(t, tmp_path)


# ---------------------------------------------------------------- built-in domains

def test_builtin_domain_is_matched_by_class_name(colour_tree, monkeypatch):
    calls = []

    def counted(seed=0, cache_dir=None):
        calls.append(seed)
        return tiny_suite(seed)

    monkeypatch.setitem(SUITES._items, "tiny", counted)
    ref = tiny_suite(0)
    t = _table(classes=["z", "c", "b", "a"])
    t["tasks"] = {"t1": {"builtin": "tiny:t1"}, "t2": {"builtin": "tiny:t2"}}
    t["eval_sets"] = {"extra": {"builtin": "tiny:extra"}}
    s = user_suite(t, colour_tree)
    assert len(calls) == 1  # the registered suite is built once per load
    # tiny's classes a, b, c are this suite's 3, 2, 1
    lookup = torch.tensor([3, 2, 1])
    for name in ("t1", "t2"):
        mine, theirs = s.tasks[name], ref.tasks[name]
        assert torch.equal(mine.train.images, theirs.train.images) and torch.equal(mine.test.images, theirs.test.images)
        assert mine.train.labels.tolist() == lookup[theirs.train.labels].tolist()
        assert mine.class_subset == (1, 2, 3)
    assert s.eval_sets["extra"].train is None and len(s.eval_sets["extra"].test) == len(ref.eval_sets["extra"].test)
    # no suite-level channels: t2 keeps its 3 channels, t1 its 1
    assert s.tasks["t1"].test.images.shape[1] == 1 and s.tasks["t2"].test.images.shape[1] == 3
    assert s.version != user_suite(_table(classes=["z", "c", "b", "a"], tasks={"t1": {"builtin": "tiny:t1"}}),
                                   colour_tree).version
    # never built when no domain names it
    calls.clear()
    user_suite(_table(), colour_tree)
    assert calls == []


def test_builtin_domain_errors_and_channel_conversion(colour_tree):
    t = _table(classes=["a", "b"], tasks={"t1": {"builtin": "tiny:t1"}})
    with pytest.raises(DataError, match=r"built-in classes \['c'\] are not in suite\.classes \['a', 'b'\]"):
        user_suite(t, colour_tree)
    t = _table(classes=["a", "b", "c"], tasks={"x": {"builtin": "tiny:extra"}})
    with pytest.raises(DataError, match="has no train split"):
        user_suite(t, colour_tree)
    t["tasks"] = {"x": {"builtin": "tiny"}}
    with pytest.raises(ConfigError, match="<suite>:<domain>"):
        user_suite(t, colour_tree)
    t["tasks"] = {"x": {"builtin": "tiny:t2", "path": "sk"}}
    with pytest.raises(ConfigError, match="exactly one of"):
        user_suite(t, colour_tree)
    t = _table(classes=["a", "b", "c"], channels=1, tasks={"t2": {"builtin": "tiny:t2"}})
    with pytest.warns(RuntimeWarning, match=r"converts domain 't2' \(colour images\) to grayscale"):
        s = user_suite(t, colour_tree)
    src = tiny_suite(0).tasks["t2"].test.images
    w = torch.tensor([299, 587, 114]).view(1, 3, 1, 1)  # ITU-R 601-2 luma, rounded, as Pillow's L
    assert torch.equal(s.tasks["t2"].test.images, ((src.long() * w).sum(1, keepdim=True) + 500).div(
        1000, rounding_mode="floor").to(torch.uint8))


# ---------------------------------------------------------------- npz domains

def test_npz_domains_with_index_or_name_labels(colour_tree):
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (10, 6, 6), dtype=np.uint8)  # NHW: one channel
    names = np.array(["b", "a"] * 5)
    np.savez(colour_tree / "one.npz", images=x, labels=names)
    xt = rng.integers(0, 256, (4, 6, 6, 3), dtype=np.uint8)
    np.savez(colour_tree / "two.npz", train_images=xt, train_labels=np.array([0, 1, 0, 1]),
             test_images=xt[:2], test_labels=np.array([1, 1]))
    t = _table(tasks={"one": {"npz": "one.npz"}, "two": {"npz": "two.npz"}},
               eval_sets={"ev": {"npz": "two.npz"}})
    s = user_suite(t, colour_tree)
    one = s.tasks["one"]
    assert len(one.train) + len(one.test) == 10 and one.test.images.shape[1] == 1
    got = {(img.numpy().tobytes(), int(y)) for part in (one.train, one.test) for img, y in zip(part.images[:, 0],
                                                                                                 part.labels)}
    assert got == {(xi.tobytes(), 1 if n == "b" else 0) for xi, n in zip(x, names)}
    two = s.tasks["two"]
    assert torch.equal(two.train.images, torch.from_numpy(xt).permute(0, 3, 1, 2)) and two.test.labels.tolist() == [1, 1]
    ev = s.eval_sets["ev"]
    assert ev.train is None and ev.class_subset == (1,)
    np.savez(colour_tree / "bad.npz", images=x, labels=np.array(["a", "q"] * 5))
    with pytest.raises(DataError, match=r"label names \['q'\] are not in the class list \['a', 'b'\]"):
        user_suite(_table(tasks={"x": {"npz": "bad.npz"}}), colour_tree)
    np.savez(colour_tree / "evalonly.npz", test_images=xt, test_labels=np.array([0, 1, 0, 1]))
    with pytest.raises(DataError, match="needs train_images and train_labels"):
        user_suite(_table(tasks={"x": {"npz": "evalonly.npz"}}), colour_tree)
    np.savez(colour_tree / "other.npz", pixels=x)
    with pytest.raises(DataError, match="expected images \\+ labels"):
        user_suite(_table(tasks={"x": {"npz": "other.npz"}}), colour_tree)


# ---------------------------------------------------------------- the pretraining label space

def _pretrain_3_classes(root):
    """A 3-class pretraining domain (folders cat/dog/fox) and 2-class tasks (kitten, puppy)."""
    for d in ("pre/train", "pre/test"):
        _tree(root, d, ["cat", "dog", "fox"], n=2)
    _tree(root, "sk", ["kitten", "puppy"])
    return {"name": "p", "classes": ["kitten", "puppy"],
            "pretrain": {"train": "pre/train", "test": "pre/test", "classes": ["fox", "dog", "cat"]},
            "tasks": {"sk": {"path": "sk"}}}


def test_pretraining_domain_with_its_own_classes_and_no_map(tmp_path):
    s = user_suite(_pretrain_3_classes(tmp_path), tmp_path)
    assert s.classes == ("kitten", "puppy") and s.pretrain_classes == ("fox", "dog", "cat") and s.class_map is None
    assert s.separate_pretrain_labels and s.pretrain.class_subset is None
    # folder cat is pretraining class 2 (the pretrain list's order), fox 0
    files = sorted((tmp_path / "pre/train").glob("*/*.png"))
    assert sorted(s.pretrain.train.labels.tolist()) == sorted({"fox": 0, "dog": 1, "cat": 2}[f.parent.name] for f in files)
    assert set(s.tasks["sk"].train.labels.tolist()) == {0, 1}


def test_pretraining_domain_with_a_class_map(tmp_path):
    t = _pretrain_3_classes(tmp_path)
    t["pretrain"]["class_map"] = {"puppy": "dog", "kitten": "cat"}
    s = user_suite(t, tmp_path)
    assert s.class_map == (2, 1)  # kitten -> cat (index 2), puppy -> dog (index 1)
    assert s.version != user_suite(_pretrain_3_classes(tmp_path), tmp_path).version
    t["pretrain"]["class_map"] = {"puppy": "dog"}
    with pytest.raises(ConfigError, match=r"task classes \['kitten'\]"):
        user_suite(t, tmp_path)
    t["pretrain"]["class_map"] = {"puppy": "dog", "kitten": "lynx"}
    with pytest.raises(ConfigError, match=r"suite\.pretrain\.class_map\.kitten.*'lynx' is not a pretraining class"):
        user_suite(t, tmp_path)
    t["pretrain"]["class_map"] = {"puppy": "dog", "kitten": "cat", "cub": "fox"}
    with pytest.raises(ConfigError, match=r"'cub' is not a task class"):
        user_suite(t, tmp_path)
    t["pretrain"]["class_map"] = {"puppy": "dog", "kitten": "dog"}
    with pytest.raises(ConfigError, match=r"several task classes"):
        user_suite(t, tmp_path)
    del t["pretrain"]["classes"]
    with pytest.raises(ConfigError, match=r"needs the pretraining domain's own classes"):
        user_suite(t, tmp_path)
    # a pretraining folder not in the pretraining classes is named
    t = _pretrain_3_classes(tmp_path)
    t["pretrain"]["classes"] = ["cat", "dog"]
    with pytest.raises(DataError, match=r"class folders \['fox'\]"):
        user_suite(t, tmp_path)


def test_pretraining_classes_from_a_file_and_a_builtin_pretraining_domain(tmp_path):
    _tree(tmp_path, "sk", ["a", "b"])
    (tmp_path / "pre.txt").write_text("c\nb\na\nd\n")
    t = {"classes": ["a", "b"], "pretrain": {"builtin": "tiny:pretrain", "classes_file": "pre.txt",
                                             "class_map": {"a": "a", "b": "b"}}, "tasks": {"sk": {"path": "sk"}}}
    s = user_suite(t, tmp_path)
    ref = tiny_suite(0).pretrain
    assert s.pretrain_classes == ("c", "b", "a", "d") and s.class_map == (2, 1)
    assert s.pretrain.train.labels.tolist() == torch.tensor([2, 1, 0])[ref.train.labels].tolist()
    assert s.pretrain.class_subset == (0, 1, 2)


# ---------------------------------------------------------------- ribench data show

def test_data_show_takes_a_suite_file_and_a_run_spec(colour_tree, capsys):
    f = colour_tree / "u.toml"
    f.write_text('[suite]\nname = "u"\nclasses = ["a", "b"]\n[suite.pretrain]\ntrain = "pre/train"\n'
                 'test = "pre/test"\n[suite.tasks.sk]\npath = "sk"\n')
    want = build_suite("ignored", suite_file=str(f)).version
    out = colour_tree / "sheet.png"
    assert main(["data", "show", str(f), "--out", str(out), "--per-domain", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"u version {want}" in printed and str(out) in printed
    assert Image.open(out).size[0] > 0
    spec = colour_tree / "run.toml"
    spec.write_text('suite_file = "u.toml"\nbackbones = ["mlp"]\nmethods = ["lp"]\n')
    out2 = colour_tree / "sheet2.png"
    assert main(["data", "show", str(spec), "--out", str(out2), "--per-domain", "2"]) == 0
    assert f"u version {want}" in capsys.readouterr().out and out2.is_file()
    bad = colour_tree / "bad.toml"
    bad.write_text('[suite]\nclasses = ["a"]\nbogus = 1\n')
    assert main(["data", "show", str(bad)]) == 2
    assert "suite.bogus" in capsys.readouterr().err
    assert main(["data", "show", str(colour_tree / "missing.toml")]) == 2
    assert "missing.toml: no such file" in capsys.readouterr().err


def test_builtin_streaming_domain_is_converted_batch_by_batch(colour_tree, monkeypatch):
    """A registered suite's domain that streams from disk stays streaming: relabelled and
    converted to the suite's channels as each batch is decoded."""
    from ribench.core.types import Domain, StreamingSplit, Suite

    ref = tiny_suite(0)
    rgb = ref.tasks["t2"]

    def stream(split):
        return StreamingSplit(lambda i, x=split.images: x[i], split.labels, num_workers=0)

    def streaming_suite(seed=0, cache_dir=None):
        dom = Domain("t2", stream(rgb.test), stream(rgb.train))
        return Suite("streams", ref.classes, ref.pretrain, {"t2": dom})

    monkeypatch.setitem(SUITES._items, "streams", streaming_suite)
    t = _table(classes=["c", "b", "a"], channels=1, tasks={"t2": {"builtin": "streams:t2"}})
    with pytest.warns(RuntimeWarning, match="converts domain 't2'"):
        s = user_suite(t, colour_tree)
    got = s.tasks["t2"].test
    assert isinstance(got, StreamingSplit)
    w = torch.tensor([299, 587, 114]).view(1, 3, 1, 1)
    luma = ((rgb.test.images.long() * w).sum(1, keepdim=True) + 500).div(1000, rounding_mode="floor").to(torch.uint8)
    assert torch.equal(got.images, luma)
    assert got.labels.tolist() == (2 - rgb.test.labels).tolist()
    x, y = next(got.batches(7))
    assert torch.equal(x, luma[:7]) and y.tolist() == (2 - rgb.test.labels[:7]).tolist()
    with pytest.raises(ConfigError, match=r"suite\.tasks\.t2\.builtin.*unknown"):
        user_suite(_table(classes=["a", "b", "c"], tasks={"t2": {"builtin": "streams:nope"}}), colour_tree)
    with pytest.raises(ConfigError, match=r"suite\.tasks\.t2\.builtin.*unknown"):
        user_suite(_table(classes=["a", "b", "c"], tasks={"t2": {"builtin": "nosuch:t2"}}), colour_tree)


def test_pretraining_domain_may_be_named(colour_tree):
    plain = user_suite(_table(), colour_tree)
    named = user_suite(_table(pretrain={"name": "photos", "train": "pre/train", "test": "pre/test"}), colour_tree)
    assert plain.pretrain.name == "pretrain" and named.pretrain.name == "photos"
    assert "photos" in named.all_eval_sets() and "pretrain" not in named.all_eval_sets()
    assert named.version != plain.version and named.version.startswith(plain.version + "+")
    assert torch.equal(named.pretrain.test.images, plain.pretrain.test.images)
    with pytest.raises(ConfigError, match=r"suite\.pretrain\.name.*also the name of a task"):
        user_suite(_table(pretrain={"name": "sk", "train": "pre/train", "test": "pre/test"}), colour_tree)
    with pytest.raises(ConfigError, match=r"suite\.pretrain\.name"):
        user_suite(_table(pretrain={"name": "a/b", "train": "pre/train", "test": "pre/test"}), colour_tree)
