"""Pretraining on a different label space (Suite.pretrain_classes): the kept pretraining head,
the head policies, the m0 reference rows, checked against direct computations.

``tiny_ls``: tasks over classes a, b, c; a pretraining domain of its own four classes p0..p3.
``tiny_lsmap``: the same with a class map a, b, c -> p0, p1, p2.
"""

from __future__ import annotations

import sqlite3

import pytest
import torch

from ribench.core import ConfigError, DataError
from ribench.core.registry import SUITES
from ribench.core.rows import PRETRAINED, SUMMARY, parse_probe, probe
from ribench.engine import parse_spec, run
from ribench.methods.heads import task_start_model
from ribench.models import create_model
from ribench.models.base import PretrainHeadView
from ribench.models.checkpoint import load_model, save_model


def _acc(model, split) -> float:
    with torch.inference_mode():
        return float((model(split.images).argmax(1) == split.labels).float().mean())


def _spec(suite: str, methods, **over):
    data = {"name": "ls", "suite": suite, "backbones": ["mlp"], "recipes": ["narrow"], "methods": methods,
            "seeds": [0], "device": "cpu", "pretrain": {"epochs": 3},
            "eval": {"val_fraction": 0.2, "pretrain_sample": 40}, "diagnostics": {"enabled": False}}
    data.update(over)
    return parse_spec(data)


def _query(out, sql: str) -> list[tuple]:
    con = sqlite3.connect(out / "results.sqlite")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _rows(out) -> dict[tuple, float]:
    got = _query(out, "SELECT method, task, eval_set, metric, value FROM metrics")
    return {(m, t, e, k): v for m, t, e, k, v in got}


def _models(out) -> dict[tuple, object]:
    """(method, task) -> the stored model of each finished model cell (by the artifacts' metadata)."""
    import json

    cells = _query(out, "SELECT key, kind, labels FROM cells WHERE status = 'done'")
    found = {}
    for key, kind, labels in cells:
        lab = json.loads(labels)
        path = out / "artifacts" / key[:2] / f"{key}.safetensors"
        if kind in ("pretrain", "adapt") and path.exists():
            found[(lab.get("method") or PRETRAINED, lab.get("task"))] = load_model(path)
    return found


# --- the pieces ---------------------------------------------------------------------
def test_task_start_model_keeps_the_pretraining_head_and_maps_rows():
    suite = SUITES.create("tiny_lsmap")
    torch.manual_seed(0)
    m0 = create_model("mlp", num_classes=4)
    start = task_start_model(m0, suite, seed=3)
    assert start.num_classes == 3 and start.head.out_features == 3
    assert torch.equal(start.pretrain_head_weight, m0.head.weight) and torch.equal(start.pretrain_head_bias, m0.head.bias)
    assert torch.equal(start.head.weight, m0.head.weight[[0, 1, 2]]) and torch.equal(start.head.bias, m0.head.bias[:3])
    x = suite.pretrain.test.images[:16]
    with torch.inference_mode():
        assert torch.allclose(PretrainHeadView(start)(x), m0(x))  # same backbone, m0's own head
    # the pretraining head is no parameter: no method trains it
    assert all(p is not start.pretrain_head_weight for p in start.parameters())
    unmapped = task_start_model(m0, SUITES.create("tiny_ls"), seed=3)
    again = task_start_model(m0, SUITES.create("tiny_ls"), seed=3)
    assert unmapped.head_origin == "unset" and torch.equal(unmapped.head.weight, again.head.weight)
    with pytest.raises(ConfigError, match="4 classes"):
        task_start_model(create_model("mlp", num_classes=3), suite)


def test_pretraining_head_survives_a_checkpoint(tmp_path):
    from ribench.methods.prompt import wrap_with_prompt

    torch.manual_seed(0)
    m0 = create_model("mlp", num_classes=4)
    start = task_start_model(m0, SUITES.create("tiny_ls"))
    x = SUITES.create("tiny_ls").pretrain.test.images[:8]
    back = load_model(save_model(start, tmp_path / "m.safetensors"))
    assert torch.equal(back.pretrain_logits(x), start.pretrain_logits(x))
    prompted = wrap_with_prompt(task_start_model(m0, SUITES.create("tiny_ls")), pad=2)
    assert prompted.has_pretrain_head and not prompted.backbone.has_pretrain_head
    back = load_model(save_model(prompted, tmp_path / "p.safetensors"))
    assert torch.equal(back.pretrain_logits(x), prompted.pretrain_logits(x))


def test_class_map_is_checked():
    base = SUITES.create("tiny_ls")
    from dataclasses import replace

    with pytest.raises(DataError, match="for each of the 3 task classes"):
        replace(base, class_map=(0, 1))
    with pytest.raises(DataError, match="two task classes"):
        replace(base, class_map=(0, 0, 1))


def test_keep_or_masked_without_a_class_map_fail_before_anything_runs(tmp_path):
    for policy in ("keep", "masked"):
        spec = _spec("tiny_ls", [{"name": "ft", "params": {"epochs": 1, "head": policy}}])
        with pytest.raises(ConfigError, match=r"methods\[0\]\.params\.head.*own 4 classes, not the tasks' 3"):
            run(spec, tmp_path / policy, quiet=True)
        assert not (tmp_path / policy / "results.sqlite").exists() or not _rows(tmp_path / policy)


# --- end to end -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def ls_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ls")
    spec = _spec("tiny_ls", ["lp", {"name": "ft", "label": "ft", "params": {"epochs": 2, "head": "lp"}},
                             {"name": "ft", "label": "ft_reinit", "params": {"epochs": 2, "head": "reinit"}},
                             {"name": "lwf", "params": {"epochs": 1, "head": "lp"}}, "ncm"])
    outcome = run(spec, out, quiet=True)
    assert outcome.failed == []
    return out, _rows(out), _models(out), SUITES.create("tiny_ls")


def test_p_is_measured_with_the_pretraining_head(ls_run):
    out, got, models, suite = ls_run
    m0 = models[(PRETRAINED, None)]
    assert m0.num_classes == 4
    p = suite.pretrain.test
    assert got[(PRETRAINED, None, "pre", "accuracy")] == pytest.approx(_acc(m0, p))
    for method in ("lp", "ft", "ft_reinit", "lwf", "ncm"):
        for task in ("t1", "t2"):
            adapted = models[(method, task)]
            assert adapted.num_classes == 3 and adapted.has_pretrain_head
            # the kept head is m0's own: P is forgetting of the backbone only
            assert torch.equal(adapted.pretrain_head_weight, m0.head.weight)
            assert got[(method, task, "pre", "accuracy")] == pytest.approx(_acc(PretrainHeadView(adapted), p))
            dp = got[(method, task, SUMMARY, "dP")]
            assert dp == pytest.approx(_acc(PretrainHeadView(adapted), p) - _acc(m0, p))
    # a frozen backbone forgets nothing
    assert got[("lp", "t1", SUMMARY, "dP")] == 0.0 and got[("ncm", "t2", SUMMARY, "dP")] == 0.0
    # corrupted copies of the pretraining set are in its label space too
    c1 = suite.eval_sets["pre-c/noise/1"].test
    assert got[("ft", "t1", "pre-c/noise/1", "accuracy")] == pytest.approx(_acc(PretrainHeadView(models[("ft", "t1")]), c1))


def test_m0_reference_is_a_linear_probe_per_task(ls_run):
    out, got, models, suite = ls_run
    sets = ["t1", "t2", "extra"]
    # no task-space rows of m0 under the sets' own names: m0's head is over p0..p3
    assert (PRETRAINED, None, "t1", "accuracy") not in got
    for t in ("t1", "t2"):
        lp = models[("lp", t)]  # the lp cell of seed 0 with its defaults is the probe
        for e in sets:
            acc = _acc(lp, suite.domain(e).test)
            assert got[(PRETRAINED, None, probe(t, e), "accuracy")] == pytest.approx(acc)
        # so lp's robustness change is exactly 0, and every method's is against that probe
        assert got[("lp", t, SUMMARY, "dR")] == pytest.approx(0.0, abs=1e-12)
        other = "t2" if t == "t1" else "t1"
        for method in ("ft", "ft_reinit", "lwf", "ncm"):
            r = got[(method, t, SUMMARY, "R")]
            assert r == pytest.approx(_acc(models[(method, t)], suite.tasks[other].test))
            assert got[(method, t, SUMMARY, "dR")] == pytest.approx(
                r - got[(PRETRAINED, None, probe(t, other), "accuracy")])
    ref_r = [got[(PRETRAINED, None, probe(t, o), "accuracy")] for t, o in (("t1", "t2"), ("t2", "t1"))]
    assert got[(PRETRAINED, None, SUMMARY, "R")] == pytest.approx(sum(ref_r) / 2)
    assert all(parse_probe(e) is not None for (m, t, e, k) in got if m == PRETRAINED and e.startswith("probe/"))


def test_head_policies_start_where_they_say(ls_run):
    out, got, models, suite = ls_run
    # lp policy: the head FT starts from is the probe; reinit: a seeded fresh head; both then trained
    assert not torch.equal(models[("ft", "t1")].head.weight, models[("lp", "t1")].head.weight)
    assert not torch.equal(models[("ft_reinit", "t1")].head.weight, models[("ft", "t1")].head.weight)


def test_with_a_class_map_m0s_own_rows_are_the_reference(tmp_path):
    spec = _spec("tiny_lsmap", [{"name": "ft", "label": "ft", "params": {"epochs": 1}},
                                {"name": "ft", "label": "ft_masked", "params": {"epochs": 1, "head": "masked"}}])
    outcome = run(spec, tmp_path, quiet=True)
    assert outcome.failed == []
    got, models, suite = _rows(tmp_path), _models(tmp_path), SUITES.create("tiny_lsmap")
    m0 = models[(PRETRAINED, None)]
    start = task_start_model(m0, suite)
    for e in ("t1", "t2", "extra"):  # m0 on the tasks through its own head's rows a, b, c -> p0, p1, p2
        assert got[(PRETRAINED, None, e, "accuracy")] == pytest.approx(_acc(start, suite.domain(e).test))
    # masked: the mapped head stays as it was; keep: it is trained from m0's rows
    assert torch.equal(models[("ft_masked", "t1")].head.weight, start.head.weight)
    assert not torch.equal(models[("ft", "t1")].head.weight, start.head.weight)
    r = got[("ft", "t1", SUMMARY, "R")]
    assert got[("ft", "t1", SUMMARY, "dR")] == pytest.approx(r - got[(PRETRAINED, None, "t2", "accuracy")])


def test_outside_checkpoint_whose_head_has_the_pretraining_classes(tmp_path):
    """A checkpoint trained elsewhere with a head over the pretraining domain's own 4 classes:
    its head is m0's pretraining head, P is measured through it, the tasks get probe heads."""
    from safetensors.torch import save_file

    from fixtures_models import tiny_net

    torch.manual_seed(1)
    net = tiny_net(num_classes=4)
    weights = tmp_path / "net.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    entry = {"name": "mine", "source": "module:fixtures_models:tiny_net", "kwargs": {"num_classes": 4},
             "weights": str(weights), "input": {"size": 12, "channels": 1}}
    spec = _spec("tiny_ls", [{"name": "ft", "label": "ft", "params": {"epochs": 1, "head": "lp"}}], backbones=[entry])
    out = tmp_path / "run"
    assert run(spec, out, quiet=True).failed == []
    got, models, suite = _rows(out), _models(out), SUITES.create("tiny_ls")
    m0 = models[(PRETRAINED, None)]
    head = m0.head.weight
    assert head.shape[0] == 4 and torch.equal(head, net.state_dict()[next(k for k in net.state_dict()
                                                                           if k.endswith("weight") and
                                                                           net.state_dict()[k].shape == head.shape)])
    assert got[(PRETRAINED, None, "pre", "accuracy")] == pytest.approx(_acc(m0, suite.pretrain.test))
    ft = models[("ft", "t1")]
    assert torch.equal(ft.pretrain_head_weight, head)
    assert got[("ft", "t1", "pre", "accuracy")] == pytest.approx(_acc(PretrainHeadView(ft), suite.pretrain.test))
    # a head over 3 classes is not the pretraining domain's 4: refused, naming the mismatch
    bad = {**entry, "kwargs": {"num_classes": 3}, "weights": None}
    bad.pop("weights")
    outcome = run(_spec("tiny_ls", ["lp"], backbones=[bad]), tmp_path / "bad", quiet=True)
    assert outcome.failed
    errors = [e for (e,) in _query(tmp_path / "bad", "SELECT error FROM cells WHERE status = 'failed'")]
    assert any("3" in e and "4" in e and "class" in e for e in errors), errors
