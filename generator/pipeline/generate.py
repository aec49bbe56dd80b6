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
from generator.pipeline.artifacts import DEFAULT_CACHE, build_artifact, link_or_copy, resolve_source
from generator.pipeline.checks import CheckError, check_artifacts, check_configs, drift
from generator.pipeline.plan import RepositoryPlan, TargetName, detected_cores, plan_repository
from generator.pipeline.render import TRITON_VERSION_DIR, RenderedFile, render_repository
from generator.pipeline.spec import ModelSpec, load_specs

DEFAULT_SPECS = PROJECT_ROOT / "models"
DEFAULT_OUTPUT: dict[TargetName, Path] = {
    "local": PROJECT_ROOT / "repository",
    "ngc": PROJECT_ROOT / "build" / "ngc" / "repository",
}
MANAGED_SUFFIXES = ("config.pbtxt", ".keep", "docker-compose.yml", "docker-run.sh")
"""Generated text files that are committed and compared by the drift check."""

Progress = Callable[[str], None]


@dataclass
class GenerateOptions:
    """Inputs of one generation run."""

    specs_dir: Path = DEFAULT_SPECS
    target: TargetName = "local"
    output: Path | None = None
    cores: int | None = None
    """CPU budget; None detects the cores this process may use."""
    cache_dir: Path = DEFAULT_CACHE
    env_cache_dir: Path = PROJECT_ROOT / "build" / "envs"
    channels: Sequence[str] | None = None
    """Conda channels for execution environments; None: $TRITONGEN_CONDA_CHANNELS or conda-forge."""
    progress: Progress = print

    @property
    def output_dir(self) -> Path:
        return self.output or DEFAULT_OUTPUT[self.target]


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


ENVS_FOLDER = "_envs"
"""Repository folder holding the packed environments, shared by the models that use them."""


def plan_and_render(options: GenerateOptions, specs: list[ModelSpec] | None = None) -> Generated:
    """Load specs, plan, build (or reuse) the environments, render and check the configs.

    Environments are built here because their content hash is part of the config text.
    """
    specs = specs if specs is not None else load_specs(options.specs_dir)
    plan = plan_repository(specs, options.target, options.cores or detected_cores())
    generated = Generated(plan, [])
    environment_paths = build_environments(generated, options)
    generated.files = render_repository(plan, environment_paths) + deploy_files(plan)
    check_configs(generated.texts())
    return generated


def deploy_files(plan: RepositoryPlan) -> list[RenderedFile]:
    """`docker-compose.yml` and `docker-run.sh` at the repository root (Triton ignores files
    there): they serve the folder they are in, read-only, with the target's image."""
    from generator.containers.deploy import render_deploy_files

    files = render_deploy_files(".", target=plan.target, models=plan.model_names())
    return [RenderedFile(name, text) for name, text in sorted(files.items())]


def build_environments(generated: Generated, options: GenerateOptions) -> dict[str, str]:
    """Build each execution environment once; return pre model name -> EXECUTION_ENV_PATH."""
    uses = [
        (pre, pre.version.preprocessing)
        for model in generated.plan.models
        for pre in model.preprocess
        if pre.version.preprocessing.environment is not None
    ]
    if not uses:
        return {}
    from generator.environments.build import (
        build_environment,
        default_channels,
        resolve_target_python,
        spec_path_for,
        unpack_environment,
    )
    from generator.serving.tritonserver import find_triton

    channels = list(options.channels or default_channels())
    stub_python = resolve_target_python(generated.plan.target).python
    built: dict[tuple[str, bool], Any] = {}
    paths = {}
    for pre, settings in uses:
        assert settings.environment is not None
        key = (settings.environment, settings.ship_stub)
        if key not in built:
            options.progress(f"environment {settings.environment}:")
            built[key] = build_environment(
                spec_path_for(settings.environment),
                channels=channels,
                target_python=generated.plan.target,
                cache_dir=options.env_cache_dir,
                progress=lambda line: options.progress(f"  {line}"),
                ship_stub=settings.ship_stub,
            )
        environment = built[key]
        if settings.environment_format == "folder":
            name = environment.tarball.name.removesuffix(".tar.gz")
            folder = environment.tarball.with_name(name + ".unpacked")
            if not folder.is_dir():
                unpack_environment(environment.tarball, folder)
            relative = f"{ENVS_FOLDER}/{name}"
            generated.folders[relative] = folder
        else:
            relative = f"{ENVS_FOLDER}/{environment.tarball.name}"
            generated.artifacts[relative] = environment.tarball
        environment_python = ".".join(environment.python_version.split(".")[:2])
        if settings.ship_stub and environment_python != stub_python:
            stub = find_triton().stub(environment_python)
            generated.artifacts[f"{pre.name}/triton_python_backend_stub"] = stub
        paths[pre.name] = f"$$TRITON_MODEL_DIRECTORY/../{relative}"
    return paths


def build_artifacts(generated: Generated, options: GenerateOptions) -> None:
    """Build (or take from the cache) every model file and tokenizer file of the plan."""
    for model in generated.plan.models:
        for pre in model.preprocess:
            tokenizer = resolve_source(pre.version.preprocessing.tokenizer)
            generated.artifacts[f"{pre.name}/{TRITON_VERSION_DIR}/tokenizer.json"] = tokenizer
        built = {}
        for version in model.spec.versions:
            label = f"{model.spec.name} v{version.version}"
            built[version.version] = build_artifact(
                version.model, version.preprocessing, options.cache_dir, options.progress, label
            )
        for plan in model.inference:
            version_number = int(plan.name.removeprefix(model.spec.name + "_v").split("_")[0])
            path = f"{plan.name}/{TRITON_VERSION_DIR}/{plan.artifact_file}"
            generated.artifacts[path] = built[version_number].path


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


def generate(options: GenerateOptions) -> Generated:
    """Run the whole pipeline and write the repository atomically; return what was generated."""
    say = options.progress
    generated = plan_and_render(options)
    plan = generated.plan
    say(
        f"planned {len(plan.models)} specs -> {len(plan.model_names())} Triton models "
        f"(target {plan.target}, CPU budget {plan.cores} cores)"
    )
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
