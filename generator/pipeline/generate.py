"""The pipeline: specs -> plan -> artifacts -> rendered files -> checks -> atomic write.

Nothing is written to the output folder until every check passed: the repository is
assembled in a temporary sibling folder, checked there, then swapped in with renames.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator import PROJECT_ROOT  # noqa: E402
from generator.base.triton import find_triton
from generator.environments.cache import DEFAULT_CACHE_DIR, build_environment
from generator.environments.envspec import spec_path_for
from generator.environments.pack import unpack_environment
from generator.environments.settings import default_channels
from generator.kinds.targets import PRODUCTION, TARGETS
from generator.pipeline.artifacts import DEFAULT_CACHE, build_artifact, link_or_copy, resolve_source
from generator.pipeline.checks import CheckError, check_artifacts, check_configs, check_native_rules, drift
from generator.pipeline.deploy import render_deploy_outputs
from generator.pipeline.manifest import MANIFEST_FILE, Manifest, ManifestError, ManifestModel, find_manifest
from generator.pipeline.plan import (
    ENVS_FOLDER,
    TRITON_VERSION_DIR,
    BuiltEnvironmentPlan,
    PlanError,
    RepositoryPlan,
    plan_repository,
)
from generator.pipeline.render import RenderedFile, render_repository
from generator.pipeline.repository_settings import Budget, resolve_budget
from generator.pipeline.spec import ModelSpec, load_specs

DEFAULT_SPECS = PROJECT_ROOT / "models"
DEFAULT_OUTPUT: dict[str, Path] = {name: PROJECT_ROOT / target.output for name, target in TARGETS.items()}
MANAGED_SUFFIXES = ("config.pbtxt", ".keep", "model.py", MANIFEST_FILE, "docker-compose.yml", "docker-run.sh", ".yaml")
"""Generated text files that are committed and compared by the drift check."""

Progress = Callable[[str], None]


@dataclass
class GenerateOptions:
    """Inputs of one generation run."""

    specs_dir: Path = DEFAULT_SPECS
    target: str = "local"
    output: Path | None = None
    cores: int | None = None
    """CPU budget (`--cores`), over the one of `repository.yaml` next to the specs; None: that
    file's, else the existing repository's (its manifest), else the cores this process may use."""
    cache_dir: Path = DEFAULT_CACHE
    env_cache_dir: Path = DEFAULT_CACHE_DIR
    channels: Sequence[str] | None = None
    """Conda channels for execution environments; None: $TRITONGEN_CONDA_CHANNELS or conda-forge."""
    progress: Progress = print

    @property
    def output_dir(self) -> Path:
        return self.output or DEFAULT_OUTPUT[self.target]

    def budget(self) -> Budget:
        """The repository budget (`repository_settings.resolve_budget`)."""
        previous = previous_manifest(self.output_dir)
        return resolve_budget(self.specs_dir, self.cores, previous.cpu_budget if previous else None)


def previous_manifest(output: Path) -> Manifest | None:
    """The manifest of the repository a generation replaces (None: none, or unreadable)."""
    try:
        return find_manifest(output)
    except ManifestError:
        return None


@dataclass
class Generated:
    """What a generation produced (before or after writing)."""

    plan: RepositoryPlan
    files: list[RenderedFile]
    artifacts: dict[str, Path] = field(default_factory=dict)
    """Repository-relative path -> built file to link there."""
    folders: dict[str, Path] = field(default_factory=dict)
    """Repository-relative folder -> built folder to link there file by file."""

    def texts(self) -> dict[str, str]:
        return {f.path: f.text for f in self.files}


def plan_and_render(options: GenerateOptions, specs: list[ModelSpec] | None = None) -> Generated:
    """Load specs, plan, build (or reuse) the environments, render and check the configs.

    Environments are built here because their content hash is part of the plan (and the
    config text); render then reads the completed plan only.
    """
    specs = specs if specs is not None else load_specs(options.specs_dir)
    plan = plan_repository(specs, options.target, options.budget())
    plan = build_environments(plan, options)
    generated = Generated(plan, render_repository(plan) + deploy_files(plan))
    configs = check_configs(generated.texts())
    check_native_rules(configs)
    _environment_files(generated)
    return generated


def deploy_files(plan: RepositoryPlan) -> list[RenderedFile]:
    """Every deploy output's files (DEPLOY_OUTPUTS): `docker-compose.yml` and `docker-run.sh` at
    the repository root (Triton ignores files there), serving the folder they are in, read-only,
    with the target's image; and the Kubernetes manifests in `deploy/k8s/` (no config.pbtxt
    there: models are loaded by name)."""
    files = render_deploy_outputs(plan, {f.path: f.text for f in render_repository(plan)})
    return [RenderedFile(name, text) for name, text in files.items()]


def build_environments(plan: RepositoryPlan, options: GenerateOptions) -> RepositoryPlan:
    """Build each execution environment once; return the plan with every environment resolved.

    Environments are built for the production server's stub whatever the target, so both
    targets get the same files (an environment whose Python differs ships its own stub).
    """
    uses = [pre for pre in plan.preprocess_models() if pre.environment is not None]
    if not uses:
        return plan
    channels = list(options.channels or default_channels())
    owners: dict[tuple[str, bool], str] = {}
    for pre in uses:
        assert pre.environment is not None
        key = (pre.environment.name, pre.environment.ship_stub)
        owners[key] = min(owners.get(key, pre.name), pre.name)
    built: dict[tuple[str, bool], Any] = {}
    resolved: dict[str, BuiltEnvironmentPlan] = {}
    for pre in uses:
        environment = pre.environment
        assert environment is not None
        key = (environment.name, environment.ship_stub)
        if key not in built:
            options.progress(f"environment {environment.name}:")
            built[key] = build_environment(
                spec_path_for(environment.name),
                channels=channels,
                target_python=PRODUCTION.name,
                cache_dir=options.env_cache_dir,
                progress=lambda line: options.progress(f"  {line}"),
                ship_stub=environment.ship_stub,
            )
        result = built[key]
        pinned = result.packages.get(pre.kind.package)
        wanted = pre.settings.package_version
        if pinned is not None and not pre.kind.runs_on(wanted, pinned):
            raise PlanError(
                f"models/{pre.spec_name}.yaml: versions[{pre.users[0].version}].preprocessing.package_version "
                f"is {wanted}, but environment {environment.name} pins {pre.kind.package}=={pinned}, which does "
                f"not run it (preprocessing of {pre.describe_users()})"
            )
        name = result.tarball.name.removesuffix(".tar.gz")
        source = result.tarball
        # Shared by every model that uses it, kept in the folder of the first one: a folder
        # of its own at the repository root would show up in Triton's model index.
        shelf = f"{owners[key]}/{ENVS_FOLDER}"
        path = f"{shelf}/{result.tarball.name}"
        if environment.folder:
            source = result.tarball.with_name(name + ".unpacked")
            if not source.is_dir():
                unpack_environment(result.tarball, source)
            path = f"{shelf}/{name}"
        python = ".".join(result.python_version.split(".")[:2])
        stub = find_triton().stub(python) if environment.ship_stub and python != PRODUCTION.server_stub_python else None
        resolved[pre.name] = BuiltEnvironmentPlan(path, source, python, stub)
    return plan.with_environments(resolved)


def _environment_files(generated: Generated) -> None:
    """Link every resolved environment (and shipped stub) into the repository."""
    for pre in generated.plan.preprocess_models():
        if pre.environment is None or pre.environment.built is None:
            continue
        built = pre.environment.built
        if pre.environment.folder:
            generated.folders[built.path] = built.source
        else:
            generated.artifacts[built.path] = built.source
        if built.stub is not None:
            generated.artifacts[f"{pre.name}/triton_python_backend_stub"] = built.stub


def build_artifacts(generated: Generated, options: GenerateOptions) -> None:
    """Build (or take from the cache) every model file and preprocessing file of the plan."""
    for pre in generated.plan.preprocess_models():
        for filename, source in pre.files.items():
            generated.artifacts[f"{pre.name}/{TRITON_VERSION_DIR}/{filename}"] = resolve_source(source)  # type: ignore[arg-type]
    built: dict[tuple[str, int], Path] = {}
    for inference in generated.plan.inference_models():
        version = inference.version
        key = (inference.spec_name, version.version)
        if key not in built:
            label = f"{inference.spec_name} v{version.version}"
            built[key] = build_artifact(
                version.model,
                version.preprocessing,
                options.cache_dir,
                options.progress,
                label,
                version.outputs.threshold,
            ).path
        generated.artifacts[f"{inference.name}/{TRITON_VERSION_DIR}/{inference.artifact_file}"] = built[key]


def assemble(generated: Generated, destination: Path) -> None:
    """Write rendered files and link artifacts into an empty folder."""
    for rendered in generated.files:
        path = destination / rendered.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rendered.text, encoding="utf-8")
    for relative, source in sorted(generated.artifacts.items()):
        link_or_copy(source, destination / relative)
    for relative, folder in sorted(generated.folders.items()):
        shutil.copytree(folder, destination / relative, symlinks=True, copy_function=_link_file)


def _link_file(source: str, destination: str) -> None:
    link_or_copy(Path(source), Path(destination))


def swap_in(staging: Path, output: Path) -> None:
    """Replace `output` by `staging` with renames (the old tree is removed afterwards)."""
    retired = output.with_name(f".{output.name}.old-{os.getpid()}")
    if output.exists():
        os.replace(output, retired)
    os.replace(staging, output)
    shutil.rmtree(retired, ignore_errors=True)


def plan_summary(plan: RepositoryPlan) -> str:
    """The line `generate` prints once the plan is made."""
    return (
        f"planned {len(plan.models)} specs -> {len(plan.model_names())} Triton models "
        f"(target {plan.target.name}, CPU budget {plan.cores} cores)"
    )


def _layout(model: ManifestModel) -> tuple[int | None, int | None, int | None]:
    return model.instances, model.threads, model.cpu_units


def _describe_layout(layout: tuple[int | None, int | None, int | None]) -> str:
    instances, threads, units = layout
    threads_text = f" x {threads} threads" if threads is not None else ""
    limiter = "off" if units is None else f"cpu {units}"
    return f"{instances} instances{threads_text}, limiter {limiter}"


def layout_changes(previous: Manifest | None, new: Manifest) -> list[str]:
    """What `generate` says about the layout (module doc of `plan.py`) against the repository it
    replaces: each preprocessing and inference model whose instances, threads or rate-limiter
    units change (before -> after), new and removed ones, and server settings that change
    (applied only by a restart)."""
    sized = {name: model for name, model in new.models.items() if not model.is_ensemble}
    if previous is None:
        instances = sum(model.instances or 0 for model in sized.values())
        return [f"layout: {len(sized)} models, {instances} instances (no previous manifest to compare with)"]
    before = {name: model for name, model in previous.models.items() if not model.is_ensemble}
    lines, unchanged = [], 0
    for name in sorted(before.keys() | sized.keys()):
        if name not in sized:
            lines.append(f"layout {name}: removed (was {_describe_layout(_layout(before[name]))})")
        elif name not in before:
            lines.append(f"layout {name}: new, {_describe_layout(_layout(sized[name]))}")
        elif _layout(before[name]) != _layout(sized[name]):
            (i0, t0, u0), (i1, t1, u1) = _layout(before[name]), _layout(sized[name])
            limiter = ["off" if units is None else f"cpu {units}" for units in (u0, u1)]
            lines.append(
                f"layout {name}: instances {i0} -> {i1}, threads {t0} -> {t1}, limiter {limiter[0]} -> {limiter[1]}"
            )
        else:
            unchanged += 1
    lines.append(f"layout: {len(lines)} models changed, new or removed, {unchanged} unchanged")
    for change in previous.server_settings().changes(new.server_settings()):
        lines.append(f"server setting (a restart applies it; `tritongen update` refuses it): {change}")
    return lines


def generate(options: GenerateOptions, specs: list[ModelSpec] | None = None) -> Generated:
    """Run the whole pipeline and write the repository atomically; return what was generated.
    `specs`: these (e.g. `tune`'s candidates, held in memory) instead of the spec folder's."""
    say = options.progress
    generated = plan_and_render(options, specs)
    plan = generated.plan
    say(plan_summary(plan))
    for line in layout_changes(previous_manifest(options.output_dir), plan.manifest()):
        say(line)
    say(plan.describe_memory())
    say("building artifacts:")
    build_artifacts(generated, options)
    output = options.output_dir
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.new-", dir=output.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; servers in containers may run as another user
    try:
        assemble(generated, staging)
        say("checking artifacts against configs ...")
        check_artifacts(staging, check_configs(generated.texts()))
        swap_in(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    say(
        f"wrote {output} ({len(generated.files)} files, {len(generated.artifacts)} artifacts, "
        f"{len(generated.folders)} unpacked environments)"
    )
    return generated


def check(options: GenerateOptions, artifacts: bool = True) -> str:
    """Validate the specs and the repository on disk; return the drift diff ('' when none).

    Raises CheckError / SpecError on invalid specs or configs, missing or mismatching artifacts.
    """
    generated = plan_and_render(options)
    output = options.output_dir
    diff = drift(generated.texts(), output, MANAGED_SUFFIXES)
    if artifacts and not diff:
        check_artifacts(output, check_configs(generated.texts()))
    return diff


__all__ = ["CheckError", "GenerateOptions", "Generated", "check", "generate", "plan_and_render"]
