"""`model.quantize`: spec validation, the fidelity gate at generate time, deterministic cached files."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import onnx
import pytest
import yaml

from generator.pipeline.artifacts import DEFAULT_CACHE, BuiltArtifact, artifact_key, build_artifact, link_or_copy
from generator.pipeline.generate import GenerateOptions, generate
from generator.pipeline.quantize import DEFAULT_EXAMPLES, Fidelity, PairFidelity, QuantizationError, gate_texts
from generator.pipeline.spec import ModelArtifact, Quantize, SpecError, load_specs, parse_spec

PROJECT = Path(__file__).resolve().parents[3]
SPECS = {s.name: s for s in load_specs(PROJECT / "models")}
SHIPPED = (PROJECT / "models" / "minilm_embed_padded.yaml").read_text()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def spec_text(quantize: Any, model_format: str = "onnx") -> str:
    """The shipped minilm_embed_padded spec with `model.quantize` (and `model.format`) set."""
    data = yaml.safe_load(SHIPPED)
    model = data["versions"][0]["model"]
    model["format"] = model_format
    model["quantize"] = quantize
    return yaml.safe_dump(data, sort_keys=False)


def parse(quantize: Any, model_format: str = "onnx") -> ModelArtifact:
    return parse_spec(spec_text(quantize, model_format), "models/minilm_embed_padded.yaml").version(1).model


# --- spec ------------------------------------------------------------------------------------


def test_method_alone_is_short_for_every_default() -> None:
    assert parse("dynamic_int8").quantize == Quantize(method="dynamic_int8")
    settings = parse({"method": "dynamic_int8", "per_channel": False, "min_cosine": 0.995, "examples": ["a b"]})
    assert settings.quantize == Quantize(method="dynamic_int8", per_channel=False, min_cosine=0.995, examples=("a b",))
    assert parse(None).quantize is None


@pytest.mark.parametrize(
    ("quantize", "model_format", "message"),
    [
        (
            "float16",
            "onnx",
            "models/minilm_embed_padded.yaml: versions[0].model.quantize.method: unknown quantize method "
            "'float16': use one of dynamic_int8",
        ),
        (
            "dynamic_int8",
            "torchscript",
            "models/minilm_embed_padded.yaml: versions[0].model: quantize: format torchscript cannot be "
            "quantized (dynamic_int8 applies to onnx, onnx_ragged)",
        ),
        (
            {"method": "dynamic_int8", "min_cosine": 1.5},
            "onnx",
            "versions[0].model.quantize.min_cosine: Input should be less than or equal to 1",
        ),
        ({"method": "dynamic_int8", "examples": ["  "]}, "onnx", "examples must be non-empty texts"),
        ({"method": "dynamic_int8", "bits": 4}, "onnx", "versions[0].model.quantize.bits: unknown key"),
        ({"method": "dynamic_int8", "queries": ["q", ""]}, "onnx", "queries must be non-empty texts"),
        (
            {"method": "dynamic_int8", "queries": ["a question"]},
            "onnx",
            "versions[0].model.quantize.queries: only a reranker's gate ranks texts for queries",
        ),
    ],
)
def test_invalid_quantize_is_a_spec_error(quantize: Any, model_format: str, message: str) -> None:
    with pytest.raises(SpecError) as error:
        parse(quantize, model_format)
    assert message in str(error.value)


def test_torchscript_ragged_is_rejected_too() -> None:
    data = yaml.safe_load((PROJECT / "models" / "minilm_embed.yaml").read_text())
    data["versions"][0]["model"].update(format="torchscript_ragged", quantize="dynamic_int8")
    with pytest.raises(SpecError, match="format torchscript_ragged cannot be quantized"):
        parse_spec(yaml.safe_dump(data), "models/minilm_embed.yaml")


def test_gate_texts_are_the_classifiers_examples_then_the_declared_ones() -> None:
    classifier = SPECS["text_classifier"].version(1).model
    labelled = [text for texts in classifier.build.labels.values() for text in texts]  # type: ignore[union-attr]
    declared = classifier.model_copy(update={"quantize": Quantize(method="dynamic_int8", examples=("extra",))})
    assert gate_texts(declared) == (*labelled, "extra")
    embedding = parse("dynamic_int8")
    assert gate_texts(embedding) == DEFAULT_EXAMPLES
    assert gate_texts(parse({"method": "dynamic_int8", "examples": ["x", "y"]})) == ("x", "y")


def test_thresholds_are_checked_separately() -> None:
    settings = Quantize(method="dynamic_int8", min_cosine=0.99, min_label_agreement=1.0)
    assert Fidelity(24, 0.995, 0.998, 1.0).problems(settings) == []
    assert Fidelity(16, 0.995, 0.998, None).problems(settings) == []
    assert Fidelity(24, 0.995, 0.998, 23 / 24).problems(settings) == [
        "label agreement with fp32 0.9583 over 24 examples is below min_label_agreement 1.0"
    ]
    assert Fidelity(16, 0.98, 0.998, None).problems(settings) == [
        "min cosine to fp32 0.980000 over 16 examples is below min_cosine 0.99"
    ]


def test_a_rerankers_thresholds_are_checked_separately() -> None:
    settings = Quantize(method="dynamic_int8", max_score_difference=0.02, min_order_agreement=0.9)
    assert PairFidelity(5, 80, 0.02, 0.004, 0.9).problems(settings) == []
    assert PairFidelity(5, 80, 0.021, 0.004, 0.95).problems(settings) == [
        "largest score difference to fp32 0.021000 over 80 pairs is above max_score_difference 0.02"
    ]
    assert PairFidelity(5, 80, 0.01, 0.004, 0.85).problems(settings) == [
        "ranking order agreement with fp32 0.8500 over 5 queries is below min_order_agreement 0.9"
    ]


# --- builds and the gate ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


def seeded(cache: Path, model: str, version: int = 1) -> Path:
    """`cache` with the fp32 file of a shipped version (linked from build/artifacts when built
    there: the cache is content-addressed, and test_artifacts proves rebuilds byte-identical)."""
    spec_version = SPECS[model].version(version)
    key = artifact_key(spec_version.model, spec_version.preprocessing)
    if (DEFAULT_CACHE / key).is_dir() and not (cache / key).exists():
        shutil.copytree(DEFAULT_CACHE / key, cache / key, copy_function=lambda s, d: link_or_copy(Path(s), Path(d)))
    return cache


def quantized(model: str, cache: Path, version: int = 1, progress: Any = None, **settings: Any) -> BuiltArtifact:
    spec_version = SPECS[model].version(version)
    artifact = spec_version.model.model_copy(update={"quantize": Quantize(method="dynamic_int8", **settings)})
    return build_artifact(
        artifact,
        spec_version.preprocessing,
        seeded(cache, model, version),
        progress=progress or (lambda _: None),
        label=f"{model} v{version}",
    )


def fp32(model: str, cache: Path, version: int = 1) -> BuiltArtifact:
    spec_version = SPECS[model].version(version)
    return build_artifact(spec_version.model, spec_version.preprocessing, seeded(cache, model, version), print)


def test_quantized_embedding_passes_its_gate_and_is_deterministic(cache: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    first = quantized("minilm_embed_padded", cache, progress=lines.append)
    assert any("fidelity gate passed: 16 examples: cosine to fp32 min 0.9" in line for line in lines), lines
    full = fp32("minilm_embed_padded", cache)
    assert first.key != full.key and first.path.stat().st_size < 0.3 * full.path.stat().st_size
    operators = {node.op_type for node in onnx.load(str(first.path)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= operators
    # Quantized again from scratch, in another cache: the same key and the same bytes.
    again = quantized("minilm_embed_padded", tmp_path)
    assert (again.key, sha(again.path)) == (first.key, sha(first.path))
    lines.clear()
    assert quantized("minilm_embed_padded", cache, progress=lines.append) == first
    assert any("is cached" in line for line in lines) and any("gate passed" in line for line in lines)


def test_impossible_threshold_fails_naming_the_model_the_figure_and_the_threshold(cache: Path) -> None:
    with pytest.raises(QuantizationError) as error:
        quantized("minilm_embed_padded", cache, min_cosine=0.99999)
    message = str(error.value)
    assert message.startswith("minilm_embed_padded v1: model.quantize dynamic_int8 fails its fidelity gate: ")
    assert "min cosine to fp32 0.9" in message and "over 16 examples is below min_cosine 0.99999" in message


def test_quantized_classifier_keeps_its_labels(cache: Path) -> None:
    lines: list[str] = []
    quantized("text_classifier", cache, progress=lines.append, min_label_agreement=1.0)
    assert any("12 examples" in line and "label agreement 1.0000" in line for line in lines), lines
    with pytest.raises(QuantizationError, match=r"text_classifier v1: .* below min_cosine 0.99999"):
        quantized("text_classifier", cache, min_cosine=0.99999)


def test_ragged_graph_is_quantized(cache: Path) -> None:
    lines: list[str] = []
    built = quantized("minilm_embed", cache, progress=lines.append)
    assert any("gate passed" in line for line in lines), lines
    assert "MatMulInteger" in {node.op_type for node in onnx.load(str(built.path)).graph.node}


def test_failing_gate_leaves_the_output_untouched_and_a_passing_one_serves_the_int8_file(
    cache: Path, tmp_path: Path
) -> None:
    specs = tmp_path / "models"
    specs.mkdir()

    def write_spec(quantize: dict[str, Any]) -> None:
        data = yaml.safe_load(spec_text(quantize))
        del data["versions"][0]["preprocessing"]["environment"]  # no environment to build
        (specs / "minilm_embed_padded.yaml").write_text(yaml.safe_dump(data, sort_keys=False))

    write_spec({"method": "dynamic_int8", "min_cosine": 0.99999})
    output = tmp_path / "repository"
    output.mkdir()
    (output / "kept.txt").write_text("before")
    options = GenerateOptions(
        specs_dir=specs, output=output, cores=2, cache_dir=seeded(cache, "minilm_embed_padded"), progress=lambda _: None
    )
    with pytest.raises(QuantizationError, match="below min_cosine 0.99999"):
        generate(options)
    assert [p.name for p in output.iterdir()] == ["kept.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "repository"]
    # The default threshold passes: the repository serves the int8 file (checked against its config).
    write_spec({"method": "dynamic_int8"})
    generate(options)
    served = sorted(output.glob("*/1/model.onnx"))
    assert served and all(sha(path) == sha(quantized("minilm_embed_padded", cache).path) for path in served)
