"""What int8 would give a spec `tritongen add` writes: the fidelity gate's figures and the speed-up.

The fp32 file and its `dynamic_int8` copy are built into the artifact cache `generate` uses (same
keys: a spec that then opts in with `quantize: dynamic_int8` reuses both), the gate runs on the
version's gate examples (`quantize.measure_gate`: texts, or a reranker's pairs) with the default
thresholds, and both files are timed in this process with ONNX Runtime on one fixed batch. The
spec keeps fp32: the user chooses. Only the deterministic figures (gate, file sizes) go into the
spec's comment; timings vary run to run and are printed only.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from generator.kinds.builders import get_builder
from generator.kinds.formats import InferenceFormat, get_format
from generator.kinds.preprocessing import get_preprocessor
from generator.pipeline.artifacts import build_artifact
from generator.pipeline.quantize import DEFAULT_EXAMPLES, DEFAULT_QUERIES, GateFigures, measure_gate, quantized_file
from generator.pipeline.spec import Preprocessing, Quantize, SpecError, Version, parse_spec

METHOD = "dynamic_int8"
TIMING_THREADS = 1
"""Intra-op threads of both timed sessions."""
TIMING_REPEATS = 7
"""Timed runs of the batch per file (after one warm-up run each); the median is reported."""
TIMING_TEXTS = DEFAULT_EXAMPLES
"""The batch both files are timed on, whatever the model (a reranker's: each text paired with
the first of `DEFAULT_QUERIES`)."""


@dataclass(frozen=True)
class Int8Report:
    """The gate's verdict and figures for `quantize: dynamic_int8`, the file sizes and the timings."""

    fidelity: GateFigures
    settings: Quantize
    """The gate's thresholds (the defaults of `quantize: dynamic_int8`)."""
    fp32_bytes: int
    int8_bytes: int
    fp32_ms: float
    """Median time of one batch of `batch` texts, fp32 file."""
    int8_ms: float
    batch: int

    def problems(self) -> list[str]:
        """The thresholds the int8 file misses (empty: the gate passes)."""
        return self.fidelity.problems(self.settings)

    def gate(self) -> str:
        """The verdict, the figures and the thresholds (deterministic for the same files)."""
        verdict = "fails" if self.problems() else "passes"
        return f"gate {verdict} ({self.fidelity.summary()}; thresholds {self.fidelity.thresholds(self.settings)})"

    def sizes(self) -> str:
        return f"file {self.fp32_bytes / 1e6:.1f} -> {self.int8_bytes / 1e6:.1f} MB"

    def line(self, spec: Path) -> str:
        """What `add` prints."""
        ratio = self.fp32_ms / self.int8_ms
        speed = f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"
        problems = self.problems()
        choice = (
            f"with 'quantize: {METHOD}' generate would refuse it ({'; '.join(problems)})"
            if problems
            else f"to use it, add 'quantize: {METHOD}' under model: in {spec}"
        )
        return (
            f"int8 (quantize: {METHOD}): {self.gate()}; {speed} in-process (fp32 {_ms(self.fp32_ms)} ms, int8 "
            f"{_ms(self.int8_ms)} ms per batch of {self.batch}, {TIMING_THREADS} thread), {self.sizes()}; {choice}"
        )

    def comment(self) -> list[str]:
        """The spec comment's lines: no timings (same folder, same spec bytes)."""
        return [
            f"int8: not chosen (this spec serves fp32); add `quantize: {METHOD}` under model: to serve int8:",
            f"  {self.gate()}",
            f"  {self.sizes()}; `tritongen add` prints the measured speed-up (it varies between runs)",
        ]


def _ms(milliseconds: float) -> str:
    return f"{milliseconds:.2f}" if milliseconds < 10 else f"{milliseconds:.0f}"


def quantizable(text: str, source: str) -> Version | None:
    """The version of the spec `text` if it stays valid with `quantize: dynamic_int8` (else None:
    a format without an int8 path, e.g. TorchScript)."""
    data = yaml.safe_load(text)
    data["versions"][0]["model"]["quantize"] = METHOD
    try:
        spec = parse_spec(yaml.safe_dump(data, sort_keys=False), source)
    except SpecError:
        return None
    return spec.versions[0]


def int8_report(version: Version, cache_dir: Path, progress: Callable[[str], None], label: str) -> Int8Report:
    """Build `version`'s fp32 file and its int8 copy (or take them from `cache_dir`), gate and time
    them (ArtifactError when a build fails); `version.model.quantize` is the int8 setting."""
    settings = version.model.quantize
    assert settings is not None
    fp32_artifact = version.model.model_copy(update={"quantize": None})
    progress(f"int8 report ({label}): building the fp32 ONNX file ...")
    fp32 = build_artifact(fp32_artifact, version.preprocessing, cache_dir, progress, label, version.outputs.threshold)
    progress(f"int8 report ({label}): quantizing ({METHOD}) ...")
    int8, _ = quantized_file(version.model, fp32.path, fp32.key, cache_dir, progress, label)
    progress(f"int8 report ({label}): running the fidelity gate ...")
    fidelity = measure_gate(version.model, fp32.path, int8, version.preprocessing)
    progress(f"int8 report ({label}): timing fp32 and int8 ({TIMING_REPEATS} runs each, {TIMING_THREADS} thread) ...")
    pairs = get_builder(version.model.build.builder).pairs
    fp32_ms, int8_ms = median_ms(get_format(version.model.format), (fp32.path, int8), version.preprocessing, pairs)
    return Int8Report(
        fidelity, settings, fp32.path.stat().st_size, int8.stat().st_size, fp32_ms, int8_ms, len(TIMING_TEXTS)
    )


def median_ms(
    inference_format: InferenceFormat, files: tuple[Path, Path], preprocessing: Preprocessing, pairs: bool
) -> list[float]:
    """Median milliseconds per run of the `TIMING_TEXTS` batch (`pairs`: each text paired with a
    query) for each file (runs interleaved)."""
    preprocessor = get_preprocessor(preprocessing.kind)
    if pairs:
        query = DEFAULT_QUERIES[0]
        inputs = inference_format.example_inputs(
            *preprocessor.tokenize_pairs([(query, text) for text in TIMING_TEXTS], preprocessing)
        )
    else:
        inputs = inference_format.example_inputs(*preprocessor.tokenize_padded(list(TIMING_TEXTS), preprocessing))
    runners = [inference_format.runner(path, TIMING_THREADS) for path in files]
    times: list[list[float]] = [[] for _ in files]
    for run in runners:
        run(inputs)  # warm-up: allocations, first-run graph work
    for _ in range(TIMING_REPEATS):
        for run, taken in zip(runners, times, strict=True):
            start = time.perf_counter()
            run(inputs)
            taken.append((time.perf_counter() - start) * 1000)
    return [statistics.median(taken) for taken in times]
