"""`tritongen` as a user runs it: drift check of the committed repository, atomic generate."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from generator.cli import main
from generator.environments import cache as environment_cache
from generator.environments import settings as environment_settings
from generator.environments import solve as environment_solve
from generator.pipeline.generate import PROJECT_ROOT

pytestmark = pytest.mark.integration


def channel_args(channels: list[str]) -> list[str]:
    return [arg for url in channels for arg in ("--channel", url)]


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_committed_repository_matches_a_fresh_generation(
    conda_channels: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--configs-only", *channel_args(conda_channels)]) == 0
    assert "ok: specs valid" in capsys.readouterr().out


def test_generate_is_deterministic_and_check_passes(
    generated_repository: Path, conda_channels: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    again = tmp_path / "repository"
    assert main(["generate", "--output", str(again), "--cores", "2", *channel_args(conda_channels)]) == 0
    assert tree_digest(again) == tree_digest(generated_repository)
    capsys.readouterr()
    assert main(["check", "--output", str(again), *channel_args(conda_channels)]) == 0
    checked = capsys.readouterr()
    assert checked.out.startswith("ok: "), checked.out  # the verdict alone, as the README promises
    assert "environment textprep-tok023:" in checked.err  # what the solve says on the way


def test_failed_generation_leaves_the_output_untouched(
    generated_repository: Path, conda_channels: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "repository"
    shutil.copytree(generated_repository, output, copy_function=shutil.copy)
    before = tree_digest(output)
    specs = tmp_path / "models"
    shutil.copytree(PROJECT_ROOT / "models", specs)
    spec = specs / "minilm_embed.yaml"
    spec.write_text(spec.read_text().replace("embedding_dim: 384", "embedding_dim: 385"))
    code = main(
        ["generate", "--specs", str(specs), "--output", str(output), "--cores", "2", *channel_args(conda_channels)]
    )
    assert code == 2
    error = capsys.readouterr().err
    assert "minilm_embed_v1_model: output 'embedding' has dims [-1, 385]" in error
    assert tree_digest(output) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".repository")]


def test_drift_is_reported_with_a_diff(
    generated_repository: Path, conda_channels: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "repository"
    shutil.copytree(generated_repository, output, copy_function=shutil.copy)
    config = output / "text_classifier" / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size: 32", "max_batch_size: 8"))
    assert main(["check", "--configs-only", "--output", str(output), *channel_args(conda_channels)]) == 1
    captured = capsys.readouterr()
    assert "-max_batch_size: 8" in captured.out and "+max_batch_size: 32" in captured.out
    assert "drift:" in captured.err


def test_configs_only_check_solves_nothing(
    generated_repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check --configs-only` works with no reachable channel: it never solves an environment."""

    def no_solve(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("check --configs-only solved an environment")

    monkeypatch.setattr(environment_cache, "solve_environment", no_solve)
    monkeypatch.setattr(environment_solve, "solve_environment", no_solve)
    monkeypatch.setattr(environment_settings, "SETTINGS_FILE", tmp_path / "no-settings.toml")
    monkeypatch.setenv(environment_settings.CHANNELS_VARIABLE, (tmp_path / "no-such-channel").as_uri())
    assert main(["check", "--configs-only", "--output", str(generated_repository)]) == 0
    assert "environments not solved" in capsys.readouterr().out


def test_configs_only_check_reports_another_environment_as_drift(
    generated_repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A spec that names another environment than the repository's is drift, found offline."""
    specs = tmp_path / "models"
    shutil.copytree(PROJECT_ROOT / "models", specs)
    spec = specs / "text_classifier.yaml"
    assert "environment: textprep-tok020" in spec.read_text()
    spec.write_text(spec.read_text().replace("environment: textprep-tok020", "environment: textprep-tok023"))
    assert main(["check", "--configs-only", "--specs", str(specs), "--output", str(generated_repository)]) == 1
    changed = [line for line in capsys.readouterr().out.splitlines() if "EXECUTION_ENV" not in line]
    removed = [line for line in changed if line.startswith("-    string_value:") and "/_envs/" in line]
    added = [line for line in changed if line.startswith("+    string_value:") and "/_envs/" in line]
    assert len(removed) == len(added) == 1, changed
    assert "/_envs/textprep-tok020-" in removed[0] and "/_envs/textprep-tok023-" in added[0]
    assert "not built" not in added[0], "the hash other models of textprep-tok023 record"
