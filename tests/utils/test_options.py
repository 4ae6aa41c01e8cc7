"""Options declared once as dataclass field metadata: argparse flags, parsing back into the
dataclass, and library messages rewritten in flag terms."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from pyro_dvae.errors import DVAEInputError
from pyro_dvae.utils.options import (
    add_options,
    flag_names,
    from_args,
    hidden_sizes,
    option,
    require_positive_int,
    to_flags,
)


@dataclass
class Config:
    lr: float = field(default=1e-3, metadata=option("learning rate"))
    num_particles: int = field(default=1, metadata=option("samples", flag="--particles"))
    kind: str = field(default="a", metadata=option("kind", choices=("a", "b")))
    hidden: tuple = field(default=(8, 4), metadata=option("widths", type=hidden_sizes))
    internal: int = field(default=7, metadata=option(cli=False))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="p")
    add_options(p, Config)
    return p


def test_flags_come_from_the_fields():
    assert flag_names(Config) == {
        "lr": "--lr",
        "num_particles": "--particles",
        "kind": "--kind",
        "hidden": "--hidden",
    }
    args = parser().parse_args(["--lr", "0.5", "--particles", "3", "--hidden", "16,2"])
    config = from_args(Config, args)
    assert config == Config(lr=0.5, num_particles=3, hidden=(16, 2))
    assert from_args(Config, parser().parse_args([])) == Config()  # defaults as declared


def test_choices_and_hidden_fields():
    with pytest.raises(SystemExit):
        parser().parse_args(["--kind", "c"])
    with pytest.raises(SystemExit):
        parser().parse_args(["--internal", "1"])


def test_library_messages_in_flag_terms():
    message = "pass e.g. num_particles=4 or lr=1e-3"
    assert to_flags(message, Config) == "pass e.g. --particles 4 or --lr 1e-3"


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "3"])
def test_require_positive_int(bad):
    with pytest.raises(DVAEInputError, match="must be an integer >= 1"):
        require_positive_int("epochs", bad, "epochs=10")
    assert require_positive_int("epochs", 3, "epochs=10") == 3


@dataclass
class Switches:
    on: bool = field(default=False, metadata=option("turn it on"))
    off: bool = field(default=True, metadata=option("turn it off with --no-off"))


@pytest.mark.parametrize(
    "argv, want",
    [([], Switches()), (["--on", "--no-off"], Switches(True, False)), (["--off"], Switches())],
)
def test_bool_fields_are_on_off_flags(argv, want):
    """A bool field is --name / --no-name (type=bool would read "False" as True)."""
    p = argparse.ArgumentParser(prog="p")
    add_options(p, Switches)
    assert from_args(Switches, p.parse_args(argv)) == want


def test_bool_values_become_on_off_flags_in_messages():
    assert to_flags("pass on=True or off=False", Switches) == "pass --on or --no-off"
