"""The ``api-package`` directive: a package's API page, with its submodules found at build time.

``.. api-package:: pyro_dvae.infer`` expands to the package's docstring and public members
(its ``__all__``), then one section per public submodule with that module's docstring. Members
are documented once, where the package exports them, so that cross-references such as
``pyro_dvae.infer.EnumeratedELBO`` resolve. A submodule whose name equals an exported member
(``pyro_dvae.infer.relax``, the module, vs ``relax``, the function) is not indexed.
"""

from __future__ import annotations

import importlib
import pkgutil

from docutils.parsers.rst import Directive
from docutils.statemachine import StringList


def public_submodules(package: str) -> list[str]:
    """Public (no leading underscore) modules below ``package``, sorted."""
    pkg = importlib.import_module(package)
    if not hasattr(pkg, "__path__"):
        return []
    names = []
    for info in pkgutil.walk_packages(pkg.__path__, package + "."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def package_rst(package: str) -> list[str]:
    pkg = importlib.import_module(package)
    exported = set(getattr(pkg, "__all__", ()))
    lines = [f".. automodule:: {package}", ""]
    for name in public_submodules(package):
        title = f"``{name}``"
        lines += [title, "-" * len(title), "", f".. automodule:: {name}", "   :no-members:"]
        if name.rsplit(".", 1)[-1] in exported:
            lines.append("   :no-index:")
        lines.append("")
    return lines


class ApiPackage(Directive):
    required_arguments = 1
    has_content = False

    def run(self):
        lines = package_rst(self.arguments[0])
        self.state_machine.insert_input(StringList(lines), source=f"api:{self.arguments[0]}")
        return []


def setup(app):
    app.add_directive("api-package", ApiPackage)
    return {"parallel_read_safe": True}
