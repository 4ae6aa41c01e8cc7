"""Every tutorial script runs in smoke mode (``CI=1``), prints its numbers and saves a figure.

The list below is the contract: a ``tutorials/*.py`` file that is not listed fails
:func:`test_every_tutorial_is_listed`, so a new tutorial cannot ship untested.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS_DIR = ROOT / "tutorials"

TUTORIALS = [
    "01_latent_variables.py",
    "02_prior_bound.py",
    "03_variational_posterior.py",
    "04_gradient_estimators.py",
    "05_gumbel_softmax.py",
    "06_train_categorical_vae.py",
    "07_enumeration_vs_gumbel.py",
    "08_posterior_analysis_arviz.py",
    "09_mixture_vae.py",
    "10_semisupervised_m2.py",
]


def test_every_tutorial_is_listed():
    found = sorted(p.name for p in TUTORIALS_DIR.glob("*.py"))
    unlisted = sorted(set(found) - set(TUTORIALS))
    missing = sorted(set(TUTORIALS) - set(found))
    assert not unlisted, f"tutorials not run by tests/test_tutorials.py: {unlisted}; add them"
    assert not missing, f"listed tutorials that do not exist: {missing}"


@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_structure(name):
    """A header docstring, ``smoke_test = "CI" in os.environ``, ``main(args)`` and argparse."""
    source = (TUTORIALS_DIR / name).read_text()
    tree = ast.parse(source)
    doc = ast.get_docstring(tree)
    assert doc and doc.startswith("Tutorial "), f"{name}: header docstring 'Tutorial N: ...'"
    assert 'smoke_test = "CI" in os.environ' in source
    mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    assert mains and len(mains[0].args.args) == 1, f"{name}: needs main(args)"
    assert "argparse.ArgumentParser" in source and '"--out"' in source


@pytest.mark.slow  # a subprocess: .ci/run runs it, make test-fast skips it
@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_smoke(name, tmp_path):
    env = dict(os.environ, CI="1", MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [sys.executable, str(TUTORIALS_DIR / name), "--out", str(tmp_path / "out")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    assert len(proc.stdout.splitlines()) >= 5, f"{name} printed too little:\n{proc.stdout}"
    figures = list((tmp_path / "out").rglob("*.png"))
    assert figures, f"{name} saved no figure under --out"
