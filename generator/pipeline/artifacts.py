"""Build model artifacts (ONNX / TorchScript files, tokenizer files) into a content-addressed cache.

Each artifact is built once per content key (builder settings, source files, library
versions) into `build/artifacts/<key>/`, then hard-linked into the repository. Builds are
deterministic: fixed seeds, no randomness, sorted inputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generator import PROJECT_ROOT
from generator.base.sources import resolve_source
from generator.kinds.builders import get_builder
from generator.kinds.formats import get_format
from generator.kinds.preprocessing import get_preprocessor
from generator.pipeline.quantize import build_quantized
from generator.pipeline.spec import Build, ModelArtifact, Preprocessing

DEFAULT_CACHE = PROJECT_ROOT / "build" / "artifacts"
RECIPE_VERSION = "4"
"""Bump when the export code changes: every artifact key changes, so nothing stale is reused."""

Progress = Callable[[str], None]


def _hash_path(digest: Any, path: Path) -> None:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path.parent)).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)


def _library_versions() -> dict[str, str]:
    import onnx
    import torch
    import transformers

    return {"torch": torch.__version__, "onnx": onnx.__version__, "transformers": transformers.__version__}


def artifact_key(artifact: ModelArtifact, preprocessing: Preprocessing, threshold: float | None = None) -> str:
    """Content key of an artifact: settings, the classifier tail, source files and the exporting libraries."""
    digest = hashlib.sha256(RECIPE_VERSION.encode())
    digest.update(artifact.model_dump_json(exclude={"quantize"}).encode())  # quantized copies: `quantize`
    builder = get_builder(artifact.build.builder)
    head = builder.head(artifact.build, threshold)
    if head is not None:
        digest.update(json.dumps(dataclasses.asdict(head), sort_keys=True).encode())
    if builder.uses_preprocessing:  # e.g. prototypes embedded with this version's preprocessing
        digest.update(preprocessing.model_dump_json().encode())
        _hash_path(digest, resolve_source(preprocessing.tokenizer))
    _hash_path(digest, resolve_source(builder.source(artifact.build)))
    inference_format = get_format(artifact.format)
    for code in inference_format.code_files():  # e.g. the ragged graph and its exporter: this project's own code
        _hash_path(digest, code)
    digest.update(json.dumps(_library_versions(), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def artifact_filename(artifact: ModelArtifact) -> str:
    """The file name Triton's backends expect in a version folder."""
    return get_format(artifact.format).filename


@dataclass(frozen=True)
class BuiltArtifact:
    """A built model file in the cache."""

    path: Path
    key: str


def build_artifact(
    artifact: ModelArtifact,
    preprocessing: Preprocessing,
    cache_dir: Path = DEFAULT_CACHE,
    progress: Progress = print,
    label: str = "",
    threshold: float | None = None,
) -> BuiltArtifact:
    """Build (or reuse from the cache) the artifact file of one model version: the builder's
    file in the spec's format, then its quantized copy if the spec asks for one; `threshold`:
    a multi-label classifier's `outputs.threshold` (None: the default)."""
    if artifact.quantize is not None:
        fp32_artifact = artifact.model_copy(update={"quantize": None})
        fp32 = build_artifact(fp32_artifact, preprocessing, cache_dir, progress, label, threshold)
        return BuiltArtifact(*build_quantized(artifact, preprocessing, fp32.path, fp32.key, cache_dir, progress, label))
    key = artifact_key(artifact, preprocessing, threshold)
    built_file = cache_dir / key / artifact_filename(artifact)
    if built_file.exists():
        progress(f"  {label}: {artifact.format} artifact {key} is cached")
        return BuiltArtifact(built_file, key)
    progress(f"  {label}: building {artifact.format} artifact {key} ({artifact.build.builder}) ...")
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
    try:
        output = work / built_file.name
        builder = get_builder(artifact.build.builder)
        if builder.prebuilt:
            shutil.copyfile(resolve_source(builder.source(artifact.build)), output)
        else:
            with _quiet_exporters():
                head = builder.head(artifact.build, threshold)
                get_format(artifact.format).export(builder, artifact.build, preprocessing, output, head)
        if not built_file.parent.exists():
            os.replace(work, built_file.parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    progress(f"  {label}: built {built_file} ({built_file.stat().st_size / 1e6:.1f} MB)")
    return BuiltArtifact(built_file, key)


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Silence the tracer/exporter warnings and weight-loading progress bars of a build."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def make_module(build: Build, preprocessing: Preprocessing) -> Any:
    """The padded torch module of a version's builder, in eval mode (tests and benchmarks)."""
    return get_builder(build.builder).padded_module(build, preprocessing)


def tokenize_like_server(texts: list[str], preprocessing: Preprocessing) -> tuple[Any, Any]:
    """Tokenize with the same code and settings as the version's preprocessing model, padded."""
    return get_preprocessor(preprocessing.kind).tokenize_padded(texts, preprocessing)


def link_or_copy(source: Path, destination: Path) -> None:
    """Hard-link `source` to `destination` (same filesystem), else copy it; readable by all."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
    mode = destination.stat().st_mode
    if mode & 0o444 != 0o444:
        destination.chmod(mode | 0o444)
