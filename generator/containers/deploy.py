"""Deploy files for a generated repository: `docker-compose.yml` and `docker-run.sh`.

Both serve the repository with Triton in a container: ports 8000 (HTTP), 8001 (gRPC) and
8002 (metrics) published, a 256 MB shared-memory size (the python backend exchanges tensors
through /dev/shm), explicit model control loading every model at start-up, and the repository
mounted read-only at /models. The admin APIs `tritongen serve` restricts (RESTRICTED_APIS: model
control and repository, model config, shared memory, statistics, trace, logging) need a key that
the operator provides at run time, never written into the files: `$TRITONGEN_ADMIN_KEY`, or
`$TRITONGEN_ADMIN_KEY_FILE` naming a secret file (mounted read-only into the container). Both
files start the server through `LAUNCHER`, a POSIX `sh` script run inside the container (the
same one the Kubernetes manifests use): it adds the restriction flags with the key, and refuses
to start without a key unless `TRITONGEN_ADMIN_OPEN=1` opts out explicitly.

The image is the local one (`tritongen-triton:latest`, built by
`python -m generator.containers.image build`) for the `local` target and NVIDIA's
`nvcr.io/nvidia/tritonserver:24.10-py3` for the `ngc` target; `TRITON_IMAGE` overrides it at
run time. The output depends only on the arguments (no clock, no host paths unless given).

A relative `repository_dir` is taken relative to the folder the files are written to.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Literal

from generator.containers.image import (
    CONTAINER_REPOSITORY,
    CONTAINER_TRITON_ROOT,
    LATEST_TAG,
    NGC_IMAGE,
    container_command,
)
from generator.serving.tritonserver import (
    ADMIN_HEADER,
    ADMIN_KEY_PATTERN,
    RESTRICTED_APIS,
    ServerOptions,
    ServerPorts,
    ServerSettings,
    TritonInstall,
    manifest_settings,
    server_command,
)
from generator.serving.update import ADMIN_KEY_VARIABLE

DeployTarget = Literal["local", "ngc"]
DEFAULT_IMAGES: dict[str, str] = {"local": LATEST_TAG, "ngc": NGC_IMAGE}
DEFAULT_SHM_SIZE = "256m"
CONTAINER_PORTS = ServerPorts()
"""Ports inside the container (Triton's defaults); `ports` are the host's."""


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
    command = server_command(options, CONTAINER_TRITON_ROOT / "backends", TritonInstall(CONTAINER_TRITON_ROOT))
    flags = [arg for arg in command if _KEY_SENTINEL in arg]
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


def _port_pairs(ports: ServerPorts) -> list[tuple[int, int]]:
    return [
        (ports.http, CONTAINER_PORTS.http),
        (ports.grpc, CONTAINER_PORTS.grpc),
        (ports.metrics, CONTAINER_PORTS.metrics),
    ]


def _image_note(target: str, image: str) -> str:
    if target == "local" and image == LATEST_TAG:
        return f"{image} (build it with `python -m generator.containers.image build`)"
    if image == NGC_IMAGE:
        return f"{image} (NVIDIA's registry; needs `docker login nvcr.io`)"
    return image


def launch_arguments(models: Sequence[str] = (), settings: ServerSettings | None = None) -> list[str]:
    """The container's command: LAUNCH_COMMAND, then tritonserver's command line (with the
    repository's `settings`: rate limiter, parallel loading, shared pools). The image's own
    entrypoint is kept (NVIDIA's sets up the CUDA environment before it execs the command)."""
    return [*LAUNCH_COMMAND, *container_command(models, settings=settings)]


def docker_run_command(
    repository_dir: str,
    ports: ServerPorts | None = None,
    image: str = LATEST_TAG,
    shm_size: str = DEFAULT_SHM_SIZE,
    models: Sequence[str] = (),
    name: str | None = "tritongen",
    key_file: str | None = None,
    settings: ServerSettings | None = None,
) -> list[str]:
    """`docker run` arguments serving `repository_dir` (an absolute path) in the foreground.

    The admin key comes from the caller's `$TRITONGEN_ADMIN_KEY` (passed by name, so its value is
    not on the command line) or from `key_file` (an absolute host path, mounted read-only).
    """
    command = ["docker", "run", "--rm"]
    if name:
        command.append(f"--name={name}")
    command.append(f"--shm-size={shm_size}")
    for host, container in _port_pairs(ports or ServerPorts()):
        command += ["-p", f"{host}:{container}"]
    command += ["--env", ADMIN_KEY_VARIABLE, "--env", ADMIN_OPEN_VARIABLE]
    if key_file is not None:
        command += [
            "--mount",
            f"type=bind,source={key_file},target={CONTAINER_KEY_FILE},readonly",
            "--env",
            f"{ADMIN_KEY_FILE_VARIABLE}={CONTAINER_KEY_FILE}",
        ]
    command += [
        "--mount",
        f"type=bind,source={repository_dir},target={CONTAINER_REPOSITORY},readonly",
        image,
        *launch_arguments(models, settings),
    ]
    return command


def _key_usage(script: str, file_hint: str) -> list[str]:
    """Comment lines telling the operator how to give the admin key."""
    return [
        f"# Admin APIs ({', '.join(RESTRICTED_APIS)}) need a key, given at",
        "# run time and never stored in this file; without one the server refuses to start:",
        f"#   {ADMIN_KEY_VARIABLE}=<key> {script}          environment variable (16-256 of A-Za-z0-9._~-)",
        f"#   {ADMIN_KEY_FILE_VARIABLE}=<file> {script}    {file_hint}",
        f"#   {ADMIN_OPEN_VARIABLE}=1 {script}               explicit opt-out: admin APIs open to every client",
        f"# Clients send it as HTTP header `{ADMIN_HEADER}` or gRPC metadata `triton-grpc-protocol-{ADMIN_HEADER}`.",
    ]


def render_docker_run(
    repository_dir: str,
    ports: ServerPorts | None = None,
    target: DeployTarget = "local",
    image: str | None = None,
    shm_size: str = DEFAULT_SHM_SIZE,
    models: Sequence[str] = (),
    settings: ServerSettings | None = None,
) -> str:
    """A POSIX shell script with one `docker run` line (foreground, removed on exit)."""
    image = image or DEFAULT_IMAGES[target]
    if PurePosixPath(repository_dir).is_absolute():
        locate = f"REPOSITORY={_double_quoted(repository_dir)}"
    else:
        locate = f'REPOSITORY="$(cd "$(dirname "$0")"/{_double_quoted(repository_dir)} && pwd)"'
    key_file = ADMIN_KEY_FILE_VARIABLE
    options = [
        f"docker run --rm --name={shlex.quote(f'tritongen-{target}')} --shm-size={shlex.quote(shm_size)}",
        *(f"-p {host}:{container}" for host, container in _port_pairs(ports or ServerPorts())),
        f"--env {ADMIN_KEY_VARIABLE} --env {ADMIN_OPEN_VARIABLE}",
        '"$@"',
        f'--mount "type=bind,source=$REPOSITORY,target={CONTAINER_REPOSITORY},readonly"',
        '"$IMAGE"',
        *(shlex.quote(argument) for argument in launch_arguments(models, settings)),
    ]
    lines = [
        "#!/bin/sh",
        f"# Generated by tritongen (target {target}). Serves the repository with Triton in a",
        "# container: HTTP, gRPC and metrics ports published, repository mounted read-only.",
        f"# Image: {_image_note(target, image)}; override with TRITON_IMAGE=...",
        *_key_usage("sh docker-run.sh", "secret file on this host, mounted read-only"),
        "set -eu",
        locate,
        f'IMAGE="${{TRITON_IMAGE:-{image}}}"',
        "set --",
        f'if [ -z "${{{ADMIN_KEY_VARIABLE}:-}}" ] && [ -n "${{{key_file}:-}}" ]; then',
        f'  if [ ! -f "${key_file}" ] || [ ! -r "${key_file}" ]; then',
        f'    echo "docker-run.sh: cannot read the admin key file {key_file}=${key_file}" >&2',
        f"    exit {REFUSAL_EXIT_CODE}",
        "  fi",
        f'  KEY_FILE="$(cd "$(dirname "${key_file}")" && pwd)/$(basename "${key_file}")"',
        f'  set -- --mount "type=bind,source=$KEY_FILE,target={CONTAINER_KEY_FILE},readonly" '
        f"--env {key_file}={CONTAINER_KEY_FILE}",
        "fi",
        "exec " + " \\\n    ".join(options),
    ]
    return "\n".join(lines) + "\n"


def _double_quoted(text: str) -> str:
    """`text` as a double-quoted shell word (variables in it are not expanded)."""
    return '"' + re.sub(r'([\\"$`])', r"\\\1", text) + '"'


def _compose_escaped(text: str) -> str:
    """`text` with `$` doubled: Compose interpolates variables in every value."""
    return text.replace("$", "$$")


def render_compose(
    repository_dir: str,
    ports: ServerPorts | None = None,
    target: DeployTarget = "local",
    image: str | None = None,
    shm_size: str = DEFAULT_SHM_SIZE,
    models: Sequence[str] = (),
    settings: ServerSettings | None = None,
) -> str:
    """A `docker-compose.yml` with one `triton` service (JSON-quoted scalars are valid YAML)."""
    image = image or DEFAULT_IMAGES[target]
    q = json.dumps
    lines = [
        f"# Generated by tritongen (target {target}): `docker compose up` serves the repository",
        "# with Triton in a container (HTTP, gRPC and metrics ports, repository read-only).",
        f"# Image: {_image_note(target, image)}; override with TRITON_IMAGE=...",
        *_key_usage("docker compose up", "a path INSIDE the container: mount it (README)"),
        "services:",
        "  triton:",
        f"    image: {q('${TRITON_IMAGE:-' + image + '}')}",
        f"    container_name: {q(f'tritongen-{target}')}",
        f"    shm_size: {q(shm_size)}",
        "    ports:",
        *(f"      - {q(f'{host}:{container}')}" for host, container in _port_pairs(ports or ServerPorts())),
        "    environment:",
        *(f"      - {name}" for name in (ADMIN_KEY_VARIABLE, ADMIN_KEY_FILE_VARIABLE, ADMIN_OPEN_VARIABLE)),
        "    volumes:",
        "      - type: bind",
        f"        source: {q(repository_dir)}",
        f"        target: {q(str(CONTAINER_REPOSITORY))}",
        "        read_only: true",
        "    command:",
        *(f"      - {q(_compose_escaped(argument))}" for argument in launch_arguments(models, settings)),
        "    restart: unless-stopped",
    ]
    return "\n".join(lines) + "\n"


def render_deploy_files(
    repository_dir: str,
    ports: ServerPorts | None = None,
    target: DeployTarget = "local",
    image: str | None = None,
    shm_size: str = DEFAULT_SHM_SIZE,
    models: Sequence[str] = (),
    settings: ServerSettings | None = None,
) -> dict[str, str]:
    """`{"docker-compose.yml": ..., "docker-run.sh": ...}` for `repository_dir` and `target`
    (`settings`: the repository plan's `server_settings()`)."""
    arguments = (repository_dir, ports, target, image, shm_size, tuple(models), settings)
    return {
        "docker-compose.yml": render_compose(*arguments),
        "docker-run.sh": render_docker_run(*arguments),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m generator.containers.deploy REPOSITORY [--target local|ngc] [--out DIR]`."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m generator.containers.deploy")
    parser.add_argument("repository", help="repository path as the files should name it")
    parser.add_argument("--target", choices=sorted(DEFAULT_IMAGES), default="local")
    parser.add_argument("--image", default=None, help="image (default: the target's)")
    parser.add_argument(
        "--ports", type=int, nargs=3, default=[8000, 8001, 8002], metavar=("HTTP", "GRPC", "METRICS"), help="host ports"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the files here")
    args = parser.parse_args(argv)
    # The manifest's settings (rate limiter, parallel loading); `generate` adds the target's pools.
    settings = manifest_settings(Path(args.repository))
    files = render_deploy_files(args.repository, ServerPorts(*args.ports), args.target, args.image, settings=settings)
    for name, text in files.items():
        if args.out is None:
            print(f"==> {name} <==\n{text}")
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / name
        path.write_text(text)
        if name.endswith(".sh"):
            path.chmod(0o755)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
