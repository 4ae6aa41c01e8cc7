"""Write a summarized comparison: ``results.md``, CSV files, ``results.json`` and PNG plots.

Files written by :func:`write_results`:

- ``results.md``: the tables (one row per estimator; gradient diagnostics; temperature sweep);
- ``results.csv``: one row per estimator, ``<metric>_mean`` / ``<metric>_sd`` columns;
- ``runs.csv``, ``curves.csv``, ``gradients.csv``: every run, evaluation and diagnostic;
- ``results.json``: everything (settings, runs, curves, diagnostics, summaries), NaN as null;
- ``learning_curves.png`` and, with relaxed estimators, ``gradient_vs_temperature.png``.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from ..utils.files import run_lock, write_json, write_text
from .summary import SCALAR_METRICS

__all__ = ["format_markdown", "write_results"]

_RUN_FIELDS = ("spec", "seed", *SCALAR_METRICS, "valid_nelbo", "stopped_by_time", "harness_seconds")
_GRAD_FIELDS = (
    "spec", "seed", "step", "temperature", "at_training_temperature", "group", "num_samples",
    "bias", "bias_se", "cosine", "variance", "mse", "exact_norm",
)  # fmt: skip
_GROUPS = ("encoder", "decoder")


def _fmt(stats: dict[str, Any], digits: int = 2) -> str:
    if stats["mean"] is None:
        return "—"
    text = f"{stats['mean']:.{digits}f}"
    return text if stats["sd"] is None else f"{text} ± {stats['sd']:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _by_group(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, dict]]:
    out: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        out.setdefault((row["step"], row["temperature"]), {})[row["group"]] = row
    return out


def _grad_cells(groups: dict[str, dict], keys: tuple[str, ...]) -> list[str]:
    cells = []
    for group in _GROUPS:
        row = groups.get(group)
        cells += ["—" if row is None else _fmt(row[key], 2) for key in keys]
    return cells


def format_markdown(result: dict[str, Any]) -> str:
    """The markdown report of a summarized comparison (see :func:`~.summarize`).

    Example:
        >>> text = format_markdown(result)  # doctest: +SKIP
        >>> text.startswith("# Estimator comparison")  # doctest: +SKIP
        True
    """
    lines = _header_lines(result) + [""] + _results_lines(result)
    lines += _gradient_lines(result) + _sweep_lines(result)
    return "\n".join(lines) + "\n"


def _header_lines(result: dict[str, Any]) -> list[str]:
    """Title and the bullet list saying what was compared and how."""
    cfg, data, target = result["config"], result["dataset"], result["target"]
    base = cfg["base"]
    budget = f"{cfg['steps']} steps per run"
    if cfg["time_budget"] is not None:
        budget += f" or {cfg['time_budget']:g} s of training, whichever comes first"
    metric_name = "exact test NLL" if data["exact_feasible"] else "test -ELBO"
    how = "median of the estimators' final means" if target["auto"] else "given"
    lines = [
        "# Estimator comparison",
        "",
        f"- data: {data['name']}, {data['num_train']} train / {data['num_test']} test points "
        f"({data['data_dim']} dims); latent {data['latent']} "
        f"({data['num_configurations']:,} configurations)",
        f"- budget: {budget} (batch {base['batch_size']}, Adam lr {base['lr']:g}, encoder "
        f"{list(base['encoder_hidden'])}); seeds {', '.join(map(str, cfg['seeds']))}",
        "- mean ± SD over seeds, nats per datum, lower is better. NLL (exact): log p(x) summed "
        f"over every code; -ELBO: discrete, 10 hard samples; IWAE: {base['iwae_samples']} samples",
        f"- target: {metric_name} <= {target['value']:.2f} ({how}); steps and seconds to reach "
        f"it are read off learning curves evaluated every {result['eval_every']} steps "
        f"(training clock; the harness's evaluation time excluded), mean over runs that reached it",
    ]
    collapse = result.get("collapse") or {}
    if collapse.get("stuck"):
        lines.append(
            f"- note: no estimator ended meaningfully below {collapse['nll']:.2f}, the test NLL of "
            "independent pixel frequencies (a model that ignores z; where a collapsed posterior "
            "sits): the budget left every estimator at the collapsed start, so the table cannot "
            "rank them and reaching the target means nothing; raise --steps"
        )
    return lines


def _results_lines(result: dict[str, Any]) -> list[str]:
    """The main table: final metrics, step time and the target, one row per estimator."""
    exact = result["dataset"]["exact_feasible"]
    rows = []
    for est in result["estimators"]:
        s = est["summary"]
        rows.append(
            [
                f"`{est['spec']}`",
                _fmt(s["test_nll_exact"]) if exact else "n/a",
                _fmt(s["test_nelbo"]),
                _fmt(s["test_nll_iwae"]),
                _fmt(s["ms_per_step"], 1),
                _fmt(s["steps_to_target"], 0),
                _fmt(s["seconds_to_target"], 2),
                f"{s['reached']}/{s['runs']}",
            ]
        )
    header = ["estimator", "test NLL (exact)", "test -ELBO", "test NLL (IWAE)", "ms/step"]
    return _table(header + ["steps to target", "s to target", "reached"], rows)


def _gradient_lines(result: dict[str, Any]) -> list[str]:
    """The gradient diagnostics section (empty when none were recorded)."""
    grad_rows = []
    for est in result["estimators"]:
        for (step, _), groups in _by_group(est["gradients"]).items():
            grad_rows.append(
                [f"`{est['spec']}`", str(step)]
                + _grad_cells(groups, ("cosine", "rel_bias", "bias_noise", "rel_sd"))
            )
    if not grad_rows:
        return []
    cols = ["cosine", "rel. bias", "bias/noise", "rel. SD"]
    lines = [
        "",
        "## Gradient diagnostics",
        "",
        "Each estimator's gradient of the loss on a fixed batch of training points, against "
        "the exact gradient of the discrete ELBO (enumeration), per parameter group. rel. "
        "bias = ||mean estimate - exact|| / ||exact||; bias/noise = that error over its "
        "Monte Carlo standard error (about 1 when unbiased); rel. SD = sqrt(trace Cov) / "
        "||exact|| for one estimate. By design, `exact` gives the decoder the gradient of "
        "log p(x) (its guide gets the exact ELBO gradient) and `vimco` follows a "
        "multi-sample bound, so they differ from the ELBO gradient.",
        "",
    ]
    enc = [f"enc. {c}" for c in cols]
    return lines + _table(["estimator", "step", *enc, *(f"dec. {c}" for c in cols)], grad_rows)


def _sweep_lines(result: dict[str, Any]) -> list[str]:
    """The temperature sweep of the relaxed estimators at the last checkpoint (or nothing)."""
    sweep_rows = []
    for est in result["estimators"]:
        by_step = _by_group(est["temperature_sweep"])
        if not by_step:
            continue
        last = max(step for step, _ in by_step)
        for (step, temperature), groups in by_step.items():
            if step == last:
                cells = _grad_cells(groups, ("rel_bias", "rel_sd"))
                sweep_rows.append([f"`{est['spec']}`", str(step), f"{temperature:g}", *cells])
    if not sweep_rows:
        return []
    lines = [
        "",
        "## Relaxed estimators: gradient bias and spread against temperature",
        "",
        "The trained model at the last checkpoint, the same estimator at other temperatures.",
        "",
    ]
    header = ["estimator", "step", "tau", "enc. rel. bias", "enc. rel. SD"]
    return lines + _table(header + ["dec. rel. bias", "dec. rel. SD"], sweep_rows)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _write_csv(path: Path, fields: tuple[str, ...] | list[str], rows: list[dict]) -> None:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in fields})
    write_text(path, buf.getvalue(), what="comparison table")


def write_results(result: dict[str, Any], out_dir: str | Path, plots: bool = True) -> list[Path]:
    """Write every file of a summarized comparison into ``out_dir``; returns their paths.

    Each file is written atomically, under the lock of ``out_dir``
    (:func:`~pyro_dvae.utils.files.run_lock`: another process writing there is refused).

    Example:
        >>> paths = write_results(summarize(run_comparison(...)), "runs/compare")  # doctest: +SKIP
    """
    out = Path(out_dir)
    with run_lock(out, create=True):
        return _write_results(result, out, plots)


def _write_results(result: dict[str, Any], out: Path, plots: bool) -> list[Path]:
    written = [out / "results.md", out / "results.csv", out / "runs.csv"]
    written += [out / "curves.csv", out / "gradients.csv", out / "results.json"]
    write_text(written[0], format_markdown(result), what="comparison report")
    summary_fields = ["estimator", "runs", "reached"]
    summary_fields += [f"{m}_{stat}" for m in SCALAR_METRICS for stat in ("mean", "sd")]
    summary_rows, run_rows, curve_rows, grad_rows = [], [], [], []
    for est in result["estimators"]:
        s = est["summary"]
        row = {"estimator": est["spec"], "runs": s["runs"], "reached": s["reached"]}
        for m in SCALAR_METRICS:
            row[f"{m}_mean"], row[f"{m}_sd"] = s[m]["mean"], s[m]["sd"]
        summary_rows.append(row)
        for run in est["runs"]:
            run_rows.append({"spec": est["spec"], **run})
            curve = run["curve"]
            for i, step in enumerate(curve["step"]):
                values = {key: curve[key][i] for key in curve}
                curve_rows.append(
                    {"spec": est["spec"], "seed": run["seed"], **values, "step": step}
                )
            grad_rows += [{"spec": est["spec"], "seed": run["seed"], **g} for g in run["gradients"]]
    _write_csv(written[1], summary_fields, summary_rows)
    _write_csv(written[2], _RUN_FIELDS, run_rows)
    _write_csv(written[3], ("spec", "seed", "step", "seconds", "nll_exact", "nelbo"), curve_rows)
    _write_csv(written[4], _GRAD_FIELDS, grad_rows)
    write_json(written[5], _clean(result), what="comparison results", indent=1, allow_nan=False)
    if plots:
        from .plotting import save_learning_curves, save_temperature_sweep

        written.append(save_learning_curves(result, out / "learning_curves.png"))
        sweep = save_temperature_sweep(result, out / "gradient_vs_temperature.png")
        if sweep is not None:
            written.append(sweep)
    return written
