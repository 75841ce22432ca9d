"""Outside backbones: user modules, weights files, Hugging Face and timm models, presets, engine."""

from __future__ import annotations

import copy
import json
import sqlite3
import sys

import pytest
import torch
from safetensors.torch import save_file

import fixtures_models
from ribench.core import CheckpointError, ConfigError, UnknownNameError
from ribench.engine import parse_spec, plan, run
from ribench.engine.plan import outside_backbones
from ribench.models import load_model, save_model
from ribench.models.external import ExternalModel, build, identity, list_presets, parse_entry, presets

SUITE_ID = {"name": "tiny", "version": "1", "data_seed": 0}
MEAN, STD = 0.4, 0.3
INPUT = {"size": 12, "channels": 1, "mean": [MEAN], "std": [STD]}
SOURCE = "module:fixtures_models:tiny_net"


def naive_preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 1, 12, 12] -> what the tiny net expects, written out: x / 255, minus mean, over std."""
    return (images.double() / 255.0 - MEAN).div(STD).float()


def raw_net(seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return fixtures_models.tiny_net(**kw).eval()


def images(n: int = 6, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 12, 12), generator=g, dtype=torch.uint8)


def entry(tmp_path, net=None, **over):
    """A backbone table for the tiny net with its weights saved as safetensors."""
    net = net if net is not None else raw_net()
    path = tmp_path / "tiny.safetensors"
    save_file(dict(net.state_dict()), str(path))
    return {"name": "mine", "source": SOURCE, "weights": str(path), "input": INPUT, **over}


def spec_with(backbone, **over):
    data = {"name": "ext", "suite": "tiny", "backbones": [backbone], "methods": [{"name": "ft", "params": {"epochs": 1}},
            "lp"], "seeds": [0], "device": "cpu", "eval": {"val_fraction": 0.2, "pretrain_sample": 50},
            "analysis": {"enabled": False}}
    data.update(over)
    return parse_spec(data)


def m0_of(spec, num_classes=3):
    (e,) = outside_backbones(spec).values()
    return build(e, num_classes)


# --- a user's module through the spec --------------------------------------------
def test_user_module_gives_the_raw_modules_logits(tmp_path):
    net = raw_net()
    model = m0_of(spec_with(entry(tmp_path, net)))
    assert isinstance(model, ExternalModel) and model.num_classes == 3 and model.num_features == 10
    x = images()
    with torch.no_grad():
        want = net(naive_preprocess(x))
        assert torch.allclose(model(x), want, atol=1e-6)
        # float images in [0, 1] are the same input as uint8
        assert torch.allclose(model(x.float() / 255), want, atol=1e-6)
        # the head is the module's own fc, and features are what enters it
        assert torch.equal(model.head.weight, net.fc.weight)
        assert torch.allclose(model.features(x), net.embed(naive_preprocess(x)), atol=1e-6)
    # a gray model fed colour images averages the channels, as every ribench model does
    assert model.preprocess(x.expand(-1, 3, -1, -1)).shape == (6, 1, 12, 12)


@pytest.mark.parametrize("layer", ["neck", "neck.1", "embed"])
def test_features_are_the_named_layers_output(tmp_path, layer):
    net = raw_net()
    model = m0_of(spec_with(entry(tmp_path, net, feature_layer=layer)))
    x = images()
    z = naive_preprocess(x)
    with torch.no_grad():
        want = torch.relu(net.neck[0](net.pool(torch.relu(net.conv(z))).flatten(1)))  # neck's output, by hand
        assert torch.allclose(model.features(x), want, atol=1e-6)


def test_a_submodule_feature_layer_is_flattened_and_must_fit_the_head(tmp_path):
    net = raw_net(features=24)  # pool gives 6 channels x 2 x 2 = 24 values, fc takes 24
    model = m0_of(spec_with(entry(tmp_path, net, feature_layer="pool", kwargs={"features": 24})))
    x = images()
    with torch.no_grad():
        assert torch.allclose(model.features(x), net.pool(torch.relu(net.conv(naive_preprocess(x)))).reshape(6, 24),
                              atol=1e-6)
    with pytest.raises(ConfigError, match=r"backbones\[0\]\.feature_layer.*\[1, 24\].*takes 10"):
        m0_of(spec_with(entry(tmp_path, feature_layer="pool")))
    with pytest.raises(ConfigError, match=r"backbones\[0\]\.feature_layer.*'nowhere' is neither"):
        m0_of(spec_with(entry(tmp_path, feature_layer="nowhere")))


def test_no_hook_is_left_on_the_module_and_copies_stay_independent(tmp_path):
    model = m0_of(spec_with(entry(tmp_path, feature_layer="neck")))
    x = images()
    with torch.no_grad():
        model.features(x)
    assert all(not m._forward_hooks for m in model.modules())
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.head.weight.zero_()
        assert torch.equal(twin(x), twin.head.bias.expand(6, 3))
        assert not torch.equal(model(x), twin(x))


def test_methods_replacing_the_head_change_the_logits(tmp_path):
    """The module's own head slot is empty, so a new ``model.head`` is the classifier used."""
    model = m0_of(spec_with(entry(tmp_path)))
    model.head = torch.nn.Linear(10, 5)
    x = images()
    with torch.no_grad():
        assert torch.allclose(model(x), model.head(model.features(x)))
    assert {id(p) for p in model.backbone_parameters()}.isdisjoint(id(p) for p in model.head.parameters())
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in raw_net().parameters()) - 33 + 55


def test_gradients_reach_the_pixels(tmp_path):
    model = m0_of(spec_with(entry(tmp_path)))
    x = (images().float() / 255).requires_grad_()
    model(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# --- weights files ----------------------------------------------------------------
def test_safetensors_and_weights_only_pt_give_the_same_model(tmp_path):
    net = raw_net(seed=3)
    pt = tmp_path / "tiny.pt"
    torch.save(net.state_dict(), pt)
    wrapped = tmp_path / "wrapped.pth"  # a training checkpoint: {"state_dict": ..., "epoch": ...}
    torch.save({"state_dict": net.state_dict(), "epoch": 3}, wrapped)
    x = images()
    want = net(naive_preprocess(x)).detach()
    for weights in (entry(tmp_path, net)["weights"], str(pt), str(wrapped)):
        model = m0_of(spec_with({"source": SOURCE, "weights": weights, "input": INPUT}))
        with torch.no_grad():
            assert torch.allclose(model(x), want, atol=1e-6), weights


def test_saved_m0_rebuilds_from_its_artifact(tmp_path):
    model = m0_of(spec_with(entry(tmp_path, feature_layer="neck")))
    path = save_model(model, tmp_path / "m0.safetensors")
    back = load_model(path)
    x = images()
    assert isinstance(back, ExternalModel) and back.feature_layer == "neck" and back.spec == model.spec
    with torch.no_grad():
        assert torch.equal(back(x), model(x))


def test_full_pickle_needs_trust(tmp_path):
    net = raw_net(seed=4)
    path = tmp_path / "whole.pt"
    torch.save(net, path)  # the module object itself: unpickling runs code
    spec = spec_with({"source": SOURCE, "weights": str(path), "input": INPUT})
    with pytest.raises(CheckpointError, match=r"whole\.pt is an unsafe full pickle.*TinyNet.*--trust-checkpoint"):
        m0_of(spec)
    (e,) = outside_backbones(spec).values()
    model = build(e, 3, trust_checkpoint=True)
    x = images()
    with torch.no_grad():
        assert torch.allclose(model(x), net(naive_preprocess(x)), atol=1e-6)


def test_weights_that_do_not_fit_name_the_file_and_what_was_expected(tmp_path):
    wide = raw_net(features=12)
    path = tmp_path / "wide.safetensors"
    save_file(dict(wide.state_dict()), str(path))
    spec = spec_with({"source": SOURCE, "weights": str(path), "input": INPUT})
    with pytest.raises(CheckpointError, match=r"(?s)wide\.safetensors does not fit.*shape mismatches.*fc\.weight: expected "
                                              r"\(3, 10\), found \(3, 12\)") as err:
        m0_of(spec)
    assert "neck.0.weight: expected (10, 24), found (12, 24)" in str(err.value)

    sd = dict(raw_net().state_dict())
    sd.pop("fc.bias")
    sd["extra.weight"] = torch.zeros(2)
    save_file(sd, str(tmp_path / "holes.safetensors"))
    spec = spec_with({"source": SOURCE, "weights": str(tmp_path / "holes.safetensors"), "input": INPUT})
    with pytest.raises(CheckpointError, match=r"(?s)holes\.safetensors does not fit.*missing keys \(1\): fc\.bias.*"
                                              r"unexpected keys \(1\): extra\.weight"):
        m0_of(spec)

    spec = spec_with({"source": SOURCE, "weights": str(tmp_path / "absent.safetensors"), "input": INPUT})
    with pytest.raises(CheckpointError, match=r"absent\.safetensors does not exist"):
        m0_of(spec)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    spec = spec_with({"source": SOURCE, "weights": str(tmp_path / "junk.pt"), "input": INPUT})
    with pytest.raises(CheckpointError, match=r"junk\.pt is not a readable PyTorch weights file"):
        m0_of(spec)


# --- spec validation ----------------------------------------------------------------
def test_spec_errors_name_the_field(tmp_path):
    ok = entry(tmp_path)
    with pytest.raises(ConfigError, match=r"backbones\[0\]\.recipe: .*only recipe is 'given'.*'narrow'"):
        spec_with({**ok, "recipe": "narrow"})
    with pytest.raises(ConfigError, match=r"backbones\[0\]\.wieghts: unknown field"):
        spec_with({**ok, "wieghts": "x"})
    with pytest.raises(ConfigError, match=r"backbones\[0\]\.source: must be 'module:pkg\.mod:factory'"):
        spec_with({**ok, "source": "torchhub:resnet"})
    with pytest.raises(ConfigError, match=r"backbones\[0\]\.input\.size: is required"):
        spec_with({**ok, "input": {"channels": 1}})
    with pytest.raises(ConfigError, match=r"backbones\[0\]\.input: mean and std need 3 values"):
        spec_with({**ok, "input": {"size": 12, "channels": 3, "mean": [0.5]}})
    with pytest.raises(ConfigError, match=r"backbones\[1\]\.name: backbone name 'mine' is used twice"):
        parse_spec({"backbones": [ok, ok], "methods": ["lp"]})
    with pytest.raises(ConfigError, match=r"backbones\[0\]\.source: cannot import module 'no_such_pkg\.mod'"):
        m0_of(spec_with({**ok, "source": "module:no_such_pkg.mod:make"}))
    with pytest.raises(ConfigError, match=r"returned a str, expected an nn\.Module"):
        m0_of(spec_with({**ok, "source": "module:fixtures_models:not_a_module"}))
    with pytest.raises(ConfigError, match=r"backbones\[0\]\.head: 'neck' is a Sequential, expected an nn\.Linear"):
        m0_of(spec_with({**ok, "head": "neck"}))
    with pytest.raises(ConfigError, match=r"backbones\[0\]\.input: .*needs its input spec"):
        m0_of(spec_with({k: v for k, v in ok.items() if k != "input"}))
    with pytest.raises(ConfigError, match=r"backbones\[0\]\.input: TinyNet fails on a \[1, 3, 12, 12\] input"):
        m0_of(spec_with({**ok, "input": {"size": 12, "channels": 3}}))
    with pytest.raises(UnknownNameError, match=r"unknown model 'resnot'.*resnet.*vit_b16_in21k"):
        plan(spec_with("resnot"), ["t1"], SUITE_ID)


def test_head_with_other_classes_needs_reset_head(tmp_path):
    net = raw_net(num_classes=5)
    with pytest.raises(ConfigError, match=r"backbones\[0\]\.reset_head: the head of 'mine' has 5 classes but the suite's "
                                          r"pretraining domain has 3; set reset_head = true"):
        m0_of(spec_with(entry(tmp_path, net, kwargs={"num_classes": 5})))
    model = m0_of(spec_with(entry(tmp_path, net, kwargs={"num_classes": 5}, reset_head=True)))
    x = images()
    assert model.head.out_features == 3 and model(x).shape == (6, 3)
    with torch.no_grad():  # the backbone is still the given one
        assert torch.allclose(model.features(x), net.embed(naive_preprocess(x)), atol=1e-6)


def test_reset_head_replaces_a_head_of_the_same_class_count(tmp_path):
    net = raw_net()  # 3 classes, as the suite
    spec = spec_with(entry(tmp_path, net, reset_head=True))
    torch.manual_seed(5)
    model = m0_of(spec)
    torch.manual_seed(5)
    again = m0_of(spec)
    x = images()
    assert model.head.out_features == 3
    assert not torch.equal(model.head.weight, net.fc.weight)  # a fresh head, not the module's
    assert torch.equal(model.head.weight, again.head.weight)  # seeded: the same RNG state, the same head
    torch.manual_seed(6)
    assert not torch.equal(m0_of(spec).head.weight, model.head.weight)
    with torch.no_grad():
        assert torch.allclose(model.features(x), net.embed(naive_preprocess(x)), atol=1e-6)
    kept = m0_of(spec_with(entry(tmp_path, net)))
    assert torch.equal(kept.head.weight, net.fc.weight)


def test_reset_head_keys_and_keys_without_it(tmp_path):
    """Without reset_head the pretrain key is the one of the format before reset_head always reset;
    with it the key differs (a run that kept the head is not reused)."""
    import hashlib

    from ribench.engine.plan import cell_key

    ent = entry(tmp_path)
    p = next(c for c in plan(spec_with(ent), ["t1"], SUITE_ID) if c.kind == "pretrain")
    given = {"source": SOURCE, "weights": hashlib.sha256((tmp_path / "tiny.safetensors").read_bytes()).hexdigest(),
             "input": {"channels": 1, "size": 12, "mean": (MEAN,), "std": (STD,)}, "reset_head": False,
             "version": "1", "code_version": "1"}
    config = {"suite": SUITE_ID, "backbone": "mine", "recipe": "given", "given": given}
    assert p.key == cell_key("pretrain", "1", config, ())
    r = next(c for c in plan(spec_with({**ent, "reset_head": True}), ["t1"], SUITE_ID) if c.kind == "pretrain")
    assert r.config["given"]["reset_head"] == "always" and r.config["seed"] == 0 and r.key != p.key


def test_kept_head_warns_when_its_labels_are_not_the_suites():
    from ribench.models.external import HeadLabelWarning, head_label_mismatch, label_names

    class Cfg:
        id2label = {0: "cat", 1: "dog", 2: "bird"}

    net = raw_net()
    assert label_names(net) is None  # a plain module says nothing: no warning is possible
    net.config = Cfg()
    assert label_names(net) == ["cat", "dog", "bird"]
    Cfg.id2label = {"1": "LABEL_1", "0": "LABEL_0", "2": "LABEL_2"}  # transformers' placeholders
    assert label_names(net) is None
    assert head_label_mismatch(["Cat", "hot_dog"], ["cat", "hot dog"]) is None
    assert "do not include the suite's classes '0', '1'" in head_label_mismatch(["cat", "dog"], ["0", "1"])
    assert "another order" in head_label_mismatch(["dog", "cat"], ["cat", "dog"])

    class Timmish(torch.nn.Module):
        pretrained_cfg = {"label_names": ("a", "b")}

    assert label_names(Timmish()) == ["a", "b"]


def test_hf_kept_head_of_other_labels_warns(tmp_path):
    import warnings

    transformers = pytest.importorskip("transformers")
    from ribench.models.external import HeadLabelWarning

    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=16,
                                    id2label={0: "cat", 1: "dog", 2: "bird"}, label2id={"cat": 0, "dog": 1, "bird": 2})
    folder = tmp_path / "animals"
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    table = {"source": f"hf:{folder}", "input": {"size": 8, "channels": 3}}
    with pytest.warns(HeadLabelWarning, match=r"backbones\[0\]: the kept head of 'animals' was trained on labels "
                                              r"\['cat', 'dog', 'bird'\].*'0', '1', '2'.*reset_head = true"):
        build(parse_entry(table, "backbones[0]"), class_names=("0", "1", "2"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build(parse_entry(table), class_names=("Cat", "dog", "bird"))  # its own classes: no warning
        build(parse_entry({**table, "reset_head": True}), class_names=("0", "1", "2"))  # a fresh head: none either


def test_a_table_with_only_a_name_is_the_registered_backbone(tmp_path):
    import tomllib

    text = ('methods = ["lp"]\n[[backbones]]\nname = "mlp"\n[[backbones]]\nname = "mine"\n'
            f'source = "{SOURCE}"\nweights = "tiny.safetensors"\ninput = {{ size = 12, channels = 1 }}\n')
    entry(tmp_path)
    tables = parse_spec(tomllib.loads(text), base_dir=tmp_path)
    assert tables.backbones[0] == "mlp" and list(tables.outside_entries) == [1]
    mixed = parse_spec({"methods": ["lp"], "backbones": ["mlp", tomllib.loads(text)["backbones"][1]]},
                       base_dir=tmp_path)
    assert tables.model_dump() == mixed.model_dump()
    keys = lambda s: sorted(c.key for c in plan(s, ["t1"], SUITE_ID))  # noqa: E731
    assert keys(tables) == keys(mixed)
    with pytest.raises(UnknownNameError, match=r"backbones\[0\]: unknown model 'mlpp'.*Valid models: cnn, mlp"):
        plan(parse_spec({"methods": ["lp"], "backbones": [{"name": "mlpp"}]}), ["t1"], SUITE_ID)


def test_relative_weights_paths_are_relative_to_the_spec_file(tmp_path):
    from ribench.engine import load_spec

    sub = tmp_path / "specs"
    sub.mkdir()
    save_file(dict(raw_net().state_dict()), str(sub / "w.safetensors"))
    (sub / "s.toml").write_text(
        'suite = "tiny"\nmethods = ["lp"]\n'
        'backbones = [{name = "mine", source = "module:fixtures_models:tiny_net", weights = "w.safetensors", '
        'input = {size = 12, channels = 1, mean = [0.4], std = [0.3]}}]\n')
    spec = load_spec(sub / "s.toml")
    assert spec.backbones[0]["weights"] == str(sub / "w.safetensors")
    assert parse_spec(spec.model_dump()) == spec  # the normalised table parses back to itself


# --- engine -------------------------------------------------------------------------
def metric_values(out):
    con = sqlite3.connect(out / "results.sqlite")
    rows = con.execute("SELECT backbone, recipe, method, task, seed, eval_set, metric, value FROM metrics").fetchall()
    con.close()
    return {r[:7]: r[7] for r in rows if r[6] != "train_seconds"}


def test_end_to_end_run_with_a_user_module(tmp_path, tiny):
    net = raw_net(seed=5)
    spec = spec_with(entry(tmp_path, net), backbones=["mlp", entry(tmp_path, net)], pretrain={"epochs": 1})
    res = run(spec, tmp_path / "out", quiet=True)
    assert res.ok, res.failed
    vals = metric_values(tmp_path / "out")
    # m0 is the given module: its accuracy on the pretraining test split, computed directly
    with torch.no_grad():
        pred = net(naive_preprocess(tiny.pretrain.test.images)).argmax(1)
    want = (pred == tiny.pretrain.test.labels).double().mean().item()
    assert vals[("mine", "given", "pretrained", None, None, "pre", "accuracy")] == pytest.approx(want, abs=1e-9)
    for method in ("ft", "lp"):
        for task in ("t1", "t2"):
            assert ("mine", "given", method, task, 0, "*", "id_acc") in vals
    assert vals[("mine", "given", "lp", "t1", 0, "*", "trainable_params")] == 10 * 3 + 3
    assert ("mlp", "narrow", "lp", "t1", 0, "*", "id_acc") in vals  # built-in backbones run beside it
    again = run(spec, tmp_path / "out", quiet=True)
    assert again.ran == 0 and again.cached == res.total
    from ribench.report.markdown import write_report

    assert "backbones mlp, mine, recipes" in write_report(tmp_path / "out", figures=False).read_text()


def test_pretrain_key_follows_the_weights_file_content(tmp_path):
    ent = entry(tmp_path, raw_net(seed=0))
    key = lambda: next(c.key for c in plan(spec_with(ent), ["t1"], SUITE_ID)  # noqa: E731
                       if c.kind == "pretrain")
    first = key()
    assert key() == first
    moved = tmp_path / "moved.safetensors"
    moved.write_bytes((tmp_path / "tiny.safetensors").read_bytes())
    assert next(c.key for c in plan(spec_with({**ent, "weights": str(moved)}), ["t1"], SUITE_ID)
                if c.kind == "pretrain") == first  # same bytes elsewhere: same key
    save_file(dict(raw_net(seed=1).state_dict()), str(tmp_path / "tiny.safetensors"))
    second = key()
    assert second != first
    cells = plan(spec_with(ent), ["t1"], SUITE_ID)
    p = next(c for c in cells if c.kind == "pretrain")
    assert p.config["given"]["weights"] == __import__("hashlib").sha256(
        (tmp_path / "tiny.safetensors").read_bytes()).hexdigest()
    # every cell downstream follows, and the recipes of the spec do not apply to it
    assert all(p.key in c.deps for c in cells if c.kind in ("eval_pretrained", "adapt"))
    assert {c.labels["recipe"] for c in cells if c.kind == "pretrain"} == {"given"}
    assert next(c.key for c in plan(spec_with(ent, recipes=["narrow", "rich"]), ["t1"], SUITE_ID)
                if c.kind == "pretrain") == second


def test_weights_changed_after_planning_fail_the_pretrain_cell(tmp_path, tiny):
    from ribench.engine.artifacts import ArtifactStore
    from ribench.engine.execute import Workspace

    ent = entry(tmp_path, raw_net(seed=0))
    spec = spec_with(ent)
    p = next(c for c in plan(spec, ["t1"], SUITE_ID) if c.kind == "pretrain")
    save_file(dict(raw_net(seed=1).state_dict()), ent["weights"])
    ws = Workspace(spec, tiny, ArtifactStore(tmp_path / "art"), torch.device("cpu"))
    with pytest.raises(CheckpointError, match=r"backbone 'mine'.*changed after the run was planned"):
        ws.run_cell(p, {}, lambda *a: None)


def test_registered_backbones_keep_their_keys():
    """The pretrain cell of a registered backbone is keyed exactly as before outside backbones existed."""
    from ribench.engine.plan import cell_key
    from ribench.models.pretrain import get_recipe

    spec = spec_with("mlp")
    p = next(c for c in plan(spec, ["t1"], SUITE_ID) if c.kind == "pretrain")
    config = {"suite": SUITE_ID, "backbone": "mlp", "recipe": "narrow", "recipe_version": get_recipe("narrow").version,
              "pretrain": spec.pretrain.model_dump()}
    assert p.key == cell_key("pretrain", "1", config, ())


# --- Hugging Face transformers ----------------------------------------------------------
@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=48, num_labels=3)
    net = transformers.ViTForImageClassification(config).eval()
    folder = tmp_path_factory.mktemp("hf") / "tiny-vit"
    net.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ViTImageProcessor", "do_normalize": True, "do_resize": True,
        "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3], "size": {"height": 16, "width": 16}}))
    return folder


def test_hf_folder_gives_the_same_logits_as_transformers(hf_folder, tmp_path):
    transformers = pytest.importorskip("transformers")
    reference = transformers.ViTForImageClassification.from_pretrained(hf_folder).eval()
    model = m0_of(spec_with({"source": f"hf:{hf_folder}"}))
    assert model.spec.size == 16 and model.spec.mean == (0.5, 0.4, 0.3) and model.spec.std == (0.2, 0.25, 0.3)
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 256, (4, 3, 16, 16), generator=g, dtype=torch.uint8)
    z = (x.float() / 255 - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    with torch.no_grad():
        out = reference(pixel_values=z)
        assert torch.allclose(model(x), out.logits, atol=1e-5)
        hidden = reference.vit(pixel_values=z).last_hidden_state[:, 0]
        assert torch.allclose(model.features(x), hidden, atol=1e-5)
    # the saved m0 rebuilds from its recorded config, without the folder
    back = load_model(save_model(model, tmp_path / "hf.safetensors"))
    with torch.no_grad():
        assert torch.equal(back(x), model(x))


def test_hf_key_follows_the_folder_content_and_errors(hf_folder, tmp_path):
    import shutil

    copy_dir = tmp_path / "copy"
    shutil.copytree(hf_folder, copy_dir)
    a = identity(parse_entry({"source": f"hf:{hf_folder}"}))
    assert identity(parse_entry({"source": f"hf:{copy_dir}"})) == a
    cfg = json.loads((copy_dir / "preprocessor_config.json").read_text())
    (copy_dir / "preprocessor_config.json").write_text(json.dumps({**cfg, "image_std": [0.5, 0.5, 0.5]}))
    assert identity(parse_entry({"source": f"hf:{copy_dir}"})) != a
    with pytest.raises(CheckpointError, match=r"Hugging Face model folder .*nowhere does not exist"):
        identity(parse_entry({"source": f"hf:{tmp_path / 'nowhere'}"}))
    with pytest.raises(CheckpointError, match=r"hub id .nobody/no-such-model. \(not in the local Hugging Face cache"):
        build(parse_entry({"source": "hf:nobody/no-such-model"}), 3)


def test_missing_extras_say_which_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ConfigError, match=r"needs 'transformers'.*pip install 'ribench\[hf\]'"):
        build(parse_entry({"source": f"hf:{tmp_path}"}), 3)
    with pytest.raises(ConfigError, match=r"needs 'timm'.*pip install 'ribench\[timm\]'"):
        build(parse_entry({"source": "timm:vit_tiny_patch16_224", "download": True}), 3)


# --- timm and presets -------------------------------------------------------------------
def test_timm_model_with_local_weights(tmp_path):
    timm = pytest.importorskip("timm", reason="timm is not importable here (it requires torchvision)")
    torch.manual_seed(0)
    kw = {"img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2, "num_classes": 3}
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, **kw).eval()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "t.safetensors"))
    model = m0_of(spec_with({"source": "timm:vit_tiny_patch16_224", "weights": str(tmp_path / "t.safetensors"),
                             "kwargs": kw, "input": {"size": 16, "channels": 3}}))
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(model(x), net((x.float() / 255 - 0.5) / 0.5), atol=1e-5)


def test_presets_are_imagenet_rib_backbones_usable_by_name(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", type(sys)("timm"))  # loading the spec checks that timm imports
    names = list_presets()
    assert {"vit_b16_in1k", "vit_b16_in21k", "vit_b16_laion2b", "vit_b16_openai"} <= set(names)
    for name, p in presets().items():
        kind, model_id = p["source"].split(":", 1)
        assert kind == "timm" and model_id.startswith("vit_base_patch16_") and p["hf_hub_id"] == f"timm/{model_id}"
        assert p["input"]["size"] == 224 and "get_model" in p["reference"]
    with pytest.raises(ConfigError, match=r"backbones\[0\]\.weights: a timm backbone needs a local `weights` file"):
        plan(spec_with("vit_b16_openai"), ["t1"], SUITE_ID)
    cells = plan(spec_with({"preset": "vit_b16_laion2b", "download": True, "reset_head": True}), ["t1"], SUITE_ID)
    p = next(c for c in cells if c.kind == "pretrain")
    assert p.labels == {"backbone": "vit_b16_laion2b", "recipe": "given"}
    assert p.config["given"]["source"] == "timm:vit_base_patch16_clip_224.laion2b_ft_in1k"
    assert p.config["given"]["input"]["mean"] == (0.48145466, 0.4578275, 0.40821073)
    with pytest.raises(ConfigError, match=r"backbones\[0\]\.preset: unknown backbone preset 'vit_b16_in22k'"):
        spec_with({"preset": "vit_b16_in22k"})


def test_cli_trust_checkpoint_flag_reaches_the_spec(tmp_path, monkeypatch):
    from ribench import cli

    (tmp_path / "s.toml").write_text('suite = "tiny"\nbackbones = ["mlp"]\nmethods = ["lp"]\n')
    seen = []
    monkeypatch.setattr(cli, "_execute", lambda spec, out, a, retry_failed: seen.append(spec) or 0)
    assert cli.main(["run", str(tmp_path / "s.toml"), "--trust-checkpoint"]) == 0
    assert cli.main(["run", str(tmp_path / "s.toml")]) == 0
    assert [s.trust_checkpoint for s in seen] == [True, False]


def test_wrap_module_in_python_and_rebuild_info(tmp_path):
    from ribench.core import InputSpec
    from ribench.models.external import wrap_module

    spec = InputSpec(channels=1, size=12, mean=(MEAN,), std=(STD,))
    net = raw_net(seed=6)
    reference = copy.deepcopy(net)
    model = wrap_module(net, spec, head="fc")
    x = images()
    with torch.no_grad():
        assert torch.allclose(model(x), reference(naive_preprocess(x)), atol=1e-6)
    path = save_model(model, tmp_path / "bare.safetensors")
    with pytest.raises(CheckpointError, match=r"bare\.safetensors records an outside backbone without a source"):
        load_model(path)
    model = wrap_module(copy.deepcopy(reference), spec, head="fc", rebuild_info={"source": SOURCE, "kwargs": {}})
    back = load_model(save_model(model, tmp_path / "full.safetensors"))
    with torch.no_grad():
        assert torch.equal(back(x), model(x))
