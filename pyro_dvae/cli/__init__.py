"""Command line interface: ``pyro-dvae train ...`` (see :func:`pyro_dvae.cli.main.main`)."""

from __future__ import annotations

from .main import build_parser, main

__all__ = ["build_parser", "main"]
