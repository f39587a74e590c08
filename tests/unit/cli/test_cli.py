"""The poet-grpc command line: exit codes of the real command, --version, and
help text on every option of every subcommand."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import poet_grpc
from poet_grpc import cli

NOWHERE = "127.0.0.1:1"  # nothing listens: a client command that gets this far exits 3


def poet_grpc_command(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "poet_grpc", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_a_missing_input_file_exits_2(tmp_path: Path) -> None:
    for command in (["enhance", str(tmp_path / "absent.py"), "--function", "f"],
                    ["publish", str(tmp_path / "absent.json")]):
        result = poet_grpc_command(*command, "--server", NOWHERE)
        assert result.returncode == cli.EXIT_USAGE, result.stderr
        assert f"poet-grpc: cannot read {tmp_path / 'absent'}" in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not JSON"),
    ('{"no_such_field": 1}', "does not hold events"),
    ("[1, 2]", "does not hold events"),
])
def test_a_publish_file_that_is_not_events_exits_2(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "events.json"
    path.write_text(content)
    result = poet_grpc_command("publish", str(path), "--server", NOWHERE)
    assert result.returncode == cli.EXIT_USAGE, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    stdin = poet_grpc_command("publish", "-", "--server", NOWHERE, stdin=content)
    assert stdin.returncode == cli.EXIT_USAGE, stdin.stderr


def test_good_input_gets_as_far_as_the_server(tmp_path: Path) -> None:
    """The contrast: valid input to an unreachable server is 3, not 2."""
    path = tmp_path / "events.json"
    path.write_text('{"type": "drift.detected"}')
    result = poet_grpc_command("publish", str(path), "--server", NOWHERE, "--timeout", "5")
    assert result.returncode == cli.EXIT_UNREACHABLE, result.stderr


def test_a_bad_command_line_exits_2() -> None:
    assert poet_grpc_command("enhance", "--no-such-option").returncode == cli.EXIT_USAGE


def test_version_is_the_installed_distributions() -> None:
    result = poet_grpc_command("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"poet-grpc {metadata.version('poet-grpc')}"


def test_version_falls_back_to_the_package_attribute(monkeypatch) -> None:
    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    monkeypatch.setattr(poet_grpc, "__version__", "9.8.7", raising=False)
    assert cli._version() == "9.8.7"


def _actions(parser: argparse.ArgumentParser, prog: str):
    """(command, action) for every argument of the parser and of its subcommands."""
    for action in parser._actions:
        yield prog, action
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:  # the subcommands' one-line help
                yield f"{prog} {choice.dest}", choice
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{prog} {name}")


def test_every_option_of_every_subcommand_has_help_text() -> None:
    found = list(_actions(cli._parser(), "poet-grpc"))
    assert len({command for command, _ in found}) > 10  # the walk reached the subcommands
    missing = [f"{command}: {'/'.join(action.option_strings) or action.dest}" for command, action in found
               if not action.help or action.help == argparse.SUPPRESS]
    assert not missing, "arguments without help text:\n" + "\n".join(missing)
