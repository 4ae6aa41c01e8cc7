"""Latent-code statistics: entropy, usage, label/code joint and mutual information."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pyro_dvae.analysis.latent_stats import (
    as_categorical,
    code_label_joint,
    code_usage,
    mutual_information,
    posterior_entropy,
    posterior_probs,
)
from pyro_dvae.errors import DVAEInputError
from pyro_dvae.models import DiscreteVAE


def test_entropy_and_usage():
    probs = np.array([[[1.0, 0.0, 0.0]], [[1 / 3, 1 / 3, 1 / 3]]])
    np.testing.assert_allclose(posterior_entropy(probs), [[0.0], [math.log(3)]], atol=1e-12)
    np.testing.assert_allclose(code_usage(probs), [[2 / 3, 1 / 6, 1 / 6]])
    np.testing.assert_allclose(as_categorical(np.array([[0.2, 1.0]]))[0], [[0.8, 0.2], [0, 1]])
    with pytest.raises(DVAEInputError, match="must have shape"):
        as_categorical(np.zeros(3))


def test_mutual_information_of_codes_and_labels():
    labels = np.arange(40) % 4
    perfect = np.eye(4)[labels][:, None, :]  # group 0 is the label
    useless = np.full((40, 1, 4), 0.25)
    probs = np.concatenate([perfect, useless], axis=1)
    joint = code_label_joint(probs, labels)
    assert joint.shape == (2, 4, 4)
    np.testing.assert_allclose(joint.sum((1, 2)), 1.0)
    assert mutual_information(joint[0]) == pytest.approx(math.log(4))
    assert mutual_information(joint[1]) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(DVAEInputError, match="got 3 labels for 40"):
        code_label_joint(probs, [0, 1, 2])


def test_posterior_probs_of_a_discrete_vae():
    vae = DiscreteVAE(5, "3x4", encoder_hidden=(8,))
    x = torch.rand(7, 5)
    probs = posterior_probs(vae, x, batch_size=3)
    with torch.no_grad():
        expected = torch.softmax(vae.encode_logits(x), -1).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-6)
    bern = DiscreteVAE(5, "6b", encoder_hidden=(8,))
    assert posterior_probs(bern, x).shape == (7, 6)
