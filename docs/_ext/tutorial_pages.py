"""The ``tutorial-scripts`` directive: every ``tutorials/NN_*.py`` as a section of the page.

Each section is the script's header docstring (its first line is the title, the rest is parsed
as reStructuredText) followed by the script's source. Scripts are found at build time, so a new
tutorial appears in the documentation without editing any page, and nothing is written into
the source tree.
"""

from __future__ import annotations

import ast
from pathlib import Path

from docutils.parsers.rst import Directive
from docutils.statemachine import StringList

ROOT = Path(__file__).resolve().parents[2]


def tutorial_scripts(root: Path = ROOT) -> list[Path]:
    """The tutorial scripts, in order."""
    return sorted((root / "tutorials").glob("[0-9][0-9]_*.py"))


def tutorial_rst(script: Path, docs_dir: Path) -> list[str]:
    """reStructuredText lines of one tutorial's section."""
    doc = ast.get_docstring(ast.parse(script.read_text())) or script.stem
    title, _, body = doc.partition("\n")
    rel = "/" + script.relative_to(docs_dir.parent).as_posix()  # relative to the docs' root
    lines = [f".. _tutorial-{script.stem}:", "", title, "-" * len(title), ""]
    lines += body.strip().splitlines()
    lines += [
        "",
        ".. rubric:: Source",
        "",
        f".. literalinclude:: /..{rel}",
        "   :language: python",
        "   :linenos:",
        "",
    ]
    return lines


class TutorialScripts(Directive):
    has_content = False

    def run(self):
        env = self.state.document.settings.env
        docs_dir = Path(env.srcdir)
        lines = []
        for script in tutorial_scripts():
            env.note_dependency(str(script))
            lines += tutorial_rst(script, docs_dir)
        self.state_machine.insert_input(StringList(lines), source="tutorials/")
        return []


def setup(app):
    app.add_directive("tutorial-scripts", TutorialScripts)
    return {"parallel_read_safe": True}
