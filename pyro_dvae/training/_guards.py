"""Non-finite detection: a training step that never applies a NaN/inf loss or gradient.

Example:
    >>> import torch
    >>> _non_finite_tensors({"w": torch.tensor([1.0, float("nan")])})
    "parameter 'w' holds 1 NaN and 0 infinite value(s)"
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pyro
import torch

from ..errors import NonFiniteLossError
from ..utils.checkpoint import fixed_seed
from ._config import TrainConfig
from ._state import LoopState

__all__: list[str] = []

_log = logging.getLogger("pyro_dvae.training")


def _pretty(name: str) -> str:
    return name.replace("$$$", ".")


def _non_finite_tensors(tensors: dict[str, torch.Tensor], what: str = "parameter") -> str | None:
    """``"parameter 'name' holds 1 NaN and 0 infinite value(s)"`` for the first bad one."""
    for name, t in tensors.items():
        if t is not None and not bool(torch.isfinite(t).all()):
            n_nan, n_inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
            return f"{what} '{_pretty(name)}' holds {n_nan} NaN and {n_inf} infinite value(s)"
    return None


def _non_finite_site(svi: Any, xb: torch.Tensor, seed: int) -> str | None:
    """Trace guide and model on ``xb`` and name the first site whose log-prob is not finite."""
    import pyro.poutine as poutine

    try:
        with torch.no_grad(), fixed_seed(seed), pyro.validation_enabled(False):
            guide_tr = poutine.trace(svi.guide).get_trace(xb)
            model_tr = poutine.trace(poutine.replay(svi.model, trace=guide_tr)).get_trace(xb)
            for role, tr in (("guide", guide_tr), ("model", model_tr)):
                for name, site in tr.nodes.items():
                    if site["type"] != "sample":
                        continue
                    lp = site["fn"].log_prob(site["value"])
                    if not bool(torch.isfinite(lp).all()):
                        value = lp[~torch.isfinite(lp)].reshape(-1)[0].item()
                        return f"the {role} log-prob of site '{name}' is {value}"
    except Exception:  # noqa: BLE001 - a diagnosis must never hide the original problem
        return None
    return None


def _guarded_step(
    svi: Any, xb: torch.Tensor, st: LoopState, config: TrainConfig, ckpt: Path | None
) -> float:
    """One SVI step that never applies a NaN/inf loss or gradient: stop, or skip if asked."""
    headline, detail, loss = None, None, math.nan
    try:
        # Validate distribution arguments and shapes on the first step only: after that the
        # checks cost time on every step and non-finite values are caught below.
        with pyro.validation_enabled(st.step == 0):
            loss = svi.compute_grads(xb)
    except ValueError as e:  # distribution validation rejects NaN parameters
        detail = (
            _non_finite_tensors(dict(pyro.get_param_store().named_parameters()))
            or _non_finite_tensors({"data batch": xb}, what="the")
            or _non_finite_site(svi, xb, config.seed)
        )
        if detail is None and "nan" not in str(e).lower():
            raise
        headline = "training became non-finite"
        detail = detail or " ".join(str(e).split())[:200]
    if headline is None and not math.isfinite(loss):
        headline = f"training loss became {loss}"
        detail = (
            _non_finite_tensors(svi.parameters())
            or _non_finite_tensors({"data batch": xb}, what="the")
            or _non_finite_site(svi, xb, config.seed)
            or "no parameter or site log-prob is non-finite on its own"
        )
    if headline is None:
        grads = [p.grad for p in svi.parameters().values() if p.grad is not None]
        if grads and not math.isfinite(float(torch.nn.utils.get_total_norm(grads))):
            detail = _non_finite_tensors(
                {n: p.grad for n, p in svi.parameters().items()}, what="the gradient of"
            )
            if detail is not None:
                headline = f"a gradient became non-finite (loss {loss:.6g})"
    if headline is None:
        svi.apply_grads()
        return loss
    svi.zero_grad()
    where = f"at step {st.step + 1} (epoch {st.epoch})"
    keep = f"; the last good checkpoint is kept in {ckpt}" if ckpt is not None else ""
    hint = (
        f"; lower lr={config.lr:g} or raise temperature={config.temperature:g} / "
        f"tau_min={config.tau_min:g}"
    )
    if _non_finite_tensors(svi.parameters()) is not None:
        raise NonFiniteLossError(
            f"{headline} {where}: {detail}{keep}; skipping updates cannot repair the "
            f"parameters{hint}"
        )
    if config.on_nan != "skip":
        raise NonFiniteLossError(
            f"{headline} {where}: {detail}{keep}{hint}, or pass on_nan='skip' to skip such updates"
        )
    st.skipped.append({"step": st.step + 1, "problem": f"{headline}: {detail}"})
    if len(st.skipped) > config.max_nan_skips:
        raise NonFiniteLossError(
            f"{headline} {where}: {detail}; that is {len(st.skipped)} skipped updates, more "
            f"than max_nan_skips={config.max_nan_skips}{keep}{hint}"
        )
    _log.warning("pyro-dvae: skipped the update %s: %s: %s", where, headline, detail)
    return loss
