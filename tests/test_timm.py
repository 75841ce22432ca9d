"""Outside backbones from real timm models: random init, a state dict saved and reloaded,
and a whole run. timm needs torchvision, which does not import beside the CPU torch wheel
of the default test lane, so these run in `make test-extras` (its own venv with a
torch/torchvision pair and timm). There ``RIBENCH_EXTRAS=1`` makes a missing timm a
failure; in the default lane they are skipped for want of timm.

Every check compares ribench's wrapper with the timm module itself, called directly on the
preprocessed images: the logits, the features (what enters the head) and the weights.
"""

from __future__ import annotations

import os
import sqlite3

import pytest
import torch
from safetensors.torch import save_file

from ribench.engine import parse_spec, run
from ribench.engine.plan import outside_backbones
from ribench.models.external import build

if os.environ.get("RIBENCH_EXTRAS") == "1":
    import timm  # the extras lane: timm must be importable
else:
    timm = pytest.importorskip("timm", reason="timm needs torchvision; `make test-extras` runs these tests")

pytestmark = pytest.mark.extras

# small configurations of three timm families at 32x32 inputs (random weights, CPU-fast)
MODELS = {
    "vit_tiny_patch16_224": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2},
    "resnet18": {},
    "convnext_atto": {},
}
SIZE, NUM_CLASSES = 32, 3


def spec_with(backbone, **over):
    data = {"name": "timm", "suite": "tiny", "backbones": [backbone], "methods": [{"name": "ft", "params": {"epochs": 1}},
            "lp"], "seeds": [0], "device": "cpu", "eval": {"val_fraction": 0.2, "pretrain_sample": 50},
            "analysis": {"enabled": False}, "diagnostics": {"enabled": False}}
    data.update(over)
    return parse_spec(data)


def net_and_weights(name, tmp_path, seed=0):
    torch.manual_seed(seed)
    net = timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES, **MODELS[name]).eval()
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return net, path


def entry(name, path, **over):
    return {"name": name.split("_")[0], "source": f"timm:{name}", "weights": str(path),
            "kwargs": {**MODELS[name], "num_classes": NUM_CLASSES}, "input": {"size": SIZE, "channels": 3}, **over}


def reference_input(x: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 1, 12, 12] -> what the timm net is fed: resized to 32, 3 channels, (x/255 - 0.5)/0.5
    (timm's default mean and std for these models when no pretrained config gives others)."""
    x = x.float() / 255.0
    x = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True)
    return (x.expand(-1, 3, -1, -1) - 0.5) / 0.5


@pytest.mark.parametrize("name", list(MODELS))
def test_a_timm_model_gives_timms_own_logits_and_features(name, tmp_path):
    net, path = net_and_weights(name, tmp_path)
    (e,) = outside_backbones(spec_with(entry(name, path))).values()
    model = build(e, NUM_CLASSES).eval()
    x = torch.randint(0, 256, (4, 3, SIZE, SIZE), dtype=torch.uint8)
    ref = (x.float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        assert torch.allclose(model(x), net(ref), atol=1e-5)
        feats = net.forward_head(net.forward_features(ref), pre_logits=True)
        assert torch.allclose(model.features(x), feats.flatten(1), atol=1e-5)
    head = net.get_classifier()
    assert isinstance(model.head, torch.nn.Linear) and torch.equal(model.head.weight, head.weight)


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "resnet18"])
def test_a_saved_state_dict_reloads_to_the_same_model(name, tmp_path):
    net, path = net_and_weights(name, tmp_path, seed=3)
    other, _ = net_and_weights(name, tmp_path / "other", seed=4)  # a differently initialised net, not saved
    (e,) = outside_backbones(spec_with(entry(name, path))).values()
    model = build(e, NUM_CLASSES).eval()
    got = {k: v for k, v in model.state_dict().items()}
    for k, v in net.state_dict().items():  # every weight of the file is in the wrapper, under the head or the body
        matches = [g for g in got.values() if g.shape == v.shape and torch.equal(g, v)]
        assert matches, f"{name}: weight {k} of the saved state dict is not in the rebuilt model"
    x = torch.randint(0, 256, (2, 3, SIZE, SIZE), dtype=torch.uint8)
    with torch.no_grad():
        assert not torch.allclose(model(x), other((x.float() / 255 - 0.5) / 0.5), atol=1e-3)


def test_a_run_with_a_timm_backbone_measures_timms_accuracy(tmp_path, tiny):
    name = "resnet18"
    net, path = net_and_weights(name, tmp_path, seed=5)
    spec = spec_with(entry(name, path, input={"size": SIZE, "channels": 3, "mean": [0.5] * 3, "std": [0.5] * 3}))
    res = run(spec, tmp_path / "out", quiet=True)
    assert res.ok, res.failed
    con = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    vals = {r[:4]: r[4] for r in con.execute("SELECT method, task, eval_set, metric, value FROM metrics")}
    con.close()
    with torch.no_grad():
        pred = net(reference_input(tiny.pretrain.test.images)).argmax(1)
    want = (pred == tiny.pretrain.test.labels).double().mean().item()
    assert vals[("pretrained", None, "pre", "accuracy")] == pytest.approx(want, abs=1e-9)
    for method in ("ft", "lp"):
        assert ("*" in {k[2] for k in vals if k[0] == method})
        assert 0.0 <= vals[(method, "t1", "*", "id_acc")] <= 1.0
