"""No diverged model is stored as a result: training, pretraining, saving and evaluation
each refuse non-finite losses, weights and metrics with a TrainingError (or a
CheckpointError at save) naming the model and what is at fault."""

from __future__ import annotations

import signal

import pytest
import torch

from methods_helpers import make_ctx, tiny_model
from ribench.core import METHODS
from ribench.core.errors import CheckpointError, RibenchError, TrainingError
from ribench.core.types import Domain, Split
from ribench.evaluate import evaluate
from ribench.models import create_model, load_model, save_model
from ribench.models.pretrain import PretrainConfig, pretrain
from ribench.models.training import TrainConfig, train_classifier


def _poison(model, name: str, value: float) -> None:
    with torch.no_grad():
        dict(model.named_parameters())[name].view(-1)[0] = value


def test_pretraining_that_overflows_on_its_last_step_fails(tiny):
    # two steps (150 images, batch 128) at lr 1e9: the weights stay finite (~1e16) but the
    # final model's logits overflow; before, this m0 was "done" and failed later elsewhere
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=3)
    with pytest.raises(TrainingError, match=r"model 'mlp' diverged: the loss of the final weights on the last "
                                            r"batch is nan \(step 2 of 2\); lower the learning rate \(lr = 1e\+09\)"):
        pretrain(model, tiny, "narrow", PretrainConfig(epochs=1, lr=1e9), seed=0)


def test_weights_made_non_finite_by_the_last_step_fail_training(tiny):
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=3, width=8, depth=1)

    def nan_after_last_step(fraction: float, message: str) -> None:  # called right after the last step
        if fraction == 1.0:
            _poison(model, "body.1.weight", float("inf"))

    with pytest.raises(TrainingError, match=r"after the last step \(2 of 2\) parameter 'body\.1\.weight' holds "
                                            r"infinite values"):
        train_classifier(model, tiny.pretrain.train, TrainConfig(epochs=1), generator=torch.Generator(),
                         progress=nan_after_last_step)


def test_ft_at_an_absurd_learning_rate_fails_instead_of_storing_nan(tiny):
    method = METHODS.create("ft", lr=1e30, epochs=1)  # one step on the task's 48 training images
    with pytest.raises(TrainingError, match=r"training of model 'cnn' diverged"):
        method.adapt(tiny_model("cnn"), tiny.tasks["t1"], make_ctx(tiny))


def test_a_sane_run_still_trains_and_ends_in_eval_mode(tiny):
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=3, width=8, depth=1)
    before = [p.detach().clone() for p in model.parameters()]
    out = train_classifier(model, tiny.pretrain.train, TrainConfig(epochs=1), generator=torch.Generator())
    assert out is model and not model.training
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_training_on_an_empty_split_fails_instead_of_looping_forever():
    empty = Split(torch.zeros(0, 1, 12, 12, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))
    model = create_model("mlp", num_classes=3, width=8, depth=1)

    def stuck(signum, frame):
        raise AssertionError("train_classifier loops forever on an empty split")

    old = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(5)
    try:
        with pytest.raises(TrainingError, match="the training split is empty"):
            train_classifier(model, empty, TrainConfig(epochs=1), generator=torch.Generator())
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("value, kind", [(float("nan"), "NaN"), (float("-inf"), "infinite")])
def test_save_refuses_non_finite_weights_and_names_model_and_tensor(tmp_path, value, kind):
    model = create_model("mlp", num_classes=3, width=8, depth=1)
    _poison(model, "head.bias", value)
    path = tmp_path / "m.safetensors"
    with pytest.raises(CheckpointError, match=rf"refusing to save model 'mlp' to .*m\.safetensors: tensor "
                                              rf"'head\.bias' holds {kind} values"):
        save_model(model, path)
    assert not path.exists() and not list(tmp_path.iterdir())


def test_save_names_the_first_bad_tensor_in_state_dict_order(tmp_path):
    model = create_model("mlp", num_classes=3, width=8, depth=1)
    assert list(model.state_dict()) == ["head.weight", "head.bias", "body.1.weight", "body.1.bias"]
    _poison(model, "body.1.bias", float("nan"))
    _poison(model, "head.bias", float("nan"))
    with pytest.raises(CheckpointError, match=r"tensor 'head\.bias' holds NaN"):
        save_model(model, tmp_path / "m.safetensors")
    _poison(model, "head.bias", 0.0)
    _poison(model, "body.1.bias", 0.0)
    _poison(model, "head.weight", 1e30)  # large but finite: saved
    save_model(model, tmp_path / "m.safetensors")
    assert load_model(tmp_path / "m.safetensors").head.weight.view(-1)[0].item() == pytest.approx(1e30)


def test_a_nan_metric_fails_the_evaluation_naming_model_and_eval_set(tiny):
    model = create_model("mlp", num_classes=3, width=8, depth=1)
    sets = {"pre": tiny.pretrain, "t1": tiny.tasks["t1"]}
    ok = evaluate(model, sets)
    assert set(ok) == {"pre", "t1"}
    _poison(model, "head.bias", float("nan"))
    with pytest.raises(TrainingError, match=r"model 'mlp' gives a NaN ece on eval set 'pre' \(60 images\)"):
        evaluate(model, sets)
    assert issubclass(TrainingError, RibenchError)


def test_an_empty_eval_set_is_not_a_divergence():
    model = create_model("mlp", num_classes=3, width=8, depth=1)
    empty = Split(torch.zeros(0, 1, 12, 12, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))
    out = evaluate(model, {"none": Domain("none", empty, empty)})
    assert out["none"]["n"] == 0


def test_engine_records_the_diverged_adaptation_as_failed(tmp_path):
    from ribench.engine import run
    from ribench.engine.store import ResultsStore
    from test_engine import tiny_spec

    spec = tiny_spec(methods=[{"name": "ft", "params": {"epochs": 1, "lr": 1e30}}], tasks=["t1"],
                     analysis={"enabled": False})
    res = run(spec, tmp_path, quiet=True)
    assert not res.ok
    store = ResultsStore(tmp_path / "results.sqlite")
    failed = store.cells("failed")
    store.close()
    assert [(c["kind"], c["labels"]["method"]) for c in failed] == [("adapt", "ft")]
    assert "diverged" in failed[0]["error"]
