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
