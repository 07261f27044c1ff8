"""Every command's --help ends with an example, and every example is a command line the
parser accepts (so an example cannot name a flag that does not exist)."""

from __future__ import annotations

import argparse
import shlex

from meter.cli import build_parser


def _commands(parser: argparse.ArgumentParser, prefix: str = ""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                nested = list(_commands(command, f"{prefix}{name} "))
                yield from nested or [(f"{prefix}{name}", command)]


def test_every_command_has_an_example_the_parser_accepts():
    commands = dict(_commands(build_parser()))
    assert len(commands) >= 18
    for name, command in commands.items():
        epilog = command.epilog or ""
        assert "example" in epilog, f"meter {name} --help shows no example"
        line = epilog.split("example:", 1)[1].strip().splitlines()[0].split("#")[0]
        argv = shlex.split(line)
        assert argv[0] == "meter", line
        build_parser().parse_args(argv[1:])  # exits (a test failure) on a wrong flag
