"""Sphinx configuration for pyro_dvae.

Build with ``make docs`` (``sphinx-build -W -b html docs docs/_build/html``). Generated at build
time, so that they can never go stale:

* the tutorials gallery (``docs/tutorials/``, git-ignored): sphinx-gallery runs every
  ``tutorials/NN_*.py`` script cell by cell in smoke mode (``CI=1`` is set below unless
  ``PYRO_DVAE_DOCS_FULL=1``) and renders its text, code, printed output and figures as a page,
  with the script and a Jupyter notebook to download. Unchanged scripts are not rerun (their
  MD5 is stored beside the generated page); ``-D plot_gallery=0`` builds without running any;
* the command-line reference, from the argparse parser (``sphinx-argparse``).
* the API reference, a page per public module (``sphinx.ext.autosummary``, ``docs/api/generated/``,
  git-ignored; ``docs/api/index.rst`` lists the packages, their modules are found recursively).
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
# The tutorials run at build time in their smoke sizes (about two minutes for all of them on two
# cores); PYRO_DVAE_DOCS_FULL=1 runs them at full size (see the README for how long that takes).
if not os.environ.get("PYRO_DVAE_DOCS_FULL"):
    os.environ["CI"] = "1"

import pyro_dvae  # noqa: E402


def _modules_named_like_members() -> list[str]:
    """Public modules whose name is also a member their package exports (``pyro_dvae.infer.relax``
    the module vs ``relax`` the function): their pages are not indexed, the member is."""
    import importlib
    import pkgutil

    names = []
    for info in pkgutil.walk_packages(pyro_dvae.__path__, "pyro_dvae."):
        parent, _, leaf = info.name.rpartition(".")
        if not any(p.startswith("_") for p in info.name.split(".")):
            if leaf in getattr(importlib.import_module(parent), "__all__", ()):
                names.append(info.name)
    return names


project = "pyro_dvae"
author = "pyro_dvae developers"
copyright = "2026, pyro_dvae developers"
release = version = pyro_dvae.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
    "sphinxarg.ext",  # the command-line reference (docs/guide/cli.rst), from the parser
]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

templates_path = ["_templates"]
# The API reference: docs/api/index.rst lists pyro_dvae's packages; autosummary writes a page per
# public module below them at build time (docs/api/generated/, git-ignored), with the template
# _templates/autosummary/module.rst.
autosummary_generate = True
autosummary_context = {"no_index": _modules_named_like_members()}
exclude_patterns = ["_build"]
html_theme = "furo"
html_title = f"pyro_dvae {release}"
html_static_path = ["_static"]
html_css_files = ["tutorials.css"]  # a wider column for 100-column code and output
html_theme_options = {"light_css_variables": {"code-font-size": "75%"}}

sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "tutorials"),
    "gallery_dirs": "tutorials",  # docs/tutorials/: generated, git-ignored
    # run every numbered tutorial at build time (PYRO_DVAE_DOCS_RUN=/0[12]_ runs only those; the
    # others are then rendered without outputs)
    "filename_pattern": os.environ.get("PYRO_DVAE_DOCS_RUN", r"/\d\d_"),
    "within_subsection_order": "FileNameSortKey",
    "reset_argv": "gallery_config.reset_argv",  # --out in a temporary folder
    "download_all_examples": False,
    "remove_config_comments": True,
    "min_reported_time": 1,
    "abort_on_example_error": True,
    "show_signature": False,
    "capture_repr": (),  # the scripts print what they mean to show; no Figure reprs
}
