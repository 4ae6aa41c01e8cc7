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


def test_every_public_package_is_in_the_api_index():
    """docs/api/index.rst lists each public package under pyro_dvae (autosummary, recursive: the
    modules below them are found at build time; the build test checks their pages)."""
    text = (DOCS / "api" / "index.rst").read_text()
    listed = set(re.findall(r"^   (\w+)$", text.split(".. autosummary::", 1)[1], re.M))
    top = {m.split(".")[1] for m in _public_modules() if m.count(".") >= 1}
    assert top <= listed, f"packages missing from docs/api/index.rst: {sorted(top - listed)}"


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
    # the API reference: a page per public module (or, for a module named like a member its package
    # exports, a section of its package's page)
    api = html / "api" / "generated"
    for name in _public_modules()[1:]:
        if not (api / f"{name}.html").is_file():
            package_page = (api / f"{name.rsplit('.', 1)[0]}.html").read_text()
            assert "Module <code" in package_page and name in package_page, f"no API page: {name}"
    # the sphinx-gallery pages: one per tutorial script, executed (figures), with downloads
    gallery = html / "tutorials"
    assert (gallery / "index.html").is_file()
    for script in sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py")):
        page = gallery / f"{script.stem}.html"
        assert page.is_file(), f"no page for {script.name}"
        text = page.read_text()
        assert f"sphx_glr_{script.stem}_001.png" in text, f"{script.name}: no figure on its page"
        assert f"{script.stem}.ipynb" in text and f"{script.stem}.py" in text
