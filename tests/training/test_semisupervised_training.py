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
