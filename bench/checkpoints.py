"""Seeded Transformers models of every supported family, made offline: the tokenizer trained by
`tokenizers` with the family's real algorithm, the weights random from a config.

The tests' small models (`tests/model_folders.py`) and the family benchmark's base-size ones
(`bench/families.py`) are made here. The tokenizer is trained on `CORPUS` (or given texts) with
the algorithm of the real family: WordPiece (BERT, DistilBERT, ELECTRA, MPNet), byte-level BPE
(RoBERTa), Unigram (XLM-RoBERTa); `save_tokenizer` wraps it in `PreTrainedTokenizerFast` and
saves it with `save_pretrained`. `model_config` gives the family's config for a `Shape` (hidden
size, layers, heads): `TINY` for tests, `BASE` for a 6-layer, 768-wide model of the size of
DistilBERT-base or distilroberta-base. Same arguments, same files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FAMILIES = ("bert", "distilbert", "electra", "mpnet", "roberta", "xlm-roberta")
"""The `model_type` of every family the generator supports."""
MAX_TOKENS = 512
"""Tokens per text a model takes by default (its tokenizer's `model_max_length`)."""


@dataclass(frozen=True)
class Shape:
    """A model's size."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    tokens: int = MAX_TOKENS
    """Tokens per text it takes (position embeddings, plus the offset of RoBERTa-style families)."""
    initializer_range: float = 0.02
    """Std of the random weights (Transformers' default 0.02)."""


TINY = Shape(hidden=32, layers=2, heads=2, intermediate=64, initializer_range=0.2)
"""The tests' models: 0.2, not 0.02, so that outputs differ between texts by units."""
BASE = Shape(hidden=768, layers=6, heads=12, intermediate=3072)
"""DistilBERT-base and distilroberta-base: 6 layers, hidden 768, 12 heads, 3072-wide FFN."""


@dataclass(frozen=True)
class Vocabulary:
    """Trainer vocabulary sizes per algorithm (WordPiece: pieces, each also as a `##` continuation)."""

    wordpiece: int
    bpe: int
    unigram: int


SMALL_VOCABULARY = Vocabulary(wordpiece=400, bpe=700, unigram=500)
"""The tests' tokenizers, trained on `CORPUS`."""

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
"""The default training text of the tokenizers (English, accents, CJK, emoji; tests' texts too)."""


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


def _train_tokenizer(family: str, texts: tuple[str, ...] = CORPUS, vocabulary: Vocabulary | None = None) -> Any:
    """A `tokenizers.Tokenizer` of the family's algorithm, trained on `texts`, with the same vocabulary
    in every process (the library's WordPiece trainer breaks ties by hash order, and Unigram's
    scores vary in their last bits: see `_wordpiece` and `_stable_unigram`)."""
    sizes = vocabulary or SMALL_VOCABULARY
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = _specials(family)
    kind = _TOKENIZER_KIND[family]
    corpus = list(texts) * 3
    if kind == "wordpiece":
        tokenizer = _wordpiece(corpus, specials, sizes.wordpiece)
    elif kind == "bpe":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=sizes.bpe,
            special_tokens=list(specials.order),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tokenizer.train_from_iterator(corpus, trainer)
    else:
        # As Transformers' XLMRobertaTokenizer builds it (without a SentencePiece normalization map).
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
        )
        tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        unigram = trainers.UnigramTrainer(
            vocab_size=sizes.unigram, special_tokens=list(specials.order), unk_token=specials.unk, shrinking_factor=0.75
        )
        tokenizer.train_from_iterator(corpus, unigram)
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


def _wordpiece(corpus: list[str], specials: _Specials, pieces_size: int) -> Any:
    """A BERT-style WordPiece tokenizer: the pieces of a BPE trained on the BERT-normalized words
    (deterministic), each as a word start and as a `##` continuation."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    bpe.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=pieces_size, special_tokens=list(specials.order)))
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


def save_tokenizer(
    family: str,
    folder: Path,
    texts: tuple[str, ...] = CORPUS,
    vocabulary: Vocabulary | None = None,
    max_tokens: int = MAX_TOKENS,
) -> Any:
    """Train the family's tokenizer on `texts` and `save_pretrained` it into `folder` (its
    `model_max_length`: `max_tokens`); the fast tokenizer."""
    from transformers import PreTrainedTokenizerFast

    specials = _specials(family)
    extra = {"bos_token": specials.cls, "eos_token": specials.sep} if specials is _ROBERTA_SPECIALS else {}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(family, texts, vocabulary),
        unk_token=specials.unk,
        pad_token=specials.pad,
        cls_token=specials.cls,
        sep_token=specials.sep,
        mask_token=specials.mask,
        model_max_length=max_tokens,
        **extra,
    )
    fast.save_pretrained(str(folder))
    return fast


def model_config(family: str, vocab_size: int, pad_id: int, shape: Shape = TINY, **extra: Any) -> Any:
    """The family's Config for a model of `shape` (default: tiny) taking `shape.tokens` tokens."""
    from transformers import AutoConfig

    common: dict[str, Any] = {
        "vocab_size": vocab_size,
        "pad_token_id": pad_id,
        "initializer_range": shape.initializer_range,
    }
    if family == "distilbert":
        sizes = {
            "dim": shape.hidden,
            "n_layers": shape.layers,
            "n_heads": shape.heads,
            "hidden_dim": shape.intermediate,
            "max_position_embeddings": shape.tokens,
        }
    else:
        offset = 2 if family in ("roberta", "xlm-roberta", "mpnet") else 0  # positions start after the pad id
        sizes = {
            "hidden_size": shape.hidden,
            "num_hidden_layers": shape.layers,
            "num_attention_heads": shape.heads,
            "intermediate_size": shape.intermediate,
            "max_position_embeddings": shape.tokens + offset,
        }
        if family == "electra":
            sizes["embedding_size"] = shape.hidden // 2  # ELECTRA's projection from embeddings to the hidden size
        if offset:
            sizes |= {"bos_token_id": 0, "eos_token_id": 2}
        if family in ("roberta", "xlm-roberta"):
            sizes["type_vocab_size"] = 1
    return AutoConfig.for_model(family, **common, **sizes, **extra)
