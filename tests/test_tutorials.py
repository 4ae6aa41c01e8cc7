"""Every tutorial script runs in smoke mode (``CI=1``), prints its numbers and saves a figure.

The list below is the contract: a ``tutorials/*.py`` file that is not listed fails
:func:`test_every_tutorial_is_listed`, so a new tutorial cannot ship untested.
"""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from pyro_dvae.utils.options import HelpFormatter

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


def _tutorial_parser(name: str) -> argparse.ArgumentParser:
    """The parser that ``parse_args`` of tutorial ``name`` builds, without running the tutorial:
    its ``parse_args`` (and the module-level constants it reads) run alone, with an
    ``ArgumentParser`` that records itself."""
    tree = ast.parse((TUTORIALS_DIR / name).read_text())
    keep = [
        node
        for node in tree.body
        if (isinstance(node, ast.FunctionDef) and node.name == "parse_args")
        or (
            isinstance(node, ast.Assign)
            and all(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets)
        )
    ]
    made: list[argparse.ArgumentParser] = []

    class Recording(argparse.ArgumentParser):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    recording = types.SimpleNamespace(**vars(argparse))
    recording.ArgumentParser = Recording
    namespace = {
        "argparse": recording,
        "sys": sys,
        "torch": torch,
        "smoke_test": False,
        "HelpFormatter": HelpFormatter,
    }
    exec(compile(ast.Module(body=keep, type_ignores=[]), name, "exec"), namespace)
    namespace["parse_args"]([])
    assert len(made) == 1, f"{name}: parse_args built {len(made)} parsers"
    return made[0]


@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_options_have_help(name):
    """``--help`` describes the tutorial and every option, with its default (issue 19)."""
    parser = _tutorial_parser(name)
    number = int(name.split("_")[0])
    assert parser.description and parser.description.startswith(f"Tutorial {number}: ")
    assert len(parser.description) > 60, f"{name}: describe the tutorial's topic"
    assert issubclass(parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter)
    options = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    assert options, f"{name}: no options"
    bare = [a.option_strings[0] for a in options if not (a.help and a.help.strip())]
    assert not bare, f"{name}: options without help: {bare}"
    text = parser.format_help()
    for action in options:  # a default is shown, by the formatter or in the help's own words
        if action.default is not None:
            entry = text.split(action.option_strings[0], 2)[-1]
            assert "default" in entry.split("\n  --")[0], (name, action.option_strings[0])


@pytest.mark.slow  # a subprocess per tutorial (imports torch, matplotlib): make test-fast skips it
@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_help_runs(name):
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1")
    env.pop("CI", None)
    proc = subprocess.run(
        [sys.executable, str(TUTORIALS_DIR / name), "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    parser = _tutorial_parser(name)
    text = " ".join(proc.stdout.split())
    assert " ".join(parser.description.split()) in text
    for action in parser._actions:
        assert " ".join(action.option_strings) in text or action.option_strings[0] in text
