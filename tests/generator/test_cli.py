"""The `tritongen` command line: every subcommand answers `--help`."""

from __future__ import annotations

import argparse

import pytest

from generator import cli


def _command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every (sub)command of `parser`, as the words that select it (found, not listed by hand)."""
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                paths += _command_paths(subparser, (*prefix, name))
    return paths


COMMANDS = _command_paths(cli.build_parser())


def test_every_command_is_found() -> None:
    names = {path[0] for path in COMMANDS if path}
    assert {"generate", "check", "serve", "update", "envs", "tune", "image"} <= names
    assert ("envs", "channel") in COMMANDS and ("envs", "build") in COMMANDS


@pytest.mark.parametrize("words", COMMANDS, ids=lambda words: " ".join(words) or "tritongen")
def test_help_works(words: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([*words, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:")


def test_image_help_is_the_image_tools_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["image", "--help"])
    assert exited.value.code == 0
    assert "build" in capsys.readouterr().out


def test_unknown_arguments_are_still_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["check", "--no-such-option"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err
