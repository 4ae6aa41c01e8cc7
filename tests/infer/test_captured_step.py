"""``CapturedStep`` / ``TorchOptimSVI(capture=...)``: a replayed step equals the eager step on the
same random numbers, for every ELBO it supports, on user models in Pyro syntax; structure
changes (new shapes, new settings, new parameters, data-dependent control flow) are caught."""

from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_dvae import DiscreteVAE
from pyro_dvae.errors import DVAEInputError
from pyro_dvae.infer import (
    GumbelRaoELBO,
    GumbelSoftmaxELBO,
    ReinMaxELBO,
    ScoreFunctionELBO,
    TorchOptimSVI,
)
from pyro_dvae.infer.captured_step import supports_capture

pytestmark = pytest.mark.usefixtures("one_thread")

D, N, K = 12, 3, 4


class UserModel(torch.nn.Module):
    """A model as a user writes it: a one-hot code and a Bernoulli latent per datum, a global
    Normal scale, a nested pixel plate, plain pyro.distributions."""

    def __init__(self):
        super().__init__()
        self.dec = torch.nn.Linear(N * K + 1, D)
        self.enc = torch.nn.Linear(D, N * K + 1)

    def model(self, x):
        pyro.module("user", self)
        s = pyro.sample("s", dist.LogNormal(0.0, 0.3))
        with pyro.plate("data", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.OneHotCategorical(logits=torch.zeros(N, K)).to_event(1))
            b = pyro.sample("b", dist.Bernoulli(0.3 * torch.ones(1)).to_event(1))
            logits = self.dec(torch.cat([z.flatten(-2), b], -1)) * s
            with pyro.plate("pix", D, dim=-1):
                pyro.sample("x", dist.Bernoulli(logits=logits.unsqueeze(-2)), obs=x.unsqueeze(-2))

    def guide(self, x):
        pyro.module("user", self)
        loc = pyro.param("s_loc", torch.tensor(0.0))
        pyro.sample("s", dist.LogNormal(loc, 0.2))
        h = self.enc(x)
        with pyro.plate("data", x.shape[0], dim=-2):
            z_logits = h[:, : N * K].reshape(-1, 1, N, K)
            pyro.sample("z", dist.OneHotCategorical(logits=z_logits).to_event(1))
            pyro.sample("b", dist.Bernoulli(logits=h[:, N * K :].unsqueeze(-2)).to_event(1))


def data(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, D), 0.35), generator=g)


ELBOS = {
    "gumbel-relaxed": lambda: GumbelSoftmaxELBO(temperature=0.7, kl="relaxed", max_plate_nesting=2),
    "gumbel-analytic": lambda: GumbelSoftmaxELBO(temperature=0.7, max_plate_nesting=2),
    "st-gumbel": lambda: GumbelSoftmaxELBO(straight_through=True, max_plate_nesting=2),
    "gumbel-rao": lambda: GumbelRaoELBO(num_samples=3, max_plate_nesting=2),
    "reinmax": lambda: ReinMaxELBO(max_plate_nesting=2),
}


def trajectory(make_net, make_elbo, capture, batches, on_step=None):
    pyro.clear_param_store()
    torch.manual_seed(0)
    net = make_net()
    elbo = make_elbo()
    svi = TorchOptimSVI(
        net.model, net.guide, lambda ps: torch.optim.Adam(ps, lr=0.01), elbo, capture=capture
    )
    torch.manual_seed(1)
    losses = []
    for i, x in enumerate(batches):
        if on_step:
            on_step(i, elbo)
        losses.append(svi.step(x))
    params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    return losses, params, svi


def assert_same(a, b):
    """The same losses, bit for bit (the same operations on the same noise); parameters after
    several Adam steps to float32 rounding (gradient contributions of a parameter used by
    model and guide are summed in another order: ~1e-7 relative)."""
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        torch.testing.assert_close(a[1][k], b[1][k], rtol=1e-6, atol=1e-7, msg=k)


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
@pytest.mark.parametrize("name", sorted(ELBOS))
def test_replayed_steps_equal_eager_steps_on_a_user_model(name):
    batches = [data()] * 8
    eager = trajectory(UserModel, ELBOS[name], "off", batches)
    replayed = trajectory(UserModel, ELBOS[name], "on", batches)
    assert_same(eager, replayed)
    captured = replayed[2]._captured
    assert captured.num_graphs == 1 and captured.num_replays >= 5  # it did replay


def test_discrete_vae_and_trace_elbo():
    batches = [data(20)] * 6
    make_vae = lambda: DiscreteVAE(D, "3x4", encoder_hidden=(16,))  # noqa: E731
    for make_elbo in (lambda: GumbelSoftmaxELBO(temperature=0.5), Trace_ELBO):
        if make_elbo is Trace_ELBO:  # a continuous-latent user model under Pyro's own ELBO

            class Gauss(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.dec = torch.nn.Linear(2, D)

                def model(self, x):
                    pyro.module("g", self)
                    with pyro.plate("data", x.shape[0]):
                        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
                        pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)

                def guide(self, x):
                    loc = pyro.param("loc", torch.zeros(x.shape[0], 2))
                    with pyro.plate("data", x.shape[0]):
                        pyro.sample("z", dist.Normal(loc, 0.5).to_event(1))

            make_net = Gauss
        else:
            make_net = make_vae
        eager = trajectory(make_net, make_elbo, "off", batches)
        replayed = trajectory(make_net, make_elbo, "on", batches)
        assert_same(eager, replayed)
        assert replayed[2]._captured.num_replays >= 3


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_new_shapes_and_settings_are_captured_again_and_stay_exact():
    """A short last batch and a temperature schedule: keys change, results do not."""
    batches = [data(16, s) for s in range(5)] + [data(5, 9)] + [data(16, s) for s in range(5)]

    def anneal(i, elbo):
        elbo.temperature = 1.0 if i < 7 else 0.5

    eager = trajectory(UserModel, ELBOS["gumbel-analytic"], "off", batches, anneal)
    replayed = trajectory(UserModel, ELBOS["gumbel-analytic"], "on", batches, anneal)
    assert_same(eager, replayed)
    assert replayed[2]._captured.num_graphs == 2  # batch 16 at tau 1, then at tau 0.5


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_data_dependent_control_flow_is_caught_and_training_goes_on_eagerly():
    calls = []

    class Sneaky(UserModel):
        def model(self, x):
            calls.append(1)
            super().model(x)
            if len(calls) % 4 == 0:  # Python state the captured graph cannot see
                pyro.factor("extra", torch.tensor(-1.0) * self.dec.bias.sum())

    batches = [data()] * 10
    eager = trajectory(Sneaky, ELBOS["gumbel-analytic"], "off", batches)
    calls.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pyro.clear_param_store()
        torch.manual_seed(0)
        net = Sneaky()
        elbo = ELBOS["gumbel-analytic"]()
        svi = TorchOptimSVI(net.model, net.guide, lambda ps: torch.optim.Adam(ps, lr=0.01), elbo)
        svi._captured.check_every = 1
        torch.manual_seed(1)
        losses = [svi.step(x) for x in batches]
    assert any("step capture is off" in str(w.message) for w in caught)
    assert not svi._captured.enabled
    assert losses[:3] == eager[0][:3]  # exact until the model changed under the graph


def test_stateful_estimators_are_not_captured():
    assert not supports_capture(ScoreFunctionELBO())
    with pytest.raises(DVAEInputError, match="cannot be captured"):
        TorchOptimSVI(
            lambda x: None, lambda x: None, torch.optim.Adam, ScoreFunctionELBO(), capture="on"
        )
    with pytest.raises(DVAEInputError, match="capture must be one of"):
        TorchOptimSVI(lambda x: None, lambda x: None, torch.optim.Adam, Trace_ELBO(), capture="yes")
    auto = TorchOptimSVI(lambda x: None, lambda x: None, torch.optim.Adam, ScoreFunctionELBO())
    assert auto._captured is None


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
@pytest.mark.parametrize("capture", ["auto", "compiled"])
def test_a_resumed_run_takes_the_same_path_bit_for_bit(capture):
    """Replayed and eager steps agree only to rounding; the capture state in the optimizer's
    state dict makes a resumed run replay (or capture) where the uninterrupted one did, and
    with compiling, replay compiled code from its first step if the other run did."""
    batches = [data()] * 7

    def run(stop_at=None):
        pyro.clear_param_store()
        torch.manual_seed(0)
        net = UserModel()
        svi = TorchOptimSVI(
            net.model,
            net.guide,
            lambda ps: torch.optim.Adam(ps, lr=0.01),
            ELBOS["reinmax"](),
            capture=capture,
        )
        torch.manual_seed(1)
        for i, x in enumerate(batches):
            if i == stop_at:
                state = svi.state_dict()
                rng = torch.random.get_rng_state()
                net_state = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
                pyro.clear_param_store()
                net = UserModel()
                net.model(x)  # registers the parameters under the same names
                net.guide(x)
                store = pyro.get_param_store()
                with torch.no_grad():
                    for k, v in net_state.items():
                        store[k].unconstrained().copy_(v)
                svi = TorchOptimSVI(
                    net.model,
                    net.guide,
                    lambda ps: torch.optim.Adam(ps, lr=0.01),
                    ELBOS["reinmax"](),
                    capture=capture,
                )
                svi.load_state_dict(state)
                torch.random.set_rng_state(rng)
            svi.step(x)
        if capture == "compiled":
            assert svi._captured.num_compiled_replays >= 2
        return {k: v.detach().clone() for k, v in pyro.get_param_store().items()}

    straight = run()
    for stop_at in (2, 4):  # the step after the capture, a later step
        resumed = run(stop_at=stop_at)
        for k in straight:
            assert torch.equal(straight[k], resumed[k]), (stop_at, k)


def test_settings_that_change_every_other_step_fall_back_to_eager():
    """A temperature changed every 2 steps would be captured every other step: capture stops."""
    batches = [data()] * 16

    def flip(i, elbo):
        elbo.temperature = 0.5 + 0.01 * (i // 2)

    eager = trajectory(UserModel, ELBOS["gumbel-analytic"], "off", batches, flip)
    with pytest.warns(UserWarning, match="changes too often"):
        replayed = trajectory(UserModel, ELBOS["gumbel-analytic"], "on", batches, flip)
    assert not replayed[2]._captured.enabled
    assert replayed[2]._captured.num_graphs == 4
    assert eager[0][:2] == replayed[0][:2]


# ------------------------------------------------------------------ compiled replay ---------


def compiled_svi(elbo="gumbel-relaxed", capture="compiled"):
    pyro.clear_param_store()
    torch.manual_seed(0)
    net = UserModel()
    return TorchOptimSVI(
        net.model, net.guide, lambda ps: torch.optim.Adam(ps, lr=0.01), ELBOS[elbo](), capture
    )


@pytest.mark.slow  # compiles a graph with inductor (~10 s on a loaded 2-core machine)
def test_compiled_replay_matches_eager_and_draws_fresh_noise():
    """capture="compiled": the same training as eager steps to float32 rounding (inductor sums
    in another order), every replay after the capture compiled; two compiled replays draw
    different noise, and the same generator state gives the same numbers, bit for bit."""
    batches = [data()] * 8
    eager = trajectory(UserModel, ELBOS["gumbel-relaxed"], "off", batches)
    compiled = trajectory(UserModel, ELBOS["gumbel-relaxed"], "compiled", batches)
    captured = compiled[2]._captured
    assert captured.num_graphs == 1 and captured.num_compiled_replays == 5  # steps 4-8
    assert compiled[0][:3] == eager[0][:3]  # eager twice, then the capture: bit for bit
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-5, atol=0)
    for k in eager[1]:
        torch.testing.assert_close(compiled[1][k], eager[1][k], rtol=1e-5, atol=1e-6, msg=k)

    svi, x = compiled[2], batches[0]

    def loss_and_grads():
        loss = svi.compute_grads(x)
        grads = [p.grad.clone() for p in svi.parameters().values()]
        svi.zero_grad()
        return loss, grads

    state = torch.random.get_rng_state()
    first, second = loss_and_grads(), loss_and_grads()
    assert first[0] != second[0]  # fresh Gumbel noise each replay
    torch.random.set_rng_state(state)
    again = loss_and_grads()
    assert again[0] == first[0]
    assert all(torch.equal(a, b) for a, b in zip(again[1], first[1]))
    assert captured.num_compiled_replays == 8


def test_a_graph_that_fails_to_compile_is_replayed_uncompiled(monkeypatch):
    import torch._inductor.compile_fx as inductor

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler\nmore detail")

    monkeypatch.setattr(inductor, "compile_fx", broken)
    batches = [data()] * 6
    plain = trajectory(UserModel, ELBOS["gumbel-analytic"], "on", batches)
    with pytest.warns(UserWarning, match=r"compiled replay is off \(RuntimeError: no C\+\+ comp"):
        fallback = trajectory(UserModel, ELBOS["gumbel-analytic"], "compiled", batches)
    assert fallback[0] == plain[0]  # the plain replay, bit for bit
    captured = fallback[2]._captured
    assert captured.num_replays == 3 and captured.num_compiled_replays == 0  # steps 4-6
    assert captured.enabled and not captured.compile


def test_a_compiled_replay_that_disagrees_with_eager_is_dropped(monkeypatch):
    """The first compiled replay is checked against an eager step on the same noise; a
    difference beyond the compiled tolerances drops compiling (the eager result is used) and
    training goes on with the checked plain replay."""
    import torch._inductor.compile_fx as inductor

    def off_by_a_little(graph, example_inputs, **kwargs):
        def run(*tensors):
            outputs = graph(*tensors)
            return [outputs[0]] + [g * (1 + 1e-2) for g in outputs[1:]]

        return run

    monkeypatch.setattr(inductor, "compile_fx", off_by_a_little)
    batches = [data()] * 6
    eager = trajectory(UserModel, ELBOS["gumbel-analytic"], "off", batches)
    with pytest.warns(UserWarning, match="compiled step differed from the eager one"):
        dropped = trajectory(UserModel, ELBOS["gumbel-analytic"], "compiled", batches)
    assert_same(eager, dropped)
    captured = dropped[2]._captured
    assert captured.enabled and not captured.compile and captured.num_compiled_replays == 0
    assert captured.num_replays == 2  # steps 5-6 (step 4 was the rejected compiled one)


def test_compiled_mode_is_a_capture_mode():
    with pytest.raises(DVAEInputError, match="cannot be captured"):
        TorchOptimSVI(
            lambda x: None,
            lambda x: None,
            torch.optim.Adam,
            ScoreFunctionELBO(),
            capture="compiled",
        )
    assert compiled_svi()._captured.compile
    assert not compiled_svi(capture="auto")._captured.compile


def test_auto_compiles_only_long_steady_runs():
    """capture="auto" compiles when at least AUTO_COMPILE_STEPS steps share the graph's
    settings; the trainer counts the steps after the temperature and KL weight settle."""
    from pyro_dvae.infer.captured_step import AUTO_COMPILE_STEPS
    from pyro_dvae.training import TrainConfig
    from pyro_dvae.training.trainer import _make_schedule, _steady_steps

    def compiles(capture, steady_steps):
        net = UserModel()
        svi = TorchOptimSVI(
            net.model, net.guide, torch.optim.Adam, Trace_ELBO(), capture, steady_steps
        )
        return svi._captured is not None and svi._captured.compile

    assert compiles("auto", AUTO_COMPILE_STEPS)
    assert not compiles("auto", AUTO_COMPILE_STEPS - 1)
    assert not compiles("auto", None)
    assert not compiles("on", 10**6) and not compiles("off", 10**6)

    def steady(**kw):
        config = TrainConfig(**kw)
        return _steady_steps(config, _make_schedule(config), 60_000)

    assert steady() == 60_000  # MNIST, batch 100, 100 epochs: compiled under auto
    assert steady(epochs=10, kl_warmup=5000) == 1000
    # tau = 1 * exp(-3e-5 t) reaches 0.5 after 23,105 steps: updated at 24,000
    assert steady(schedule="exponential", anneal_rate=3e-5) == 36_000
