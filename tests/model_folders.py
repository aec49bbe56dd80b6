"""Small random Transformers models of every supported family, made offline and deterministically.

For tests (unit and integration): each function writes a model folder into a given folder and
returns it. A family's model is tiny (`bench.checkpoints.TINY`: hidden 32, 2 layers, 2 heads)
with position embeddings for 512 tokens, and its tokenizer is trained by `bench.checkpoints`
with `tokenizers` on `CORPUS` (English, accents, CJK, emoji) with the algorithm of the real
family: WordPiece (BERT, DistilBERT, ELECTRA, MPNet), byte-level BPE (RoBERTa), Unigram
(XLM-RoBERTa). The tokenizer is wrapped by `PreTrainedTokenizerFast` and saved with
`save_pretrained` next to the model, so `tokenizer.json`, `tokenizer_config.json` and
`config.json` agree, as in a real checkpoint.

- `sequence_classifier(family, folder)`: an `AutoModelForSequenceClassification` checkpoint
  (3 labels, `id2label` = `LABELS`);
- `sentence_transformer(family, folder, pooling=..., dense=..., normalize=...)`: a
  sentence-transformers folder (`SentenceTransformer(modules=[...]).save(...)`).

Same arguments, same files: weights come from a fixed seed, the tokenizer from a fixed corpus.
`cached_*` variants build each folder once per process under a shared temporary folder.
"""

from __future__ import annotations

import atexit
import functools
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench.checkpoints import CORPUS as CORPUS  # the tests' texts too
from bench.checkpoints import FAMILIES as FAMILIES
from bench.checkpoints import MAX_TOKENS as MAX_TOKENS
from bench.checkpoints import model_config, save_tokenizer

LABELS = ("negative", "neutral", "positive")
"""The classifiers' `id2label`, in id order."""


def _seeded_model(family: str, folder: Path, auto_class: str, **extra: Any) -> Any:
    import torch
    import transformers

    tokenizer = save_tokenizer(family, folder)
    config = model_config(family, len(tokenizer), tokenizer.pad_token_id, **extra)
    torch.manual_seed(0)
    return getattr(transformers, auto_class).from_config(config).eval()


def sequence_classifier(family: str, folder: Path) -> Path:
    """A 3-label `AutoModelForSequenceClassification` checkpoint with its tokenizer in `folder`."""
    model = _seeded_model(
        family,
        folder,
        "AutoModelForSequenceClassification",
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: index for index, label in enumerate(LABELS)},
    )
    model.save_pretrained(str(folder))
    return folder


def cross_encoder(family: str, folder: Path, activation: str | None = None, token_types: bool = False) -> Path:
    """A one-label sequence classifier as `CrossEncoder.save_pretrained` writes it (`config.json`'s
    `sentence_transformers.activation_fn` = `activation`, e.g. `torch.nn.Identity`; None: the
    folder names none and `CrossEncoder` uses Sigmoid); `token_types`: its tokenizer returns
    `token_type_ids` (`model_input_names`), as BERT's do, so the model gets the pair's segments."""
    import json

    model = _seeded_model(family, folder, "AutoModelForSequenceClassification", num_labels=1)
    model.save_pretrained(str(folder))
    edits: dict[str, dict[str, Any]] = {
        "config.json": {"sentence_transformers": {"activation_fn": activation}} if activation else {},
        "tokenizer_config.json": (
            {"model_input_names": ["input_ids", "token_type_ids", "attention_mask"]} if token_types else {}
        ),
    }
    for name, changes in edits.items():
        if changes:
            path = folder / name
            data = {**json.loads(path.read_text(encoding="utf-8")), **changes}
            path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder


def sentence_transformer(
    family: str,
    folder: Path,
    pooling: str | tuple[str, ...] = "mean",
    dense: tuple[int, ...] = (),
    activation: str = "Tanh",
    normalize: bool = True,
    max_seq_length: int | None = None,
) -> Path:
    """A sentence-transformers folder: Transformer -> Pooling(`pooling`) -> a Dense layer of
    each size in `dense` (with `activation`) -> Normalize if `normalize`, saved with `.save`."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    encoder_folder = folder / "_encoder"
    encoder_folder.mkdir(parents=True, exist_ok=True)
    _seeded_model(family, encoder_folder, "AutoModel").save_pretrained(str(encoder_folder))
    transformer = Transformer(str(encoder_folder), max_seq_length=max_seq_length)
    width = transformer.get_embedding_dimension()
    modules: list[Any] = [transformer, Pooling(width, pooling_mode=pooling)]
    width *= 1 if isinstance(pooling, str) else len(pooling)
    torch.manual_seed(1)
    for size in dense:
        modules.append(Dense(width, size, activation_function=getattr(torch.nn, activation)()))
        width = size
    if normalize:
        modules.append(Normalize())
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    (folder / "README.md").unlink(missing_ok=True)  # a generated model card (varies between runs)
    for leftover in sorted(encoder_folder.iterdir()):
        leftover.unlink()
    encoder_folder.rmdir()
    return folder


@functools.cache
def _cache() -> Path:
    """A temporary folder for this process's cached models, removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix="tritongen-test-models-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


@functools.cache
def cached_sequence_classifier(family: str) -> Path:
    """`sequence_classifier(family, ...)` built once per process (do not modify it)."""
    return sequence_classifier(family, _cache() / f"classifier-{family}")


@functools.cache
def cached_sentence_transformer(family: str, **options: Any) -> Path:
    """`sentence_transformer(family, ..., **options)` built once per process (options hashable;
    do not modify it)."""
    name = "-".join([family, *(f"{key}={value}" for key, value in sorted(options.items()))])
    return sentence_transformer(family, _cache() / f"st-{re.sub(r'[^A-Za-z0-9=_.-]', '', name)}", **options)


def long_text(tokens: int = 600) -> str:
    """A text of more than `tokens` tokens for every test tokenizer (truncation)."""
    words = " ".join(CORPUS).split()
    return " ".join(words[i % len(words)] for i in range(tokens))
