"""Fallback for ``sphinx-argparse``: an ``argparse`` directive that shows ``--help`` output.

Used by ``docs/conf.py`` when ``sphinxarg`` is not installed. It accepts the options the docs use
(``:module:``, ``:func:``, ``:prog:``) and renders the help of the parser and of every
sub-command as literal blocks, produced at build time from the real parser.
"""

from __future__ import annotations

import argparse
import importlib

from docutils import nodes
from docutils.parsers.rst import Directive, directives


def _help_texts(parser: argparse.ArgumentParser, prog: str) -> list[tuple[str, str]]:
    parser.prog = prog
    texts = [(prog, parser.format_help())]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                texts.extend(_help_texts(sub, f"{prog} {name}"))
    return texts


class ArgparseHelp(Directive):
    has_content = False
    option_spec = {
        "module": directives.unchanged_required,
        "func": directives.unchanged_required,
        "prog": directives.unchanged,
        "nodefault": directives.flag,
    }

    def run(self):
        module = importlib.import_module(self.options["module"])
        parser = getattr(module, self.options["func"])()
        prog = self.options.get("prog", parser.prog)
        out = []
        for name, text in _help_texts(parser, prog):
            section = nodes.rubric(text=name)
            out += [section, nodes.literal_block(text, text)]
        return out


def setup(app):
    app.add_directive("argparse", ArgparseHelp)
    return {"parallel_read_safe": True}
