"""A tokenizer whose token ids the model's embedding table does not cover is a spec error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from generator.base.sources import FolderSource
from generator.kinds.builders.families import tokenizer_vocabulary, vocabulary_problem
from generator.pipeline.spec import SpecError, parse_spec
from tests import model_folders


def _spec(tokenizer: Path, source: Path, kind: str = "classifier") -> str:
    embedding = kind == "embedding"
    data: dict[str, Any] = {
        "name": "mismatch",
        "kind": kind,
        "default_version": 1,
        "versions": [
            {
                "version": 1,
                "preprocessing": {"tokenizer": {"folder": str(tokenizer.parent), "path": tokenizer.name}},
                "model": {
                    "format": "onnx",
                    "build": {
                        "builder": "sentence_embedding" if embedding else "transformers_classifier",
                        "source": {"folder": str(source)},
                    },
                },
                "outputs": {"embedding_dim": 32} if embedding else {"labels": list(model_folders.LABELS)},
            }
        ],
    }
    return yaml.safe_dump(data)


def _vocab_size(folder: Path) -> int:
    return int(json.loads((folder / "config.json").read_text())["vocab_size"])


@pytest.mark.parametrize("family", ["distilbert", "roberta", "xlm-roberta"])
def test_the_vocabulary_counts_added_tokens_as_transformers_does(family: str) -> None:
    from transformers import AutoTokenizer

    folder = model_folders.cached_sequence_classifier(family)
    size = tokenizer_vocabulary(folder / "tokenizer.json")
    assert size == len(AutoTokenizer.from_pretrained(str(folder))) == _vocab_size(folder)
    assert vocabulary_problem(folder, FolderSource(folder=str(folder), path="tokenizer.json")) is None


def test_a_larger_tokenizer_is_refused_at_spec_load_naming_both_sizes() -> None:
    model = model_folders.cached_sequence_classifier("roberta")
    tokenizer = model_folders.cached_sequence_classifier("distilbert") / "tokenizer.json"
    size, vocab = tokenizer_vocabulary(tokenizer), _vocab_size(model)
    assert size > vocab
    with pytest.raises(SpecError) as raised:
        parse_spec(_spec(tokenizer, model), "models/mismatch.yaml")
    message = str(raised.value)
    assert message.startswith("models/mismatch.yaml: versions[0]: preprocessing.tokenizer: ")
    assert f"{tokenizer} has a vocabulary of {size} tokens (added tokens included)" in message
    assert f"{model / 'config.json'}: vocab_size {vocab}" in message
    assert f"token ids {vocab} and above would index outside the model's embedding table" in message
    # A smaller tokenizer is fine: every id it gives has a row.
    assert parse_spec(_spec(model / "tokenizer.json", model_folders.cached_sequence_classifier("distilbert")), "m.yaml")


def test_an_added_token_over_the_vocabulary_is_refused(tmp_path: Path) -> None:
    folder = shutil.copytree(model_folders.cached_sequence_classifier("bert"), tmp_path / "bert")
    tokenizer = folder / "tokenizer.json"
    data = json.loads(tokenizer.read_text())
    vocab = _vocab_size(folder)
    data["added_tokens"].append(
        {"id": vocab, "content": "<extra>", "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
    )  # fmt: skip
    tokenizer.write_text(json.dumps(data))
    with pytest.raises(SpecError, match=f"vocabulary of {vocab + 1} tokens .added tokens included"):
        parse_spec(_spec(tokenizer, folder), "models/mismatch.yaml")


def test_a_sentence_transformers_encoder_is_checked_too() -> None:
    model = model_folders.cached_sentence_transformer("xlm-roberta")
    tokenizer = model_folders.cached_sentence_transformer("bert") / "tokenizer.json"
    assert tokenizer_vocabulary(tokenizer) > _vocab_size(model)
    with pytest.raises(SpecError, match=r"versions\[0\]: preprocessing.tokenizer: .* vocab_size"):
        parse_spec(_spec(tokenizer, model, kind="embedding"), "models/mismatch.yaml")


def test_an_unreadable_tokenizer_is_left_to_the_source_checks(tmp_path: Path) -> None:
    model = model_folders.cached_sequence_classifier("bert")
    assert vocabulary_problem(model, FolderSource(folder=str(tmp_path), path="missing.json")) is None
    (tmp_path / "bad.json").write_text("[]")
    assert vocabulary_problem(model, FolderSource(folder=str(tmp_path), path="bad.json")) is None
