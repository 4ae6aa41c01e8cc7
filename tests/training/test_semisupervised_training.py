"""Semi-supervised training (M2 on a few labels): configuration, label draws, confusion matrix,
and a short run on the embedded digits that must beat a labels-only reference."""

from __future__ import annotations

import json

import pytest
import torch

from pyro_dvae.errors import DVAEInputError
from pyro_dvae.training import (
    SemiSupervisedConfig,
    confusion_matrix,
    pick_labelled,
    train_semisupervised,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # small models: single-threaded

SMALL = dict(hidden=(64,), z_dim=8, batch_size=100)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"labels": 15}, "multiple of the 10 classes"),
        ({"labels": 0}, "multiple of the 10 classes"),
        ({"estimator": "vimco"}, "estimator must be one of"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"lr": 0.0}, "lr and temperature must be > 0"),
        ({"label_shift": -1}, "label_shift must be >= 0"),
        ({"consistency_weight": -1.0}, "consistency_weight must be >= 0"),
        ({"classifier_dropout": 1.0}, "classifier_dropout in \\[0, 1\\)"),
        ({"labelled_weight": 0.0}, "labelled_weight must be > 0"),
        ({"lr_decay": 1.5}, "lr_decay must be in \\(0, 1\\]"),
        ({"consistency_threshold": 1.0}, "consistency_threshold must be in \\[0, 1\\)"),
        ({"intensities": True}, "pass dataset='mnist' or intensities=False"),
    ],
)
def test_bad_settings_give_one_line_errors(options, match):
    with pytest.raises(DVAEInputError, match=match) as info:
        SemiSupervisedConfig(**options).validate()
    assert "\n" not in str(info.value)


def test_pick_labelled_is_balanced_and_seeded():
    labels = torch.arange(10).repeat(20)[torch.randperm(200)]
    a = pick_labelled(labels, 3, seed=1)
    assert len(a) == 30 and len(set(a.tolist())) == 30
    assert torch.equal(labels[a].bincount(minlength=10), torch.full((10,), 3))
    assert torch.equal(a, pick_labelled(labels, 3, seed=1))
    assert not torch.equal(a, pick_labelled(labels, 3, seed=2))
    first = pick_labelled(labels, 1, seed=None)  # the first example of each class
    assert first.tolist() == [int(torch.nonzero(labels == c)[0]) for c in range(10)]
    with pytest.raises(DVAEInputError, match="fewer than the 21 labels per class"):
        pick_labelled(labels, 21, seed=0)


def test_confusion_matrix_counts_by_hand():
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    predicted = torch.tensor([0, 1, 1, 2, 0, 2])
    expected = [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert confusion_matrix(predicted, labels, 3).tolist() == expected


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
@pytest.mark.parametrize("estimator", ["enumerate", "gumbel-softmax"])
def test_short_run_learns_and_writes_its_outputs(tmp_path, estimator):
    """8 epochs on the digits with 10 labels per class: far above chance (10%), outputs written
    and consistent (the confusion matrix's diagonal gives the reported accuracy)."""
    cfg = SemiSupervisedConfig(labels=100, epochs=8, estimator=estimator, **SMALL)
    metrics = train_semisupervised(cfg, tmp_path, progress=False)
    assert metrics["test_accuracy"] > 0.5
    saved = json.loads((tmp_path / "metrics.json").read_text())
    matrix = torch.tensor(saved["confusion_matrix"])
    assert matrix.sum() == 200  # the digits test split
    assert saved["test_accuracy"] == pytest.approx(float(matrix.diagonal().sum()) / 200)
    assert saved["config"]["estimator"] == estimator
    rows = (tmp_path / "history.csv").read_text().splitlines()
    assert rows[0] == "epoch,train_loss,test_accuracy,seconds" and len(rows) == 9
    for name in ("accuracy.png", "confusion.png", "class_samples.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 1000
    assert (tmp_path / "model.pt").exists()


def test_recipe_options_reach_the_model_and_the_labelled_batches(monkeypatch):
    """batch norm, dropout, consistency (shift + adversarial) and the labelled ELBO weight are
    those of the configuration; labelled images are translated by at most label_shift."""
    import pyro_dvae.training.semisupervised as module

    seen = {}
    cfg = SemiSupervisedConfig(
        labels=20, hidden=(8,), z_dim=2, batch_size=50, labelled_weight=0.3,
        label_shift=1, consistency_weight=2.0, consistency_shift=1, adversarial_epsilon=0.5,
        batch_norm=True, classifier_dropout=0.1, consistency_threshold=0.9, epochs=2,
        lr=1e-3, lr_decay=0.5,
    )  # fmt: skip
    real_model = module._model

    def spy_model(config, data, classes):
        m2 = real_model(config, data, classes)
        real_step = module.TorchOptimSVI.step

        def step(self, x, y=None, scale=1.0):
            if self.optimizer is not None:
                seen["svi"].append(self.optimizer.param_groups[0]["lr"])
            if y is not None:
                seen.setdefault("labelled", []).append((x.clone(), scale))
            return real_step(self, x, y, scale=scale)

        monkeypatch.setattr(module.TorchOptimSVI, "step", step)
        seen["model"], seen["data"], seen["svi"] = m2, data, []
        return m2

    monkeypatch.setattr(module, "_model", spy_model)
    train_semisupervised(cfg, progress=False)
    m2, data = seen["model"], seen["data"]
    assert isinstance(m2.classifier[1], torch.nn.BatchNorm1d)
    assert m2.input_dropout.p == 0.1
    assert (m2.consistency_weight, m2.adversarial_epsilon) == (2.0, 0.5)
    assert m2.consistency_threshold == 0.9
    assert set(seen["svi"]) == {1e-3, 5e-4}  # epoch 2 at lr * lr_decay
    assert m2.augment.keywords == {"max_shift": 1, "image_shape": (8, 8)}
    x, scale = seen["labelled"][0]
    assert scale == 0.3
    # every labelled image is a training image translated by at most one pixel per axis
    padded = torch.nn.functional.pad(data.train.reshape(-1, 8, 8), (1, 1, 1, 1))
    shifts = {
        (dr, dc): padded[:, 1 - dr : 9 - dr, 1 - dc : 9 - dc].reshape(len(padded), 64)
        for dr in (-1, 0, 1)
        for dc in (-1, 0, 1)
    }
    moved = 0
    for image in x:
        found = [k for k, v in shifts.items() if bool((v == image).all(1).any())]
        assert found, "a labelled image that is no translation of a training image"
        moved += (0, 0) not in found
    assert moved > 0  # and the shift is applied


def test_shift_on_data_without_images_names_the_fix(monkeypatch):
    import pyro_dvae.training.semisupervised as module

    digits = module.load_dataset("digits")
    flat = type(digits)(
        "flat", digits.train, digits.valid, digits.test, digits.train_labels,
        digits.valid_labels, digits.test_labels,
    )  # fmt: skip
    monkeypatch.setattr(module, "load_dataset", lambda *a, **k: flat)
    with pytest.raises(DVAEInputError, match="has no image shape; pass label_shift=0"):
        train_semisupervised(SemiSupervisedConfig(label_shift=2, epochs=1), progress=False)
