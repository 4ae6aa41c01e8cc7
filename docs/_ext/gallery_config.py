"""Callables for ``sphinx_gallery_conf`` (named by string in ``docs/conf.py``, so that Sphinx can
cache the configuration): the command line each tutorial runs with at build time."""

from __future__ import annotations

import tempfile
from pathlib import Path


def reset_argv(gallery_conf: dict, script_vars: dict) -> list[str]:
    """``--out`` in a temporary folder: a tutorial's own ``--out`` copies of its figures stay out of
    the source tree (the pages get theirs from sphinx-gallery's matplotlib scraper)."""
    stem = Path(script_vars["src_file"]).stem
    return ["--out", str(Path(tempfile.gettempdir()) / "pyro_dvae-docs" / stem)]
