"""Transfer examples crafted once and cached (evaluation.attack_rows with a cache), the
zero-gradient mark of attack rows, and attacks under a bf16 autocast."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ribench.core import InputSpec
from ribench.core.timing import measure
from ribench.engine.artifacts import ArtifactStore
from ribench.engine.execute import TransferCache
from ribench.evaluate.attacks import attack_rows, attack_subset, robust_accuracy, transfer_attack
from ribench.evaluate.attacks.checks import MASKED_ZERO_GRAD, zero_gradient_fraction
from ribench.evaluate.attacks.evaluation import transfer_key
from ribench.models import create_model
from ribench.models.training import TrainConfig, train_classifier

SPEC = InputSpec(channels=1, size=12, mean=(0.5,), std=(0.5,))
PGD = {"name": "pgd_linf", "eps": [0.05, 0.1], "subset": 40, "transfer": True, "check_masking": False,
       "params": {"steps": 3}}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("mlp", num_classes=3, spec=SPEC, width=16, depth=1).eval()


@pytest.fixture(scope="module")
def trained(tiny):
    torch.manual_seed(0)
    model = create_model("cnn", num_classes=3, spec=SPEC, widths=(4, 8), features=16)
    train_classifier(model, tiny.pretrain.train, TrainConfig(epochs=4, batch_size=32, lr=3e-3),
                     generator=torch.Generator().manual_seed(0))
    return model.eval()


class DictCache:
    """An in-memory ExampleCache that counts its traffic."""

    def __init__(self):
        self.items, self.gets, self.hits, self.puts = {}, 0, 0, 0

    def get(self, key):
        self.gets += 1
        entry = self.items.get(key)
        self.hits += entry is not None
        return None if entry is None else dict(entry)

    def put(self, key, tensors):
        self.puts += 1
        self.items[key] = {k: v.clone() for k, v in tensors.items()}


def transfer_rows(report):
    return {k: v["robust_acc"] for k, v in report.rows.items() if k.startswith("transfer/")}


def test_cached_transfer_examples_give_the_numbers_of_recrafting(tiny):
    dom = tiny.tasks["t1"]
    source, targets = mlp(0), [mlp(s) for s in (1, 2, 3)]
    cache = DictCache()
    attack_rows(source, dom, [PGD], seed=0, task="t1", cache=cache, source_key="m0")  # the pretrained model's cell
    assert cache.puts == 2 and len(cache.items) == 2  # one entry per eps
    test = dom.test.subset(attack_subset(len(dom.test), 40, 0))
    for target in targets:
        cached = attack_rows(target, dom, [PGD], seed=0, source=source, cache=cache, source_key="m0")
        fresh = attack_rows(target, dom, [PGD], seed=0, source=source)  # crafted on the source again
        assert transfer_rows(cached) == transfer_rows(fresh) and len(transfer_rows(cached)) == 2
        for eps in PGD["eps"]:  # a second route: transfer_attack in one call
            direct = transfer_attack(source, {"t": target}, test.images, test.labels, "pgd_linf", eps, steps=3)["t"]
            assert cached.rows[f"transfer/pgd_linf/eps={eps:g}"]["robust_acc"] == direct
    assert cache.puts == 2 and cache.hits == 2 * len(targets)  # nothing crafted on the source after the first


def test_transfer_keys_name_what_the_examples_depend_on(tiny):
    test = tiny.tasks["t1"].test
    base = dict(source_key="m0", domain="t1", attack=PGD, eps=0.1, seed=0, images=test.images, labels=test.labels,
                class_subset=None, precision="fp32")
    key = transfer_key(**base)
    assert transfer_key(**base) == key
    changed = [dict(source_key="m1"), dict(eps=0.05), dict(seed=1), dict(precision="bf16"), dict(class_subset=(0, 1)),
               dict(attack={**PGD, "params": {"steps": 4}}), dict(attack={**PGD, "name": "fgsm", "params": {}}),
               dict(images=test.images[:-1], labels=test.labels[:-1]),
               dict(images=torch.where(test.images == 0, 1, test.images).to(torch.uint8))]
    keys = {transfer_key(**{**base, **c}) for c in changed}
    assert key not in keys and len(keys) == len(changed)


def _corrupt_in_place(path):
    data = bytearray(path.read_bytes())
    data[-10:] = bytes(b ^ 0xFF for b in data[-10:])  # same size: only the checksum sees it
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-16])


@pytest.mark.parametrize("damage", [_corrupt_in_place, _truncate])
def test_damaged_cache_files_are_crafted_again(tiny, tmp_path, damage):
    dom = tiny.tasks["t1"]
    source, target = mlp(0), mlp(1)
    store = ArtifactStore(tmp_path)
    cache = TransferCache(store)
    attack_rows(source, dom, [PGD], seed=0, task="t1", cache=cache, source_key="m0")
    files = sorted(tmp_path.glob("*/*.safetensors"))
    assert len(files) == 2
    before = {p: p.read_bytes() for p in files}
    fresh = transfer_rows(attack_rows(target, dom, [PGD], seed=0, source=source))
    for p in files:
        damage(p)
        assert store.check(p.stem) is not None
    assert transfer_rows(attack_rows(target, dom, [PGD], seed=0, source=source, cache=cache, source_key="m0")) == fresh
    for p in files:  # crafted again and stored again, bit for bit
        assert store.check(p.stem) is None and p.read_bytes() == before[p]


def test_a_cached_entry_of_the_wrong_shape_is_not_used(tiny):
    dom = tiny.tasks["t1"]
    source, target = mlp(0), mlp(1)
    cache = DictCache()
    attack_rows(source, dom, [PGD], seed=0, task="t1", cache=cache, source_key="m0")
    for key, entry in cache.items.items():
        cache.items[key] = {"x_adv": entry["x_adv"][:-1]}
    fresh = transfer_rows(attack_rows(target, dom, [PGD], seed=0, source=source))
    assert transfer_rows(attack_rows(target, dom, [PGD], seed=0, source=source, cache=cache, source_key="m0")) == fresh
    assert all(len(e["x_adv"]) == 40 for e in cache.items.values())  # replaced by the crafted ones


# ------------------------------------------------------------- the zero-gradient mark
class Scaled(nn.Module):
    """A model whose softmax saturates: logits multiplied by ``scale`` (NCM-like)."""

    def __init__(self, inner: nn.Module, scale: float):
        super().__init__()
        self.inner, self.scale = inner, scale

    def forward(self, x):
        return self.inner(x) * self.scale


def _hand_zero_fraction(model, x, y):
    """Per image, one at a time: the CE input gradient is all zero or not finite."""
    flat = 0
    for i in range(len(y)):
        xi = (x[i:i + 1].float() / 255).requires_grad_(True)
        (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(xi), y[i:i + 1]), xi)
        flat += bool((g == 0).all() or not torch.isfinite(g).all())
    return flat / len(y)


def test_a_saturated_softmax_is_marked_and_a_plain_cnn_is_not(tiny, trained):
    dom = tiny.pretrain
    fgsm = {"name": "fgsm", "eps": [0.2, 0.4], "subset": 60, "transfer": False, "check_masking": False,
            "params": {}}
    plain = attack_rows(trained, dom, [fgsm], seed=0)
    saturated = attack_rows(Scaled(trained, 1e4), dom, [fgsm], seed=0)
    test = dom.test.subset(attack_subset(len(dom.test), 60, 0))
    for eps in ("0.2", "0.4"):
        p, s = plain.rows[f"attack/fgsm/eps={eps}"], saturated.rows[f"attack/fgsm/eps={eps}"]
        assert p["masked"] == 0.0 and p["zero_grad_frac"] <= MASKED_ZERO_GRAD
        assert s["masked"] == 1.0 and s["zero_grad_frac"] > MASKED_ZERO_GRAD
        assert s["zero_grad_frac"] == _hand_zero_fraction(Scaled(trained, 1e4), test.images, test.labels)
        assert p["zero_grad_frac"] == _hand_zero_fraction(trained, test.images, test.labels)
        assert s["robust_acc"] > p["robust_acc"]  # what the mark is for: masked gradients look robust
    # a saturated image's gradient is exactly zero: the share is the clean-correct share
    assert s["zero_grad_frac"] == pytest.approx(s["clean_acc"])


def test_black_box_rows_carry_no_mark(tiny, trained):
    square = {"name": "square_linf", "eps": [0.1], "subset": 20, "transfer": False, "check_masking": False,
              "params": {"queries": 5}}
    row = attack_rows(Scaled(trained, 1e4), tiny.pretrain, [square], seed=0).rows["attack/square_linf/eps=0.1"]
    assert "masked" not in row and "zero_grad_frac" not in row


def test_zero_gradient_fraction_counts_cut_and_nonfinite_gradients(tiny):
    x, y = tiny.pretrain.test.images[:12], tiny.pretrain.test.labels[:12]
    model = mlp(0)
    assert zero_gradient_fraction(model, x, y) == 0.0
    assert zero_gradient_fraction(lambda t: model(t.detach()), x, y) == 1.0  # input cut out of the graph
    assert zero_gradient_fraction(lambda t: model(t) * torch.sqrt(t.sum() * 0), x, y) == 1.0  # NaN gradients


def test_masking_work_is_charged_to_its_phase(tiny, trained):
    fgsm = {"name": "fgsm", "eps": [0.05, 0.1, 0.2], "subset": 30, "transfer": False, "check_masking": True,
            "params": {}}
    calls = []
    import ribench.evaluate.attacks.evaluation as ev

    real = ev.gradient_masking_checks
    with measure() as clock:
        ev.gradient_masking_checks = lambda *a, **k: calls.append(k["eps"]) or real(*a, **k)
        try:
            report = attack_rows(trained, tiny.pretrain, [fgsm], seed=0)
        finally:
            ev.gradient_masking_checks = real
    assert calls == [0.2]  # once per attack, at its largest radius, not once per eps
    assert report.rows["masking/fgsm"]["warnings"] == 0.0
    assert clock.seconds["masking_checks"] > 0


# ------------------------------------------------------------- precision
def test_attacks_run_under_bf16_autocast_close_to_fp32(tiny, trained):
    test = tiny.pretrain.test
    for attack in ("fgsm", "pgd_linf"):
        kw = dict(subset=60, seed=0, steps=5) if attack == "pgd_linf" else dict(subset=60, seed=0)
        fp32 = robust_accuracy(trained, test.images, test.labels, attack, 0.1, **kw)
        bf16 = robust_accuracy(trained, test.images, test.labels, attack, 0.1, precision="bf16", **kw)
        assert abs(bf16.robust_acc - fp32.robust_acc) <= 0.05 and abs(bf16.clean_acc - fp32.clean_acc) <= 0.05
    from ribench.core.runtime import compute_options

    seen = []

    class Recording(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = trained

        def forward(self, x):
            out = self.inner(x)
            seen.append(out.dtype)
            return out

    robust_accuracy(Recording(), test.images, test.labels, "pgd_linf", 0.1, subset=10, steps=2, precision="bf16")
    assert torch.bfloat16 in seen
    seen.clear()
    robust_accuracy(Recording(), test.images, test.labels, "pgd_linf", 0.1, subset=10, steps=2)
    assert set(seen) == {torch.float32}
    with compute_options(precision="bf16"):  # the current compute options are honoured too
        ctx = robust_accuracy(trained, test.images, test.labels, "fgsm", 0.1, subset=60, seed=0)
    assert ctx.robust_acc == robust_accuracy(trained, test.images, test.labels, "fgsm", 0.1, subset=60, seed=0,
                                             precision="bf16").robust_acc


# ------------------------------------------------------------- in a run
@pytest.mark.slow
def test_a_run_crafts_transfer_examples_once_on_the_pretrained_model(tmp_path, monkeypatch):
    import ribench.evaluate.attacks.evaluation as ev
    from ribench.data import build_suite
    from ribench.engine import parse_spec, run
    from ribench.engine.store import ResultsStore
    from ribench.models.checkpoint import load_model

    crafted = []
    real = ev.adversarial_examples
    monkeypatch.setattr(ev, "adversarial_examples", lambda *a, **k: crafted.append(a[3]) or real(*a, **k))
    spec = parse_spec({"name": "tiny", "suite": "tiny", "backbones": ["mlp"], "recipes": ["narrow"],
                       "methods": ["lp", "ncm"], "seeds": [0], "device": "cpu", "pretrain": {"epochs": 2},
                       "eval": {"val_fraction": 0.2, "pretrain_sample": 50}, "diagnostics": {"enabled": False},
                       "attacks": [{"name": "pgd_linf", "eps": [0.1], "subset": 30, "transfer": True,
                                    "check_masking": False, "params": {"steps": 3}}]})
    res = run(spec, tmp_path, quiet=True)
    assert res.ok, res.failed
    assert crafted == []  # every evaluate cell read what the pretrained model's evaluation stored
    store = ResultsStore(tmp_path / "results.sqlite")
    cells, rows = store.cells(), store.metric_rows()
    store.close()
    artifacts = ArtifactStore(tmp_path / "artifacts")
    m0 = load_model(artifacts.path(next(c["key"] for c in cells if c["kind"] == "pretrain")))
    suite = build_suite("tiny", seed=0)
    kept = [p for p in tmp_path.glob("artifacts/*/*.safetensors")
            if artifacts.metadata(p.stem).get("kind") == "transfer-examples"]
    assert len(kept) == len(suite.tasks)  # one radius: one entry per task
    checked = 0
    for c in cells:
        if c["kind"] != "adapt":
            continue
        task = c["labels"]["task"]
        test = suite.tasks[task].test
        direct = transfer_attack(m0, {"m": load_model(artifacts.path(c["key"]))}, test.images, test.labels,
                                 "pgd_linf", 0.1, steps=3, subset=30, seed=0)["m"]
        stored = [r["value"] for r in rows if r["method"] == c["labels"]["method"] and r["task"] == task
                  and r["eval_set"] == "transfer/pgd_linf/eps=0.1" and r["metric"] == "robust_acc"]
        assert stored == [direct]
        checked += 1
    assert checked == 4


def test_attack_rows_report_progress_through_every_attack_and_radius(tiny):
    dom, seen = tiny.tasks["t1"], []
    fgsm = {"name": "fgsm", "eps": [0.05], "subset": 20, "transfer": False, "check_masking": False, "params": {}}
    attack_rows(mlp(1), dom, [PGD, fgsm], seed=0, source=mlp(0), progress=lambda f, what: seen.append((f, what)))
    fractions = [f for f, _ in seen]
    assert len(seen) == (2 + 1) + (1 + 1)  # per attack: its checks, then each radius
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert [w for _, w in seen] == ["pgd_linf: gradient checks", "pgd_linf eps=0.05, transfer",
                                    "pgd_linf eps=0.1, transfer", "fgsm: gradient checks", "fgsm eps=0.05"]


def test_masking_checks_run_in_full_unless_the_robust_accuracy_is_already_about_zero(trained, tiny, monkeypatch):
    """Checks 3-7 look for a robust accuracy overestimated by masking; at a robust accuracy of at
    most MASKING_TOL they could only find less than their own slack, so only the cheap ones run."""
    from ribench.evaluate.attacks import MASKING_TOL
    from ribench.evaluate.attacks import evaluation

    calls = []
    real = evaluation.gradient_masking_checks

    def spy(*args, **kw):
        calls.append(kw.get("full", True))
        return real(*args, **kw)

    monkeypatch.setattr(evaluation, "gradient_masking_checks", spy)
    dom = tiny.tasks["t1"]
    # a small radius leaves images robust, the whole box none; an entry with both needs the full checks
    for radii, want_full in (([0.02], True), ([1.0], False), ([0.02, 1.0], True)):
        a = {"name": "pgd_linf", "eps": radii, "subset": 40, "transfer": False, "check_masking": True,
             "params": {"steps": 5}}
        report = attack_rows(trained, dom, [a], seed=0)
        robust = [report.rows[f"attack/pgd_linf/eps={e:g}"]["robust_acc"] for e in radii]
        assert (max(robust) > MASKING_TOL) == want_full, robust
        assert report.rows["masking/pgd_linf"]["full_checks"] == float(want_full)
        assert calls[-1] is want_full
    # the cheap checks still catch a model whose input gradients vanish
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(12 * 12, 3))

        def forward(self, x):
            x = x.float() / 255 if x.dtype == torch.uint8 else x
            return (x.flatten(1) * 0) @ self.w

    found = real(Flat(), dom.test.images[:20], dom.test.labels[:20], eps=1.0, full=False)
    assert any("all-zero input gradient" in w for w in found)
    assert real(trained, dom.test.images[:20], dom.test.labels[:20], eps=1.0, full=False) == []
