import copy

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from torch.distributions import constraints

from pyro_dvae.errors import DVAEInputError
from pyro_dvae.infer import TorchOptimSVI


def model(x):
    loc = pyro.param("loc", torch.tensor([0.5, -0.5]))
    scale = pyro.param("scale", torch.tensor(2.0), constraint=constraints.positive)
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(loc, scale).to_event(1), obs=x)


def guide(x):
    pass


def test_matches_pyro_svi_with_pyro_adam():
    """Same trajectory as Pyro's SVI (one Adam per parameter): same Adam math, one optimizer."""
    x = torch.randn(20, 2) * 3 + 1
    pyro.clear_param_store()
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    ref = [svi.step(x) for _ in range(50)]
    ref_params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    pyro.clear_param_store()
    ours = TorchOptimSVI(model, guide, lambda ps: torch.optim.Adam(ps, lr=0.05), Trace_ELBO())
    got = [ours.step(x) for _ in range(50)]
    torch.testing.assert_close(torch.tensor(got), torch.tensor(ref), rtol=1e-5, atol=1e-5)
    for k, v in pyro.get_param_store().items():
        torch.testing.assert_close(v.detach(), ref_params[k], rtol=1e-5, atol=1e-6)
    assert "scale" in ref_params and bool(pyro.param("scale") > 0)


def test_parameters_created_later_join_the_optimizer():
    late = []

    def late_model(x):
        if late:
            pyro.param("late", torch.tensor(0.0))
        model(x)

    pyro.clear_param_store()
    svi = TorchOptimSVI(late_model, guide, lambda ps: torch.optim.SGD(ps, lr=0.1), Trace_ELBO())
    svi.step(torch.zeros(3, 2))
    assert len(svi.optimizer.param_groups) == 1
    late.append(True)
    svi.step(torch.zeros(3, 2))
    assert len(svi.optimizer.param_groups) == 2  # "late" was seen during the second step


def test_rejects_a_non_elbo_loss():
    with pytest.raises(DVAEInputError, match="Pyro ELBO"):
        TorchOptimSVI(model, guide, torch.optim.Adam, loss=lambda *a: 0.0)


def _vae_svi(elbo):
    from pyro_dvae.models import DiscreteVAE

    vae = DiscreteVAE(6, "2x3", encoder_hidden=(5,))
    return vae, TorchOptimSVI(vae.model, vae.guide, lambda ps: torch.optim.Adam(ps, lr=0.01), elbo)


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_state_dict_round_trip_continues_exactly():
    """Save after 3 steps, rebuild everything, load: the next steps equal an uninterrupted run."""
    from pyro_dvae.infer import GumbelSoftmaxELBO

    x = torch.bernoulli(torch.full((8, 6), 0.4), generator=torch.Generator().manual_seed(0))
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    vae, svi = _vae_svi(GumbelSoftmaxELBO(0.5))
    for _ in range(3):
        svi.step(x)
    state, weights = copy.deepcopy(svi.state_dict()), copy.deepcopy(vae.state_dict())
    rng = torch.get_rng_state()
    assert state["param_names"] == [[f"discrete_vae$$${n}" for n, _ in vae.named_parameters()]]
    expected = [svi.step(x) for _ in range(3)]

    pyro.clear_param_store()
    vae, svi = _vae_svi(GumbelSoftmaxELBO(0.5))
    vae.load_state_dict(weights)
    pyro.module("discrete_vae", vae)
    svi.load_state_dict(state)
    torch.set_rng_state(rng)
    assert [svi.step(x) for _ in range(3)] == expected  # bitwise


def test_load_state_dict_needs_the_parameters_registered():
    from pyro_dvae.infer import GumbelSoftmaxELBO

    pyro.clear_param_store()
    _, svi = _vae_svi(GumbelSoftmaxELBO(0.5))
    svi.step(torch.zeros(4, 6))
    state = svi.state_dict()
    pyro.clear_param_store()
    _, fresh = _vae_svi(GumbelSoftmaxELBO(0.5))
    with pytest.raises(DVAEInputError, match="not in Pyro's param store"):
        fresh.load_state_dict(state)
    with pytest.raises(DVAEInputError, match="param_names"):
        fresh.load_state_dict({"state": {}})


def test_replaced_param_values_do_not_grow_the_optimizer():
    """Pyro's decaying-average baselines replace their param each step: follow, don't add."""
    from pyro_dvae.infer import ScoreFunctionELBO

    pyro.clear_param_store()
    _, svi = _vae_svi(ScoreFunctionELBO(baseline="decaying_average"))
    for _ in range(5):
        svi.step(torch.zeros(4, 6))
    assert len(svi.optimizer.param_groups) == 1
    n_params = sum(len(g["params"]) for g in svi.optimizer.param_groups)
    assert n_params == len(svi.parameters())
