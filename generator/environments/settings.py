"""The conda channels environments are solved from, and the project setting that records them.

Precedence: a command's `--channel` > $TRITONGEN_CONDA_CHANNELS > `build/tritongen.toml`
(written by `tritongen envs channel`) > `conda-forge`.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Sequence
from pathlib import Path

from generator import PROJECT_ROOT
from generator.environments.errors import EnvironmentSpecError

DEFAULT_CHANNELS: tuple[str, ...] = ("conda-forge",)
CHANNELS_VARIABLE = "TRITONGEN_CONDA_CHANNELS"
"""Comma-separated channels overriding the project setting (one-off runs, CI)."""
SETTINGS_FILE = PROJECT_ROOT / "build" / "tritongen.toml"
"""The project's local settings: `[environments] channels = [...]`, written by `tritongen envs
channel`. Machine-specific (a `file://` URL of this checkout), so it lives in the git-ignored
build/ folder next to the channel it names; deleting build/ forgets both."""


def default_channels(settings: Path | None = None) -> list[str]:
    """Channels when no `--channel` is given: $TRITONGEN_CONDA_CHANNELS, else the project
    setting (`build/tritongen.toml`, see `remember_channels`), else `conda-forge`."""
    configured = os.environ.get(CHANNELS_VARIABLE, "")
    channels = [c.strip() for c in configured.split(",") if c.strip()]
    return channels or recorded_channels(settings) or list(DEFAULT_CHANNELS)


def recorded_channels(settings: Path | None = None) -> list[str]:
    """The channels of the project setting ([] when none is recorded)."""
    path = settings or SETTINGS_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise EnvironmentSpecError(f"{path}: unreadable project setting ({error}); fix or delete it") from error
    channels = data.get("environments", {}).get("channels", [])
    if not isinstance(channels, list) or not all(isinstance(c, str) and c for c in channels):
        raise EnvironmentSpecError(f"{path}: [environments] channels must be a list of channel URLs")
    return list(channels)


def remember_channels(channels: Sequence[str], settings: Path | None = None) -> Path:
    """Record `channels` as the project's channels (read by every later generate, check and
    `envs build`); written atomically."""
    path = settings or SETTINGS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    # JSON strings are valid TOML basic strings.
    listed = ", ".join(json.dumps(c) for c in channels)
    text = (
        "# Written by `tritongen envs channel`: conda channels of this checkout's execution\n"
        f"# environments (overridden by --channel and ${CHANNELS_VARIABLE}).\n"
        f"[environments]\nchannels = [{listed}]\n"
    )
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
    return path
