"""Quantized artifacts (`model.quantize`) and their fidelity gate.

The full-precision file is built (or taken from the cache) as without `quantize`, then the
format quantizes it (`InferenceFormat.quantize`) into a cache folder of its own, keyed by the
fp32 file's key, the method and its settings, the quantizer's version and this module. Every
generate then runs the gate: both files on the spec's example texts, tokenized by the
version's own preprocessing, batched the way the backend feeds them; the float output
(`embedding`, or a classifier's `logits`) is compared by cosine per text, string outputs (a
classifier's `label`, a multi-label classifier's `labels`: the set over the threshold) by
agreement per text. A reranker's gate scores (query, text) pairs instead, every gate text
against each gate query, tokenized as pairs: its one `score` per pair is compared by absolute
difference, and each query's ranking of the texts by pairwise order agreement (pooled
over the queries). Below a
threshold generate fails before anything is written (`generate` writes the repository atomically).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from generator.base.sources import ArtifactError
from generator.kinds.builders import get_builder
from generator.kinds.formats import InferenceFormat, get_format
from generator.kinds.formats.base import PROBABILITIES
from generator.kinds.preprocessing import get_preprocessor
from generator.pipeline.spec import ModelArtifact, Preprocessing, Quantize

QUANTIZE_RECIPE_VERSION = "1"
"""Bump when the quantization code changes: every quantized artifact key changes."""
GATE_THREADS = 2
GATE_BATCH = 32
"""Examples per batch in the gate (texts padded to their batch's longest, like the server)."""

DEFAULT_EXAMPLES = (
    "How do plants make food from sunlight?",
    "Solve 2x + 3 = 11 for x.",
    "The meeting was moved to Thursday afternoon because the projector broke.",
    "What is the capital of Australia?",
    "I loved the film, but the ending felt rushed and the soundtrack was far too loud.",
    "Reset your password from the account settings page.",
    "Refunds are issued to the original payment method within 5 to 7 business days.",
    "Why is the sky blue?",
    "A quick brown fox jumps over the lazy dog.",
    "Error 404: the requested page could not be found on this server.",
    "Dogs",
    "The Treaty of Versailles was signed in 1919, formally ending the First World War between "
    "Germany and the Allied Powers, and it imposed heavy reparations on Germany.",
    "Can I bring my bicycle on the train during rush hour?",
    "Mix the flour, sugar and butter, then bake for twenty minutes at 180 degrees.",
    "Quarterly revenue grew 12% while operating costs stayed flat.",
    "Is it going to rain tomorrow in Berlin?",
)
"""Gate texts of a spec that declares none (short and long, questions, statements, numbers)."""

DEFAULT_QUERIES = (
    "How do plants make their food?",
    "What is the capital city of Australia?",
    "How long does a refund take?",
    "Will it rain in Berlin tomorrow?",
    "How do I bake a cake?",
)
"""Gate queries of a reranker spec that declares none: each ranks the gate texts, a few of which
answer it."""


class QuantizationError(ArtifactError):
    """A quantized file fails its fidelity gate; the message names the model, figure and threshold."""


@dataclass(frozen=True)
class Fidelity:
    """How close the quantized file's outputs are to the fp32 file's on the gate's texts."""

    examples: int
    min_cosine: float
    """Lowest cosine over texts and float outputs."""
    mean_cosine: float
    label_agreement: float | None
    """Share of texts with the same string outputs (the label, or every label of a multi-label
    classifier); None without one."""

    def problems(self, settings: Quantize) -> list[str]:
        """The thresholds of `settings` this measurement misses (empty: the gate passes)."""
        problems = []
        if self.min_cosine < settings.min_cosine:
            problems.append(
                f"min cosine to fp32 {self.min_cosine:.6f} over {self.examples} examples is below "
                f"min_cosine {settings.min_cosine}"
            )
        if self.mean_cosine < settings.min_mean_cosine:
            problems.append(
                f"mean cosine to fp32 {self.mean_cosine:.6f} over {self.examples} examples is below "
                f"min_mean_cosine {settings.min_mean_cosine}"
            )
        if self.label_agreement is not None and self.label_agreement < settings.min_label_agreement:
            problems.append(
                f"label agreement with fp32 {self.label_agreement:.4f} over {self.examples} examples "
                f"is below min_label_agreement {settings.min_label_agreement}"
            )
        return problems

    def summary(self) -> str:
        agreement = "" if self.label_agreement is None else f", label agreement {self.label_agreement:.4f}"
        return (
            f"{self.examples} examples: cosine to fp32 min {self.min_cosine:.6f} mean {self.mean_cosine:.6f}{agreement}"
        )

    def thresholds(self, settings: Quantize) -> str:
        """The thresholds of `settings` this measurement is held to."""
        thresholds = f"min_cosine {settings.min_cosine}, min_mean_cosine {settings.min_mean_cosine}"
        if self.label_agreement is not None:
            thresholds += f", min_label_agreement {settings.min_label_agreement}"
        return thresholds


@dataclass(frozen=True)
class PairFidelity:
    """How close a reranker's quantized scores are to the fp32 file's on the gate's pairs."""

    queries: int
    examples: int
    """Pairs scored: every gate text against each query."""
    max_score_difference: float
    """Largest |int8 score - fp32 score| over the pairs."""
    mean_score_difference: float
    order_agreement: float
    """Share of the text pairs (two texts of one query, fp32 scores not tied), pooled over the
    queries, that the int8 scores order as the fp32 ones: 1 is the same ranking for every
    query (1.0 too when there is no such pair: one text, or every score tied)."""

    def problems(self, settings: Quantize) -> list[str]:
        """The thresholds of `settings` this measurement misses (empty: the gate passes)."""
        problems = []
        if self.max_score_difference > settings.max_score_difference:
            problems.append(
                f"largest score difference to fp32 {self.max_score_difference:.6f} over {self.examples} pairs is "
                f"above max_score_difference {settings.max_score_difference}"
            )
        if self.order_agreement < settings.min_order_agreement:
            problems.append(
                f"ranking order agreement with fp32 {self.order_agreement:.4f} over {self.queries} queries is "
                f"below min_order_agreement {settings.min_order_agreement}"
            )
        return problems

    def summary(self) -> str:
        return (
            f"{self.examples} pairs of {self.queries} queries: score difference to fp32 max "
            f"{self.max_score_difference:.6f} mean {self.mean_score_difference:.6f}, ranking order agreement "
            f"{self.order_agreement:.4f}"
        )

    def thresholds(self, settings: Quantize) -> str:
        return (
            f"max_score_difference {settings.max_score_difference}, min_order_agreement {settings.min_order_agreement}"
        )


GateFigures = Fidelity | PairFidelity
"""What a gate measured: texts compared (`Fidelity`) or a reranker's pairs (`PairFidelity`)."""


def gate_texts(artifact: ModelArtifact) -> tuple[str, ...]:
    """A prototype classifier's label examples, then the declared examples (defaults: none declared)."""
    assert artifact.quantize is not None
    texts = get_builder(artifact.build.builder).example_texts(artifact.build) + artifact.quantize.examples
    return tuple(dict.fromkeys(texts)) or DEFAULT_EXAMPLES


def gate_queries(artifact: ModelArtifact) -> tuple[str, ...]:
    """A reranker gate's queries: the declared ones, else `DEFAULT_QUERIES`."""
    assert artifact.quantize is not None
    return tuple(dict.fromkeys(artifact.quantize.queries)) or DEFAULT_QUERIES


def measure_gate(
    artifact: ModelArtifact, reference: Path, candidate: Path, preprocessing: Preprocessing
) -> GateFigures:
    """The gate's figures of `candidate` against `reference` (the fp32 file) for `artifact`'s
    gate examples: pairs for a reranker's builder, else texts."""
    inference_format = get_format(artifact.format)
    if get_builder(artifact.build.builder).pairs:
        return measure_pair_fidelity(
            inference_format, reference, candidate, gate_queries(artifact), gate_texts(artifact), preprocessing
        )
    return measure_fidelity(inference_format, reference, candidate, gate_texts(artifact), preprocessing)


def quantized_key(fp32_key: str, artifact: ModelArtifact) -> str:
    """Content key of the quantized file: the fp32 file's key, method and settings, quantizer, this code."""
    import onnxruntime

    assert artifact.quantize is not None
    digest = hashlib.sha256(QUANTIZE_RECIPE_VERSION.encode())
    digest.update(fp32_key.encode())
    settings = {
        "method": artifact.quantize.method,
        "per_channel": artifact.quantize.per_channel,
        "onnxruntime": onnxruntime.__version__,
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    inference_format = get_format(artifact.format)
    digest.update(Path(inspect.getfile(type(inference_format))).read_bytes())  # the format's quantizer
    return digest.hexdigest()[:16]


def build_quantized(
    artifact: ModelArtifact,
    preprocessing: Preprocessing,
    fp32: Path,
    fp32_key: str,
    cache_dir: Path,
    progress: Callable[[str], None],
    label: str,
) -> tuple[Path, str]:
    """The quantized copy of the fp32 file `fp32` (built, or reused from the cache) and its key,
    once it passes the gate (QuantizationError otherwise)."""
    settings = artifact.quantize
    assert settings is not None
    quantized, key = quantized_file(artifact, fp32, fp32_key, cache_dir, progress, label)
    fidelity = measure_gate(artifact, fp32, quantized, preprocessing)
    problems = fidelity.problems(settings)
    if problems:
        raise QuantizationError(
            f"{label}: model.quantize {settings.method} fails its fidelity gate: {'; '.join(problems)} "
            "(nothing was written: lower the threshold in the spec, or serve fp32 without `quantize`)"
        )
    progress(f"  {label}: {settings.method} fidelity gate passed: {fidelity.summary()}")
    return quantized, key


def quantized_file(
    artifact: ModelArtifact,
    fp32: Path,
    fp32_key: str,
    cache_dir: Path,
    progress: Callable[[str], None],
    label: str,
) -> tuple[Path, str]:
    """The quantized copy of the fp32 file `fp32` (built, or reused from the cache) and its key,
    before any gate."""
    settings = artifact.quantize
    assert settings is not None
    inference_format = get_format(artifact.format)
    key = quantized_key(fp32_key, artifact)
    quantized = cache_dir / key / inference_format.filename
    if quantized.exists():
        progress(f"  {label}: {settings.method} artifact {key} is cached")
    else:
        quantize_into_cache(inference_format, settings, fp32, quantized)
        progress(
            f"  {label}: built {settings.method} {quantized} ({quantized.stat().st_size / 1e6:.1f} MB, "
            f"fp32 {fp32.stat().st_size / 1e6:.1f} MB)"
        )
    return quantized, key


def quantize_into_cache(inference_format: InferenceFormat, settings: Quantize, source: Path, quantized: Path) -> None:
    """Quantize `source` into the cache folder of `quantized`, which appears whole or not at all."""
    quantized.parent.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{quantized.parent.name}-", dir=quantized.parent.parent))
    try:
        try:
            inference_format.quantize(settings.method, source, work / quantized.name, settings.per_channel)
        except Exception as error:  # the quantizer raises many error types
            raise ArtifactError(f"{source}: {settings.method} quantization failed: {error}") from error
        if not quantized.parent.exists():
            os.replace(work, quantized.parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)


Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
"""A format's runner of one file (`InferenceFormat.runner`)."""


def run_texts(
    inference_format: InferenceFormat, run: Runner, texts: tuple[str, ...], preprocessing: Preprocessing
) -> dict[str, np.ndarray]:
    """Every output of a file for `texts`, in batches of GATE_BATCH, one row per text."""
    tokenize = get_preprocessor(preprocessing.kind).tokenize_padded
    batches: list[dict[str, np.ndarray]] = []
    for start in range(0, len(texts), GATE_BATCH):
        ids, mask = tokenize(list(texts[start : start + GATE_BATCH]), preprocessing)
        batches.append(run(inference_format.example_inputs(ids, mask)))
    return {name: np.concatenate([batch[name] for batch in batches]) for name in batches[0]}


def run_pairs(
    inference_format: InferenceFormat, run: Runner, pairs: tuple[tuple[str, str], ...], preprocessing: Preprocessing
) -> dict[str, np.ndarray]:
    """Every output of a reranker's file for (query, text) `pairs`, in batches of GATE_BATCH."""
    tokenize = get_preprocessor(preprocessing.kind).tokenize_pairs
    batches: list[dict[str, np.ndarray]] = []
    for start in range(0, len(pairs), GATE_BATCH):
        ids, mask, token_types = tokenize(list(pairs[start : start + GATE_BATCH]), preprocessing)
        batches.append(run(inference_format.example_inputs(ids, mask, token_types)))
    return {name: np.concatenate([batch[name] for batch in batches]) for name in batches[0]}


def row_cosines(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of two [rows, width] arrays (in float64)."""
    a = left.reshape(len(left), -1).astype(np.float64)
    b = right.reshape(len(right), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.asarray((a * b).sum(axis=1) / np.maximum(norms, 1e-30))


def measure_fidelity(
    inference_format: InferenceFormat,
    reference: Path,
    candidate: Path,
    texts: tuple[str, ...],
    preprocessing: Preprocessing,
) -> Fidelity:
    """Run both files on `texts` and compare their outputs: floats by cosine (not `probabilities`,
    a function of `logits`), strings by equality of each text's row (a multi-label row: its set)."""
    want = run_texts(inference_format, inference_format.runner(reference, GATE_THREADS), texts, preprocessing)
    got = run_texts(inference_format, inference_format.runner(candidate, GATE_THREADS), texts, preprocessing)
    floats = [name for name in want if np.issubdtype(want[name].dtype, np.floating) and name != PROBABILITIES]
    cosines = [row_cosines(want[name], got[name]) for name in floats]
    labels = [
        (want[name] == got[name]).reshape(len(texts), -1).all(axis=1) for name in want if want[name].dtype == object
    ]
    if not cosines:
        raise ArtifactError(f"{reference}: no float output to compare")
    every = np.concatenate(cosines)
    return Fidelity(
        examples=len(texts),
        min_cosine=float(every.min()),
        mean_cosine=float(every.mean()),
        label_agreement=float(np.concatenate(labels).mean()) if labels else None,
    )


def measure_pair_fidelity(
    inference_format: InferenceFormat,
    reference: Path,
    candidate: Path,
    queries: tuple[str, ...],
    texts: tuple[str, ...],
    preprocessing: Preprocessing,
) -> PairFidelity:
    """Score every text against each query with both reranker files; compare the scores by
    absolute difference and each query's ranking by pairwise order agreement (pooled)."""
    pairs = tuple((query, text) for query in queries for text in texts)
    scores = [
        run_pairs(inference_format, inference_format.runner(path, GATE_THREADS), pairs, preprocessing)
        for path in (reference, candidate)
    ]
    want, got = (np.asarray(output["score"], dtype=np.float64).reshape(len(queries), len(texts)) for output in scores)
    differences = np.abs(got - want)
    i, j = np.triu_indices(len(texts), k=1)
    expected = np.sign(want[:, i] - want[:, j])
    untied = expected != 0
    agreement = float((np.sign(got[:, i] - got[:, j])[untied] == expected[untied]).mean()) if untied.any() else 1.0
    return PairFidelity(
        queries=len(queries),
        examples=len(pairs),
        max_score_difference=float(differences.max()),
        mean_score_difference=float(differences.mean()),
        order_agreement=agreement,
    )
