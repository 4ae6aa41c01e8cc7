"""Every benchmark script runs in its --smoke mode (so that none of them rots)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SMOKE = {
    "bench_step.py": ["--smoke", "--threads", "1"],
    "bench_exact.py": ["--smoke", "--threads", "1"],
    "mnist_paper.py": ["--smoke", "--threads", "1", "--no-progress"],
    "m2_semisupervised.py": ["--smoke", "--threads", "1"],
    "bench_mixed_enumeration.py": ["--smoke", "--threads", "1"],
    "bench_structured_paired.py": ["--smoke", "--threads", "1"],
    "bench_sf_baseline.py": ["--smoke", "--threads", "1"],
    "bench_estimators.py": ["--smoke", "--threads", "1", "--disarm-loop"],
}


def test_every_benchmark_is_listed():
    scripts = {p.name for p in BENCHMARKS.glob("*.py")}
    assert scripts == set(SMOKE), f"list new benchmark scripts in SMOKE: {scripts ^ set(SMOKE)}"


def _run(name: str, *extra: str) -> str:
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *SMOKE[name], *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.slow  # a subprocess: .ci/run runs it, make test-fast skips it
def test_bench_step_last_line_is_the_ratio():
    last = _run("bench_step.py").strip().splitlines()[-1]
    assert re.fullmatch(r"ours/handwritten = \d+\.\d+", last), last


@pytest.mark.slow  # a subprocess: .ci/run runs it, make test-fast skips it
def test_bench_estimators_times_every_registered_estimator():
    from pyro_dvae.infer import ESTIMATORS

    text = _run("bench_estimators.py")
    rows = [line.split("|") for line in text.splitlines() if line.startswith("| `")]
    assert sorted(r[1].strip(" `") for r in rows) == sorted([*ESTIMATORS, "disarm-loop"]), text
    assert all(float(r[3]) > 0 for r in rows), text
    reference = next(r for r in rows if r[1].strip(" `") == "gumbel-softmax")
    assert reference[4].strip() == "1.00", text


@pytest.fixture(scope="module")
def bench_exact_output() -> str:
    return _run("bench_exact.py")


@pytest.mark.slow  # a subprocess: .ci/run runs it, make test-fast skips it
@pytest.mark.parametrize("latent", ["2x4", "6b"])
def test_bench_exact_agrees_with_pyro(bench_exact_output, latent):
    text = bench_exact_output
    row = next(line for line in text.splitlines() if line.strip().startswith(latent))
    diff = float(row.split("|")[-1].split()[0])
    assert diff < 1e-4, row  # ours and Pyro's enumeration give the same log p(x)


@pytest.mark.slow  # a subprocess: .ci/run runs it, make test-fast skips it
@pytest.mark.parametrize("case", ["hmm-T10", "mix-K3-P20"])
def test_bench_exact_structured_rows(bench_exact_output, case):
    text = bench_exact_output
    row = next(line for line in text.splitlines() if line.strip().startswith(case + " "))
    cols = [c.strip() for c in row.split("|")]
    assert "failed" not in row, row  # both sides ran
    sum_diff = float(cols[4])
    ours_err, pyro_err = (float(v) for v in cols[5].split())
    assert sum_diff < 1e-3, row  # ours and Pyro's agree on the total
    assert ours_err < 1e-3 and pyro_err < 1e-3, row  # both match the float64 reference


@pytest.mark.slow  # a subprocess: .ci/run runs it, make test-fast skips it
def test_mnist_paper_smoke_writes_its_table(tmp_path):
    text = _run("mnist_paper.py", "--out", str(tmp_path), "--set", "kl_warmup=5")
    rows = [
        line
        for line in text.splitlines()
        if line.startswith("| cat-") or line.startswith("| bern-")
    ]
    assert len(rows) == 2, text
    assert all("[kl_warmup=5]" in row.split("|")[1] for row in rows), text  # says how it ran
    assert (tmp_path / "results.md").read_text().strip() == text.strip()


@pytest.mark.slow  # a subprocess: .ci/run runs it, make test-fast skips it
def test_m2_smoke_reports_every_estimator(tmp_path):
    out = tmp_path / "m2.json"
    text = _run("m2_semisupervised.py", "--epochs", "2", "--log-every", "1", "--json", str(out))
    rows = [line for line in text.splitlines() if line.startswith("| 10 |")]
    assert [r.split("|")[2].strip() for r in rows] == ["enumerate", "gumbel", "st"], text
    saved = json.loads(out.read_text())["rows"]
    assert [r["estimator"] for r in saved] == ["enumerate", "gumbel", "st"]
    for r in saved:  # one accuracy per epoch, the last equal to the table's
        assert [e for e, _ in r["accuracy_curve"]] == [1, 2]
        assert r["accuracy_curve"][-1][1] == r["test_accuracy"]


@pytest.mark.slow  # a subprocess: .ci/run runs it, make test-fast skips it
def test_m2_smoke_labels_only_baseline_has_no_speedup():
    text = _run("m2_semisupervised.py", "--epochs", "1", "--estimators", "enumerate", "labels-only")
    rows = {
        r.split("|")[2].strip(): r.split("|") for r in text.splitlines() if r.startswith("| 10 |")
    }
    assert set(rows) == {"enumerate", "labels-only"}, text
    assert rows["labels-only"][4].strip() == "-" and rows["enumerate"][4].strip() == "1.00x"


@pytest.mark.slow  # a subprocess: .ci/run runs it, make test-fast skips it
def test_mixed_enumeration_equals_trace_enum():
    text = _run("bench_mixed_enumeration.py")
    pairs = re.findall(r"loss ours (\S+)  pyro (\S+)", text)
    assert pairs and all(a == b for a, b in pairs), text  # same seed, same loss


@pytest.mark.slow  # a subprocess: .ci/run runs it, make test-fast skips it
def test_bench_structured_paired_agrees_with_pyro():
    out = _run("bench_structured_paired.py")
    rows = [line.split("|") for line in out.splitlines() if "|" in line]
    assert [r[0].strip() for r in rows[1:]] == ["hmm-T5", "mix-K3"]
    for row in rows[1:]:
        assert float(row[-1]) < 1e-2  # |sum of ours - Pyro's| in float32


@pytest.mark.slow  # a subprocess: .ci/run runs it, make test-fast skips it
def test_bench_sf_baseline_measures_both_averages():
    out = _run("bench_sf_baseline.py")
    rows = [line.split("|") for line in out.splitlines() if "|" in line][1:]
    assert {r[0].split()[0] for r in rows} == {"site", "position"}, out
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows), out
