"""Written results: markdown table, CSV and JSON that parse, and readable PNG plots."""

from __future__ import annotations

import csv
import json

import matplotlib.image as mpimg

from pyro_dvae.comparison import (
    format_markdown,
    save_temperature_sweep,
    summarize,
    write_results,
)


def _main_table_rows(markdown: str) -> list[str]:
    """Rows of the first markdown table (after its header and separator)."""
    block = markdown.split("\n\n")[2].splitlines()
    assert block[0].startswith("| estimator |") and block[1].startswith("|---")
    return block[2:]


def test_write_results_files_parse(tiny_result, tmp_path):
    result = summarize(tiny_result)
    written = write_results(result, tmp_path)
    names = {p.name for p in written}
    assert names == {
        "results.md", "results.csv", "runs.csv", "curves.csv", "gradients.csv", "results.json",
        "learning_curves.png", "gradient_vs_temperature.png",
    }  # fmt: skip
    specs = [e["spec"] for e in result["estimators"]]
    rows = _main_table_rows((tmp_path / "results.md").read_text())
    assert [r.split("|")[1].strip().strip("`") for r in rows] == specs
    with open(tmp_path / "results.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    assert [r["estimator"] for r in summary] == specs
    assert all(float(r["test_nll_exact_mean"]) > 0 and r["runs"] == "2" for r in summary)
    with open(tmp_path / "runs.csv", newline="") as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == 6 and {r["seed"] for r in runs} == {"0", "1"}
    with open(tmp_path / "curves.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 6 * 4
    with open(tmp_path / "gradients.csv", newline="") as f:
        grads = list(csv.DictReader(f))
    assert {r["group"] for r in grads} == {"encoder", "decoder"}
    data = json.loads((tmp_path / "results.json").read_text())  # strict JSON: no NaN
    assert [e["spec"] for e in data["estimators"]] == specs
    assert data["target"]["value"] == result["target"]["value"]
    assert data["estimators"][1]["runs"][0]["curve"]["step"] == [2, 4, 6, 8]
    for name in ("learning_curves.png", "gradient_vs_temperature.png"):
        image = mpimg.imread(tmp_path / name)
        assert image.shape[0] > 400 and image.shape[1] > 800, name


def test_markdown_sections(tiny_result):
    text = format_markdown(summarize(tiny_result, target=30.0))
    assert text.startswith("# Estimator comparison")
    assert "exact test NLL <= 30.00 (given)" in text
    assert "## Gradient diagnostics" in text and "## Relaxed estimators" in text
    sweep = text.split("## Relaxed estimators")[1]
    assert "| `gumbel-softmax:tau=0.5` | 8 | 0.5 |" in sweep
    assert "| `gumbel-softmax:tau=0.5` | 8 | 2 |" in sweep


def test_no_temperature_plot_without_relaxed_estimators(tiny_result, tmp_path):
    result = summarize(tiny_result)
    result["estimators"] = [e for e in result["estimators"] if not e["relaxed"]]
    assert save_temperature_sweep(result, tmp_path / "sweep.png") is None
    assert not (tmp_path / "sweep.png").exists()
    assert "## Relaxed estimators" not in format_markdown(result)
