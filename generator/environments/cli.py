"""`tritongen envs channel` and `tritongen envs build`: their arguments and what they run.

Also runs alone: `python -m generator.environments.cli {channel,build} ...`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from generator.environments import channel as conda_channel
from generator.environments.cache import DEFAULT_CACHE_DIR, BuiltEnvironment, build_environment, prune_cache
from generator.environments.envspec import ENVS_DIR, spec_path_for
from generator.environments.errors import EnvironmentBuildError, EnvironmentSpecError
from generator.environments.pack import unpack_environment
from generator.environments.settings import CHANNELS_VARIABLE, default_channels, remember_channels


def add_envs_subcommands(subparsers: Any) -> None:
    """Register `tritongen envs channel` and `tritongen envs build` on an argparse subparsers."""
    envs = subparsers.add_parser("envs", help="build Python execution environments (conda-pack)")
    actions = envs.add_subparsers(dest="envs_command", required=True)

    channel = actions.add_parser(
        "channel",
        help="build the offline file:// conda channel (pyenv CPythons, pip, numpy) and make it the project's",
        description="Build (or complete) the offline channel and record it in build/tritongen.toml: every later "
        "generate, check and envs build uses it. With --channel, record those channels instead (nothing "
        f"is built). Precedence: --channel of a command > ${CHANNELS_VARIABLE} > build/tritongen.toml > "
        "conda-forge.",
    )
    channel.add_argument("--dir", type=Path, default=conda_channel.DEFAULT_CHANNEL_DIR)
    channel.add_argument(
        "--channel", action="append", dest="channels", metavar="URL",
        help="record this channel (repeatable; e.g. a site mirror) instead of building the offline one",
    )  # fmt: skip
    channel.add_argument(
        "--python", action="append", dest="pythons", metavar="3.X",
        help=f"CPython minor version to package (repeatable; default "
        f"{' '.join(conda_channel.DEFAULT_PYTHONS)})",
    )  # fmt: skip
    channel.add_argument("--numpy", default=conda_channel.DEFAULT_NUMPY)
    channel.add_argument("--pip", default=conda_channel.DEFAULT_PIP)
    channel.set_defaults(func=_cmd_channel)

    build = actions.add_parser("build", help="build and pack environments of envs/")
    build.add_argument("names", nargs="*", help="environment names or .yml paths (default: all)")
    build.add_argument(
        "--channel", action="append", dest="channels",
        help=f"conda channel (repeatable; default ${CHANNELS_VARIABLE}, else the project's channel recorded by "
        "`tritongen envs channel`, else conda-forge)",
    )  # fmt: skip
    build.add_argument("--target", default="local", help="stub target: local, ngc-24.10 or 3.X")
    build.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    build.add_argument("--unpack", type=Path, help="also extract each environment under this folder")
    build.add_argument("--ship-stub", action="store_true", help="allow another Python (model ships its stub)")
    build.add_argument(
        "--prune", action="store_true",
        help="then delete every other build from the cache (older hashes, other targets)",
    )  # fmt: skip
    build.set_defaults(func=_cmd_build)


def _cmd_channel(args: argparse.Namespace) -> int:
    channels = args.channels
    if not channels:
        conda_channel.build_channel(
            args.dir, pythons=args.pythons or conda_channel.DEFAULT_PYTHONS,
            numpy_version=args.numpy, pip_version=args.pip,
        )  # fmt: skip
        channels = [conda_channel.channel_url(args.dir)]
    path = remember_channels(channels)
    print(f"project channels: {', '.join(channels)} (recorded in {path})", flush=True)
    if os.environ.get(CHANNELS_VARIABLE):
        print(f"note: ${CHANNELS_VARIABLE} is set and takes precedence over it in this shell", flush=True)
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    paths = [Path(n) if n.endswith((".yml", ".yaml")) else spec_path_for(n) for n in args.names] or sorted(
        ENVS_DIR.glob("*.yml")
    )
    channels = args.channels or default_channels()
    failed = 0
    kept: list[BuiltEnvironment] = []
    for path in paths:
        try:
            built = build_environment(
                path, channels=channels, target_python=args.target, cache_dir=args.cache_dir,
                progress=print, ship_stub=args.ship_stub,
            )  # fmt: skip
            kept.append(built)
        except (EnvironmentSpecError, EnvironmentBuildError) as error:
            print(f"error: {error}", file=sys.stderr)
            failed += 1
            continue
        print(f"{built.name}: {built.tarball} python {built.python_version} "
              f"{', '.join(f'{k}=={v}' for k, v in built.packages.items())}")  # fmt: skip
        if args.unpack:
            folder = unpack_environment(built.tarball, args.unpack / built.tarball.name.removesuffix(".tar.gz"))
            print(f"  unpacked at {folder}")
    if args.prune and not failed:
        for removed in prune_cache(args.cache_dir.resolve(), kept):
            print(f"pruned {removed.name}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m generator.environments.cli {channel,build}` (same as `tritongen envs ...`)."""
    parser = argparse.ArgumentParser(prog="python -m generator.environments.cli")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_envs_subcommands(subparsers)
    args = parser.parse_args(["envs", *(argv if argv is not None else sys.argv[1:])])
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
