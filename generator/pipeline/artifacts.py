"""Build model artifacts (ONNX / TorchScript files, tokenizer files) into a content-addressed cache.

Each artifact is built once per content key (builder settings, source files, library
versions) into `build/artifacts/<key>/`, then hard-linked into the repository. Builds are
deterministic: fixed seeds, no randomness, sorted inputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generator import PROJECT_ROOT  # noqa: E402
from generator.pipeline.spec import (
    EmbeddingBuild,
    FileBuild,
    ModelArtifact,
    PackageFile,
    Preprocessing,
    ProjectFile,
    PrototypeClassifierBuild,
    Source,
)

DEFAULT_CACHE = PROJECT_ROOT / "build" / "artifacts"
ONNX_OPSET = 17
RECIPE_VERSION = "2"
"""Bump when the export code changes: every artifact key changes, so nothing stale is reused."""

Progress = Callable[[str], None]


class ArtifactError(RuntimeError):
    """An artifact cannot be built; the message names the source and the cause."""


def resolve_source(source: Source) -> Path:
    """The local path of a package file or project file."""
    if isinstance(source, ProjectFile):
        path = PROJECT_ROOT / source.file
    else:
        spec = importlib.util.find_spec(source.package)
        if spec is None or not spec.submodule_search_locations:
            raise ArtifactError(f"package {source.package!r} is not installed (needed for {source.path})")
        path = Path(next(iter(spec.submodule_search_locations))) / source.path
    if not path.exists():
        raise ArtifactError(f"{path} does not exist")
    return path


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


def artifact_key(artifact: ModelArtifact, preprocessing: Preprocessing) -> str:
    """Content key of an artifact: settings, source files and the exporting libraries."""
    digest = hashlib.sha256(RECIPE_VERSION.encode())
    digest.update(artifact.model_dump_json().encode())
    build = artifact.build
    if isinstance(build, PrototypeClassifierBuild):
        # The prototypes are embedded with this version's preprocessing.
        digest.update(preprocessing.model_dump_json().encode())
        _hash_path(digest, resolve_source(preprocessing.tokenizer))
    _hash_path(digest, resolve_source(build.source))
    digest.update(json.dumps(_library_versions(), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def artifact_filename(artifact: ModelArtifact) -> str:
    """The file name Triton's backends expect in a version folder."""
    return "model.onnx" if artifact.format == "onnx" else "model.pt"


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
) -> BuiltArtifact:
    """Build (or reuse from the cache) the artifact file of one model version."""
    key = artifact_key(artifact, preprocessing)
    target_dir = cache_dir / key
    target = target_dir / artifact_filename(artifact)
    if target.exists():
        progress(f"  {label}: {artifact.format} artifact {key} is cached")
        return BuiltArtifact(target, key)
    progress(f"  {label}: building {artifact.format} artifact {key} ({artifact.build.builder}) ...")
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
    try:
        output = work / target.name
        build = artifact.build
        if isinstance(build, FileBuild):
            shutil.copyfile(resolve_source(build.source), output)
        else:
            with _quiet_exporters():
                module = _make_module(build, preprocessing)
                if artifact.format == "onnx":
                    _export_onnx(module, output, build)
                else:
                    _export_torchscript(module, output)
        if not target_dir.exists():
            os.replace(work, target_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    progress(f"  {label}: built {target} ({target.stat().st_size / 1e6:.1f} MB)")
    return BuiltArtifact(target, key)


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Silence the tracer/exporter warnings and weight-loading progress bars of a build."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# --- torch modules -------------------------------------------------------------------------


def _load_encoder(source: PackageFile) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    torch.manual_seed(0)
    folder = resolve_source(source)
    model = AutoModel.from_pretrained(str(folder), attn_implementation="eager")
    return model.eval()


def _make_module(build: EmbeddingBuild | PrototypeClassifierBuild, preprocessing: Preprocessing) -> Any:
    import torch

    class SentenceEmbedding(torch.nn.Module):
        """Encoder -> mean pooling over the attention mask -> optional L2 normalization."""

        def __init__(self, encoder: Any, normalize: bool) -> None:
            super().__init__()
            self.encoder = encoder
            self.normalize = normalize

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
            return pooled

    class PrototypeClassifier(torch.nn.Module):
        """Normalized embedding -> `scale` x cosine similarity to each label's prototype."""

        def __init__(self, embedding: torch.nn.Module, prototypes: torch.Tensor, scale: float):
            super().__init__()
            self.embedding = embedding
            self.register_buffer("prototypes", prototypes)
            self.scale = scale

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.scale * self.embedding(input_ids, attention_mask) @ self.prototypes.T

    encoder = _load_encoder(build.source)
    if isinstance(build, EmbeddingBuild):
        return SentenceEmbedding(encoder, build.normalize).eval()
    embedding = SentenceEmbedding(encoder, normalize=True).eval()
    prototypes = []
    for examples in build.labels.values():
        ids, mask = tokenize_like_server(list(examples), preprocessing)
        with torch.inference_mode():
            vectors = embedding(torch.from_numpy(ids), torch.from_numpy(mask))
        prototypes.append(torch.nn.functional.normalize(vectors.mean(0), dim=0))
    return PrototypeClassifier(embedding, torch.stack(prototypes), build.scale).eval()


def tokenize_like_server(texts: list[str], preprocessing: Preprocessing) -> tuple[Any, Any]:
    """Tokenize with the same code and settings as the version's preprocessing model."""
    from tritongen_textprep.tokenize import TokenizerSettings, encode, load_tokenizer

    settings = TokenizerSettings(
        tokenizer_file=str(resolve_source(preprocessing.tokenizer)),
        max_length=preprocessing.max_length,
        truncation=preprocessing.truncation,
        lowercase=None if preprocessing.casing.value == "keep" else preprocessing.casing.value == "lowercase",
    )
    tokenizer, pad_id = load_tokenizer(settings)
    return encode(tokenizer, texts, settings, pad_id)


def _sample_inputs() -> tuple[Any, Any]:
    import torch

    ids = torch.tensor([[101, 7592, 2088, 102, 0], [101, 2023, 2003, 1037, 102]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    return ids, mask


def _export_onnx(module: Any, output: Path, build: EmbeddingBuild | PrototypeClassifierBuild) -> None:
    import onnx
    import torch

    is_classifier = isinstance(build, PrototypeClassifierBuild)
    output_name = "logits" if is_classifier else "embedding"
    with torch.no_grad():
        torch.onnx.export(
            module,
            _sample_inputs(),
            str(output),
            input_names=["input_ids", "attention_mask"],
            output_names=[output_name],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                output_name: {0: "batch"},
            },
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    graph_model = onnx.load(str(output))
    # The exporter leaves non-batch output dims symbolic ("Divembedding_dim_1"): record the
    # real sizes, so that `check` can compare them with the config.
    with torch.no_grad():
        sample_output = module(*_sample_inputs())
    output_dims = graph_model.graph.output[0].type.tensor_type.shape.dim[1:]
    for dim, size in zip(output_dims, sample_output.shape[1:], strict=True):
        dim.Clear()
        dim.dim_value = int(size)
    if isinstance(build, PrototypeClassifierBuild):
        _append_label_lookup(graph_model, list(build.labels))
    graph_model.producer_name = "tritongen"
    graph_model.producer_version = ""
    onnx.checker.check_model(graph_model)
    onnx.save(graph_model, str(output))


def _append_label_lookup(graph_model: Any, labels: list[str]) -> None:
    """Add `label` (string [batch, 1]) = labels[argmax(logits)] to the graph."""
    from onnx import TensorProto, helper

    graph = graph_model.graph
    names = [label.encode() for label in labels]
    label_values = helper.make_tensor("label_names", TensorProto.STRING, [len(labels)], names)  # type: ignore[arg-type]
    graph.initializer.append(label_values)
    graph.node.append(helper.make_node("ArgMax", ["logits"], ["label_index"], axis=1, keepdims=1))
    graph.node.append(helper.make_node("Gather", ["label_names", "label_index"], ["label"], axis=0))
    graph.output.append(helper.make_tensor_value_info("label", TensorProto.STRING, ["batch", 1]))


def _export_torchscript(module: Any, output: Path) -> None:
    import io

    import torch

    # Fresh TorchScript type state, so class names are not mangled by earlier exports.
    torch.jit._state._python_cu = torch._C.CompilationUnit()
    torch.jit._recursive.concrete_type_store = torch.jit._recursive.ConcreteTypeStore()
    with torch.no_grad():
        traced = torch.jit.trace(module, _sample_inputs(), check_trace=False, strict=False)
    frozen = torch.jit.freeze(traced.eval())
    buffer = io.BytesIO()
    torch.jit.save(frozen, buffer)
    output.write_bytes(_without_random_id(buffer.getvalue()))


def _without_random_id(archive: bytes) -> bytes:
    """Rewrite a TorchScript zip so that identical models give identical bytes.

    torch writes a random `.data/serialization_id`, replaced by one derived from the content,
    and `*.debug_pkl` source maps that record the Python call stack (paths of the checkout),
    which are dropped: they only enrich error messages and the loader does not need them.
    """
    import io
    import zipfile

    source = zipfile.ZipFile(io.BytesIO(archive))
    entries = [(info, source.read(info)) for info in source.infolist() if not info.filename.endswith(".debug_pkl")]
    digest = hashlib.sha256()
    for info, data in entries:
        if not info.filename.endswith(".data/serialization_id"):
            digest.update(info.filename.encode() + data)
    stable_id = str(int(digest.hexdigest(), 16))[:40].encode()
    result = io.BytesIO()
    with zipfile.ZipFile(result, "w") as target:
        for info, data in entries:
            copy = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            copy.compress_type = info.compress_type
            target.writestr(copy, stable_id if info.filename.endswith(".data/serialization_id") else data)
    return result.getvalue()


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
