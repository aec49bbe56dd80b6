"""Zero-downtime updates: load what changed in the repository into a running tritonserver.

`tritongen update` compares a content index of the repository on disk with the index of
what the server loaded last (a state file), then, over the model-repository API with the
admin key:

1. loads every model that is new or whose content changed, dependencies first: python and
   inference models, then version ensembles `<name>_v<N>`, then the entry points `<name>` and
   `<name>_batch` (this switches the default version);
2. unloads the models that are loaded but no longer in the repository (only when every
   load succeeded), ensembles first, then the models they ran.

Preprocessing models are named by content and shared by every ensemble whose version has the
same preprocessing (`generator/pipeline/plan.py`): a changed tokenizer or parameter is a NEW
model, loaded before the ensembles that switch to it; the old one stays loaded while any
ensemble of the repository still uses it (it is still in the repository and its manifest
lists those users), and is unloaded once none does (after those ensembles switched away).

Triton loads a new model object next to the serving one and swaps it in; requests in
flight finish on the old one, and a failed reload leaves the old one serving. An ensemble
whose composing model failed is not loaded (the previous entry point keeps serving).

Server settings (`ServerSettings`: the rate limiter's `cpu` units, parallel loading, backend
configs; the manifest's `server_settings`) are flags of the running process: no API changes
them. `tritongen serve` records the ones it started the server with in the state file; when
the repository asks for others, `update` still loads every model the running server can take,
skips those that need the new settings (an instance taking more `cpu` units than the running
limiter has could never run), names each setting that only a restart applies and the command
that applies it, and exits non-zero. They depend on the repository budget only
(`repository.yaml`), never on the number of specs: adding or removing a spec never needs one.

Content index: per Triton model folder, a sha256 over the relative path and content of
every file under it (config.pbtxt, artifacts, tokenizer files), plus the execution
environment that `EXECUTION_ENV_PATH` names when it lies outside the folder (environments
are content-addressed, so a changed one also changes the config). The index of what a
server loaded is state, not generated content: it lives in `build/serve/port-<HTTP port>/
loaded.json` (git-ignored), written by `tritongen serve` once ready and by each update.
Without that file every model counts as changed: a full reload, still without downtime.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator import PROJECT_ROOT
from generator.base.launch import ADMIN_KEY_VARIABLE, ServerSettings, admin_headers
from generator.errors import TritongenError
from generator.pipeline.manifest import ManifestModel, read_manifest

STATE_ROOT = PROJECT_ROOT / "build" / "serve"
ENV_PARAMETER = "EXECUTION_ENV_PATH"
MODEL_DIRECTORY_VARIABLE = "$$TRITON_MODEL_DIRECTORY"
Progress = Callable[[str], None]


class UpdateError(TritongenError, RuntimeError):
    """The update could not be planned or applied."""


@dataclass(frozen=True)
class ModelEntry:
    """One Triton model folder of the repository."""

    digest: str
    ensemble: bool = False
    steps: tuple[str, ...] = ()
    """Composing models (ensembles only)."""
    role: str = ""
    """The manifest's role (`pinned` ensembles load before the `online`/`bulk` entry points)."""


_FILE_DIGESTS: dict[tuple[int, int, int, int], str] = {}
"""(device, inode, size, mtime) -> sha256: hard-linked artifacts are hashed once."""


def file_digest(path: Path) -> str:
    """sha256 of a file's content (cached by inode, size and mtime)."""
    stat = path.stat()
    key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        _FILE_DIGESTS[key] = digest.hexdigest()
    return _FILE_DIGESTS[key]


def _written_by_the_server(path: Path, folder: Path) -> bool:
    """Bytecode the stubs write next to what they import (the generated `1/model.py`, an
    unpacked environment): not content, or every model would count as changed once loaded."""
    return path.suffix == ".pyc" or "__pycache__" in path.relative_to(folder).parts


def model_entry(folder: Path, planned: ManifestModel) -> ModelEntry:
    """Content digest and dependencies of one Triton model folder (facts from the manifest)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not _written_by_the_server(p, folder)):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{file_digest(path)}\n".encode())
    if planned.environment:
        environment = folder.parent / planned.environment
        if environment.is_file():
            digest.update(f"{ENV_PARAMETER}\0{file_digest(environment)}\n".encode())
    steps = planned.depends_on if planned.is_ensemble else ()
    return ModelEntry(digest.hexdigest(), planned.is_ensemble, steps, planned.role)


def content_index(repository: Path) -> dict[str, ModelEntry]:
    """Model name -> entry, for every model of the repository's manifest."""
    if not repository.is_dir():
        raise UpdateError(f"{repository} is not a folder: run `tritongen generate` first")
    manifest = read_manifest(repository)
    missing = [name for name in manifest.names() if not (repository / name / "config.pbtxt").is_file()]
    if missing:
        raise UpdateError(f"{repository}: models {missing} of the manifest have no config.pbtxt: regenerate it")
    return {name: model_entry(repository / name, manifest.models[name]) for name in manifest.names()}


def load_rank(name: str, entry: ModelEntry) -> tuple[int, str]:
    """Sort key: dependencies first, version ensembles before the default entry points."""
    if not entry.ensemble:
        return (0, name)
    return (1 if entry.role == "pinned" else 2, name)


# --- state -------------------------------------------------------------------------------


def state_dir(url: str) -> Path:
    """Serve state (loaded index, generated admin key) of the server whose HTTP port is in `url`."""
    port = url.removeprefix("http://").rsplit(":", 1)[-1]
    if not port.isdigit():
        raise UpdateError(f"{url!r} is not host:port")
    return STATE_ROOT / f"port-{port}"


def default_state_path(url: str) -> Path:
    return state_dir(url) / "loaded.json"


def read_state(path: Path) -> dict[str, str]:
    """Model -> digest the server loaded last ({} when unknown)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise UpdateError(f"unreadable update state {path}: {error}") from error
    return dict(data.get("models", {}))


def read_server_settings(path: Path) -> ServerSettings | None:
    """The settings the server was started with, as `serve` recorded them (None: unknown)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8")).get("server")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise UpdateError(f"unreadable update state {path}: {error}") from error
    if not isinstance(data, dict):
        return None
    return ServerSettings(
        data.get("rate_limit_cores"), data.get("model_load_threads"), tuple(data.get("backend_configs", ()))
    )


def write_state(path: Path, repository: Path, models: Mapping[str, str], server: ServerSettings | None = None) -> None:
    """Record what the server loaded, and the settings it was started with (written atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    payload: dict[str, Any] = {"format": 1, "repository": str(repository), "models": dict(sorted(models.items()))}
    if server is not None:
        payload["server"] = {
            "rate_limit_cores": server.rate_limit_cores,
            "model_load_threads": server.model_load_threads,
            "backend_configs": list(server.backend_configs),
        }
    temporary.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def resolve_admin_key(explicit: str | None, url: str) -> str | None:
    """The admin key: the argument, else $TRITONGEN_ADMIN_KEY, else the key `serve` generated."""
    if explicit:
        return explicit
    if os.environ.get(ADMIN_KEY_VARIABLE):
        return os.environ[ADMIN_KEY_VARIABLE]
    generated = state_dir(url) / "admin-key"
    return generated.read_text(encoding="utf-8").strip() if generated.is_file() else None


def generate_admin_key(url: str) -> tuple[str, Path]:
    """A random admin key, written to `<state dir>/admin-key` readable by the owner only."""
    key = secrets.token_urlsafe(32)
    path = state_dir(url) / "admin-key"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
    return key, path


# --- plan and apply ----------------------------------------------------------------------


@dataclass
class UpdatePlan:
    """What an update does, in order."""

    load: list[tuple[str, str]] = field(default_factory=list)
    """(model, reason) in load order; reason is 'new', 'changed' or 'not ready'."""
    unload: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    restart: list[str] = field(default_factory=list)
    """Server settings that differ from the running server's (`before -> after`): a restart applies them."""
    held: dict[str, str] = field(default_factory=dict)
    """Models not loaded because only the restarted server can run them -> why."""

    def describe(self) -> str:
        lines = [f"load {name} ({reason})" for name, reason in self.load]
        lines += [f"hold {name}: {why}" for name, why in self.held.items()]
        lines += [f"unload {name} (not in the repository)" for name in self.unload]
        lines += [f"server setting needs a restart: {change}" for change in self.restart]
        lines.append(f"{len(self.load)} to load, {len(self.unload)} to unload, {len(self.unchanged)} unchanged")
        return "\n".join(lines)


def plan_update(
    index: Mapping[str, ModelEntry],
    recorded: Mapping[str, str],
    server_states: Mapping[str, str],
    loaded_ensembles: Collection[str] = (),
) -> UpdatePlan:
    """Decide what to load and unload; `server_states` maps model -> Triton state (READY, ...);
    `loaded_ensembles`: the loaded models that are ensembles (unloaded before the others, so
    that no loaded ensemble runs a step that is gone)."""
    ready = {name for name, state in server_states.items() if state == "READY"}
    plan = UpdatePlan()
    for name in sorted(index, key=lambda n: load_rank(n, index[n])):
        if name not in ready:
            plan.load.append((name, "new" if name not in recorded else "not ready"))
        elif recorded.get(name) != index[name].digest:
            plan.load.append((name, "changed"))
        else:
            plan.unchanged.append(name)
    plan.unload = sorted((name for name in ready if name not in index), key=lambda n: (n not in loaded_ensembles, n))
    return plan


def hold_for_restart(
    plan: UpdatePlan, running: ServerSettings, wanted: ServerSettings, cpu_units: Mapping[str, int]
) -> None:
    """Record the server settings only a restart applies (`running` -> `wanted`) in `plan`, and
    hold back the loads the running server cannot take: an instance taking more `cpu` units
    (`cpu_units`: model -> units per instance) than the running rate limiter has, and every
    ensemble over such a model. Unloads wait too (the update is incomplete)."""
    plan.restart = running.changes(wanted)
    if running.rate_limit_cores is None:
        return  # a server without the limiter runs any instance (unbounded until the restart)
    for name, _ in plan.load:
        units = cpu_units.get(name)
        if units is not None and units > running.rate_limit_cores:
            plan.held[name] = (
                f"an instance takes {units} cpu units, the running server's rate limiter has {running.rate_limit_cores}"
            )
    plan.load = [(name, reason) for name, reason in plan.load if name not in plan.held]


@dataclass
class UpdateResult:
    loaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    unloaded: list[str] = field(default_factory=list)
    seconds: float = 0.0
    restart: list[str] = field(default_factory=list)
    """Server settings not applied: only a restart applies them (`UpdatePlan.restart`)."""

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped and not self.restart


def http_client(url: str, timeout_s: float = 600.0) -> Any:
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(
        url.removeprefix("http://"), connection_timeout=timeout_s, network_timeout=timeout_s
    )


def server_states(client: Any, headers: Mapping[str, str]) -> dict[str, str]:
    """Model -> state of every model folder in the server's repository (needs the admin key)."""
    from tritonclient.utils import InferenceServerException

    try:
        entries = client.get_model_repository_index(headers=dict(headers))
    except InferenceServerException as error:
        raise UpdateError(f"cannot read the server's model index: {error} (wrong --admin-key?)") from error
    return {entry["name"]: entry.get("state", "") for entry in entries}


def ensembles_among(client: Any, headers: Mapping[str, str], names: Collection[str]) -> set[str]:
    """The loaded models among `names` that are ensembles (their config, from the server)."""
    from tritonclient.utils import InferenceServerException

    found = set()
    for name in names:
        try:
            config = client.get_model_config(name, headers=dict(headers))
        except InferenceServerException:
            continue  # not loaded any more: nothing to order
        if config.get("platform") == "ensemble":
            found.add(name)
    return found


def apply_update(
    plan: UpdatePlan,
    index: Mapping[str, ModelEntry],
    client: Any,
    headers: Mapping[str, str],
    progress: Progress = print,
) -> UpdateResult:
    """Load and unload as planned; ensembles over failed models are skipped."""
    from tritonclient.utils import InferenceServerException

    result = UpdateResult(restart=list(plan.restart))
    for name, why in plan.held.items():
        result.skipped[name] = f"needs a restart ({why})"
    started = time.monotonic()
    for name, reason in plan.load:
        blocked = [s for s in index[name].steps if s in result.failed or s in result.skipped]
        if blocked:
            result.skipped[name] = f"composing model {blocked[0]} did not load"
            progress(f"skip {name}: {result.skipped[name]}")
            continue
        began = time.monotonic()
        try:
            client.load_model(name, headers=dict(headers))
        except InferenceServerException as error:
            result.failed[name] = str(error)
            progress(f"FAILED to load {name}: {error}")
            continue
        result.loaded.append(name)
        progress(f"loaded {name} ({reason}) in {time.monotonic() - began:.1f}s")
    if result.ok:
        for name in plan.unload:
            try:
                client.unload_model(name, headers=dict(headers))
            except InferenceServerException as error:
                result.failed[name] = f"unload: {error}"
                progress(f"FAILED to unload {name}: {error}")
                continue
            result.unloaded.append(name)
            progress(f"unloaded {name}")
    elif plan.unload:
        progress(f"kept {len(plan.unload)} old models loaded because the update is incomplete")
    result.seconds = time.monotonic() - started
    return result


def update(
    repository: Path,
    url: str,
    admin_key: str | None,
    state_path: Path | None = None,
    dry_run: bool = False,
    progress: Progress = print,
) -> UpdateResult:
    """Bring the server at `url` to the content of `repository` without downtime."""
    repository = repository.resolve()
    state_path = state_path or default_state_path(url)
    headers = admin_headers(admin_key)
    index = content_index(repository)
    manifest = read_manifest(repository)
    running = read_server_settings(state_path)
    client = http_client(url)
    try:
        states = server_states(client, headers)
        recorded = read_state(state_path)
        # Triton's index lists the repository's folders only: ask for removed models one by one.
        for name in sorted(set(recorded) - set(states)):
            if client.is_model_ready(name):
                states[name] = "READY"
        if not recorded:
            progress(f"no record of what the server loaded ({state_path}): reloading every model")
        gone = [name for name, state in states.items() if state == "READY" and name not in index]
        plan = plan_update(index, recorded, states, ensembles_among(client, headers, gone))
        if running is None:
            progress(
                f"the running server's settings are unknown (no record in {state_path}): if they differ from the "
                f"repository's ({' '.join(manifest.server_settings().flags())}), only a restart applies them"
            )
        else:
            units = {name: model.cpu_units for name, model in manifest.models.items() if model.cpu_units is not None}
            hold_for_restart(plan, running, manifest.server_settings(), units)
        progress(plan.describe())
        if dry_run:
            return UpdateResult()
        result = apply_update(plan, index, client, headers, progress)
    finally:
        client.close()
    models = {name: digest for name, digest in recorded.items() if name in index}
    for name in plan.unchanged + result.loaded:
        models[name] = index[name].digest
    write_state(state_path, repository, models, running)
    return result


def record_loaded(
    repository: Path,
    url: str,
    admin_key: str | None,
    index: Mapping[str, ModelEntry],
    state_path: Path | None = None,
    settings: ServerSettings | None = None,
) -> Path:
    """Write the state of a freshly started server: `index` (taken before start) of its READY
    models, and the settings it was started with (default: the repository manifest's)."""
    client = http_client(url, timeout_s=60)
    try:
        states = server_states(client, admin_headers(admin_key))
    finally:
        client.close()
    path = state_path or default_state_path(url)
    ready = {name: entry.digest for name, entry in index.items() if states.get(name) == "READY"}
    write_state(path, repository.resolve(), ready, settings or read_manifest(repository).server_settings())
    return path


# --- command line -------------------------------------------------------------------------


def cmd_update(args: argparse.Namespace) -> int:
    url = args.url.removeprefix("http://")
    key = resolve_admin_key(args.admin_key, url)
    if key is None:
        print(
            f"note: no admin key (--admin-key, ${ADMIN_KEY_VARIABLE} or {state_dir(url) / 'admin-key'}): "
            "assuming the server's admin APIs are open",
            file=sys.stderr,
        )
    result = update(args.repository, url, key, args.state, args.dry_run)
    if args.dry_run:
        return 0
    summary = f"update done in {result.seconds:.1f}s: {len(result.loaded)} loaded, {len(result.unloaded)} unloaded"
    if result.ok:
        print(summary)
        return 0
    if result.restart:
        print(restart_refusal(result.restart, args.repository), file=sys.stderr)
    print(
        f"{summary}, {len(result.failed)} FAILED, {len(result.skipped)} skipped "
        "(the previous versions of these models keep serving):",
        file=sys.stderr,
    )
    for name, error in {**result.failed, **result.skipped}.items():
        print(f"  {name}: {error}", file=sys.stderr)
    return 1


def restart_refusal(changes: list[str], repository: Path) -> str:
    """Why `update` did not apply `changes` (server settings) and the commands that apply them."""
    lines = [
        f"refused: {len(changes)} server setting(s) differ from the running server's; only a restart applies them:"
    ]
    lines += [f"  {change}" for change in changes]
    lines += [
        "apply them by starting the server again on the regenerated repository:",
        f"  tritongen serve: stop it (Ctrl-C), then `tritongen serve --repository {repository}`",
        "  containers: stop it, then `sh docker-run.sh` or `docker compose up` in the repository",
        "  Kubernetes: bake the image and roll out the regenerated deploy/k8s manifests (docs/operations.md)",
    ]
    return "\n".join(lines)


def add_update_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Register `tritongen update` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "update",
        help="load what changed into a running server (zero downtime)",
        description="Compare the repository's content index with what the server loaded last, load new and "
        "changed models (dependencies first, then the entry points), then unload models no longer "
        "in the repository. Requests in flight complete on the old models.",
    )
    parser.add_argument("--repository", type=Path, default=PROJECT_ROOT / "repository")
    parser.add_argument("--url", default="127.0.0.1:8000", help="HTTP address of the server (host:port)")
    parser.add_argument(
        "--admin-key",
        default=None,
        help=f"key of the restricted admin APIs (default: ${ADMIN_KEY_VARIABLE}, else the key file "
        "`tritongen serve` wrote under build/serve/)",
    )
    parser.add_argument(
        "--state",
        type=Path,
        default=None,
        help="index of what the server loaded (default: build/serve/port-<port>/loaded.json)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    parser.set_defaults(func=cmd_update)
    return parser


__all__ = [
    "ModelEntry",
    "UpdateError",
    "UpdatePlan",
    "UpdateResult",
    "add_update_subcommand",
    "apply_update",
    "content_index",
    "plan_update",
    "record_loaded",
    "update",
]
