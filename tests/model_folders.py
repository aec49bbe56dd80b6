"""Small random Transformers models of every supported family, made offline and deterministically.

For tests (unit and integration): each function writes a model folder into a given folder and
returns it. A family's model is tiny (hidden 32, 2 layers, 2 heads) with position embeddings
for 512 tokens, and its tokenizer is trained here by `tokenizers` on `CORPUS` (English,
accents, CJK, emoji) with the algorithm of the real family: WordPiece (BERT, DistilBERT,
ELECTRA, MPNet), byte-level BPE (RoBERTa), Unigram (XLM-RoBERTa). The tokenizer is wrapped
by `PreTrainedTokenizerFast` and saved with `save_pretrained` next to the model, so
`tokenizer.json`, `tokenizer_config.json` and `config.json` agree, as in a real checkpoint.

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
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FAMILIES = ("bert", "distilbert", "electra", "mpnet", "roberta", "xlm-roberta")
"""The `model_type` of every family the generator supports, one test model each."""
LABELS = ("negative", "neutral", "positive")
"""The classifiers' `id2label`, in id order."""
MAX_TOKENS = 512
"""Tokens per text every test model takes (its tokenizer's `model_max_length`)."""

CORPUS = (
    "The quick brown fox jumps over the lazy dog.",
    "A model repository holds one folder per model and one per version.",
    "Triton batches requests of many clients into one inference call.",
    "Tokenizers split text into subwords: unbelievable becomes un, believ and able.",
    "How do plants make food from sunlight and water?",
    "Refunds are issued within five to seven business days.",
    "The meeting was moved to Thursday afternoon because the projector broke.",
    "I loved the film, but the ending felt rushed and the soundtrack was far too loud.",
    "Numbers like 3.14159, 2026 and 42 appear in text too.",
    "Café, naïve, façade, Ångström, São Paulo, Zürich, crème brûlée, jalapeño.",
    "Die Straße ist nass, weil es regnet; Öl und Äpfel kosten mehr.",
    "¿Dónde está la estación? Él está aquí, señor.",
    "光合作用是植物利用阳光制造食物的过程。",
    "東京は日本の首都です。今日はいい天気ですね。",
    "한국어 문장도 토큰으로 나뉩니다.",
    "Emoji carry meaning too 🙂 😂 🚀 👍🏽 ❤️ and flags 🇫🇷.",
    "Mixed scripts: hello 世界, bonjour 🌍, привет мир, γειά σου κόσμε.",
    "Punctuation!? (brackets) [square] {curly} <angle> 'quotes' \"double\" -- dashes...",
    "email@example.com, https://example.org/path?query=1 and #hashtags.",
    "UPPER case, lower case, Title Case, and MiXeD cAsE words.",
)
"""The training text of every test tokenizer (and a source of test texts)."""


@dataclass(frozen=True)
class _Specials:
    pad: str
    unk: str
    cls: str
    sep: str
    mask: str
    order: tuple[str, ...]
    """Special tokens in id order (ids 0, 1, ...)."""


_BERT_SPECIALS = _Specials("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"))
_ROBERTA_SPECIALS = _Specials("<pad>", "<unk>", "<s>", "</s>", "<mask>", ("<s>", "<pad>", "</s>", "<unk>", "<mask>"))
_TOKENIZER_KIND = {
    "bert": "wordpiece",
    "distilbert": "wordpiece",
    "electra": "wordpiece",
    "mpnet": "wordpiece",
    "roberta": "bpe",
    "xlm-roberta": "unigram",
}
"""The tokenizer algorithm of each family (as its real checkpoints have it)."""


def _specials(family: str) -> _Specials:
    return _BERT_SPECIALS if family in ("bert", "distilbert", "electra") else _ROBERTA_SPECIALS


def _train_tokenizer(family: str) -> Any:
    """A `tokenizers.Tokenizer` of the family's algorithm, trained on CORPUS, with the same vocabulary
    in every process (the library's WordPiece trainer breaks ties by hash order, and Unigram's
    scores vary in their last bits: see `_wordpiece` and `_stable_unigram`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = _specials(family)
    kind = _TOKENIZER_KIND[family]
    corpus = list(CORPUS) * 3
    if kind == "wordpiece":
        tokenizer = _wordpiece(corpus, specials)
    elif kind == "bpe":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=700, special_tokens=list(specials.order), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
        tokenizer.train_from_iterator(corpus, trainer)
    else:
        # As Transformers' XLMRobertaTokenizer builds it (without a SentencePiece normalization map).
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
        )
        tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        trainer = trainers.UnigramTrainer(
            vocab_size=500, special_tokens=list(specials.order), unk_token=specials.unk, shrinking_factor=0.75
        )
        tokenizer.train_from_iterator(corpus, trainer)
        tokenizer.model = _stable_unigram(tokenizer, specials)
    cls, sep = (specials.cls, tokenizer.token_to_id(specials.cls)), (specials.sep, tokenizer.token_to_id(specials.sep))
    if kind == "bpe":
        tokenizer.post_processor = processors.RobertaProcessing(sep, cls, trim_offsets=True, add_prefix_space=False)
    elif specials is _BERT_SPECIALS:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{cls[0]} $A {sep[0]}", pair=f"{cls[0]} $A {sep[0]} $B:1 {sep[0]}:1", special_tokens=[cls, sep]
        )
    else:  # MPNet and XLM-R: <s> A </s></s> B </s>
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{cls[0]} $A {sep[0]}", pair=f"{cls[0]} $A {sep[0]} {sep[0]} $B {sep[0]}", special_tokens=[cls, sep]
        )
    return tokenizer


def _wordpiece(corpus: list[str], specials: _Specials) -> Any:
    """A BERT-style WordPiece tokenizer: the pieces of a BPE trained on the BERT-normalized words
    (deterministic), each as a word start and as a `##` continuation."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    bpe.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=list(specials.order)))
    vocab = bpe.get_vocab()
    pieces = [piece for piece in sorted(vocab, key=vocab.__getitem__) if piece not in specials.order]
    ordered = [*specials.order, *pieces, *(f"##{piece}" for piece in pieces)]
    tokenizer = Tokenizer(
        models.WordPiece(
            {piece: index for index, piece in enumerate(ordered)}, unk_token=specials.unk, max_input_chars_per_word=100
        )
    )
    tokenizer.normalizer = bpe.normalizer
    tokenizer.pre_tokenizer = bpe.pre_tokenizer
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


def _stable_unigram(tokenizer: Any, specials: _Specials) -> Any:
    """The trained Unigram model, scores rounded to 2 decimals (the trainer gives the characters it
    must keep scores a hair apart in hash order) and pieces in a fixed order."""
    import json

    from tokenizers import models

    trained = json.loads(tokenizer.to_str())["model"]["vocab"]
    scores = {piece: round(score, 2) for piece, score in trained}
    rest = sorted((piece for piece in scores if piece not in specials.order), key=lambda piece: (-scores[piece], piece))
    vocab = [(piece, scores[piece]) for piece in (*specials.order, *rest)]
    return models.Unigram(vocab, unk_id=specials.order.index(specials.unk), byte_fallback=False)


def save_tokenizer(family: str, folder: Path) -> Any:
    """Train the family's tokenizer and `save_pretrained` it into `folder`; the fast tokenizer."""
    from transformers import PreTrainedTokenizerFast

    specials = _specials(family)
    extra = {"bos_token": specials.cls, "eos_token": specials.sep} if specials is _ROBERTA_SPECIALS else {}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(family),
        unk_token=specials.unk,
        pad_token=specials.pad,
        cls_token=specials.cls,
        sep_token=specials.sep,
        mask_token=specials.mask,
        model_max_length=MAX_TOKENS,
        **extra,
    )
    fast.save_pretrained(str(folder))
    return fast


def model_config(family: str, vocab_size: int, pad_id: int, **extra: Any) -> Any:
    """The family's Config for a tiny model taking MAX_TOKENS tokens."""
    from transformers import AutoConfig

    common: dict[str, Any] = {"vocab_size": vocab_size, "pad_token_id": pad_id, "initializer_range": 0.2}
    if family == "distilbert":
        sizes = {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64, "max_position_embeddings": MAX_TOKENS}
    else:
        offset = 2 if family in ("roberta", "xlm-roberta", "mpnet") else 0  # positions start after the pad id
        sizes = {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": MAX_TOKENS + offset,
        }
        if family == "electra":
            sizes["embedding_size"] = 16  # ELECTRA's projection from embeddings to the hidden size
        if offset:
            sizes |= {"bos_token_id": 0, "eos_token_id": 2}
        if family in ("roberta", "xlm-roberta"):
            sizes["type_vocab_size"] = 1
    return AutoConfig.for_model(family, **common, **sizes, **extra)


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
