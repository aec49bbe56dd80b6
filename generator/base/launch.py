"""The launch contract every launcher of a repository shares (embedded server, deploy files).

tritonserver's command line (`server_command` from `ServerOptions`), what a repository asks of
its server (`ServerSettings` and its flags), the APIs the admin key guards and how clients
carry it, and the thread-pool variables every stub gets.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from generator.base.triton import TritonInstall, TritonServerError, find_triton

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS")
"""Thread-pool sizes set to 1 in every stub (the backends size their own pools from configs)."""
RESTRICTED_APIS = ("model-repository", "model-config", "shared-memory", "statistics", "trace", "logging")
"""APIs that need the admin key (HTTP and gRPC); clients keep inference, health and metadata."""
ADMIN_HEADER = "admin-key"
"""HTTP header carrying the admin key."""
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"
"""gRPC metadata key carrying the admin key (Triton prefixes the configured key)."""
ADMIN_KEY_VARIABLE = "TRITONGEN_ADMIN_KEY"
"""Environment variable holding the admin key (serve, update, the deploy files)."""
ADMIN_KEY_PATTERN = re.compile(r"^[A-Za-z0-9._~-]{16,256}$")
"""What Triton's restriction flags accept as a key."""


@dataclass(frozen=True)
class ServerSettings:
    """What a generated repository asks of the server that runs it (facts of its plan)."""

    rate_limit_cores: int | None = None
    """`--rate-limit=execution_count --rate-limit-resource=cpu:<cores>`; None: limiter off."""
    model_load_threads: int | None = None
    """`--model-load-thread-count` (models loaded in parallel); None: Triton's default, 4."""
    backend_configs: tuple[str, ...] = ()
    """`--backend-config` values, `backend,setting=value` (the `ngc` target's shared pools)."""

    def flags(self) -> list[str]:
        """The tritonserver flags, in a fixed order."""
        flags = []
        if self.rate_limit_cores:
            flags += ["--rate-limit=execution_count", f"--rate-limit-resource=cpu:{self.rate_limit_cores}"]
        if self.model_load_threads:
            flags.append(f"--model-load-thread-count={self.model_load_threads}")
        return flags + [f"--backend-config={value}" for value in self.backend_configs]

    def changes(self, new: ServerSettings) -> list[str]:
        """What differs from `new`, flag by flag (`--a=1 -> --a=2`, `(none) -> --b`): each one
        applied only by starting the server again."""

        def key(flag: str) -> str:  # a backend's setting is its own flag
            name, _, value = flag.partition("=")
            return f"{name}={value.split('=')[0]}" if name == "--backend-config" else name

        before = {key(flag): flag for flag in self.flags()}
        after = {key(flag): flag for flag in new.flags()}
        return [
            f"{before.get(name, '(none)')} -> {after.get(name, '(none)')}"
            for name in sorted(before.keys() | after.keys())
            if before.get(name) != after.get(name)
        ]


def check_admin_key(key: str) -> str:
    """Return `key` if it is usable in Triton's restriction flags, else raise."""
    if not ADMIN_KEY_PATTERN.fullmatch(key):
        raise TritonServerError(
            "the admin key must be 16-256 characters of letters, digits and . _ ~ - "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return key


def admin_headers(key: str | None, protocol: str = "http") -> dict[str, str]:
    """Request headers (HTTP) or metadata (gRPC) that carry the admin key."""
    if key is None:
        return {}
    return {ADMIN_HEADER if protocol == "http" else GRPC_ADMIN_HEADER: key}


@dataclass(frozen=True)
class ServerPorts:
    """Ports of a running server."""

    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


@dataclass
class ServerOptions:
    """How to launch tritonserver over a model repository."""

    repository: Path
    ports: ServerPorts = field(default_factory=ServerPorts)
    address: str = "127.0.0.1"
    models: Sequence[str] = ()
    """Models to load at start-up (explicit model-control mode); empty: every model folder of the
    repository when it is readable here, else `*`."""
    log_verbose: int = 0
    extra_args: Sequence[str] = ()
    admin_key: str | None = None
    """Key required by the RESTRICTED_APIS (header ADMIN_HEADER); None leaves them open."""
    strict_readiness: bool = True
    """`/v2/health/ready` only when every model loaded; False: ready once serving."""
    cpu_budget: int | None = None
    """Cores of the rate limiter's `cpu` resource when the repository's models use it
    (default: the settings' `rate_limit_cores`)."""
    settings: ServerSettings | None = None
    """What the repository asks of the server; None: nothing (the embedded server reads it from
    the repository's manifest instead)."""


def repository_models(repository: Path) -> list[str]:
    """Model folders (with a config.pbtxt) of a local repository; other folders such as the
    shared `_envs/` are not models and must not be loaded."""
    if not repository.is_dir():
        return []
    return sorted(p.parent.name for p in repository.glob("*/config.pbtxt"))


def server_command(options: ServerOptions, backend_directory: Path, install: TritonInstall | None = None) -> list[str]:
    """The tritonserver command line for `options`."""
    install = install or find_triton()
    command = [
        str(install.server_binary),
        f"--model-repository={options.repository}",
        f"--backend-directory={backend_directory}",
        f"--http-address={options.address}",
        f"--http-port={options.ports.http}",
        f"--grpc-address={options.address}",
        f"--grpc-port={options.ports.grpc}",
        f"--metrics-address={options.address}",
        f"--metrics-port={options.ports.metrics}",
        "--allow-metrics=true",
        "--allow-gpu-metrics=false",
        "--model-control-mode=explicit",
        f"--strict-readiness={'true' if options.strict_readiness else 'false'}",
        "--exit-on-error=false",
        f"--log-verbose={options.log_verbose}",
    ]
    if options.admin_key is not None:
        restriction = f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={check_admin_key(options.admin_key)}"
        command += [f"--http-restricted-api={restriction}", f"--grpc-restricted-protocol={restriction}"]
    settings = options.settings or ServerSettings()
    if options.cpu_budget and settings.rate_limit_cores:
        settings = replace(settings, rate_limit_cores=options.cpu_budget)
    command += settings.flags()
    models = options.models or repository_models(options.repository)
    if models:
        command += [f"--load-model={name}" for name in models]
    else:
        command.append("--load-model=*")
    command += list(options.extra_args)
    return command
