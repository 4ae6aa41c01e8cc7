"""Tests for BinaryDataset, validate_data and load_dataset."""

from __future__ import annotations

import pytest
import torch

from pyro_dvae.data import DATASET_NAMES, BinaryDataset, load_dataset, validate_data
from pyro_dvae.errors import DVAEInputError


def _toy(**overrides) -> BinaryDataset:
    x = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    kwargs = dict(name="toy", train=x, valid=x[:1], test=x[1:])
    kwargs.update(overrides)
    return BinaryDataset(**kwargs)


# ----------------------------------------------------------------------------- BinaryDataset


def test_dataset_properties():
    ds = _toy(train_labels=torch.tensor([0, 1, 2]), image_shape=(2, 2))
    assert ds.data_dim == 4
    assert (ds.num_train, ds.num_valid, ds.num_test) == (3, 1, 2)
    assert ds.true_model is None
    assert ds.true_test_log_likelihood is None


def test_dataset_to_returns_equal_copy():
    ds = _toy(train_labels=torch.tensor([0, 1, 2]), description="d")
    moved = ds.to("cpu")
    assert moved is not ds
    for split in ("train", "valid", "test", "train_labels"):
        assert torch.equal(getattr(moved, split), getattr(ds, split))
    assert moved.valid_labels is None
    assert moved.description == "d"
    assert moved.train.device.type == "cpu"


def test_dataset_rejects_mismatched_widths():
    with pytest.raises(DVAEInputError, match=r"different numbers of features \[3, 4\]"):
        _toy(test=torch.zeros(2, 3))


def test_dataset_rejects_non_2d_split():
    with pytest.raises(DVAEInputError, match=r"valid must be a 2-D tensor .* got \(4,\)"):
        _toy(valid=torch.zeros(4))


def test_dataset_rejects_wrong_label_count():
    with pytest.raises(DVAEInputError, match=r"train_labels has shape \(2,\) but train has 3 rows"):
        _toy(train_labels=torch.tensor([0, 1]))


def test_dataset_rejects_wrong_image_shape():
    with pytest.raises(DVAEInputError, match=r"image_shape \(3, 3\) has 9 pixels .* 4 features"):
        _toy(image_shape=(3, 3))


# ----------------------------------------------------------------------------- validate_data


def test_validate_accepts_binary_data():
    validate_data(torch.tensor([[0.0, 1.0], [1.0, 1.0]]), data_dim=2)
    validate_data(torch.tensor([[0, 1]]))  # integer 0/1 is fine too
    validate_data(torch.tensor([[True, False]]))


def test_validate_error_is_value_error():
    assert issubclass(DVAEInputError, ValueError)


@pytest.mark.parametrize("shape", [(5,), (2, 8, 8), ()])
def test_validate_rejects_non_2d(shape):
    x = torch.zeros(shape)
    with pytest.raises(DVAEInputError, match=r"must be a 2-D tensor \(num_data, num_features\)"):
        validate_data(x)


def test_validate_rejects_non_tensor():
    with pytest.raises(DVAEInputError, match=r"data must be a torch.Tensor, got list"):
        validate_data([[0.0, 1.0]])


def test_validate_rejects_empty():
    with pytest.raises(DVAEInputError, match=r"train is empty \(0 rows\)"):
        validate_data(torch.zeros(0, 4), name="train")


def test_validate_rejects_nan_and_inf():
    x = torch.zeros(3, 4)
    x[0, 0] = float("nan")
    x[1, 2] = float("nan")
    x[2, 3] = float("-inf")
    with pytest.raises(DVAEInputError, match=r"contains 2 NaN and 1 infinite value\(s\)"):
        validate_data(x)
    # also for the normal likelihood
    with pytest.raises(DVAEInputError, match="NaN"):
        validate_data(x, likelihood="normal")


def test_validate_rejects_non_binary_with_count_and_fix():
    x = torch.tensor([[0.0, 0.3, 1.0], [2.0, 1.0, 0.7]])
    with pytest.raises(DVAEInputError) as info:
        validate_data(x, name="test data")
    msg = str(info.value)
    assert "test data has 3 value(s) that are not 0 or 1" in msg
    assert "(x > 0.5).float()" in msg
    assert "\n" not in msg


def test_validate_non_bernoulli_skips_binary_check():
    validate_data(torch.tensor([[0.25, 3.0]]), likelihood="normal")


def test_validate_rejects_wrong_width():
    with pytest.raises(DVAEInputError) as info:
        validate_data(torch.zeros(2, 784), data_dim=64)
    assert str(info.value).startswith("model expects 64 features per datum, data has 784; ")


def test_validate_width_checked_before_values():
    with pytest.raises(DVAEInputError, match="model expects 3 features"):
        validate_data(torch.full((2, 5), 0.5), data_dim=3)


# ----------------------------------------------------------------------------- load_dataset


def test_load_dataset_unknown_name_lists_valid_names():
    with pytest.raises(DVAEInputError) as info:
        load_dataset("cifar10")
    msg = str(info.value)
    assert "unknown dataset 'cifar10'" in msg
    for name in DATASET_NAMES:
        assert name in msg


@pytest.mark.parametrize("data_dir", [None, ""])
def test_load_dataset_mnist_needs_data_dir(data_dir):
    with pytest.raises(DVAEInputError, match="--dataset mnist needs --data-dir DIR"):
        load_dataset("mnist", data_dir=data_dir)


def test_load_dataset_mnist_missing_dir(tmp_path):
    with pytest.raises(DVAEInputError, match="does not exist"):
        load_dataset("mnist", data_dir=tmp_path / "nope")


def test_load_dataset_digits_and_synthetic():
    digits = load_dataset(" Digits ")
    assert digits.name == "digits" and digits.data_dim == 64
    synth = load_dataset("synthetic", data_dir="/ignored")
    assert synth.name == "synthetic" and synth.true_model is not None
    assert synth.true_test_log_likelihood == pytest.approx(
        float(synth.true_model.log_likelihood(synth.test).mean())
    )
