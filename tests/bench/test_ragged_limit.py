"""bench.ragged_limit: the unpadded model's batches as its limits feed them (a stand-in session)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import ragged_limit


class Recording:
    """A stand-in ONNX Runtime session that keeps every feed."""

    def __init__(self) -> None:
        self.feeds: list[dict[str, np.ndarray]] = []

    def run(self, _: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.feeds.append(feed)
        return [np.zeros((len(feed["lengths"]), 384), dtype=np.float32)]


TEXTS = [" ".join(["word"] * n) for n in (9, 2, 30, 5, 17, 1, 12)]


def test_sorted_ragged_batches_are_length_ordered_and_unpadded() -> None:
    tokenizer = ragged_limit._tokenizer()
    session = Recording()
    assert ragged_limit.run_ragged_sorted(session, tokenizer, TEXTS, 3) > 0
    lengths = [int(n) for feed in session.feeds for n in feed["lengths"]]
    expected = sorted(len(e.ids) for e in tokenizer.encode_batch(TEXTS))
    assert lengths == expected and [len(f["lengths"]) for f in session.feeds] == [3, 3, 1]
    for feed in session.feeds:
        assert feed["input_ids"].shape == (int(feed["lengths"].sum()),)  # no padding
        np.testing.assert_array_equal(feed["token_offsets"], np.concatenate([[0], np.cumsum(feed["lengths"])]))


def test_arrival_ragged_batches_keep_the_corpus_order() -> None:
    tokenizer = ragged_limit._tokenizer()
    session = Recording()
    ragged_limit.run_ragged(session, tokenizer, TEXTS, 4)
    lengths = [int(n) for feed in session.feeds for n in feed["lengths"]]
    assert lengths == [len(e.ids) for e in tokenizer.encode_batch(TEXTS)]


def test_limits_are_both_orders_at_the_batch_size_best_of_the_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    sessions: list[tuple[Path, int, Recording]] = []

    def session(path: Path, threads: int) -> Recording:
        sessions.append((path, threads, Recording()))
        return sessions[-1][2]

    monkeypatch.setattr(ragged_limit, "_session", session)
    results = ragged_limit.limits(Path("model.onnx"), TEXTS * 10, 2, batch=32, passes=3)
    assert [(r.name, r.batch_size) for r in results] == [("L_ragged_arrival", 32), ("L_ragged_sorted", 32)]
    assert all(r.rps > 0 and r.per_batch == {32: r.rps} for r in results)
    assert "2 intra-op threads" in results[0].setting and "best of 3 passes" in results[0].setting
    [(path, threads, recording)] = sessions
    assert (path, threads) == (Path("model.onnx"), 2)
    # per order: a warm-up over 64 texts (2 batches), then 3 passes over 70 texts (3 batches each)
    assert len(recording.feeds) == 2 * (2 + 3 * 3)
