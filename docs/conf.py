"""Sphinx configuration for pyro_dvae.

Build with ``make docs`` (``sphinx-build -W -b html docs docs/_build/html``). Two pages are
generated at build time, so that they can never go stale: the tutorials (from each script's
header docstring and source, ``_ext/tutorial_pages.py``) and the command-line reference (from
the argparse parser, with ``sphinx-argparse`` when it is installed, else a literal ``--help``
dump, ``_ext/cli_help.py``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS / "_ext"))
os.environ.setdefault("MPLBACKEND", "Agg")

import pyro_dvae  # noqa: E402

project = "pyro_dvae"
author = "pyro_dvae developers"
copyright = "2026, pyro_dvae developers"
release = version = pyro_dvae.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "tutorial_pages",
    "api_pages",
]
try:  # the CLI page uses the same directive either way (see _ext/cli_help.py)
    import sphinxarg.ext  # noqa: F401

    extensions.append("sphinxarg.ext")
except ImportError:
    extensions.append("cli_help")

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

templates_path: list[str] = []
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list[str] = []
html_theme_options = {"description": "Discrete-latent VAEs on Pyro", "fixed_sidebar": True}
