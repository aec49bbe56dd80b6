"""L, the compute limit: tokenizers `encode_batch` + onnxruntime in one process, no serving.

L_arrival: batches in corpus order, each padded to its longest text.
L_sorted:  the corpus tokenized, sorted by length, cut into batches of similar length.
Each is reported at its best batch size; tokenization time is included in both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BATCH_SIZES = (1, 4, 8, 16, 32, 64)
SPINNING = (False, True)
"""onnxruntime's intra-op threads busy-wait by default; both settings are tried, the best kept."""


@dataclass(frozen=True)
class LimitResult:
    name: str
    batch_size: int
    rps: float
    per_batch: dict[int, float]
    """Batch size -> req/s."""
    setting: str = ""


def session(onnx_path: Path, threads: int, spinning: bool = False):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def tokenizer(path: Path):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_length=128)
    return tok


def _pad(encodings: list) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    length = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(encodings), length), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, e in enumerate(encodings):
        ids[row, : len(e.ids)] = e.ids
        mask[row, : len(e.ids)] = 1
    return ids, mask


def run_arrival(sess, tok, texts: list[str], batch: int) -> float:  # type: ignore[no-untyped-def]
    """req/s of corpus-order batches padded to their longest."""
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        ids, mask = _pad(tok.encode_batch(texts[start : start + batch]))
        sess.run(None, {"input_ids": ids, "attention_mask": mask})
    return len(texts) / (time.perf_counter() - started)


def run_sorted(sess, tok, texts: list[str], batch: int) -> float:  # type: ignore[no-untyped-def]
    """req/s of length-sorted batches (tokenizing and sorting included)."""
    started = time.perf_counter()
    encodings = sorted(tok.encode_batch(texts), key=lambda e: len(e.ids))
    for start in range(0, len(encodings), batch):
        ids, mask = _pad(encodings[start : start + batch])
        sess.run(None, {"input_ids": ids, "attention_mask": mask})
    return len(texts) / (time.perf_counter() - started)


def measure(
    onnx_path: Path, tokenizer_path: Path, texts: list[str], threads: int, batch_sizes: tuple[int, ...] = BATCH_SIZES
) -> list[LimitResult]:
    """Both limits at each batch size and spinning setting (one warm-up pass each), the best kept."""
    tok = tokenizer(tokenizer_path)
    best: dict[str, LimitResult] = {}
    for spinning in SPINNING:
        sess = session(onnx_path, threads, spinning)
        for name, runner in (("L_arrival", run_arrival), ("L_sorted", run_sorted)):
            per_batch = {}
            for batch in batch_sizes:
                runner(sess, tok, texts[: max(64, len(texts) // 8)], batch)  # warm-up
                per_batch[batch] = runner(sess, tok, texts, batch)
            top = max(per_batch, key=lambda b: per_batch[b])
            setting = f"{threads} intra-op threads, spinning {'on' if spinning else 'off'}"
            result = LimitResult(name, top, per_batch[top], per_batch, setting)
            if name not in best or result.rps > best[name].rps:
                best[name] = result
    return [best["L_arrival"], best["L_sorted"]]


def reference_embeddings(onnx_path: Path, tokenizer_path: Path, texts: list[str]) -> np.ndarray:
    """Embeddings of `texts`, one at a time (the reference for correctness checks)."""
    sess, tok = session(onnx_path, 1), tokenizer(tokenizer_path)
    rows = [
        sess.run(None, dict(zip(("input_ids", "attention_mask"), _pad([tok.encode(t)]), strict=True)))[0][0]
        for t in texts
    ]
    return np.stack(rows)
