"""Model specs: one YAML file per served model, loaded into typed, validated objects.

A spec says WHAT to serve (versions, their preprocessing, their model artifact and how it is
built, batching, instances); `plan.py` decides HOW (Triton names, shapes, threads).
Unknown keys are errors; every error names the file, the field path and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, Union

import yaml
from pydantic import (
    BaseModel,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from generator.base.source_model import SourceModelError
from generator.base.sources import (
    SOURCE_TAGS,
    ArtifactError,
    Source,
    SourceSettings,
    StrictModel,
    source_digest,
    source_kind,
)
from generator.errors import TritongenError
from generator.kinds.builders import BUILDERS, get_builder
from generator.kinds.builders.base import BuildSettings
from generator.kinds.formats import FORMATS
from generator.kinds.preprocessing import PREPROCESSORS, PreprocessingSettings, get_preprocessor

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
MAX_NAME_LENGTH = 48
REPOSITORY_FILE = "repository.yaml"
"""The repository's settings next to the specs (`repository_settings.py`): not a spec."""


class SpecError(TritongenError, ValueError):
    """A spec file is invalid; the message names the file and the field."""


def _union_of(settings: list[type[StrictModel]], discriminator: str) -> Any:
    """The spec section of a registry: its one settings model, or their discriminated union."""
    if len(settings) == 1:
        return settings[0]
    return Annotated[Union[tuple(settings)], Field(discriminator=discriminator)]  # noqa: UP007


if TYPE_CHECKING:  # what every kind's settings have in common
    Preprocessing: TypeAlias = PreprocessingSettings
    Build: TypeAlias = BuildSettings
else:
    Preprocessing = _union_of([preprocessor.settings for preprocessor in PREPROCESSORS.values()], "kind")
    """A version's `preprocessing` section: the settings of one of `PREPROCESSORS`."""
    Build = _union_of([builder.settings for builder in BUILDERS.values()], "builder")
    """A version's `model.build` section: the settings of one of `BUILDERS`."""


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
    """Gate for classifiers: the share of examples whose quantized `label` equals the fp32 one
    (multi-label classifiers: whose `labels`, the set over the threshold, equal the fp32 ones)."""
    max_score_difference: float = Field(default=0.05, gt=0)
    """Gate for rerankers: the largest absolute difference, over the gate's (query, text) pairs,
    between the quantized and the fp32 file's `SCORE`. The shipped course_reranker's int8 copy
    measures 0.021 (unpadded; 0.018 padded) on the default gate pairs."""
    min_order_agreement: float = Field(default=0.9, ge=0, le=1)
    """Gate for rerankers: the share of the text pairs (two texts of one query, fp32 scores not
    tied), pooled over the queries, that the quantized scores rank in the fp32 order (1: every
    query's ranking unchanged; pooled, one query's ranking may change more than the figure). Texts scored
    almost alike swap places: the course_reranker's int8 copy measures 0.947 (unpadded; 0.950
    padded), every swapped pair less than 0.021 apart in fp32."""
    examples: tuple[str, ...] = ()
    """Texts the gate runs through both files, after a prototype classifier's own label examples;
    none at all (an embedding spec that declares none): `quantize.DEFAULT_EXAMPLES`, varied
    English sentences. Declare texts like the model's traffic. A reranker's gate scores each of
    them against every one of `queries`."""
    queries: tuple[str, ...] = ()
    """Rerankers only: the queries the gate ranks `examples` for; none: `quantize.DEFAULT_QUERIES`."""

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        methods = sorted(
            {method for inference_format in FORMATS.values() for method in inference_format.quantize_methods}
        )
        if value not in methods:
            raise ValueError(f"unknown quantize method {value!r}: use one of {', '.join(methods)}")
        return value

    @field_validator("examples", "queries")
    @classmethod
    def _texts(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if any(not text.strip() for text in value):
            raise ValueError(f"{info.field_name} must be non-empty texts")
        return value


class ModelArtifact(StrictModel):
    """The inference model of one version: its format and how it is built."""

    format: str
    """Inference format, a key of `generator.kinds.formats.FORMATS`: `onnx`, `torchscript`, or
    their unpadded variants `onnx_ragged`, `torchscript_ragged` (with `padding: none`)."""

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in FORMATS:
            raise ValueError(f"unknown format {value!r}: use one of {', '.join(FORMATS)}")
        return value

    build: Build
    """How the file is made, chosen by its `builder` key: `sentence_embedding`,
    `prototype_classifier`, `file`, `transformers_classifier` or `cross_encoder`."""
    quantize: Quantize | None = None
    """Serve a quantized copy of the built file (see `Quantize`); None: full precision."""

    @field_validator("quantize", mode="before")
    @classmethod
    def _method_alone(cls, value: Any) -> Any:
        return {"method": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _quantizable(self) -> ModelArtifact:
        if self.quantize is not None and self.quantize.method not in FORMATS[self.format].quantize_methods:
            formats = [name for name, known in FORMATS.items() if self.quantize.method in known.quantize_methods]
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
    """Classifiers: the labels in `LOGITS` (and `PROBABILITIES`) order, the values of `LABEL`
    (`LABELS` for multi-label classifiers); they must equal the build's labels."""
    threshold: float | None = Field(default=None, gt=0, lt=1)
    """Multi-label classifiers only: `LABELS` holds each label whose probability (sigmoid) is
    over this threshold (default 0.5 when omitted), else the empty string."""


class Version(StrictModel):
    """One model version: preprocessing aligned with its own weights."""

    version: int = Field(ge=1, le=999)
    """Version number, unique in the spec; clients pin it through the ensemble `<name>_v<N>`."""
    preprocessing: Preprocessing
    """The tokenization this version's weights were trained with."""
    model: ModelArtifact
    """The inference model: its format, how it is built, optional quantization."""
    outputs: Outputs
    """What clients get back: `embedding_dim` for embedding specs, `labels` for classifiers."""

    @model_validator(mode="before")
    @classmethod
    def _max_length_from_the_model(cls, data: Any) -> Any:
        """`preprocessing.max_length` defaults to the tokens the build's model takes
        (`Builder.token_limit`: a sentence-transformers model's `max_seq_length`, a checkpoint's
        position embeddings capped by its tokenizer's `model_max_length`); never above them. A
        model of a family the builders do not export is an error here."""
        build = _raw_build(data)
        preprocessing = data.get("preprocessing") if build is not None else None
        if build is None or not isinstance(preprocessing, dict):
            return data  # malformed: the field validation reports it
        explicit = preprocessing.get("max_length")
        try:
            limit = get_builder(build.builder).token_limit(build, _raw_source(preprocessing.get("tokenizer")))
        except (ArtifactError, SourceModelError) as error:
            if explicit is None:
                raise ValueError(
                    f"preprocessing.max_length: not set, and the model's length cannot be read: {error}"
                ) from None
            return data  # the build reports the unreadable model
        if limit is None:
            return data  # e.g. a prebuilt file: the spec sets max_length
        if explicit is None:
            return {**data, "preprocessing": {**preprocessing, "max_length": limit.default}}
        if isinstance(explicit, int) and explicit > limit.most:
            raise ValueError(
                f"preprocessing.max_length: {explicit} is over {limit.reason}: omit it to use the model's "
                "length, or set a lower one (a deviation from the model)"
            )
        return data

    @model_validator(mode="before")
    @classmethod
    def _tokenizer_fits_the_model(cls, data: Any) -> Any:
        """The tokenizer gives no token id at or above the model's `vocab_size`
        (`Builder.vocabulary_problem`): such an id indexes outside its embedding table."""
        build = _raw_build(data)
        preprocessing = data.get("preprocessing") if build is not None else None
        if build is None or not isinstance(preprocessing, dict):
            return data  # malformed: the field validation reports it
        problem = get_builder(build.builder).vocabulary_problem(build, _raw_source(preprocessing.get("tokenizer")))
        if problem is not None:
            raise ValueError(f"preprocessing.tokenizer: {problem}")
        return data


SENTENCE_TRANSFORMER_BUILDERS = tuple(name for name, builder in BUILDERS.items() if builder.sentence_transformer)
"""Builders whose source is a sentence-transformers model folder (its config is read)."""


_SOURCE: TypeAdapter[Source] = TypeAdapter(Source)


def _raw_source(value: Any) -> Source | None:
    """A raw source mapping as a `Source` (any source kind), None if malformed."""
    try:
        return _SOURCE.validate_python(value)
    except ValidationError:
        return None  # the field validation reports it


def _raw_build(data: Any) -> BuildSettings | None:
    """A raw version's `model.build` as its builder's settings, None if malformed."""
    model = data.get("model") if isinstance(data, dict) else None
    build = model.get("build") if isinstance(model, dict) else None
    name = build.get("builder") if isinstance(build, dict) else None
    builder = BUILDERS.get(name) if isinstance(name, str) else None
    if builder is None:
        return None
    try:
        return builder.settings.model_validate(build)
    except ValidationError:
        return None  # the field validation reports it


class Batching(StrictModel):
    """Dynamic batching of an inference model."""

    max_batch_size: int = Field(default=32, ge=1, le=1024)
    """The largest request (texts) `<name>` and `<name>_v<N>` accept, and the largest batch the
    dynamic batcher forms (the inference model takes the larger of this and `bulk_batching`'s)."""
    preferred_batch_sizes: tuple[int, ...] = ()
    """Batch sizes the dynamic batcher aims for, ascending, none above `max_batch_size`; empty
    (default): it forms the largest batch it can within the delay."""
    max_queue_delay_us: int = Field(default=1000, ge=0, le=10_000_000)
    """Microseconds a request may wait in the queue for others to batch with (default 1000);
    lower favours latency, higher throughput under load."""

    @model_validator(mode="after")
    def _preferred_fit(self) -> Batching:
        sizes = self.preferred_batch_sizes
        if list(sizes) != sorted(set(sizes)) or any(s < 1 for s in sizes):
            raise ValueError("preferred_batch_sizes must be positive and strictly ascending")
        if sizes and sizes[-1] > self.max_batch_size:
            raise ValueError(f"preferred batch size {sizes[-1]} exceeds max_batch_size {self.max_batch_size}")
        return self


class Instances(StrictModel):
    """Instance counts; `auto` sizes them from the repository budget (see `plan.py`)."""

    preprocess: int | Literal["auto"] = "auto"
    """Instances of the preprocessing model, one thread each (1 to 64); `auto`: one per 8 cores
    of the CPU budget, at least one."""
    model: int | Literal["auto"] = "auto"
    """Instances of each version's inference model (1 to 64); `auto`: from the spec's
    `traffic_weight` and the repository budget (`plan.py`): the most-weighted spec gets enough
    instances to use every inference core, the others in proportion to their weight, at least
    one, fewer when the repository's memory budget is reached."""
    model_threads: int | Literal["auto"] = "auto"
    """Intra-op threads of each inference instance (1 to 64, at most the budget's cores); `auto`:
    1 up to 4 cores, else 2."""
    rate_limit: Literal["auto"] | bool = "auto"
    """Declare each inference instance's threads as `cpu` resources of Triton's rate limiter:
    the server, always started with the budget's cores as its `cpu` resource, then runs at most
    that many threads of inference at once across all models instead of letting the OS
    time-slice every instance of every model. `auto` (on) or `true`; `false` runs this model's
    instances outside the limiter."""

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
    """The model's name, the stem of its file (`models/<name>.yaml`) and of its Triton models:
    lowercase letters, digits and `_`, starting with a letter, at most 48 characters."""
    kind: Literal["embedding", "classifier", "multi_label_classifier", "reranker"]
    """The client contract: `embedding` returns `EMBEDDING`; `classifier` returns `LOGITS`,
    `PROBABILITIES` (softmax) and `LABEL` (the most probable label); `multi_label_classifier`
    returns `LOGITS`, `PROBABILITIES` (a sigmoid per label) and `LABELS` (one string per label,
    in label order: the label where its probability is over `outputs.threshold`, else "");
    `reranker` takes `QUERY` and `TEXT` per row and returns `SCORE` (the pair's relevance), and
    `<name>_rerank` takes one `QUERY` and n `TEXT`s and returns their n `SCORES`."""
    description: str = ""
    """Free text for the people reading the spec; it changes nothing generated."""
    default_version: int
    """The version served by the entry points `<name>` and `<name>_batch`; one of `versions`."""
    versions: tuple[Version, ...] = Field(min_length=1)
    """The model versions, at least one; each is also served on its own as `<name>_v<N>`."""
    batching: Batching = Batching()
    """The online entry point `<name>`: latency first."""
    bulk_batching: BulkBatching = BulkBatching()
    """The bulk entry point `<name>_batch`: same model, lower priority, larger requests."""
    instances: Instances = Instances()
    """Instance and thread counts; `auto` sizes them from the repository budget."""
    traffic_weight: float = 1.0
    """The model's expected share of the traffic, relative to the other specs' (a positive
    number; default 1: every spec alike). `instances.model: auto` sizes from it: the
    most-weighted spec can use every inference core, a spec of half its weight half of them
    (at least one instance), and extra instances go to the most-weighted specs first when the
    repository's memory budget is short. E.g. the requests per second you expect."""

    @field_validator("traffic_weight", mode="before")
    @classmethod
    def _positive_weight(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
            raise ValueError(
                "must be a positive number (the model's share of the traffic, relative to the other specs)"
            )
        return value

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
            builder = get_builder(build.builder)
            try:
                problem = builder.kind_problem(build, self.kind)
                labels = builder.labels(build) if problem is None else None
            except ValueError as error:
                raise ValueError(f"{where}.{error}") from None
            if problem is not None:
                raise ValueError(f"{where}.{problem}")
            if outputs.threshold is not None and self.kind != "multi_label_classifier":
                raise ValueError(f"{where}.outputs.threshold: only for kind: multi_label_classifier")
            quantize = version.model.quantize
            if quantize is not None and quantize.queries and self.kind != "reranker":
                raise ValueError(f"{where}.model.quantize.queries: only a reranker's gate ranks texts for queries")
            if self.kind == "embedding":
                if outputs.embedding_dim is None or outputs.labels is not None:
                    raise ValueError(f"{where}.outputs: an embedding model needs embedding_dim only")
            elif self.kind == "reranker":
                problem = _reranker_problem(version)
                if problem is not None:
                    raise ValueError(f"{where}.{problem}")
            else:
                if outputs.labels is None or outputs.embedding_dim is not None:
                    raise ValueError(f"{where}.outputs: a classifier needs labels only")
                if labels is not None:
                    if tuple(labels) != outputs.labels:
                        raise ValueError(
                            f"{where}: outputs.labels {list(outputs.labels)} differ from the build's labels {labels}"
                        )
                    if not FORMATS[version.model.format].classifiers:
                        classifier_formats = [
                            name
                            for name, known in FORMATS.items()
                            if known.classifiers and (builder.ragged or not known.ragged)
                        ]
                        raise ValueError(f"{where}.model.format: {builder.name} builds {', '.join(classifier_formats)}")
        for index, version in enumerate(self.versions):
            ragged = FORMATS[version.model.format].ragged
            where = f"versions[{index}]"
            if ragged and not get_builder(version.model.build.builder).ragged:
                builders = [
                    name
                    for name, known in BUILDERS.items()
                    if known.ragged and (FORMATS[version.model.format].classifiers or "embedding" in known.model_kinds)
                ]
                raise ValueError(
                    f"{where}.model.build: format {version.model.format} is built by "
                    + (f"{', '.join(builders[:-1])} or {builders[-1]}" if len(builders) > 1 else builders[0])
                )
            build = version.model.build
            unpadded_problem = get_builder(build.builder).unpadded_problem(build) if ragged else None
            if unpadded_problem is not None:
                padded = [name for name, known in FORMATS.items() if known.ragged_variant == version.model.format]
                raise ValueError(
                    f"{where}.model.format: {version.model.format}: {unpadded_problem} (use {' or '.join(padded)})"
                )
            if ragged != get_preprocessor(version.preprocessing.kind).unpadded(version.preprocessing):
                if ragged:
                    raise ValueError(
                        f"{where}.preprocessing.padding: format {version.model.format} takes unpadded "
                        f"tokens: set `padding: none`"
                    )
                raise ValueError(
                    f"{where}.preprocessing.padding: `none` (unpadded tokens) needs a ragged format "
                    f"({', '.join(name for name, known in FORMATS.items() if known.ragged)})"
                )
        return self

    def version(self, number: int) -> Version:
        """The version with this number."""
        return next(v for v in self.versions if v.version == number)


def _reranker_problem(version: Version) -> str | None:
    """Why a reranker spec's version cannot be served (starting with the field), or None."""
    if version.outputs.labels is not None or version.outputs.embedding_dim is not None:
        return "outputs: a reranker returns SCORE: leave outputs empty ({})"
    if not FORMATS[version.model.format].rerankers:
        return f"model.format: rerankers are built in {', '.join(n for n, f in FORMATS.items() if f.rerankers)}"
    preprocessing = version.preprocessing
    return get_preprocessor(preprocessing.kind).layout_problem(preprocessing, "pairs")


def _format_location(location: tuple[str | int, ...]) -> str:
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in {*SOURCE_TAGS, *BUILDERS}:
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
    """Load one spec file; its file name must be `<name>.yaml`; every source it names must exist
    here and have the content digest it is pinned to."""
    spec = parse_spec(path.read_text(encoding="utf-8"), str(path))
    if path.stem != spec.name:
        raise SpecError(f"{path}: name: the file must be named {spec.name}.yaml (got {path.name})")
    problems = missing_sources(spec) or changed_sources(spec)
    if problems:
        raise SpecError("\n".join(f"{path}: {field}: {problem}" for field, problem in problems))
    return spec


def version_sources(version: Version) -> dict[str, SourceSettings]:
    """Every source a version names (any kind's settings, any field), by its field path inside
    the version (`preprocessing.tokenizer`, `model.build.source`), in field order."""
    found: dict[str, SourceSettings] = {}

    def visit(value: Any, path: str) -> None:
        if isinstance(value, SourceSettings):
            found[path] = value
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                visit(getattr(value, name), f"{path}.{name}" if path else name)
        elif isinstance(value, tuple | list):
            for index, item in enumerate(value):
                visit(item, f"{path}[{index}]")
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(item, f"{path}.{key}")

    visit(version, "")
    return found


def missing_sources(spec: ModelSpec) -> list[tuple[str, str]]:
    """(field path, problem) for every tokenizer, model source or file that does not exist here.

    Checked when specs load, before any environment solve or artifact build.
    """
    problems = []
    for index, version in enumerate(spec.versions):
        for field, source in version_sources(version).items():
            problem = source_kind(source).missing(source)
            if problem is not None:
                problems.append((f"versions[{index}].{field}", problem))
    return problems


def changed_sources(spec: ModelSpec) -> list[tuple[str, str]]:
    """(field path, problem) for every source pinned to a content digest (a folder's `digest`)
    that its files no longer have: the weights changed since the spec was written."""
    problems = []
    for index, version in enumerate(spec.versions):
        for field, source in version_sources(version).items():
            kind = source_kind(source)
            expected = kind.pinned_digest(source)
            if expected is None:
                continue
            try:
                actual = source_digest(source)
            except ArtifactError as error:
                problems.append((f"versions[{index}].{field}", str(error)))
                continue
            if actual != expected:
                root = kind.digest_root(source)
                problems.append(
                    (
                        f"versions[{index}].{field}.digest",
                        f"{root} has digest {actual}, the spec pins {expected}: its files changed since "
                        f"it was pinned. If the change is intended, re-pin it (`tritongen add {root} "
                        f"--name {spec.name} --force`, or set `digest: {actual}`); else restore the files",
                    )
                )
    return problems


def load_specs(folder: Path) -> list[ModelSpec]:
    """Load every `*.yaml` spec of a folder, sorted by name; all errors are reported together."""
    if not folder.is_dir():
        raise SpecError(f"{folder}: spec folder not found")
    specs, problems = [], []
    for path in sorted(p for p in folder.glob("*.yaml") if p.name != REPOSITORY_FILE):
        try:
            specs.append(load_spec(path))
        except SpecError as error:
            problems.append(str(error))
    if problems:
        raise SpecError("\n".join(problems))
    if not specs:
        raise SpecError(f"{folder}: no *.yaml model specs found")
    return specs
