"""`tritongen`: generate, check and serve the Triton model repository."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from generator.base.launch import ADMIN_KEY_VARIABLE, ServerOptions, ServerPorts, admin_headers, check_admin_key
from generator.base.triton import TritonServerError
from generator.containers import bake, image
from generator.environments.cache import HASH_LENGTH
from generator.environments.cli import add_envs_subcommands
from generator.environments.settings import CHANNELS_VARIABLE
from generator.errors import TritongenError
from generator.kinds.targets import TARGETS
from generator.pipeline.add_model import add_model
from generator.pipeline.artifacts import DEFAULT_CACHE
from generator.pipeline.checks import check_configs, check_native_rules, drift
from generator.pipeline.generate import (
    DEFAULT_OUTPUT,
    DEFAULT_SPECS,
    MANAGED_SUFFIXES,
    GenerateOptions,
    check,
    deploy_files,
    generate,
)
from generator.pipeline.manifest import find_manifest
from generator.pipeline.plan import ENVS_FOLDER, BuiltEnvironmentPlan, PlanError, plan_repository
from generator.pipeline.render import render_repository
from generator.pipeline.spec import load_specs
from generator.serving.diagnostics import failed_models
from generator.serving.process import TritonProcess, start_server
from generator.serving.tune import add_tune_subcommand
from generator.serving.update import (
    ModelEntry,
    add_update_subcommand,
    content_index,
    generate_admin_key,
    record_loaded,
    state_dir,
)
from generator.serving.watchdog import StubWatchdog

USER_ERRORS = (TritongenError,)
"""Errors reported as one message without a traceback (every user-facing error subclasses it)."""


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--specs", type=Path, default=DEFAULT_SPECS, help="folder of <name>.yaml model specs (default: models/)"
    )
    parser.add_argument(
        "--target",
        choices=TARGETS,
        default="local",
        help="; ".join(f"{name}: {target.description}" for name, target in TARGETS.items())
        + " (the model files are the same; the deploy files differ)",
    )
    parser.add_argument("--output", type=Path, default=None, help="repository folder (default: by target)")
    parser.add_argument(
        "--cores",
        type=int,
        default=None,
        help="CPU budget used to size instances and threads (default: `cores` of repository.yaml next to the "
        "specs, else the budget recorded in the existing repository, else the cores this process may use)",
    )
    parser.add_argument(
        "--channel",
        action="append",
        dest="channels",
        metavar="URL",
        help=f"conda channel for execution environments (repeatable; default ${CHANNELS_VARIABLE}, else the "
        "project's channel recorded in build/tritongen.toml by `tritongen envs channel`, else conda-forge)",
    )


def _options(args: argparse.Namespace) -> GenerateOptions:
    output = args.output or DEFAULT_OUTPUT[args.target]
    if args.cores is not None and args.cores < 1:
        raise PlanError("--cores must be at least 1")
    return GenerateOptions(
        specs_dir=args.specs, target=args.target, output=output, cores=args.cores, channels=args.channels
    )


def recorded_cores(repository: Path) -> int | None:
    """The CPU budget the repository on disk was generated with (from its manifest)."""
    manifest = find_manifest(repository)
    return manifest.cpu_budget if manifest else None


def cmd_generate(args: argparse.Namespace) -> int:
    started = time.monotonic()
    generate(_options(args))
    print(f"done in {time.monotonic() - started:.1f}s")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    # stdout is the verdict (`ok: ...` or the drift diff); what the environment solve says on
    # the way goes to stderr.
    options = dataclasses.replace(_options(args), progress=_to_stderr)
    diff = check_configs_offline(options) if args.configs_only else check(options)
    if diff:
        print(diff, end="")
        print(f"drift: {options.output_dir} differs from a fresh generation; run `tritongen generate`", file=sys.stderr)
        return 1
    print(
        f"ok: specs valid, configs wired, {options.output_dir} matches a fresh generation"
        + (
            " (environments not solved: their names are the repository's)"
            if args.configs_only
            else ", artifacts match their configs"
        )
    )
    return 0


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def check_configs_offline(options: GenerateOptions) -> str:
    """`check --configs-only`: specs, plan, rendered configs and their wiring against the
    repository on disk, with no channel and no environment solve; returns the drift diff.

    An environment's name carries a content hash of its solved packages, which only a solve
    can compute. So each preprocessing model's environment hash is taken from the repository's
    manifest, by any model using the same environment (`<environment>-<hash>`; a repository
    without a manifest records none); the path around it follows the plan (owner folder, tarball or
    folder), so a model that switched environment or format shows as drift, and an environment
    no model records is rendered with a name no build makes (drift too). Whether a hash is still
    current (the solved packages) is left to `check` and `generate`.
    """
    repository = options.output_dir
    plan = plan_repository(load_specs(options.specs_dir), options.target, options.budget())
    manifest = find_manifest(repository)
    uses = [pre for pre in plan.preprocess_models() if pre.environment is not None]
    # As generate.build_environments places them: in the folder of the first model using them.
    owners: dict[tuple[str, bool], str] = {}
    for pre in uses:
        assert pre.environment is not None
        key = (pre.environment.name, pre.environment.ship_stub)
        owners[key] = min(owners.get(key, pre.name), pre.name)
    # The hash of each environment as any of its users recorded it (tarball or unpacked folder).
    hashes: dict[tuple[str, bool], str] = {}
    for pre in uses:
        environment = pre.environment
        assert environment is not None
        pattern = rf"(?:^|/){re.escape(environment.name)}-([0-9a-f]{{{HASH_LENGTH}}})(?:\.tar\.gz)?$"
        recorded = manifest.models.get(pre.name) if manifest is not None else None
        match = re.search(pattern, (recorded.environment if recorded else None) or "")
        if match:
            hashes.setdefault((environment.name, environment.ship_stub), match.group(1))
    resolved: dict[str, BuiltEnvironmentPlan] = {}
    for pre in uses:
        environment = pre.environment
        assert environment is not None
        digest = hashes.get((environment.name, environment.ship_stub))
        built = f"{environment.name}-{digest or '<not built: run tritongen generate>'}"
        suffix = "" if environment.folder else ".tar.gz"
        path = f"{owners[(environment.name, environment.ship_stub)]}/{ENVS_FOLDER}/{built}{suffix}"
        resolved[pre.name] = BuiltEnvironmentPlan(path, repository / path, "", None)
    plan = plan.with_environments(resolved)
    texts = {f.path: f.text for f in render_repository(plan) + deploy_files(plan)}
    check_native_rules(check_configs(texts))
    return drift(texts, repository, MANAGED_SUFFIXES)


def cmd_add(args: argparse.Namespace) -> int:
    added = add_model(
        args.folder,
        args.specs,
        args.name,
        args.force,
        args.padded,
        int8=not args.no_int8_report,
        cache_dir=DEFAULT_CACHE,
        progress=lambda line: print(line, flush=True),
    )
    print(f"wrote {added.path}:")
    for line in added.explanation:
        print(f"  {line}")
    if added.int8 is not None:
        print(added.int8.line(added.path))
    print(f"next: tritongen generate --specs {args.specs}, then tritongen update (a running server) or serve")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    repository = args.repository.resolve()
    if not any(repository.glob("*/config.pbtxt")):
        raise TritonServerError(f"{repository} holds no models: run `tritongen generate` first")
    url = f"{args.address}:{args.http_port}"
    key = args.admin_key or os.environ.get(ADMIN_KEY_VARIABLE)
    if key:
        check_admin_key(key)
    else:
        key, key_file = generate_admin_key(url)
        print(f"admin key (model load/unload/config, statistics, logging, trace): written to {key_file} (0600)")
    options = ServerOptions(
        repository=repository,
        ports=ServerPorts(args.http_port, args.grpc_port, args.metrics_port),
        address=args.address,
        models=args.model or (),
        log_verbose=args.log_verbose,
        admin_key=key,
        strict_readiness=args.strict,
        cpu_budget=recorded_cores(repository),
    )
    index = content_index(repository)
    log_path = state_dir(url) / "tritonserver.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # Before anything is created: SIGTERM / SIGHUP then unwind like Ctrl-C, through the cleanup.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    # The backend folder the server runs from (1.6 MB): removed when serve ends, however it ends
    # (only a SIGKILL of serve leaves it; the server then gets SIGTERM through PDEATHSIG).
    workdir = Path(tempfile.mkdtemp(prefix="tritongen-serve-"))
    try:
        print(f"starting tritonserver on {repository} (log: {log_path}) ...", flush=True)
        return _serve(args, options, url, key, index, workdir, log_path)
    except KeyboardInterrupt:
        return 0  # interrupted before the server started
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _serve(
    args: argparse.Namespace,
    options: ServerOptions,
    url: str,
    key: str,
    index: dict[str, ModelEntry],
    workdir: Path,
    log_path: Path,
) -> int:
    server: TritonProcess | None = None
    watchdog: StubWatchdog | None = None
    try:
        server = start_server(options, workdir, log_path=log_path)
        server.wait_ready(args.timeout, allow_failed=not args.strict, progress=lambda line: print(line, flush=True))
        failed = failed_models(server.log_text())
        if failed:
            print(f"\n!!! {len(failed)} model(s) FAILED to load and are NOT served (the others are):", file=sys.stderr)
            for name, cause in sorted(failed.items()):
                print(f"!!!   {name}: {cause}", file=sys.stderr)
            print(
                "!!! fix them, regenerate, then `tritongen update`; `serve --strict` exits instead\n",
                file=sys.stderr,
                flush=True,
            )
        record_loaded(options.repository, url, key, index)
        if args.watchdog:
            watchdog = StubWatchdog(server.process.pid, url, admin_headers(key))
            watchdog.start()
        print(
            f"ready: HTTP {args.address}:{args.http_port}  gRPC {args.address}:{args.grpc_port}  "
            f"metrics {args.address}:{args.metrics_port}  (Ctrl-C stops)",
            flush=True,
        )
        server.process.wait()
        print(f"tritonserver exited with code {server.process.returncode}\n{server.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping tritonserver ...", flush=True)
        return 0
    finally:
        # A second Ctrl-C / SIGTERM must not interrupt the shutdown and orphan the server.
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        if watchdog is not None:
            watchdog.stop()
        if server is not None:
            code = server.stop(progress=lambda line: print(line, flush=True))
            print(f"tritonserver stopped (exit code {code}); log: {log_path}", flush=True)


def _cmd_image(args: argparse.Namespace) -> int:
    return image.main(args.arguments, prog="tritongen image")


def _cmd_bake(args: argparse.Namespace) -> int:
    return bake.main(args.arguments, prog="tritongen bake")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tritongen",
        description="Generate a Triton model repository of text-model ensembles from model specs, check it, serve it.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser(
        "generate",
        help="specs -> repository (builds artifacts, checks, writes atomically)",
        description="Load models/*.yaml, build the ONNX/TorchScript artifacts (cached in "
        "build/artifacts), render every config.pbtxt, check everything, then "
        "replace the repository folder in one step.",
    )
    _add_common(gen)
    gen.set_defaults(func=cmd_generate)

    chk = commands.add_parser(
        "check",
        help="offline validation and drift check (exit 1 on drift)",
        description="Validate the specs, parse every config into Triton's ModelConfig, "
        "check ensemble wiring, compare the repository with a fresh rendering "
        "(printing a diff) and check the artifacts against their configs.",
    )
    _add_common(chk)
    chk.add_argument("--configs-only", action="store_true", help="skip the artifact checks (no built files needed)")
    chk.set_defaults(func=cmd_check)

    add = commands.add_parser(
        "add",
        help="write the spec that serves a model folder (a checkpoint or sentence-transformers folder)",
        description="Inspect a model folder (config.json's architectures and id2label, sentence-transformers "
        "files), write a commented models/NAME.yaml with the builder, labels and the folder pinned by its "
        "content digest, and say what was chosen and why. Nothing is written when the folder cannot be served. "
        "For the ONNX formats it also says what `quantize: dynamic_int8` would give (the fidelity gate's figures, "
        "the measured speed-up, the file sizes); the spec stays fp32.",
    )
    add.add_argument("folder", type=Path, help="the model folder (inside the project or anywhere, e.g. a mount)")
    add.add_argument("--name", help="the spec name (default: the folder's name, lowercased, '_' for other characters)")
    add.add_argument(
        "--specs", type=Path, default=DEFAULT_SPECS, help="folder of <name>.yaml model specs (default: models/)"
    )
    add.add_argument("--force", action="store_true", help="replace an existing spec of that name (re-pin a digest)")
    add.add_argument(
        "--padded",
        action="store_true",
        help="write the padded format (onnx) even where the unpadded one (onnx_ragged, the default) applies",
    )
    add.add_argument(
        "--no-int8-report",
        action="store_true",
        help="skip the int8 report: by default add builds the fp32 ONNX file and its dynamic_int8 copy (into "
        "build/artifacts, which generate reuses), runs the fidelity gate and times both, which takes a while for "
        "a large model; the spec stays fp32 either way",
    )
    add.set_defaults(func=cmd_add)

    srv = commands.add_parser(
        "serve",
        help="serve the repository on the embedded tritonserver",
        description="Assemble the backend folder, start the tritonserver of nvidia-pytriton "
        "in explicit model-control mode, wait until every model is ready, serve "
        "until Ctrl-C / SIGTERM.",
    )
    srv.add_argument(
        "--repository",
        type=Path,
        default=DEFAULT_OUTPUT["local"],
        help="the generated repository to serve (default: repository/ of this project)",
    )
    srv.add_argument(
        "--address", default="127.0.0.1", help="address to bind HTTP, gRPC and metrics to (default: %(default)s)"
    )
    srv.add_argument("--http-port", type=int, default=8000, help="HTTP port, KServe v2 (default: %(default)s)")
    srv.add_argument("--grpc-port", type=int, default=8001, help="gRPC port, KServe v2 (default: %(default)s)")
    srv.add_argument(
        "--metrics-port", type=int, default=8002, help="Prometheus metrics port, /metrics (default: %(default)s)"
    )
    srv.add_argument("--model", action="append", help="load only this model (repeatable; default: every model)")
    srv.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for every model to load (default: %(default)s)"
    )
    srv.add_argument(
        "--log-verbose",
        type=int,
        default=0,
        metavar="LEVEL",
        help="tritonserver's --log-verbose: 0 info, warnings and errors; 1 or more adds verbose lines (the log "
        "is build/serve/port-<http port>/tritonserver.log; default: %(default)s)",
    )
    srv.add_argument(
        "--admin-key",
        default=None,
        help=f"key for the admin APIs (model repository/config, statistics, logging, trace, shared "
        f"memory); default ${ADMIN_KEY_VARIABLE}, else a random key written to "
        "build/serve/port-<http port>/admin-key",
    )
    srv.add_argument(
        "--strict",
        action="store_true",
        help="exit with the load errors if any model fails to load (default: serve the models that "
        "loaded and list the failed ones; /v2/health/ready is then true, per-model ready is not)",
    )
    srv.add_argument(
        "--no-watchdog",
        dest="watchdog",
        action="store_false",
        help="do not reload models whose python stub process died",
    )
    srv.set_defaults(func=cmd_serve)
    add_update_subcommand(commands)
    add_envs_subcommands(commands)
    add_tune_subcommand(commands)
    image = commands.add_parser(
        "image",
        add_help=False,  # `tritongen image --help` is the image tool's own help (see main)
        help="the local Triton container image: build | tag | dockerfile | lock "
        "(same as python -m generator.containers.image)",
    )
    image.add_argument("arguments", nargs=argparse.REMAINDER)
    image.set_defaults(func=_cmd_image)
    bake = commands.add_parser(
        "bake",
        add_help=False,  # `tritongen bake --help` is the bake tool's own help
        help="bake a generated repository into an image FROM its server image, as its Kubernetes "
        "manifests name it (same as python -m generator.containers.bake)",
    )
    bake.add_argument("arguments", nargs=argparse.REMAINDER)
    bake.set_defaults(func=_cmd_bake)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tritongen` console script."""
    parser = build_parser()
    # `image` hands its arguments to generator.containers.image, whose parser knows them; a
    # REMAINDER positional does not take options that come first (`image --help`), so those
    # arrive here as unknown arguments and go to the image tool too.
    args, unknown = parser.parse_known_args(argv)
    if args.command in ("image", "bake"):
        args.arguments = [*unknown, *args.arguments]
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args.func(args))
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
