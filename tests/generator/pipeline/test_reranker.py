"""Rerankers through the pipeline: `tritongen add` on a cross-encoder folder (onnx_ragged by
default, onnx with `--padded`), the spec's checks, and the planned entry points `<name>` (pairs)
and `<name>_rerank` (one query, n texts), whose configs pass the checks of both targets (NVIDIA's
image included)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from generator.cli import main as tritongen
from generator.kinds.formats import get_format
from generator.kinds.preprocessing.textprep import TextPrepSettings
from generator.pipeline.artifacts import build_artifact
from generator.pipeline.checks import CheckError, check_configs, check_native_rules
from generator.pipeline.plan import BuiltEnvironmentPlan, plan_repository
from generator.pipeline.quantize import DEFAULT_QUERIES, PairFidelity, QuantizationError, measure_gate, run_pairs
from generator.pipeline.render import render_repository
from generator.pipeline.spec import ModelSpec, Quantize, SpecError, load_spec, parse_spec
from tests import model_folders

NAME = "pair_ranker"


def add(root: Path, padded: bool = True) -> Path:
    """The spec `tritongen add` writes for a seeded BERT cross-encoder folder (sentence-transformers 6
    style); `padded`: with `--padded` (format onnx), else the default (onnx_ragged)."""
    folder = root / "ranker"
    if not folder.is_dir():
        model_folders.cross_encoder("bert", folder, "torch.nn.modules.activation.Sigmoid", True)
    options = ["--padded"] if padded else ["--force"]
    assert tritongen(["add", str(folder), "--name", NAME, "--specs", str(root / "specs"), *options]) == 0
    return root / "specs" / f"{NAME}.yaml"


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return add(tmp_path_factory.mktemp("reranker"))


@pytest.fixture(scope="module")
def ragged_spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return add(tmp_path_factory.mktemp("ragged-reranker"), padded=False)


@pytest.mark.parametrize(
    ("padded", "expected"),
    [(True, ("onnx", "1.1.0", "batch_longest")), (False, ("onnx_ragged", "1.2.0", "none"))],
)
def test_add_recognises_a_cross_encoder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], padded: bool, expected: tuple[str, str, str]
) -> None:
    path = add(tmp_path, padded)
    said = capsys.readouterr().out
    assert "with one label: a cross-encoder -> kind reranker, builder cross_encoder" in said
    assert "activation Sigmoid" in said
    # The int8 report scores pairs: every gate text against each of the 5 default queries.
    assert re.search(r"int8 \(quantize: dynamic_int8\): gate (passes|fails) \(80 pairs of 5 queries: ", said), said
    spec = load_spec(path)
    version = spec.versions[0]
    assert (spec.kind, version.model.build.builder) == ("reranker", "cross_encoder")
    preprocessing = version.preprocessing
    assert isinstance(preprocessing, TextPrepSettings)
    assert (version.model.format, preprocessing.package_version, preprocessing.padding.value) == expected
    assert version.preprocessing.max_length == 512


def rendered(spec: ModelSpec, target: str) -> dict[str, str]:
    plan = plan_repository([spec], target, 2)
    built = BuiltEnvironmentPlan("env/_envs/env.tar.gz", Path("/nonexistent"), "3.10", None)
    plan = plan.with_environments({pre.name: built for pre in plan.preprocess_models()})
    return {file.path: file.text for file in render_repository(plan)}


@pytest.mark.parametrize("target", ["local", "ngc"])
def test_the_entry_points_pass_the_checks_of_both_targets(spec_file: Path, target: str) -> None:
    spec = load_spec(spec_file)
    files = rendered(spec, target)
    models = check_configs(files)
    check_native_rules(models)
    rerank, online = models[f"{NAME}_rerank"], models[NAME]
    assert [(t.name, list(t.dims)) for t in online.input] == [("QUERY", [1]), ("TEXT", [1])]
    assert [(t.name, list(t.dims)) for t in online.output] == [("SCORE", [1])]
    assert rerank.max_batch_size == 0
    assert [(t.name, list(t.dims)) for t in rerank.input] == [("QUERY", [1]), ("TEXT", [-1])]
    assert [(t.name, list(t.dims)) for t in rerank.output] == [("SCORES", [-1, 1])]
    # The rerank ensemble's steps: its own preprocessing (no batching), then the one inference model.
    pre_name, model_name = (step.model_name for step in rerank.ensemble_scheduling.step)
    pre = models[pre_name]
    assert pre.max_batch_size == 0 and not pre.HasField("dynamic_batching")
    assert pre.parameters["inputs"].string_value == "rerank"
    inference = models[model_name]
    assert pre.parameters["max_texts"].string_value == str(inference.max_batch_size) == "64"
    assert [t.name for t in inference.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert model_name == models[NAME].ensemble_scheduling.step[1].model_name  # one copy of the weights
    pair_pre = models[models[NAME].ensemble_scheduling.step[0].model_name]
    assert pair_pre.parameters["inputs"].string_value == "pairs"
    assert [t.name for t in pair_pre.output] == ["INPUT_IDS", "ATTENTION_MASK", "TOKEN_TYPE_IDS"]
    manifest = files["tritongen-manifest.json"]
    assert '"role": "rerank"' in manifest


def test_the_checks_compare_full_shapes_between_batching_and_non_batching_models(spec_file: Path) -> None:
    files = rendered(load_spec(spec_file), "local")
    path = f"{NAME}_rerank/config.pbtxt"
    broken = files[path].replace("dims: -1\n  dims: 1\n", "dims: -1\n  dims: 2\n")
    assert broken != files[path]
    with pytest.raises(CheckError, match="output 'SCORES' is declared TYPE_FP32 \\[-1, 2\\]"):
        check_configs({**files, path: broken})


def spec_with(spec_file: Path, **changes: object) -> str:
    data = yaml.safe_load(spec_file.read_text(encoding="utf-8"))
    version = data["versions"][0]
    for key, value in changes.items():
        section, field = key.split("__")
        version[section][field] = value
    return yaml.safe_dump(data)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"preprocessing__package_version": "1.0.0"}, "1.0.0 tokenizes single texts; (query, text) pairs need"),
        ({"preprocessing__padding": "none"}, "1.1.0 tokenizes pairs padded; unpadded pairs (`padding: none`) need"),
        ({"model__format": "torchscript"}, "model.format: rerankers are built in onnx"),
        ({"outputs__labels": ["a", "b"]}, "a reranker returns SCORE"),
    ],
)
def test_reranker_specs_it_cannot_serve_are_refused(spec_file: Path, changes: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        parse_spec(spec_with(spec_file, **changes), "pair_ranker.yaml")


@pytest.mark.parametrize("target", ["local", "ngc"])
def test_ragged_entry_points_pass_the_checks_of_both_targets(ragged_spec_file: Path, target: str) -> None:
    """Pairs and rerank requests reach one ragged inference model: token types packed as the tokens."""
    models = check_configs(rendered(load_spec(ragged_spec_file), target))
    check_native_rules(models)
    online, rerank = models[NAME], models[f"{NAME}_rerank"]
    assert [(t.name, list(t.dims)) for t in online.input] == [("QUERY", [1]), ("TEXT", [1])]
    assert [(t.name, list(t.dims)) for t in rerank.output] == [("SCORES", [-1, 1])]
    pair_pre = models[online.ensemble_scheduling.step[0].model_name]
    rerank_pre = models[rerank.ensemble_scheduling.step[0].model_name]
    inference = models[online.ensemble_scheduling.step[1].model_name]
    assert inference.name == rerank.ensemble_scheduling.step[1].model_name  # one copy of the weights
    assert pair_pre.parameters["padding"].string_value == rerank_pre.parameters["padding"].string_value == "none"
    assert [(t.name, list(t.dims)) for t in pair_pre.output] == [
        ("INPUT_IDS", [-1]),
        ("LENGTHS", [1]),
        ("TOKEN_TYPE_IDS", [-1]),
    ]
    assert [(t.name, list(t.dims)) for t in rerank_pre.output] == [
        ("INPUT_IDS", [-1, -1]),
        ("LENGTHS", [-1, 1]),
        ("TOKEN_TYPE_IDS", [-1, -1]),
    ]
    assert [(t.name, list(t.dims), t.allow_ragged_batch) for t in inference.input] == [
        ("input_ids", [-1], True),
        ("lengths", [1], True),
        ("token_type_ids", [-1], True),
    ]
    assert [(list(b.target_name), list(b.source_input)) for b in inference.batch_input] == [
        (["token_offsets"], ["input_ids"]),
        (["text_offsets"], ["lengths"]),
    ]
    assert [(t.name, list(t.dims)) for t in inference.output] == [("score", [1])]


def test_a_ragged_reranker_may_be_torchscript(ragged_spec_file: Path) -> None:
    spec = parse_spec(spec_with(ragged_spec_file, model__format="torchscript_ragged"), "pair_ranker.yaml")
    models = check_configs(rendered(spec, "ngc"))
    check_native_rules(models)
    inference = models[models[NAME].ensemble_scheduling.step[1].model_name]
    assert inference.backend == "pytorch" and [t.name for t in inference.input][-1] == "token_type_ids"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"preprocessing__package_version": "1.1.0"}, "1.1.0 tokenizes pairs padded; unpadded pairs"),
        ({"model__format": "onnx"}, "`none` (unpadded tokens) needs a ragged format"),
        ({"preprocessing__padding": "batch_longest"}, "format onnx_ragged takes unpadded tokens"),
    ],
)
def test_ragged_reranker_specs_it_cannot_serve_are_refused(
    ragged_spec_file: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        parse_spec(spec_with(ragged_spec_file, **changes), "pair_ranker.yaml")


def test_other_builders_are_not_rerankers(spec_file: Path) -> None:
    data = yaml.safe_load(spec_file.read_text(encoding="utf-8"))
    data["versions"][0]["model"]["build"]["builder"] = "transformers_classifier"
    with pytest.raises(SpecError, match="transformers_classifier is for classifiers or multi_label_classifiers"):
        parse_spec(yaml.safe_dump(data), "pair_ranker.yaml")


@pytest.mark.parametrize("padded", [True, False])
def test_int8_rerankers_are_gated_on_pairs(
    spec_file: Path, ragged_spec_file: Path, tmp_path: Path, padded: bool
) -> None:
    """The int8 copy's scores of every gate text against each query, tokenized as pairs, in both
    formats: what the gate measures is what the files answer; a stricter gate refuses it by name."""
    version = load_spec(spec_file if padded else ragged_spec_file).versions[0]
    fp32 = build_artifact(version.model, version.preprocessing, tmp_path, lambda _: None, "pr")
    artifact = version.model.model_copy(update={"quantize": Quantize(method="dynamic_int8")})
    int8 = build_artifact(artifact, version.preprocessing, tmp_path, lambda _: None, "pr")
    figures = measure_gate(artifact, fp32.path, int8.path, version.preprocessing)
    assert isinstance(figures, PairFidelity)
    assert (figures.queries, figures.examples) == (len(DEFAULT_QUERIES), 80)
    inference_format = get_format(version.model.format)
    pairs = (("what is a cell", "a cell is the unit of life"), ("what is a cell", "rocks are hard"))
    scores = [
        run_pairs(inference_format, inference_format.runner(path, 1), pairs, version.preprocessing)["score"]
        for path in (fp32.path, int8.path)
    ]
    assert scores[0].shape == (2, 1) and 0 < abs(scores[1] - scores[0]).max() <= 0.05
    assert 0 < figures.max_score_difference <= 0.05 and figures.order_agreement >= 0.9
    strict = version.model.model_copy(update={"quantize": Quantize(method="dynamic_int8", max_score_difference=1e-6)})
    with pytest.raises(QuantizationError, match=r"largest score difference to fp32 0\.0\d+ over 80 pairs"):
        build_artifact(strict, version.preprocessing, tmp_path, lambda _: None, "pr")
