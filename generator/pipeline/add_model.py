"""`tritongen add FOLDER`: inspect a model folder and write the spec that serves it.

A team's own checkpoint folder (what `save_pretrained` or sentence-transformers' `save` wrote)
becomes `models/<name>.yaml`: the builder its files call for, its labels, the source pinned by
its content digest, every choice explained in a comment. The spec is validated like any other
before it is written; a folder that cannot be served gets an error naming what is missing or
unsupported, and nothing is written. Then `generate`, `check` and `update` work as usual.
For the ONNX formats `add` also says what `quantize: dynamic_int8` would give (`int8_report`),
leaving the choice to the user.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator import PROJECT_ROOT
from generator.base.source_model import SourceModelError, read_sentence_transformer_config
from generator.base.sources import ArtifactError, FolderSource, source_digest
from generator.errors import TritongenError
from generator.kinds.builders.cross_encoder import read_cross_encoder
from generator.kinds.builders.families import (
    TransformersModel,
    UnsupportedModelError,
    checkpoint_token_limit,
    json_object,
    transformers_model,
)
from generator.kinds.preprocessing.textprep import PAIRS_SINCE, RAGGED_PAIRS_SINCE
from generator.pipeline.artifacts import DEFAULT_CACHE
from generator.pipeline.int8_report import Int8Report, int8_report, quantizable
from generator.pipeline.spec import MAX_NAME_LENGTH, SpecError, parse_spec

WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
"""Any of these in the model's folder means it has its weights."""
DEFAULT_ENVIRONMENT = "textprep-tok023"
"""The execution environment `add` gives the preprocessing (envs/textprep-tok023.yml)."""


class AddError(TritongenError, ValueError):
    """The folder cannot be served as it is; the message says what is missing or unsupported."""


@dataclass(frozen=True)
class FolderFindings:
    """What `add` read in a model folder and what it chose, with the reasons."""

    kind: str
    """The spec kind: `embedding`, `classifier`, `multi_label_classifier` or `reranker`."""
    builder: str
    """The builder that exports it."""
    model: TransformersModel
    """The encoder: its family, architecture and the tokens it takes."""
    tokenizer_path: str
    """The tokenizer file inside the folder."""
    max_length: str
    """The tokens per text the version will take (the spec omits `max_length`), and why."""
    labels: tuple[str, ...] = ()
    embedding_dim: int | None = None
    reasons: list[str] = field(default_factory=list)
    """What the folder's files decided, one line each."""

    def explanation(self, chosen_format: str) -> list[str]:
        """Every choice and its reason (`chosen_format`: the format line), shown to the user and
        written into the spec's comment."""
        return [
            *self.reasons,
            f"encoder: {self.model.architecture}, family {self.model.family.name}; {chosen_format}",
            f"preprocessing.max_length omitted: {self.max_length}",
        ]


RAGGED_FORMAT = "onnx_ragged"
PADDED_FORMAT = "onnx"
RAGGED_WHY = (
    f"format {RAGGED_FORMAT} with padding none: the unpadded encoder (requests of any length batch "
    "together, nothing computed on padding; the padded model's outputs within fp32 rounding); "
    f"`--padded` writes format {PADDED_FORMAT}"
)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json_object(path)
    except SourceModelError as error:
        raise AddError(str(error)) from None


def _check_model_files(folder: Path, where: Path) -> dict[str, Any]:
    """The Transformers config of `folder` after checking its weights, tokenizer and family."""
    config = _read_json(folder / "config.json")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise AddError(f"{folder}: no weights ({' or '.join(WEIGHT_FILES[:2])}): save the model with save_pretrained")
    if not (where / "tokenizer.json").is_file():
        raise AddError(
            f"{where}: no tokenizer.json (a fast tokenizer's file): save the model's tokenizer into the folder "
            "with AutoTokenizer.from_pretrained(...).save_pretrained(folder)"
        )
    return config


def _model(folder: Path) -> TransformersModel:
    """The folder's encoder family and length (AddError naming the supported families)."""
    try:
        return transformers_model(folder)
    except (SourceModelError, UnsupportedModelError) as error:
        raise AddError(str(error)) from None


def inspect_folder(folder: Path) -> FolderFindings:
    """What kind of model `folder` holds and how to serve it (AddError when it cannot be served)."""
    if not folder.is_dir():
        raise AddError(f"{folder}: not a folder")
    if _one_label_classifier(folder):  # CrossEncoder folders have a modules.json too
        return _cross_encoder_findings(folder)
    if (folder / "modules.json").is_file():
        try:
            model = read_sentence_transformer_config(folder)
        except SourceModelError as error:
            raise AddError(f"{folder}: a sentence-transformers folder the builder cannot reproduce: {error}") from None
        _check_model_files(model.encoder_folder, model.encoder_folder)
        tokenizer = (model.encoder_folder / "tokenizer.json").relative_to(folder).as_posix()
        return FolderFindings(
            kind="embedding",
            builder="sentence_embedding",
            model=_model(model.encoder_folder),
            tokenizer_path=tokenizer,
            max_length=f"{model.max_seq_length}, the model's max_seq_length (sentence_bert_config.json)",
            embedding_dim=model.embedding_dim,
            reasons=[
                "modules.json: a sentence-transformers model -> kind embedding, builder sentence_embedding",
                f"its pooling ({' + '.join(model.pooling)}), normalization ({'yes' if model.normalize else 'no'}) "
                f"and max_seq_length ({model.max_seq_length}) are exported as they are: "
                f"EMBEDDING has {model.embedding_dim} floats",
            ],
        )
    config = _check_model_files(folder, folder)
    architectures = [str(name) for name in config.get("architectures") or []]
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise AddError(
            f"{folder / 'config.json'}: architectures {architectures or 'missing'}: `add` serves sequence "
            "classifiers (…ForSequenceClassification, saved with save_pretrained) and sentence-transformers "
            "folders (modules.json)"
        )
    multi_label = config.get("problem_type") == "multi_label_classification"
    id2label = config.get("id2label") or {}
    try:
        labels = tuple(str(id2label[key]) for key in sorted(id2label, key=int))
    except (TypeError, ValueError):
        raise AddError(f"{folder / 'config.json'}: id2label keys must be integers, got {sorted(id2label)}") from None
    if len(labels) < 2 or any(re.fullmatch(r"LABEL_\d+", label) for label in labels):
        raise AddError(
            f"{folder / 'config.json'}: id2label {dict(enumerate(labels))} does not name the labels: set "
            "model.config.id2label (and label2id) before save_pretrained, or write the spec by hand with "
            "`build.labels`"
        )
    try:
        limit = checkpoint_token_limit(folder)
    except (SourceModelError, UnsupportedModelError) as error:
        raise AddError(str(error)) from None
    kind = "multi_label_classifier" if multi_label else "classifier"
    outputs = "LOGITS, PROBABILITIES (sigmoid), LABELS" if multi_label else "LOGITS, PROBABILITIES (softmax), LABEL"
    return FolderFindings(
        kind=kind,
        builder="transformers_classifier",
        model=_model(folder),
        tokenizer_path="tokenizer.json",
        max_length=f"{limit.default}: {limit.reason}"
        + (", capped by the tokenizer's model_max_length" if limit.default < limit.most else ""),
        labels=labels,
        reasons=[
            f"config.json: {', '.join(architectures)}, problem_type "
            f"{config.get('problem_type') or 'single_label_classification (unset)'} -> kind {kind}, builder "
            f"transformers_classifier: clients get {outputs}",
            f"labels from id2label, in id order: {', '.join(labels)}",
        ],
    )


def _one_label_classifier(folder: Path) -> bool:
    """Whether `config.json` is a sequence classifier with one label (a cross-encoder's)."""
    if not (folder / "config.json").is_file():
        return False
    config = _read_json(folder / "config.json")
    architectures = [str(name) for name in config.get("architectures") or []]
    id2label = config.get("id2label")
    labels = len(id2label) if isinstance(id2label, dict) else config.get("num_labels", 2)
    return labels == 1 and any(name.endswith("ForSequenceClassification") for name in architectures)


def _cross_encoder_findings(folder: Path) -> FolderFindings:
    """A cross-encoder folder (a one-label sequence classifier): kind reranker, builder cross_encoder."""
    _check_model_files(folder, folder)
    try:
        _, activation = read_cross_encoder(FolderSource(folder=folder.as_posix()))
        limit = checkpoint_token_limit(folder)
    except (SourceModelError, UnsupportedModelError, ValueError) as error:
        raise AddError(str(error).removeprefix("model.build.source: ")) from None
    architectures = ", ".join(str(name) for name in _read_json(folder / "config.json").get("architectures") or [])
    return FolderFindings(
        kind="reranker",
        builder="cross_encoder",
        model=_model(folder),
        tokenizer_path="tokenizer.json",
        max_length=f"{limit.default} per (query, text) pair: {limit.reason}"
        + (", capped by the tokenizer's model_max_length" if limit.default < limit.most else ""),
        reasons=[
            f"config.json: {architectures} with one label: a cross-encoder -> kind reranker, builder "
            "cross_encoder: clients send QUERY and TEXT and get SCORE; <name>_rerank ranks n texts for one query",
            f"activation {activation.rsplit('.', 1)[1]} (as CrossEncoder.predict applies it), in the ONNX graph",
        ],
    )


def spec_name(folder: Path, name: str | None) -> str:
    """The spec name: `name`, else the folder's name in lowercase with `_` for other characters."""
    if name is None:
        name = re.sub(r"[^a-z0-9_]+", "_", folder.name.lower()).strip("_")
        if not name or not name[0].isalpha():
            name = f"model_{name}".rstrip("_")
        name = name[:MAX_NAME_LENGTH]
    return name


def folder_field(folder: Path) -> str:
    """How the spec names the folder: relative to the project root inside it, else absolute."""
    try:
        return folder.relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return folder.as_posix()


def render_spec(
    name: str,
    folder: Path,
    findings: FolderFindings,
    digest: str,
    chosen: tuple[str, str],
    notes: Sequence[str] = (),
) -> str:
    """The commented spec text for the folder (YAML); `chosen`: the format and why; `notes`: more
    comment lines (the int8 report's)."""
    inference_format, why = chosen
    where = folder_field(folder)
    source = f'{{folder: {json.dumps(where)}, digest: "{digest}"}}'
    tokenizer = f'{{folder: {json.dumps(where)}, path: {findings.tokenizer_path}, digest: "{digest}"}}'
    lines = [
        f"# Written by `tritongen add {where}`: what it found and chose.",
        *(f"#   {line}" for line in findings.explanation(why)),
        "# The digest pins the folder's content: generate refuses a folder whose files changed",
        f"# (re-pin with `tritongen add {where} --name {name} --force`).",
        *(f"# {line}" for line in notes),
        f"name: {name}",
        f"kind: {findings.kind}",
        f"description: {json.dumps(f'served from {folder.name}')}",
        "default_version: 1",
        "versions:",
        "  - version: 1",
        "    preprocessing:",
        *(
            [
                f'      package_version: "{RAGGED_PAIRS_SINCE}"   # tokenizes (query, text) pairs, unpadded too'
                if inference_format == RAGGED_FORMAT
                else f'      package_version: "{PAIRS_SINCE}"   # tokenizes (query, text) pairs'
            ]
            if findings.kind == "reranker"
            else []
        ),
        f"      environment: {DEFAULT_ENVIRONMENT}   # envs/{DEFAULT_ENVIRONMENT}.yml, conda-packed",
        f"      tokenizer: {tokenizer}",
        *(
            ["      padding: none   # each request's tokens unpadded, for the ragged format"]
            if inference_format == RAGGED_FORMAT
            else []
        ),
        "    model:",
        f"      format: {inference_format}",
        "      build:",
        f"        builder: {findings.builder}",
        f"        source: {source}",
        "    outputs:" + (" {}   # SCORE" if findings.kind == "reranker" else ""),
    ]
    if findings.kind == "reranker":
        pass
    elif findings.embedding_dim is not None:
        lines.append(f"      embedding_dim: {findings.embedding_dim}")
    else:
        lines.append(f"      labels: [{', '.join(json.dumps(label) for label in findings.labels)}]")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class AddedSpec:
    """A spec `add` wrote."""

    path: Path
    findings: FolderFindings
    explanation: list[str]
    """Every choice and its reason, as the spec's comment says them."""
    int8: Int8Report | None = None
    """What `quantize: dynamic_int8` would give (None: not asked, or no int8 path for the format)."""


def add_model(
    folder: Path,
    specs_dir: Path,
    name: str | None = None,
    force: bool = False,
    padded: bool = False,
    int8: bool = False,
    cache_dir: Path = DEFAULT_CACHE,
    progress: Callable[[str], None] = print,
) -> AddedSpec:
    """Inspect `folder`, validate the spec that serves it and write `specs_dir/<name>.yaml`
    (AddError or SpecError, nothing written, when it cannot). The format is the unpadded
    (ragged) one wherever the model allows it, else, or with `padded`, the padded one. With
    `int8`, where the spec allows `quantize: dynamic_int8`, the fp32 and int8 files are built
    into `cache_dir` (generate's cache), gated and timed first (`int8_report`); the spec stays fp32."""
    folder = folder.resolve()
    findings = inspect_folder(folder)
    name = spec_name(folder, name)
    path = specs_dir / f"{name}.yaml"
    if path.exists() and not force:
        raise AddError(f"{path} exists: choose another --name, or --force to replace it")
    digest = source_digest(FolderSource(folder=folder_field(folder)))
    if padded:
        chosen = (PADDED_FORMAT, "format onnx (padded), as asked (--padded)")
    else:
        chosen = (RAGGED_FORMAT, RAGGED_WHY)
        try:
            parse_spec(render_spec(name, folder, findings, digest, chosen), str(path))
        except SpecError as error:  # a model the unpadded encoder does not cover: the padded format, and why
            chosen = (PADDED_FORMAT, f"format onnx (padded): {str(error).splitlines()[0].split(': ', 2)[-1]}")
    text = render_spec(name, folder, findings, digest, chosen)
    try:
        parse_spec(text, str(path))
    except SpecError as error:
        raise AddError(f"{folder}: the spec add would write is not valid:\n{error}") from None
    report = None
    version = quantizable(text, str(path)) if int8 else None
    if version is not None:
        try:
            report = int8_report(version, cache_dir, progress, f"{name} v{version.version}")
        except ArtifactError as error:
            raise AddError(f"{folder}: the int8 report failed (--no-int8-report skips it): {error}") from None
        text = render_spec(name, folder, findings, digest, chosen, report.comment())
    specs_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
    return AddedSpec(path, findings, findings.explanation(chosen[1]), report)
