"""The Sphinx documentation builds with warnings as errors, and covers every public module."""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _public_modules() -> list[str]:
    import pyro_dvae

    names = ["pyro_dvae"]
    for info in pkgutil.walk_packages(pyro_dvae.__path__, "pyro_dvae."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        names.append(info.name)
    return sorted(names)


def test_every_public_module_has_an_api_page():
    """Each public module is under an ``api-package`` page (or has its own ``automodule``)."""
    covered = set()
    for page in (DOCS / "api").glob("*.rst"):
        text = page.read_text()
        covered |= set(re.findall(r"^\.\. (?:api-package|automodule):: (\S+)", text, re.M))
    missing = [
        m
        for m in _public_modules()
        if not any(m == c or m.startswith(c + ".") for c in covered - {"pyro_dvae"})
        and m not in covered
    ]
    assert not missing, f"public modules without a page in docs/api/*.rst: {missing}"


@pytest.mark.slow  # a subprocess: .ci/run runs it, make test-fast skips it
def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(tmp_path / "html"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"sphinx-build -W failed:\n{proc.stdout}\n{proc.stderr}"
    html = tmp_path / "html"
    assert (html / "index.html").is_file()
    # the command-line reference (sphinx-argparse): every sub-command and its options
    from pyro_dvae.cli.main import build_parser

    cli_page = (html / "guide" / "cli.html").read_text()
    for action in build_parser()._subparsers._group_actions:
        for name in action.choices:  # a section per sub-command, titled by its name
            assert re.search(rf"<h\d[^>]*>{name}<", cli_page), f"no section for {name!r}"
    # the sphinx-gallery pages: one per tutorial script, executed (figures), with downloads
    gallery = html / "tutorials"
    assert (gallery / "index.html").is_file()
    for script in sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py")):
        page = gallery / f"{script.stem}.html"
        assert page.is_file(), f"no page for {script.name}"
        text = page.read_text()
        assert f"sphx_glr_{script.stem}_001.png" in text, f"{script.name}: no figure on its page"
        assert f"{script.stem}.ipynb" in text and f"{script.stem}.py" in text
