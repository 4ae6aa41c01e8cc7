"""A training callback that records learning curves and gradient diagnostics of one run.

:class:`RunRecorder` is passed as ``callback`` to :func:`pyro_dvae.training.train`. After chosen
steps it evaluates the test set (exact NLL where the latent space can be enumerated, and the
discrete -ELBO; in eval mode, through :mod:`pyro_dvae.training.evaluation`) and, at a few
checkpoints, compares the run's own gradient estimator with the exact gradient
(:func:`~pyro_dvae.diagnostics.gradient_diagnostics`). Its own time is kept off the training
clock, and it leaves the training state (parameters, Pyro baselines, RNG streams) exactly as it
found it, so a recorded run trains exactly like an unrecorded one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pyro
import pyro.util
import torch

from ..diagnostics import gradient_diagnostics, preserved_param_store
from ..training.evaluation import evaluate_nelbo, evaluate_nll_exact

__all__ = ["RunRecorder", "preserved_training_state"]


@contextmanager
def preserved_training_state(seed: int | None = None) -> Iterator[None]:
    """Run a block (optionally under ``seed``) and restore the RNG streams and Pyro's param
    store afterwards (:func:`~pyro_dvae.diagnostics.preserved_param_store`: e.g. the moving
    averages of score-function baselines, which an extra ``loss_and_grads`` call would update).

    Example:
        >>> before = torch.rand(1); pyro.set_rng_seed(1); a = torch.rand(1)
        >>> pyro.set_rng_seed(1)
        >>> with preserved_training_state(seed=5):
        ...     _ = torch.rand(3)
        >>> bool(torch.rand(1) == a)
        True
    """
    rng = pyro.util.get_rng_state()
    with preserved_param_store():
        if seed is not None:
            pyro.set_rng_seed(seed)
        try:
            yield
        finally:
            pyro.util.set_rng_state(rng)


class RunRecorder:
    """Callback ``(step, model, elbo) -> stop`` recording one training run.

    :param x_eval: test data for the learning curves.
    :param x_diag: a fixed batch of training data for the gradient diagnostics (``None``: none).
    :param total_steps: the step budget (the last step is always evaluated and diagnosed).
    :param eval_every: evaluate the test set every this many steps.
    :param diag_steps: steps at which to run the gradient diagnostics.
    :param diag_samples: gradient estimates per diagnostic.
    :param temperatures: for relaxed estimators, also diagnose at these temperatures (at the
        last step only; the other checkpoints use the training temperature).
    :param exact: whether to compute the exact test NLL (the latent space is enumerable).
    :param time_budget: stop once the training clock passes this many seconds.
    :param seed: base seed of the evaluation and diagnostics RNG (training RNG is untouched).
    :param on_step: called once per step (e.g. a progress bar's ``update``).

    Attributes after training: ``curve`` (lists ``step``, ``seconds``, ``nll_exact``,
    ``nelbo``), ``gradients`` (one dict per step, temperature and parameter group),
    ``train_seconds`` (the training clock: from the end of step 1, the first step's one-time
    setup excluded, and without the recorder's own time), ``step_seconds`` (each step's
    duration) and ``steps``.

    Example:
        >>> from pyro_dvae.training import TrainConfig, train
        >>> cfg = TrainConfig(latent="2x3", max_steps=4, encoder_hidden=(8,), iwae_samples=5)
        >>> x = torch.bernoulli(torch.full((20, 64), 0.3))
        >>> rec = RunRecorder(x, x[:10], total_steps=4, eval_every=2, diag_steps=[4])
        >>> _ = train(cfg, progress=False, callback=rec.start())  # doctest: +SKIP
        >>> rec.curve["step"]  # doctest: +SKIP
        [2, 4]
    """

    def __init__(
        self,
        x_eval: torch.Tensor,
        x_diag: torch.Tensor | None,
        *,
        total_steps: int,
        eval_every: int,
        diag_steps: Sequence[int] = (),
        diag_samples: int = 20,
        temperatures: Sequence[float] = (),
        relaxed: bool = False,
        exact: bool = True,
        max_configurations: int = 2**20,
        time_budget: float | None = None,
        seed: int = 0,
        on_step: Any = None,
    ) -> None:
        self.x_eval = x_eval
        self.x_diag = x_diag
        self.total_steps = int(total_steps)
        self.eval_every = max(1, int(eval_every))
        self.diag_steps = set(int(s) for s in diag_steps)
        self.diag_samples = int(diag_samples)
        self.temperatures = tuple(float(t) for t in temperatures)
        self.relaxed = relaxed
        self.exact = exact
        self.max_configurations = max_configurations
        self.time_budget = time_budget
        self.seed = int(seed)
        self.on_step = on_step
        self.curve: dict[str, list] = {"step": [], "seconds": [], "nll_exact": [], "nelbo": []}
        self.gradients: list[dict[str, Any]] = []
        self.step_seconds: list[float] = []
        self.train_seconds = 0.0
        self.harness_seconds = 0.0
        self.steps = 0
        self.stopped_by_time = False
        self.start()

    def start(self) -> RunRecorder:
        """Reset the clocks (call right before :func:`~pyro_dvae.training.train`)."""
        self._t0 = self._last = time.perf_counter()
        self._first = True
        self.harness_seconds = 0.0
        return self

    def __call__(self, step: int, model: Any, elbo: Any) -> bool:
        now = time.perf_counter()
        self.step_seconds.append(now - self._last)
        if self._first:  # the clock starts after step 1, which pays one-time setup costs
            self._t0, self._first = now, False
        self.train_seconds = now - self._t0 - self.harness_seconds
        self.steps = step
        stop = self.time_budget is not None and self.train_seconds >= self.time_budget
        self.stopped_by_time = stop and step < self.total_steps
        last = stop or step >= self.total_steps
        if step % self.eval_every == 0 or last:
            self._evaluate(step, model)
        if self.x_diag is not None and (step in self.diag_steps or last):
            self._diagnose(step, model, elbo, sweep=last)
        if self.on_step is not None:
            self.on_step(step)
        self._last = time.perf_counter()
        self.harness_seconds += self._last - now
        return stop

    def _evaluate(self, step: int, model: Any) -> None:
        """Test -ELBO and exact NLL, in eval mode like every held-out number of the package."""
        with preserved_training_state():
            nelbo = evaluate_nelbo(model, self.x_eval, seed=self.seed + 7)
            nll = None
            if self.exact:
                nll = evaluate_nll_exact(
                    model, self.x_eval, max_configurations=self.max_configurations
                )
        self.curve["step"].append(step)
        self.curve["seconds"].append(round(self.train_seconds, 4))
        self.curve["nll_exact"].append(nll)
        self.curve["nelbo"].append(nelbo)

    def _diagnose(self, step: int, model: Any, elbo: Any, sweep: bool) -> None:
        own = float(elbo.temperature) if self.relaxed else None
        temps = sorted({*(self.temperatures if sweep else ()), own}) if self.relaxed else None
        with preserved_training_state(self.seed + 11 + step):
            out = gradient_diagnostics(
                elbo,
                model.model,
                model.guide,
                self.x_diag,
                num_samples=self.diag_samples,
                params=model,
                temperatures=temps,
                max_configurations=self.max_configurations,
            )
        by_temp = out if temps is not None else {None: out}
        for temperature, groups in by_temp.items():
            for group, d in groups.items():
                self.gradients.append(
                    {
                        "step": step,
                        "temperature": temperature,
                        "at_training_temperature": temperature == own,
                        "group": group,
                        "num_samples": d.num_samples,
                        "bias": d.bias,
                        "bias_se": d.bias_se,
                        "cosine": d.cosine,
                        "variance": d.variance,
                        "mse": d.mse,
                        "exact_norm": d.exact_norm,
                    }
                )
