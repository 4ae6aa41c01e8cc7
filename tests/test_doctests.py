"""Every docstring example in the package runs and shows what it says (doctest)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pyro
import pytest

import pyro_dvae

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(pyro_dvae.__path__, prefix="pyro_dvae.")
    if not m.name.endswith("__main__")
)


def _examples():
    finder = doctest.DocTestFinder(exclude_empty=True)
    for name in MODULES:
        module = importlib.import_module(name)
        for test in finder.find(module, module=module):
            if test.examples:
                yield pytest.param(test, id=test.name)


@pytest.mark.parametrize("test", list(_examples()))
def test_docstring_example(test, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    pyro.clear_param_store()  # examples share parameter names such as "q"
    pyro.set_rng_seed(0)
    import torch

    test.globs.setdefault("torch", torch)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    result = runner.run(test, out=lambda text: print(text, end=""))
    assert result.failed == 0, (
        f"{result.failed} of {result.attempted} examples failed in {test.name}"
    )


def test_every_public_module_has_examples():
    """Examples are the documentation's contract: a public module without one is a gap."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    without = []
    for name in MODULES:
        if any(part.startswith("_") for part in name.split(".")) or name.endswith("__init__"):
            continue
        module = importlib.import_module(name)
        if hasattr(module, "__path__"):  # a package: it re-exports its modules' objects
            continue
        if not any(t.examples for t in finder.find(module, module=module)):
            without.append(name)
    assert not without, f"public modules without a docstring example: {without}"
