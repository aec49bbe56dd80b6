"""The `tritongen` command line: every subcommand answers `--help`."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from generator import cli
from generator.base.sources import FolderSource, source_digest
from generator.pipeline.generate import GenerateOptions, deploy_files
from generator.pipeline.plan import plan_repository
from generator.pipeline.render import render_repository
from generator.pipeline.spec import load_specs
from tests.generator.pipeline.checkpoints import checkpoint, file_spec, written


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


@pytest.mark.parametrize("command", ["image", "bake"])
def test_container_tools_name_themselves_as_typed(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    assert capsys.readouterr().out.startswith(f"usage: tritongen {command} ")


def _subparser(name: str) -> argparse.ArgumentParser:
    action = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = action.choices[name]
    assert isinstance(parser, argparse.ArgumentParser)
    return parser


def test_serve_options_are_described_with_their_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    for action in _subparser("serve")._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{action.option_strings[0]} is undescribed"
        if action.default not in (None, False, True, argparse.SUPPRESS):
            assert "default" in (action.help or ""), f"{action.option_strings[0]} does not state its default"
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for default in (
        "(default: 8000)",
        "(default: 8001)",
        "(default: 8002)",
        "(default: 127.0.0.1)",
        "(default: 300.0)",
    ):
        assert default in out


def test_changed_weights_of_a_folder_source_are_drift_and_a_pinned_digest_stops_generate(tmp_path: Path) -> None:
    """`check --configs-only` shows a weight byte's change in the manifest; pinned, nothing is written."""
    folder = checkpoint(tmp_path / "store" / "mine")
    specs, output = tmp_path / "specs", tmp_path / "repository"
    written(tmp_path, file_spec(folder))
    options = GenerateOptions(specs_dir=specs, output=output, cores=2)
    plan = plan_repository(load_specs(specs), "local", 2)
    for rendered in render_repository(plan) + deploy_files(plan):  # as generate writes them
        (output / rendered.path).parent.mkdir(parents=True, exist_ok=True)
        (output / rendered.path).write_text(rendered.text, encoding="utf-8")
    assert cli.check_configs_offline(options) == ""
    before = source_digest(FolderSource(folder=str(folder)))
    weights = folder / "model.onnx"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")
    after = source_digest(FolderSource(folder=str(folder)))
    diff = cli.check_configs_offline(options)
    assert (
        f'-        "model.build.source": "{before}",' in diff and f'+        "model.build.source": "{after}",' in diff
    )
    assert "repository/tritongen-manifest.json" in diff

    written(tmp_path, file_spec(folder, digest=before))  # pinned to the old weights
    shutil.rmtree(output)
    assert cli.main(["generate", "--specs", str(specs), "--output", str(output), "--cores", "2"]) == 2
    assert not output.exists()
