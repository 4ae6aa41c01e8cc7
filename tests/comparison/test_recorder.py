"""The training callback: curves, diagnostics, time budget, and no side effects on training."""

from __future__ import annotations

import pyro
import pytest
import torch

from pyro_dvae.comparison import RunRecorder, preserved_training_state
from pyro_dvae.data import load_dataset
from pyro_dvae.training import TrainConfig, train

CFG = dict(latent="2x3", encoder_hidden=(16,), iwae_samples=20, batch_size=50, max_steps=6)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_preserved_training_state_restores_rng_and_param_store():
    pyro.param("kept", torch.ones(2))
    pyro.param("replaced", torch.zeros(3))
    pyro.set_rng_seed(3)
    expected = torch.rand(2)
    pyro.set_rng_seed(3)
    kept = pyro.get_param_store()["kept"]
    with preserved_training_state(seed=99):
        torch.rand(5)
        with torch.no_grad():
            pyro.get_param_store()["kept"].unconstrained().add_(1.0)
        pyro.get_param_store()["replaced"] = torch.ones(4)  # new shape, new tensor
    assert torch.equal(torch.rand(2), expected)
    assert torch.equal(pyro.param("kept"), torch.ones(2)) and pyro.param("kept") is kept
    assert torch.equal(pyro.param("replaced"), torch.zeros(3))


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
@pytest.mark.parametrize("estimator", ["score-function-baseline", "nvil", "gumbel-softmax"])
def test_recording_does_not_change_training(estimator, digits):
    """Evaluations and extra loss_and_grads calls (which move Pyro's decaying-average
    baselines and draw random numbers) leave the trajectory exactly as without the recorder:
    the same losses, metrics and, bitwise, the same parameters and baselines at the end."""
    cfg = TrainConfig(estimator=estimator, **CFG)

    def final_state():
        return {name: p.detach().clone() for name, p in pyro.get_param_store().named_parameters()}

    plain = train(cfg, progress=False, dataset=digits)
    plain_state = final_state()
    rec = RunRecorder(
        digits.test,
        digits.train[:20],
        total_steps=6,
        eval_every=2,
        diag_steps=[3],
        diag_samples=3,
        temperatures=(0.5,),
        relaxed=estimator == "gumbel-softmax",
    )
    recorded = train(cfg, progress=False, dataset=digits, callback=rec.start())
    assert recorded["history"]["loss"] == plain["history"]["loss"]
    state = final_state()
    assert state.keys() == plain_state.keys()
    assert all(torch.equal(state[n], plain_state[n]) for n in state)
    if estimator == "score-function-baseline":
        assert any(n.startswith("__baseline_avg_downstream_cost_") for n in state)
    for key in ("test_nll_exact", "test_nelbo", "test_nll_iwae"):
        assert recorded[key] == plain[key], key
    assert rec.curve["step"] == [2, 4, 6] and rec.steps == 6 and not rec.stopped_by_time
    assert all(v is not None and v > 0 for v in rec.curve["nll_exact"] + rec.curve["nelbo"])
    assert rec.curve["seconds"] == sorted(rec.curve["seconds"])
    assert len(rec.step_seconds) == 6 and rec.harness_seconds > 0
    diag_steps = {row["step"] for row in rec.gradients}
    assert diag_steps == {3, 6}  # the checkpoint and the last step
    temps = {row["temperature"] for row in rec.gradients}
    assert temps == ({0.5, 1.0} if estimator == "gumbel-softmax" else {None})


def test_time_budget_stops_training(digits):
    rec = RunRecorder(digits.test, None, total_steps=6, eval_every=4, time_budget=1e-9)
    metrics = train(TrainConfig(**CFG), progress=False, dataset=digits, callback=rec.start())
    # the clock starts after step 1, so the budget is spent at step 2
    assert metrics["steps"] == 2 and rec.steps == 2 and rec.stopped_by_time
    assert rec.curve["step"] == [2] and rec.gradients == []


def test_curves_are_evaluated_in_eval_mode():
    """Learning curves are held-out numbers: dropout and encoder noise off, as in training's own
    evaluation (with dropout on, the recorder's -ELBO was that of a random sub-network)."""
    from pyro_dvae.models import DiscreteVAE
    from pyro_dvae.training.evaluation import evaluate_nelbo, evaluate_nll_exact

    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((60, 16), 0.3))
    model = DiscreteVAE(16, "2x3", encoder_hidden=(32,), dropout=0.5, encoder_noise=0.2)
    model.train()
    rec = RunRecorder(x, None, total_steps=1, eval_every=1, seed=4)
    rec(1, model, None)
    assert model.training  # the training mode is restored
    model.eval()
    assert rec.curve["nelbo"] == [evaluate_nelbo(model, x, seed=4 + 7)]
    assert rec.curve["nll_exact"] == [evaluate_nll_exact(model, x, max_configurations=2**20)]
