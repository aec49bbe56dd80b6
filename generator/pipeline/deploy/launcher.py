"""The container launch every deploy output shares: the launcher script and the command line.

Every deploy output serves the repository with Triton in a container: explicit model control
loading every model at start-up, the repository at /models. The admin APIs `tritongen serve`
restricts (RESTRICTED_APIS: model control and repository, model config, shared memory,
statistics, trace, logging) need a key that the operator provides at run time, never written
into the files: `$TRITONGEN_ADMIN_KEY`, or `$TRITONGEN_ADMIN_KEY_FILE` naming a secret file
(mounted read-only into the container). Every output starts the server through `LAUNCHER`, a
POSIX `sh` script run inside the container: it adds the restriction flags with the key, and
refuses to start without a key unless `TRITONGEN_ADMIN_OPEN=1` opts out explicitly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from generator.base.launch import (
    ADMIN_HEADER,
    ADMIN_KEY_PATTERN,
    ADMIN_KEY_VARIABLE,
    RESTRICTED_APIS,
    ServerOptions,
    ServerPorts,
    ServerSettings,
    server_command,
)
from generator.base.triton import TritonInstall
from generator.kinds.targets import PRODUCTION, Target

CONTAINER_REPOSITORY = Path("/models")
"""Where the repository is in the container (mounted, or baked into the image)."""
CONTAINER_PORTS = ServerPorts()
"""Ports inside the container (Triton's defaults); the host's may differ."""
ADMIN_KEY_FILE_VARIABLE = f"{ADMIN_KEY_VARIABLE}_FILE"
"""Names a file holding the admin key (a mounted secret); read when the key variable is empty."""
ADMIN_OPEN_VARIABLE = "TRITONGEN_ADMIN_OPEN"
"""`1`: start with the admin APIs unrestricted (the explicit opt-out)."""
CONTAINER_KEY_FILE = "/run/secrets/tritongen-admin-key"
"""Where `docker-run.sh` mounts the host's `$TRITONGEN_ADMIN_KEY_FILE` in the container."""
LAUNCHER_NAME = "tritongen-launch"
"""`$0` of the launcher script (names it in messages and process lists)."""
REFUSAL_EXIT_CODE = 64
"""Exit status of the launcher when it refuses to start (EX_USAGE)."""


def triton_command(options: ServerOptions, target: Target = PRODUCTION) -> list[str]:
    """tritonserver's command line for `options` in `target`'s server image."""
    root = Path(target.triton_root)
    return server_command(options, root / "backends", TritonInstall(root))


def container_command(
    models: Sequence[str] = (),
    ports: ServerPorts | None = None,
    log_verbose: int = 0,
    settings: ServerSettings | None = None,
    target: Target = PRODUCTION,
) -> list[str]:
    """tritonserver's command line inside a container (local image or NVIDIA's); `settings`:
    what the repository's plan asks of the server (rate limiter, parallel loading, pools)."""
    options = ServerOptions(
        repository=CONTAINER_REPOSITORY,
        ports=ports or ServerPorts(),
        address="0.0.0.0",
        models=tuple(models),
        log_verbose=log_verbose,
        settings=settings or ServerSettings(),
    )
    return triton_command(options, target)


def _key_rule() -> tuple[str, int, int]:
    """(character set, minimum, maximum length) of an admin key, read from ADMIN_KEY_PATTERN."""
    match = re.fullmatch(r"\^\[([^\]]+)\]\{(\d+),(\d+)\}\$", ADMIN_KEY_PATTERN.pattern)
    if match is None:  # pragma: no cover - a changed pattern must be translated to sh by hand
        raise RuntimeError(f"cannot translate ADMIN_KEY_PATTERN {ADMIN_KEY_PATTERN.pattern!r} to sh")
    return match.group(1), int(match.group(2)), int(match.group(3))


_KEY_SENTINEL = "tritongen-admin-key-sentinel"


def restriction_flags(key_expression: str) -> list[str]:
    """tritonserver's restriction flags for `key_expression`, exactly as `tritongen serve` adds
    them (taken from `server_command` itself, so both can never differ)."""
    options = ServerOptions(repository=CONTAINER_REPOSITORY, models=("m",), admin_key=_KEY_SENTINEL)
    flags = [arg for arg in triton_command(options) if _KEY_SENTINEL in arg]
    assert len(flags) == 2 and f"{ADMIN_HEADER}={_KEY_SENTINEL}" in flags[0], flags
    assert all(",".join(RESTRICTED_APIS) in flag for flag in flags), flags
    return [flag.replace(_KEY_SENTINEL, key_expression) for flag in flags]


def launcher_script() -> str:
    """The in-container launcher: `sh -c LAUNCHER tritongen-launch TRITONSERVER ARGS...`.

    Takes the key from `$TRITONGEN_ADMIN_KEY`, else from the file `$TRITONGEN_ADMIN_KEY_FILE`
    (first line), checks it, removes it from the environment (model processes never see it) and
    execs the server with the restriction flags; without a key it exits with REFUSAL_EXIT_CODE
    and says what to set, unless `$TRITONGEN_ADMIN_OPEN` is `1`. It writes nothing and uses no
    `$(...)` (Kubernetes would try to expand it in a container's command).
    """
    charset, shortest, longest = _key_rule()
    key, key_file, opt_out = ADMIN_KEY_VARIABLE, ADMIN_KEY_FILE_VARIABLE, ADMIN_OPEN_VARIABLE
    apis = ", ".join(RESTRICTED_APIS)
    flags = " ".join(f'"{flag}"' for flag in restriction_flags("$key"))
    say = f'echo "{LAUNCHER_NAME}:'
    lines = [
        "set -eu",
        f'key="${{{key}:-}}"',
        f'if [ -z "$key" ] && [ -n "${{{key_file}:-}}" ]; then',
        f'  if [ ! -r "${key_file}" ]; then {say} cannot read {key_file}=${key_file}" >&2; '
        f"exit {REFUSAL_EXIT_CODE}; fi",
        f'  IFS= read -r key < "${key_file}" || true',
        "fi",
        f"unset {key} {key_file}",
        'if [ -n "$key" ]; then',
        f'  case "$key" in *[!{charset}]*) {say} the admin key must be {shortest}-{longest} characters of '
        f'{charset}" >&2; exit {REFUSAL_EXIT_CODE};; esac',
        f'  if [ "${{#key}}" -lt {shortest} ] || [ "${{#key}}" -gt {longest} ]; then {say} the admin key must be '
        f'{shortest}-{longest} characters of {charset}" >&2; exit {REFUSAL_EXIT_CODE}; fi',
        f'  {say} admin APIs ({apis}) need the admin key" >&2',
        f'  exec "$@" {flags}',
        "fi",
        f'if [ "${{{opt_out}:-}}" = 1 ]; then',
        f'  {say} WARNING: {opt_out}=1: the admin APIs ({apis}) are OPEN to every client" >&2',
        '  exec "$@"',
        "fi",
        f"{say} refusing to start: no admin key. Set {key} (a key of {shortest}-{longest} characters of "
        f"{charset}, e.g. from: openssl rand -hex 32) or {key_file} "
        f"(a mounted secret file holding it); or set {opt_out}=1 to serve the admin APIs ({apis}) to every "
        'client unrestricted" >&2',
        f"exit {REFUSAL_EXIT_CODE}",
    ]
    return "\n".join(lines) + "\n"


LAUNCHER = launcher_script()
LAUNCH_COMMAND = ("/bin/sh", "-c", LAUNCHER, LAUNCHER_NAME)
"""The container's entrypoint; the tritonserver command line follows as arguments."""


def launch_arguments(
    models: Sequence[str] = (), settings: ServerSettings | None = None, target: Target = PRODUCTION
) -> list[str]:
    """The container's command: LAUNCH_COMMAND, then tritonserver's command line (with the
    repository's `settings`: rate limiter, parallel loading, shared pools). The image's own
    entrypoint is kept (NVIDIA's sets up the CUDA environment before it execs the command)."""
    return [*LAUNCH_COMMAND, *container_command(models, settings=settings, target=target)]


def port_pairs(ports: ServerPorts) -> list[tuple[int, int]]:
    """(host, container) pairs of the published ports."""
    return [
        (ports.http, CONTAINER_PORTS.http),
        (ports.grpc, CONTAINER_PORTS.grpc),
        (ports.metrics, CONTAINER_PORTS.metrics),
    ]


def key_usage(script: str, file_hint: str) -> list[str]:
    """Comment lines telling the operator how to give the admin key."""
    return [
        f"# Admin APIs ({', '.join(RESTRICTED_APIS)}) need a key, given at",
        "# run time and never stored in this file; without one the server refuses to start:",
        f"#   {ADMIN_KEY_VARIABLE}=<key> {script}          environment variable (16-256 of A-Za-z0-9._~-)",
        f"#   {ADMIN_KEY_FILE_VARIABLE}=<file> {script}    {file_hint}",
        f"#   {ADMIN_OPEN_VARIABLE}=1 {script}               explicit opt-out: admin APIs open to every client",
        f"# Clients send it as HTTP header `{ADMIN_HEADER}` or gRPC metadata `triton-grpc-protocol-{ADMIN_HEADER}`.",
    ]
