"""The long-tail corpus: 1% of the bench corpus's texts replaced by 200-256-token ones, seeded."""

from __future__ import annotations

from tokenizers import Tokenizer

from bench import corpus


def test_long_tail_replaces_one_text_per_hundred_with_200_to_256_tokens() -> None:
    texts = corpus.sentences(1000)
    tail = corpus.long_tail(texts)
    assert tail == corpus.long_tail(corpus.sentences(1000))
    changed = [i for i, (a, b) in enumerate(zip(texts, tail, strict=True)) if a != b]
    assert len(changed) == 10 and all(i // 100 == n for n, i in enumerate(changed))
    tokenizer = Tokenizer.from_file(str(corpus.tokenizer_file()))
    tokenizer.no_truncation()  # the file truncates to 128
    lengths = [len(tokenizer.encode(tail[i]).ids) for i in changed]
    assert all(200 <= n <= 256 for n in lengths), lengths
