"""``pyro-dvae COMMAND --help``: every option has a help text and shows its default once."""

from __future__ import annotations

import argparse
import re

import pytest

from pyro_dvae.cli.main import COMMANDS, build_parser, main


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help_and_one_default(command, capsys):
    parser = _commands()[command]
    missing = [a.option_strings or a.dest for a in _options(parser) if not a.help]
    assert not missing, f"{command}: options without help: {missing}"
    assert main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # help lines re-joined
    assert "(default: None)" not in text, text
    assert not re.search(r"\(default: [^()]*\) \(default", text), text
    formatter = parser._get_formatter()
    for action in _options(parser):
        shown = " ".join(formatter._expand_help(action).split())
        assert shown.count("default:") <= 1, f"{command} {action.option_strings}: {shown!r}"
        takes_value = action.nargs != 0 and action.option_strings and not action.required
        if takes_value and action.default not in (None, argparse.SUPPRESS):
            assert "default" in shown, f"{command} {action.option_strings}: {shown!r}"


def test_tuple_defaults_are_shown_as_typed(capsys):
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 256,128)" in text
    assert "(default: None)" not in text and "(default: False)" not in text
