"""`tritongen add FOLDER`: the spec a model folder gets, and the folders it refuses (nothing written)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from generator import cli
from generator.base.sources import path_digest
from generator.cli import main as tritongen
from generator.environments.cache import HASH_LENGTH
from generator.kinds.formats import get_format
from generator.pipeline.add_model import AddError, add_model
from generator.pipeline.artifacts import build_artifact
from generator.pipeline.generate import deploy_files
from generator.pipeline.plan import ENVS_FOLDER, BuiltEnvironmentPlan, plan_repository
from generator.pipeline.quantize import gate_texts, measure_fidelity, quantized_file
from generator.pipeline.render import render_repository
from generator.pipeline.spec import Quantize, load_spec, load_specs
from tests import model_folders
from tests.classifier_checkpoints import tiny_classifier

LABELS = ("question", "complaint", "praise")


def test_a_classifier_checkpoint_gets_a_pinned_commented_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tiny_classifier(tmp_path / "Feedback-Tags v2", LABELS, multi_label=True)
    specs = tmp_path / "specs"
    assert tritongen(["add", str(folder), "--specs", str(specs), "--no-int8-report"]) == 0
    said = capsys.readouterr().out
    assert "kind multi_label_classifier, builder transformers_classifier" in said
    assert "labels from id2label, in id order: question, complaint, praise" in said
    path = specs / "feedback_tags_v2.yaml"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Written by `tritongen add ") and "family BERT" in text
    spec = load_spec(path)
    version = spec.versions[0]
    assert (spec.kind, version.outputs.labels) == ("multi_label_classifier", LABELS)
    assert (version.model.format, version.preprocessing.padding) == ("onnx_ragged", "none")  # the fast path
    assert version.model.build.source.digest == path_digest(folder)  # type: ignore[attr-defined]
    assert version.preprocessing.max_length == 512
    # Same folder, same bytes: a re-pin with --force changes nothing.
    assert tritongen(["add", str(folder), "--specs", str(specs), "--force", "--no-int8-report"]) == 0
    assert path.read_text(encoding="utf-8") == text


def test_a_sentence_transformers_folder_gets_an_embedding_spec(tmp_path: Path) -> None:
    folder = model_folders.cached_sentence_transformer("roberta", pooling="cls", dense=(16,))
    added = add_model(folder, tmp_path, name="roberta_embed")
    spec = load_spec(added.path)
    assert (spec.kind, spec.versions[0].outputs.embedding_dim) == ("embedding", 16)
    assert spec.versions[0].model.build.builder == "sentence_embedding"
    assert "family RoBERTa" in added.path.read_text(encoding="utf-8")


def _broken(tmp_path: Path, change: str) -> Path:
    folder = tiny_classifier(tmp_path / "model", LABELS, multi_label=False)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    if change == "no tokenizer":
        (folder / "tokenizer.json").unlink()
    elif change == "no weights":
        (folder / "model.safetensors").unlink()
    elif change == "unsupported":
        config["model_type"], config["architectures"] = "gpt2", ["GPT2ForSequenceClassification"]
    elif change == "default label names":
        config["id2label"] = {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}
    elif change == "not a classifier":
        config["architectures"] = ["BertForMaskedLM"]
    elif change == "vocabulary over the model's":
        config["vocab_size"] = 1000  # the tokenizer's 30522 tokens do not fit
    config_path.write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("no tokenizer", "no tokenizer.json .a fast tokenizer's file."),
        ("no weights", "no weights .model.safetensors or pytorch_model.bin."),
        ("unsupported", "GPT2ForSequenceClassification .model_type 'gpt2'. is not a supported encoder family"),
        ("default label names", "does not name the labels"),
        ("not a classifier", "BertForMaskedLM.*serves sequence classifiers"),
        ("vocabulary over the model's", "preprocessing.tokenizer: .* vocabulary of 30522 tokens .* vocab_size 1000"),
    ],
)
def test_a_folder_it_cannot_serve_is_refused_and_nothing_is_written(tmp_path: Path, change: str, message: str) -> None:
    folder = _broken(tmp_path, change)
    specs = tmp_path / "specs"
    with pytest.raises(AddError, match=message):
        add_model(folder, specs, name="model")
    assert not specs.exists()


def test_an_existing_spec_is_kept_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tiny_classifier(tmp_path / "model", LABELS, multi_label=False)
    (tmp_path / "specs").mkdir()
    existing = tmp_path / "specs" / "model.yaml"
    existing.write_text("kept\n")
    assert tritongen(["add", str(folder), "--specs", str(tmp_path / "specs")]) == 2
    assert "exists: choose another --name, or --force" in capsys.readouterr().err
    assert existing.read_text() == "kept\n"
    shutil.rmtree(folder)
    assert tritongen(["add", str(folder), "--specs", str(tmp_path / "specs")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_padded_when_asked_or_when_the_unpadded_encoder_does_not_cover_the_model(tmp_path: Path) -> None:
    folder = tiny_classifier(tmp_path / "model", LABELS, multi_label=False)
    asked = add_model(folder, tmp_path / "specs", name="asked", padded=True)
    assert load_spec(asked.path).versions[0].model.format == "onnx"
    assert any("as asked (--padded)" in line for line in asked.explanation)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["position_embedding_type"] = "relative_key"  # what the unpadded encoder refuses
    config_path.write_text(json.dumps(config))
    fallback = add_model(folder, tmp_path / "specs", name="fallback")
    assert load_spec(fallback.path).versions[0].model.format == "onnx"
    assert any("format onnx (padded): " in line and "relative" in line for line in fallback.explanation)


def test_add_says_what_int8_would_give_and_the_spec_keeps_fp32(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tiny_classifier(tmp_path / "model", LABELS, multi_label=False)
    cache, specs = tmp_path / "cache", tmp_path / "specs"
    monkeypatch.setattr(cli, "DEFAULT_CACHE", cache)
    assert tritongen(["add", str(folder), "--specs", str(specs)]) == 0
    said = capsys.readouterr().out
    assert all(step in said for step in ("building the fp32 ONNX file ...", "quantizing", "timing"))
    path = specs / "model.yaml"
    text = path.read_text(encoding="utf-8")
    version = load_spec(path).versions[0]
    assert version.model.quantize is None  # the user chooses
    # The figures are the gate's on the files generate would use: both are in its cache already.
    fp32 = build_artifact(version.model, version.preprocessing, cache, progress=lambda _: None)
    int8_model = version.model.model_copy(update={"quantize": Quantize(method="dynamic_int8")})
    steps: list[str] = []
    int8, _ = quantized_file(int8_model, fp32.path, fp32.key, cache, steps.append, "model v1")
    assert "is cached" in steps[0]
    fidelity = measure_fidelity(
        get_format(version.model.format), fp32.path, int8, gate_texts(int8_model), version.preprocessing
    )
    problems = fidelity.problems(Quantize(method="dynamic_int8"))
    gate = f"gate {'fails' if problems else 'passes'} ({fidelity.summary()}; thresholds min_cosine 0.97,"
    sizes = f"file {fp32.path.stat().st_size / 1e6:.1f} -> {int8.stat().st_size / 1e6:.1f} MB"
    line = next(line for line in said.splitlines() if line.startswith("int8 (quantize: dynamic_int8): "))
    assert gate in line and sizes in line
    assert re.search(
        r"; \d+\.\dx (faster|slower) in-process \(fp32 [\d.]+ ms, int8 [\d.]+ ms per batch of 16, 1 thread\)", line
    )
    assert ("to use it, add 'quantize: dynamic_int8' under model: in" in line) == (not problems)
    assert all(problem in line for problem in problems)
    assert f"#   {gate}" in text and f"#   {sizes};" in text and " ms" not in text  # no timings in the spec
    # Same folder, same bytes: the timings are printed, never written.
    assert tritongen(["add", str(folder), "--specs", str(specs), "--force"]) == 0
    assert path.read_text(encoding="utf-8") == text
    # --no-int8-report: nothing built, nothing said, the same spec without the int8 comment.
    capsys.readouterr()
    monkeypatch.setattr(cli, "DEFAULT_CACHE", tmp_path / "unused")
    assert tritongen(["add", str(folder), "--specs", str(specs), "--force", "--no-int8-report"]) == 0
    said = capsys.readouterr().out
    assert "int8 report" not in said and "int8 (quantize" not in said and not (tmp_path / "unused").exists()
    plain = path.read_text(encoding="utf-8")
    assert "# int8:" not in plain and set(plain.splitlines()) < set(text.splitlines())


def test_an_added_folder_passes_check_configs_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`tritongen add FOLDER`, then `tritongen check --configs-only` (offline: no environment
    solve, no built file) on its specs: drift while nothing is generated, ok once the repository
    holds the configs and deploy files generate writes for them (written here as generate lays
    them out, the environment's tarball in its first user's folder under a placeholder hash: the
    solve, the environments and the model files are generate's and the full check's)."""
    folder = tiny_classifier(tmp_path / "Support Tickets", LABELS, multi_label=False)
    specs, output = tmp_path / "specs", tmp_path / "repository"
    assert tritongen(["add", str(folder), "--specs", str(specs), "--no-int8-report"]) == 0
    check = ["check", "--configs-only", "--specs", str(specs), "--output", str(output), "--cores", "2"]
    capsys.readouterr()
    assert tritongen(check) == 1  # nothing generated yet
    assert "support_tickets/config.pbtxt" in capsys.readouterr().out
    plan = plan_repository(load_specs(specs), "local", 2)
    (pre,) = plan.preprocess_models()
    assert pre.environment is not None
    tarball = f"{pre.name}/{ENVS_FOLDER}/{pre.environment.name}-{'0' * HASH_LENGTH}.tar.gz"
    plan = plan.with_environments({pre.name: BuiltEnvironmentPlan(tarball, Path("/nonexistent"), "3.11", None)})
    for rendered in render_repository(plan) + deploy_files(plan):  # as generate writes them
        (output / rendered.path).parent.mkdir(parents=True, exist_ok=True)
        (output / rendered.path).write_text(rendered.text, encoding="utf-8")
    assert tritongen(check) == 0
    said = capsys.readouterr().out
    assert said == (
        f"ok: specs valid, configs wired, {output} matches a fresh generation "
        "(environments not solved: their names are the repository's)\n"
    )
