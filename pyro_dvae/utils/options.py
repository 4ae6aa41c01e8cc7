"""Options declared once: dataclass field metadata that becomes command-line flags.

A configuration dataclass (:class:`~pyro_dvae.training.TrainConfig`,
:class:`~pyro_dvae.comparison.CompareConfig`) declares each option once, as a field whose
``metadata=option(...)`` holds its help, choices and flag. :func:`add_options` turns those fields
into argparse arguments, :func:`from_args` builds the dataclass back from the parsed arguments,
and :func:`to_flags` rewrites a library error message that names options in API terms
(``lr=1e-3``) in command-line terms (``--lr 1e-3``).

Example:
    >>> import argparse
    >>> from dataclasses import dataclass, field
    >>> @dataclass
    ... class Config:
    ...     lr: float = field(default=1e-3, metadata=option("learning rate"))
    ...     num_particles: int = field(default=1, metadata=option(flag="--particles"))
    >>> parser = argparse.ArgumentParser()
    >>> _ = add_options(parser, Config)
    >>> from_args(Config, parser.parse_args(["--particles", "3"]))
    Config(lr=0.001, num_particles=3)
    >>> to_flags("pass e.g. num_particles=2 or lr=1e-3", Config)
    'pass e.g. --particles 2 or --lr 1e-3'
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields, replace
from typing import Any

from ..errors import DVAEInputError

__all__ = [
    "HelpFormatter",
    "Option",
    "add_options",
    "comma_list",
    "flag_names",
    "from_args",
    "hidden_sizes",
    "option",
    "positive_int",
    "require_positive_int",
    "to_flags",
]

_KEY = "pyro_dvae.option"


@dataclass(frozen=True)
class Option:
    """How a configuration field appears on the command line (see :func:`option`)."""

    help: str | None = None
    flag: str | None = None
    type: Callable[[str], Any] | None = None
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None
    metavar: str | None = None
    group: str | None = None
    cli: bool = True


def option(
    help: str | None = None,  # noqa: A002 - argparse's name
    *,
    flag: str | None = None,
    type: Callable[[str], Any] | None = None,  # noqa: A002
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None,
    metavar: str | None = None,
    group: str | None = None,
    cli: bool = True,
) -> dict[str, Option]:
    """Field metadata declaring a command-line option (``field(default=..., metadata=option())``).

    ``flag`` defaults to ``--`` plus the field name with dashes; ``type`` to the type of the
    default; ``choices`` may be a callable (read when the parser is built); ``group`` names the
    argparse argument group; ``cli=False`` keeps the field off the command line.

    Example:
        >>> option("Adam learning rate")[_KEY].help
        'Adam learning rate'
    """
    return {_KEY: Option(help, flag, type, choices, metavar, group, cli)}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that ends with ``(default: X)`` once: not where the help text states its default
    itself (``default: ...``), nor for flags without a value or ``None`` defaults; a tuple
    default is written as typed (``256,128``).

    Example:
        >>> p = argparse.ArgumentParser(prog="p", formatter_class=HelpFormatter)
        >>> _ = p.add_argument("--hidden", default=(256, 128), help="widths")
        >>> _ = p.add_argument("--out", default=None, help="directory (default: runs/<time>)")
        >>> " ".join(p.format_help().split()[-8:])
        'widths (default: 256,128) --out OUT directory (default: runs/<time>)'
        >>> _ = p.add_argument("--dims", nargs="+", type=int, default=[1, 10], help="sizes")
        >>> p.format_help().split("sizes")[-1].split()
        ['(default:', '1', '10)']
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            not text
            or re.search(r"\bdefault\b", text, re.IGNORECASE)
            or action.nargs == 0
            or default is None
            or default is argparse.SUPPRESS
            or not (action.option_strings or action.nargs in (argparse.OPTIONAL, "*"))
        ):
            return action.help
        if isinstance(default, tuple | list):  # as typed: 256,128, or 1 10 100 for nargs="+"
            sep = " " if action.nargs in ("+", "*") else ","
            default = sep.join(f"{v:g}" if isinstance(v, float) else str(v) for v in default)
        return f"{text} (default: {str(default).replace('%', '%%')})"


def _options(cls: Any) -> dict[str, tuple[Any, Option]]:
    """``{field name: (dataclass field, Option)}`` of the fields that are command-line options."""
    out = {}
    for f in fields(cls):
        opt = f.metadata.get(_KEY)
        if opt is not None and opt.cli:
            out[f.name] = (f, opt)
    return out


def _flag(name: str, opt: Option) -> str:
    return opt.flag or "--" + name.replace("_", "-")


def flag_names(*classes: Any) -> dict[str, str]:
    """``{field name: flag}`` of every command-line option of ``classes``.

    Example:
        >>> from pyro_dvae.training import TrainConfig
        >>> flag_names(TrainConfig)["num_particles"]
        '--particles'
    """
    return {name: _flag(name, opt) for cls in classes for name, (_, opt) in _options(cls).items()}


def add_options(
    parser: Any,
    cls: Any,
    names: Iterable[str] | None = None,
    *,
    defaults: Any | None = None,
    group: Any | None = None,
    help: Mapping[str, str] | None = None,  # noqa: A002
    groups: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Add the options of dataclass ``cls`` (those in ``names``, default all) to ``parser``.

    Defaults come from ``defaults`` (an instance) or the field defaults; ``help`` overrides the
    declared help per field (``None``: keep it). Each argument goes to ``group`` if given, else
    to the argparse group named by its declaration (created once, kept in ``groups``, which is
    returned), else to ``parser`` itself. The parsed value lands in ``args.<field name>``.

    Example:
        >>> from pyro_dvae.training import TrainConfig
        >>> p = argparse.ArgumentParser()
        >>> _ = add_options(p, TrainConfig, ["lr", "num_particles"])
        >>> p.parse_args(["--particles", "4"]).num_particles
        4
    """
    declared = _options(cls)
    groups = {} if groups is None else groups
    for name in declared if names is None else names:
        f, opt = declared[name]
        if defaults is not None:
            default = getattr(defaults, name)
        else:
            default = f.default if f.default is not MISSING else f.default_factory()
        kwargs: dict[str, Any] = {"dest": name, "default": default}
        choices = opt.choices() if callable(opt.choices) else opt.choices
        if choices is not None:
            kwargs["choices"] = tuple(choices)
        elif isinstance(default, bool):  # --name / --no-name
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = opt.type or (type(default) if default is not None else str)
        text = (help or {}).get(name) or opt.help
        if text is not None:
            kwargs["help"] = text
        if opt.metavar is not None:
            kwargs["metavar"] = opt.metavar
        target = group
        if target is None and opt.group is not None:
            if opt.group not in groups:
                groups[opt.group] = parser.add_argument_group(opt.group)
            target = groups[opt.group]
        (target or parser).add_argument(_flag(name, opt), **kwargs)
    return groups


def from_args(
    cls: Any, args: argparse.Namespace, *, base: Any | None = None, names: Iterable[str] = ()
) -> Any:
    """An instance of ``cls`` with every command-line option found in ``args``; with ``base``,
    a copy of ``base`` with those options replaced.

    Example:
        >>> from pyro_dvae.training import TrainConfig
        >>> from_args(TrainConfig, argparse.Namespace(lr=0.1)).lr
        0.1
    """
    wanted = set(names) or set(_options(cls))
    values = {name: getattr(args, name) for name in wanted if hasattr(args, name)}
    return cls(**values) if base is None else replace(base, **values)


_VALUE = r"""(?:'([^']*)'|"([^"]*)"|([^\s,;)'"]+))"""


def to_flags(message: str, *classes: Any, extra: Mapping[str, str] | None = None) -> str:
    """Rewrite ``name=value`` (a field of ``classes`` or a key of ``extra``) in ``message`` as
    ``--flag value`` (``--flag`` alone for ``=True``, ``--no-flag`` for ``=False``). Names
    preceded by ``:`` (estimator spec syntax such as ``st-gumbel:kl=analytic``) are left as they
    are.

    Example:
        >>> from pyro_dvae.training import TrainConfig
        >>> to_flags("use kl='analytic' or max_configurations=2**20", TrainConfig)
        'use --kl analytic or max_configurations=2**20'
    """
    flags = {**flag_names(*classes), **(extra or {})}
    if not flags:
        return message
    names = "|".join(sorted(map(re.escape, flags), key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w.:=-])({names})={_VALUE}")

    def swap(m: re.Match) -> str:
        value, flag = next(v for v in m.groups()[1:] if v is not None), flags[m.group(1)]
        if value in ("True", "False") and flag.startswith("--"):  # on/off flags of bool fields
            return flag if value == "True" else "--no-" + flag[2:]
        return f"{flag} {value}"

    return pattern.sub(swap, message)


def comma_list(text: str, cast: Callable[[str], Any], what: str, example: str) -> tuple:
    """``"a,b,c"`` -> ``(cast(a), cast(b), cast(c))``; an empty or unparsable list raises
    :class:`argparse.ArgumentTypeError` naming ``what`` and ``example`` (for argparse types).

    Example:
        >>> comma_list("0.5, 1", float, "numbers", "0.25,0.5,1")
        (0.5, 1.0)
    """
    try:
        values = tuple(cast(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid {what} {text!r}; write comma-separated {what}, e.g. {example}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError(f"empty list {text!r}; write e.g. {example}")
    return values


def hidden_sizes(text: str) -> tuple[int, ...]:
    """``"256,128"`` -> ``(256, 128)``, an argparse ``type`` for hidden layer sizes.

    Example:
        >>> hidden_sizes("256, 128")
        (256, 128)
    """
    sizes = comma_list(text, int, "hidden sizes", "256,128")
    if min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"hidden sizes must be integers >= 1, got {text!r}")
    return sizes


def require_positive_int(name: str, value: Any, example: str) -> int:
    """``value`` if it is an integer >= 1, else one-line :class:`DVAEInputError` naming
    ``name`` and ``example`` (e.g. ``"epochs=10"``).

    Example:
        >>> require_positive_int("epochs", 0, "epochs=10")
        Traceback (most recent call last):
        ...
        pyro_dvae.errors.DVAEInputError: epochs must be an integer >= 1, got 0; pass e.g. epochs=10
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise DVAEInputError(f"{name} must be an integer >= 1, got {value!r}; pass e.g. {example}")
    return value


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1.

    Example:
        >>> positive_int("3")
        3
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value
