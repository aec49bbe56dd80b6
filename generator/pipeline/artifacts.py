"""Build model artifacts (ONNX / TorchScript files, tokenizer files) into a content-addressed cache.

Each artifact is built once per content key (builder settings, source files, library
versions) into `build/artifacts/<key>/`, then hard-linked into the repository. Builds are
deterministic: fixed seeds, no randomness, sorted inputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
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
from generator.errors import TritongenError
from generator.kinds.formats import get_format
from generator.pipeline.source_model import (
    SentenceTransformerConfig,
    SourceModelError,
    package_path,
    read_sentence_transformer_config,
)
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
RECIPE_VERSION = "3"
"""Bump when the export code changes: every artifact key changes, so nothing stale is reused."""

Progress = Callable[[str], None]


class ArtifactError(TritongenError, RuntimeError):
    """An artifact cannot be built; the message names the source and the cause."""


def resolve_source(source: Source) -> Path:
    """The local path of a package file or project file."""
    if isinstance(source, ProjectFile):
        path = PROJECT_ROOT / source.file
    else:
        try:
            path = package_path(source.package, source.path)
        except SourceModelError as error:
            raise ArtifactError(str(error)) from None
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
    digest.update(artifact.model_dump_json(exclude={"quantize"}).encode())  # quantized copies: `quantize`
    build = artifact.build
    if isinstance(build, PrototypeClassifierBuild):
        # The prototypes are embedded with this version's preprocessing.
        digest.update(preprocessing.model_dump_json().encode())
        _hash_path(digest, resolve_source(preprocessing.tokenizer))
    _hash_path(digest, resolve_source(build.source))
    kind = get_format(artifact.format)
    if kind.ragged:  # the ragged graph and its exporter are this project's own code
        _hash_path(digest, Path(__file__).with_name("ragged.py"))
        _hash_path(digest, Path(inspect.getfile(type(kind))))
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
) -> BuiltArtifact:
    """Build (or reuse from the cache) the artifact file of one model version."""
    if artifact.quantize is not None:
        from generator.pipeline.quantize import build_quantized

        return build_quantized(artifact, preprocessing, cache_dir, progress, label)
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
                kind = get_format(artifact.format)
                if not kind.export(artifact, preprocessing, output):
                    module = make_module(build, preprocessing)
                    if kind.name == "onnx":
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


def sentence_transformer_config(source: PackageFile) -> SentenceTransformerConfig:
    """The source model's sentence-transformers definition (length, pooling, normalization)."""
    try:
        return read_sentence_transformer_config(resolve_source(source))
    except SourceModelError as error:
        raise ArtifactError(f"{source.package}/{source.path}: {error}") from None


def _load_encoder(config: SentenceTransformerConfig) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    torch.manual_seed(0)
    model = AutoModel.from_pretrained(str(config.encoder_folder), attn_implementation="eager")
    positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions < config.max_seq_length:
        raise ArtifactError(
            f"{config.encoder_folder}: max_seq_length {config.max_seq_length} exceeds the model's "
            f"{positions} position embeddings"
        )
    return model.eval()


def pool(hidden: Any, attention_mask: Any, mode: str) -> Any:
    """sentence-transformers' `Pooling` of token embeddings [batch, tokens, dim] (padded forward)."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":  # the first unmasked token ([CLS] with right padding)
        first = attention_mask.to(torch.int32).argmax(dim=1)
        return torch.gather(hidden, 1, first.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])).squeeze(1)
    if mode == "max":
        return hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
    count = mask.sum(dim=1).clamp(min=1e-9)
    total = (hidden * mask).sum(dim=1)
    if mode == "mean":
        return total / count
    if mode == "mean_sqrt_len_tokens":
        return total / torch.sqrt(count)
    raise ArtifactError(f"pooling mode {mode!r} is not supported")


def make_module(build: EmbeddingBuild | PrototypeClassifierBuild, preprocessing: Preprocessing) -> Any:
    """The padded torch module of a builder, in eval mode (classifiers: prototypes embedded
    with `preprocessing`); the padded formats export it, the ragged ones convert it."""
    import torch

    class SentenceEmbedding(torch.nn.Module):
        """Encoder -> the model's pooling over the attention mask -> L2 normalization if the model has it."""

        def __init__(self, encoder: Any, pooling: str, normalize: bool) -> None:
            super().__init__()
            self.encoder = encoder
            self.pooling = pooling
            self.normalize = normalize

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
            pooled = pool(hidden, attention_mask, self.pooling)
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

    config = sentence_transformer_config(build.source)
    if preprocessing.max_length > config.max_seq_length:
        raise ArtifactError(
            f"max_length {preprocessing.max_length} exceeds the model's max_seq_length {config.max_seq_length}"
        )
    encoder = _load_encoder(config)
    if isinstance(build, EmbeddingBuild):
        return SentenceEmbedding(encoder, config.pooling, config.normalize).eval()
    # Prototypes and inputs are compared by cosine: the classifier always normalizes.
    embedding = SentenceEmbedding(encoder, config.pooling, normalize=True).eval()
    prototypes = []
    for examples in build.labels.values():
        ids, mask = tokenize_like_server(list(examples), preprocessing)
        with torch.inference_mode():
            vectors = embedding(torch.from_numpy(ids), torch.from_numpy(mask))
        prototypes.append(torch.nn.functional.normalize(vectors.mean(0), dim=0))
    return PrototypeClassifier(embedding, torch.stack(prototypes), build.scale).eval()


def tokenize_like_server(texts: list[str], preprocessing: Preprocessing) -> tuple[Any, Any]:
    """Tokenize with the same code and settings as the version's preprocessing model."""
    from dataclasses import replace

    from tritongen_textprep.tokenize import Padding, encode, load_tokenizer

    from generator.kinds.preprocessing.textprep import settings_for

    # Padding does not change masked mean pooling: the prototypes are embedded unbucketed.
    settings = replace(
        settings_for(preprocessing),
        tokenizer_file=str(resolve_source(preprocessing.tokenizer)),
        padding=Padding.BATCH_LONGEST,
        buckets=(),
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
        append_label_lookup(graph_model, list(build.labels))
    graph_model.producer_name = "tritongen"
    graph_model.producer_version = ""
    onnx.checker.check_model(graph_model)
    onnx.save(graph_model, str(output))


def append_label_lookup(graph_model: Any, labels: list[str]) -> None:
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
