"""Every encoder family, built by the real builders and formats, equals its library.

The models are small random ones of each family (`tests/model_folders.py`: hidden 32, 2
layers, positions for 512 tokens, each with its family's tokenizer trained offline). Texts of 3
to 512 tokens (one truncated), CJK, emoji and accents are tokenized by the `tritongen-textprep`
package's own code (`tokenize_like_server`), whose ids must be `AutoTokenizer`'s; the exported
padded ONNX and TorchScript files must then give `SentenceTransformer(folder).encode(...)`'s
embeddings and `AutoModelForSequenceClassification`'s logits, for any batch size and length.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from generator.base.sources import FolderSource
from generator.kinds.builders import get_builder
from generator.kinds.builders.families import FAMILIES, UnsupportedModelError
from generator.kinds.formats import get_format
from generator.kinds.formats.onnx import onnx_runner
from generator.kinds.preprocessing.textprep import TextPrepSettings
from generator.pipeline.artifacts import build_artifact, tokenize_like_server
from generator.pipeline.quantize import QuantizationError, gate_texts, measure_fidelity
from generator.pipeline.spec import SpecError, Version, parse_spec
from tests import model_folders

TEXTS = [
    "x",
    "光合作用是植物利用阳光制造食物的过程。",
    "Emoji 🙂 😂 👍🏽 and accents: café, naïve, Ångström, São Paulo.",
    "How do plants make food from sunlight and water?",
    "東京は日本の首都です。 Mixed scripts: hello 世界, привет мир.",
    model_folders.long_text(),  # truncated at 512 tokens
]
FAMILY_CLASSES = {
    "bert": "BertTokenizer",
    "distilbert": "DistilBertTokenizer",
    "electra": "ElectraTokenizer",
    "mpnet": "MPNetTokenizer",
    "roberta": "RobertaTokenizer",
    "xlm-roberta": "XLMRobertaTokenizer",
}
"""The tokenizer class real checkpoints of each family name in `tokenizer_config.json`."""


def test_the_registry_matches_the_test_models() -> None:
    assert [family.model_type for family in FAMILIES] == list(model_folders.FAMILIES)
    assert all(family.unpadded for family in FAMILIES)  # tests/generator/kinds/formats/test_unpadded_families.py


def spec(
    folder: Path,
    kind: str = "embedding",
    model_format: str = "onnx",
    max_length: int | None = None,
    quantize: str | dict[str, Any] | None = None,
    padding: str = "batch_longest",
) -> dict[str, Any]:
    """A spec serving a test model folder (sentence-transformers for embeddings, else a checkpoint)."""
    embedding = kind == "embedding"
    preprocessing: dict[str, Any] = {"tokenizer": {"folder": str(folder), "path": "tokenizer.json"}, "padding": padding}
    if max_length is not None:
        preprocessing["max_length"] = max_length
    model: dict[str, Any] = {
        "format": model_format,
        "build": {
            "builder": "sentence_embedding" if embedding else "transformers_classifier",
            "source": {"folder": str(folder)},
        },
    }
    if quantize is not None:
        model["quantize"] = quantize
    outputs = {"embedding_dim": 32} if embedding else {"labels": list(model_folders.LABELS)}
    version = {"version": 1, "preprocessing": preprocessing, "model": model, "outputs": outputs}
    return {"name": "family", "kind": kind, "default_version": 1, "versions": [version]}


def version_of(data: dict[str, Any]) -> Version:
    return parse_spec(yaml.safe_dump(data, allow_unicode=True), "models/family.yaml").versions[0]


def cosines(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    return (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))


def batches(preprocessing: Any) -> list[tuple[list[str], np.ndarray, np.ndarray]]:
    """TEXTS tokenized as the server does, all at once (padded to 512) and in smaller batches
    of other lengths than the 5-token tracing sample (1 text unpadded, 3 texts padded)."""
    groups = [TEXTS, TEXTS[:1], TEXTS[1:4]]
    return [(texts, *tokenize_like_server(texts, preprocessing)) for texts in groups]


@pytest.mark.parametrize("family", model_folders.FAMILIES)
def test_textprep_tokenizes_as_autotokenizer(family: str, tmp_path: Path) -> None:
    """The package's `load_tokenizer` + `encode` give AutoTokenizer's ids, truncated with special
    tokens at max_length, for the saved tokenizer and with the family's own tokenizer class."""
    from transformers import AutoTokenizer

    folder = model_folders.cached_sequence_classifier(family)
    own_class = shutil.copytree(folder, tmp_path / "own-class", ignore=shutil.ignore_patterns("*.safetensors"))
    config_file = own_class / "tokenizer_config.json"
    config_file.write_text(
        json.dumps(json.loads(config_file.read_text()) | {"tokenizer_class": FAMILY_CLASSES[family]})
    )
    for max_length in (512, 12):
        preprocessing = TextPrepSettings(
            tokenizer={"folder": str(folder), "path": "tokenizer.json"}, max_length=max_length
        )
        ids, mask = tokenize_like_server(TEXTS, preprocessing)
        served = [row[: int(length)].tolist() for row, length in zip(ids, mask.sum(1), strict=True)]
        assert mask.tolist() == [[1] * len(row) + [0] * (ids.shape[1] - len(row)) for row in served]
        for tokenizer_folder in (folder, own_class):
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder))
            assert served == tokenizer(TEXTS, truncation=True, max_length=max_length)["input_ids"], tokenizer_folder
    assert max(len(row) for row in served) == 12
    assert len(tokenizer(TEXTS[-1])["input_ids"]) > 512  # the long text is truncated above


@pytest.mark.parametrize("family", model_folders.FAMILIES)
def test_sentence_embeddings_equal_sentence_transformers(family: str, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    folder = model_folders.cached_sentence_transformer(family)
    reference = SentenceTransformer(str(folder), device="cpu")
    for model_format in ("onnx", "torchscript"):
        version = version_of(spec(folder, model_format=model_format))
        assert version.preprocessing.max_length == model_folders.MAX_TOKENS  # the model's max_seq_length
        built = build_artifact(version.model, version.preprocessing, tmp_path, lambda _: None)
        run = embedding_runner(model_format, built.path)
        for texts, ids, mask in batches(version.preprocessing):
            want = reference.encode(texts, convert_to_numpy=True)
            got = run(ids, mask)
            assert cosines(got, want).min() >= 0.9999, (model_format, ids.shape)
            assert np.abs(got - want).max() <= 1e-4, (model_format, ids.shape)
    assert ids.shape[1] != 5 and (want @ want.T).min() < 0.99  # lengths unlike the sample; distinct embeddings


def embedding_runner(model_format: str, path: Path) -> Any:
    """The built file as a function of padded (ids, mask) -> embeddings."""
    if model_format == "onnx":
        session = onnx_runner(path, 2)
        return lambda ids, mask: session({"input_ids": ids, "attention_mask": mask})["embedding"]
    import torch

    module = torch.jit.load(str(path), map_location="cpu")

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()

    return run


@pytest.mark.parametrize("family", model_folders.FAMILIES)
def test_classifier_logits_equal_transformers(family: str, tmp_path: Path) -> None:
    """ONNX logits (the served texts) equal the library's on AutoTokenizer's own padded batch,
    padded with the model's pad id (textprep pads with the tokenizer file's, here 0)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = model_folders.cached_sequence_classifier(family)
    version = version_of(spec(folder, kind="classifier"))
    assert version.preprocessing.max_length == model_folders.MAX_TOKENS  # the model's tokens, e.g. 514 - 2
    built = build_artifact(version.model, version.preprocessing, tmp_path, lambda _: None)
    run = onnx_runner(built.path, 2)
    reference = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    for texts, ids, mask in batches(version.preprocessing):
        library = tokenizer(texts, truncation=True, max_length=512, padding=True, return_tensors="pt")
        with torch.inference_mode():
            want = reference(**library).logits.numpy()
        served = run({"input_ids": ids, "attention_mask": mask})
        assert np.abs(served["logits"] - want).max() <= 1e-4, ids.shape
        assert [str(label) for label in served["label"].ravel()] == [model_folders.LABELS[i] for i in want.argmax(1)]
    assert np.ptp(want, axis=0).max() > 0.05  # the logits differ between texts: the comparison can fail


INT8_DECLARED: dict[tuple[str, str], dict[str, float]] = {
    # The tiny random ELECTRA classifier's int8 copy changes the label of 1 of the 16 default gate
    # texts: label agreement 0.9375 < the default 0.95 (min cosine 0.9903, mean 0.9977).
    ("electra", "classifier"): {"min_label_agreement": 0.9},
}
"""Gate thresholds a spec would declare for a family's tiny model that misses a default."""


@pytest.mark.parametrize("kind", ["classifier", "embedding"])
@pytest.mark.parametrize("family", [family.model_type for family in FAMILIES])
def test_int8_passes_the_fidelity_gate(family: str, kind: str, tmp_path: Path) -> None:
    """`quantize: dynamic_int8` builds for every family (the gate runs in `build_artifact`) and
    stays close to fp32; where the tiny model misses a default threshold (`INT8_DECLARED`), the
    default gate refuses it by that figure and the declared threshold passes."""
    folder = (
        model_folders.cached_sentence_transformer(family)
        if kind == "embedding"
        else model_folders.cached_sequence_classifier(family)
    )
    default = version_of(spec(folder, kind=kind, quantize="dynamic_int8"))
    declared = INT8_DECLARED.get((family, kind), {})
    if declared:
        with pytest.raises(QuantizationError) as refused:
            build_artifact(default.model, default.preprocessing, tmp_path, lambda _: None, label=family)
    version = version_of(spec(folder, kind=kind, quantize={"method": "dynamic_int8", **declared}))
    messages: list[str] = []
    quantized = build_artifact(version.model, version.preprocessing, tmp_path, messages.append, label=family)
    fp32_model = version.model.model_copy(update={"quantize": None})
    fp32 = build_artifact(fp32_model, version.preprocessing, tmp_path, lambda _: None)
    settings = version.model.quantize
    assert settings is not None and default.model.quantize is not None
    figures = measure_fidelity(
        get_format("onnx"), fp32.path, quantized.path, gate_texts(version.model), version.preprocessing
    )
    print(f"\nint8 {family} {kind}: {figures.summary()}")
    assert messages[-1] == f"  {family}: dynamic_int8 fidelity gate passed: {figures.summary()}"
    assert figures.examples == 16  # quantize.DEFAULT_EXAMPLES
    assert figures.min_cosine >= settings.min_cosine and figures.mean_cosine >= settings.min_mean_cosine
    assert (figures.label_agreement is None) == (kind == "embedding")
    assert figures.label_agreement is None or figures.label_agreement >= settings.min_label_agreement
    missed = figures.problems(default.model.quantize)  # exactly the declared thresholds' defaults
    gate = ("min_cosine", "min_mean_cosine", "min_label_agreement")
    assert [name for name in gate if any(f"below {name} " in problem for problem in missed)] == list(declared)
    if declared:
        assert "; ".join(missed) in str(refused.value)  # the default gate names the figure it misses
    assert quantized.path.stat().st_size < fp32.path.stat().st_size
    ids, mask = tokenize_like_server(TEXTS, version.preprocessing)
    output = "embedding" if kind == "embedding" else "logits"
    got, want = (
        onnx_runner(path, 2)({"input_ids": ids, "attention_mask": mask})[output] for path in (quantized.path, fp32.path)
    )
    assert cosines(got, want).min() >= 0.97  # CJK, emoji and a truncated 512-token text too


def test_the_pad_id_changes_no_output(tmp_path: Path) -> None:
    """RoBERTa-style models number positions from the input ids, and their pad id is 1; textprep
    pads with the tokenizer file's pad id (none set here: 0). Masked padding changes no output."""
    from transformers import AutoTokenizer

    for family in ("roberta", "mpnet", "xlm-roberta"):
        folder = model_folders.cached_sentence_transformer(family)
        version = version_of(spec(folder))
        built = build_artifact(version.model, version.preprocessing, tmp_path, lambda _: None)
        run = embedding_runner("onnx", built.path)
        ids, mask = tokenize_like_server(TEXTS[:4], version.preprocessing)
        pad_id = AutoTokenizer.from_pretrained(str(folder)).pad_token_id
        assert pad_id == 1 and (mask == 0).any() and (ids[mask == 0] == 0).all()
        assert np.abs(run(np.where(mask == 1, ids, pad_id), mask) - run(ids, mask)).max() <= 1e-6


# --- what the spec refuses --------------------------------------------------------------------


def test_ragged_is_refused_for_a_model_the_unpadded_encoder_does_not_cover(tmp_path: Path) -> None:
    checkpoint = shutil.copytree(model_folders.cached_sequence_classifier("bert"), tmp_path / "relative")
    config_file = checkpoint / "config.json"
    relative = json.loads(config_file.read_text()) | {"position_embedding_type": "relative_key"}
    config_file.write_text(json.dumps(relative))
    with pytest.raises(SpecError) as raised:
        version_of(spec(checkpoint, kind="classifier", model_format="onnx_ragged", padding="none"))
    message = str(raised.value)
    assert "versions[0].model.format: onnx_ragged: the unpadded encoder needs absolute position embeddings" in message
    assert "BertForSequenceClassification (model_type bert" in message and "'relative_key' (use onnx)" in message
    roberta = model_folders.cached_sentence_transformer("roberta")
    ragged = version_of(spec(roberta, model_format="torchscript_ragged", padding="none"))
    assert ragged.model.format == "torchscript_ragged"
    classifier = model_folders.cached_sequence_classifier("roberta")
    with pytest.raises(SpecError, match=r"model\.format: transformers_classifier builds onnx, onnx_ragged"):
        version_of(spec(classifier, kind="classifier", model_format="torchscript_ragged", padding="none"))


def test_max_length_over_what_the_model_takes_is_a_spec_error(tmp_path: Path) -> None:
    classifier = model_folders.cached_sequence_classifier("roberta")
    assert version_of(spec(classifier, kind="classifier", max_length=512)).preprocessing.max_length == 512
    with pytest.raises(SpecError) as raised:
        version_of(spec(classifier, kind="classifier", max_length=513))
    message = str(raised.value)
    assert "preprocessing.max_length: 513 is over the 512 tokens the model takes" in message
    assert "max_position_embeddings 514 - 2: RoBERTa numbers positions after the padding index" in message
    embedding = model_folders.cached_sentence_transformer("bert", max_seq_length=64)
    assert version_of(spec(embedding)).preprocessing.max_length == 64
    with pytest.raises(SpecError, match="preprocessing.max_length: 65 is over the model's max_seq_length 64"):
        version_of(spec(embedding, max_length=65))
    # A sentence-transformers 5 save without a tokenizer length: sentence-transformers takes the
    # 514 position embeddings; the spec, the 512 tokens a RoBERTa model takes.
    unbounded = shutil.copytree(model_folders.cached_sentence_transformer("roberta"), tmp_path / "unbounded")
    config_file = unbounded / "tokenizer_config.json"
    config_file.write_text(
        json.dumps({k: v for k, v in json.loads(config_file.read_text()).items() if k != "model_max_length"})
    )
    version = version_of(spec(unbounded))
    assert version.preprocessing.max_length == 512
    assert build_artifact(version.model, version.preprocessing, tmp_path, lambda _: None).path.exists()
    with pytest.raises(SpecError, match="preprocessing.max_length: 513 is over the 512 tokens the model takes"):
        version_of(spec(unbounded, max_length=513))
    # A tokenizer that says less than the model takes lowers the default only.
    capped = shutil.copytree(classifier, tmp_path / "capped")
    config_file = capped / "tokenizer_config.json"
    config_file.write_text(json.dumps(json.loads(config_file.read_text()) | {"model_max_length": 128}))
    assert version_of(spec(capped, kind="classifier")).preprocessing.max_length == 128
    assert version_of(spec(capped, kind="classifier", max_length=300)).preprocessing.max_length == 300


@pytest.mark.parametrize("kind", ["classifier", "embedding"])
def test_an_unknown_model_type_is_named_at_spec_load_and_build(kind: str, tmp_path: Path) -> None:
    source = (
        model_folders.cached_sequence_classifier("bert")
        if kind == "classifier"
        else model_folders.cached_sentence_transformer("bert")
    )
    folder = shutil.copytree(source, tmp_path / "gpt")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"model_type": "gpt2", "architectures": ["GPT2Model"]}))
    for max_length in (None, 64):  # also when nothing needs the model's length
        with pytest.raises(SpecError) as raised:
            version_of(spec(folder, kind=kind, max_length=max_length))
        message = str(raised.value)
        assert "GPT2Model (model_type 'gpt2') is not a supported encoder family" in message
        assert "BERT (bert), DistilBERT (distilbert), ELECTRA (electra), MPNet (mpnet), RoBERTa (roberta)" in message
    builder = get_builder("sentence_embedding" if kind == "embedding" else "transformers_classifier")
    build = builder.settings(builder=builder.name, source=FolderSource(folder=str(folder)))
    preprocessing = TextPrepSettings(tokenizer=FolderSource(folder=str(folder), path="tokenizer.json"), max_length=64)
    with pytest.raises(UnsupportedModelError, match="GPT2Model \\(model_type 'gpt2'\\) is not a supported"):
        builder.padded_module(build, preprocessing)  # the build refuses it too


def test_do_lower_case_is_refused_by_name(tmp_path: Path) -> None:
    folder = shutil.copytree(model_folders.cached_sentence_transformer("bert"), tmp_path / "lower")
    config_file = folder / "sentence_bert_config.json"
    config_file.write_text(json.dumps(json.loads(config_file.read_text()) | {"do_lower_case": True}))
    with pytest.raises(SpecError, match="do_lower_case: true .* is not supported"):
        version_of(spec(folder))
