"""In-process limit of the unpadded encoder against padded batches (ONNX Runtime, no serving).

`python -m bench.ragged_limit [--size 2000] [--rounds 2] [--threads 2]`: sentences/s of
all-MiniLM-L6-v2 on the benchmark corpus (11-47 tokens) and on a long-tail copy of it (1% of
texts replaced by 200-256-token ones), tokenization included, for

- padded-sorted: the corpus tokenized, sorted by length, cut into batches padded to their longest;
- padded-arrival: batches in corpus order, padded to their longest;
- ragged: batches in corpus order, unpadded (`generator.kinds.formats.unpadded_encoder`, length-bucketed
  attention), fed exactly as Triton's ragged batching feeds them (one text per request);
- ragged-1-bucket: the same graph with a single attention bucket (attention padded to the
  batch's longest: the first prototype, measured on Triton's native backends, docs/facts.md).

Cells run round-robin, `--rounds` times; reported: the best wall-clock round and the median CPU
time per sentence of the process (robust when other processes share the cores). `limits` gives
`bench.run` the unpadded model's limits beside the servers (corpus order and length-sorted).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.corpus import long_tail, model_dir, sentences, tokenizer_file
from bench.limit import LimitResult

MAX_LENGTH = 256


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _tokenizer() -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file()))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=MAX_LENGTH)
    return tokenizer


def _padded(encodings: list[Any]) -> dict[str, np.ndarray]:
    longest = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(encodings), longest), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, encoding in enumerate(encodings):
        ids[row, : len(encoding.ids)] = encoding.ids
        mask[row, : len(encoding.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def ragged_feed(encodings: list[Any]) -> dict[str, np.ndarray]:
    """What Triton's ragged batching hands the model for one text per request."""
    lengths = np.array([len(e.ids) for e in encodings], dtype=np.int64)
    ids = np.fromiter((t for e in encodings for t in e.ids), dtype=np.int64, count=int(lengths.sum()))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return {
        "input_ids": ids,
        "lengths": lengths,
        "token_offsets": offsets,
        "text_offsets": np.arange(len(encodings) + 1, dtype=np.int32),
    }


def _rate(session: Any, texts: list[str], batches: Iterator[list[Any]], feed: Callable[[list[Any]], Any]) -> float:
    """Texts per second of running `session` on each batch of encodings (tokenizing included:
    `batches` encodes lazily, inside the timing)."""
    started = time.perf_counter()
    for encodings in batches:
        session.run(None, feed(encodings))
    return len(texts) / (time.perf_counter() - started)


def _arrival(tokenizer: Any, texts: list[str], batch: int) -> Iterator[list[Any]]:
    """Batches in corpus order, each tokenized when it is due."""
    for start in range(0, len(texts), batch):
        yield tokenizer.encode_batch(texts[start : start + batch])


def _length_sorted(tokenizer: Any, texts: list[str], batch: int) -> Iterator[list[Any]]:
    """The whole corpus tokenized, sorted by length, cut into batches."""
    encodings = sorted(tokenizer.encode_batch(texts), key=lambda e: len(e.ids))
    for start in range(0, len(encodings), batch):
        yield encodings[start : start + batch]


def run_padded_arrival(session: Any, tokenizer: Any, texts: list[str], batch: int) -> float:
    return _rate(session, texts, _arrival(tokenizer, texts, batch), _padded)


def run_padded_sorted(session: Any, tokenizer: Any, texts: list[str], batch: int) -> float:
    return _rate(session, texts, _length_sorted(tokenizer, texts, batch), _padded)


def run_ragged(session: Any, tokenizer: Any, texts: list[str], batch: int) -> float:
    return _rate(session, texts, _arrival(tokenizer, texts, batch), ragged_feed)


def run_ragged_sorted(session: Any, tokenizer: Any, texts: list[str], batch: int) -> float:
    """req/s of length-sorted unpadded batches (tokenizing and sorting included)."""
    return _rate(session, texts, _length_sorted(tokenizer, texts, batch), ragged_feed)


def limits(onnx_path: Path, texts: list[str], threads: int, batch: int = 32, passes: int = 2) -> list[LimitResult]:
    """The unpadded model's in-process limits at `batch`: corpus order and length-sorted (one
    warm-up pass, then the best of `passes`; `threads` intra-op threads, spinning off), as
    `bench.limit` reports them."""
    session, tokenizer = _session(onnx_path, threads), _tokenizer()
    results = []
    for name, runner in (("L_ragged_arrival", run_ragged), ("L_ragged_sorted", run_ragged_sorted)):
        runner(session, tokenizer, texts[: max(64, len(texts) // 8)], batch)  # warm-up
        rate = max(runner(session, tokenizer, texts, batch) for _ in range(passes))
        setting = f"unpadded (ragged) model, {threads} intra-op threads, spinning off, best of {passes} passes"
        results.append(LimitResult(name, batch, rate, {batch: rate}, setting))
    return results


def export_models(folder: Path) -> dict[str, Path]:
    """padded.onnx, ragged.onnx (default buckets) and ragged_1_bucket.onnx of one set of weights."""
    import torch

    from generator.kinds.formats import unpadded_encoder as ragged

    module = ragged.load_ragged_module(model_dir())
    paths = {"ragged": folder / "ragged.onnx", "ragged_1_bucket": folder / "ragged_1_bucket.onnx"}
    ragged.export_onnx(module, paths["ragged"])
    single = ragged.load_ragged_module(model_dir(), buckets=())
    ragged.export_onnx(single, paths["ragged_1_bucket"])

    from transformers import AutoModel

    class Padded(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_pretrained(str(model_dir()), attn_implementation="eager").eval()

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)

    ids = torch.tensor([[101, 7592, 102, 0], [101, 2023, 2003, 102]])
    paths["padded"] = folder / "padded.onnx"
    with torch.no_grad():
        torch.onnx.export(
            Padded().eval(),
            (ids, (ids != 0).long()),
            str(paths["padded"]),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}, "embedding": {0: "b"}},
            opset_version=ragged.ONNX_OPSET,
            dynamo=False,
        )
    return paths


Cell = tuple[str, str, Callable[[Any, Any, list[str], int], float], int]
CELLS: list[Cell] = [
    ("padded-sorted", "padded", run_padded_sorted, 32),
    ("padded-sorted", "padded", run_padded_sorted, 64),
    ("padded-arrival", "padded", run_padded_arrival, 32),
    ("ragged", "ragged", run_ragged, 32),
    ("ragged", "ragged", run_ragged, 64),
    ("ragged-1-bucket", "ragged_1_bucket", run_ragged, 64),
]


def max_difference(sessions: dict[str, Any], tokenizer: Any, texts: list[str]) -> float:
    """Largest |ragged - padded| over `texts` in one batch (a numbers check, not timed)."""
    encodings = tokenizer.encode_batch(texts)
    padded = sessions["padded"].run(None, _padded(encodings))[0]
    return max(
        float(np.abs(sessions[n].run(None, ragged_feed(encodings))[0] - padded).max())
        for n in sessions
        if n != "padded"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ragged_limit")
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    corpora = {"corpus": sentences(args.size), "long-tail": long_tail(sentences(args.size))}
    tokenizer = _tokenizer()
    for name, texts in corpora.items():
        lengths = [len(e.ids) for e in tokenizer.encode_batch(texts)]
        print(f"{name}: {len(texts)} texts, {min(lengths)}-{max(lengths)} tokens, mean {np.mean(lengths):.1f}")
    with tempfile.TemporaryDirectory() as folder:
        paths = export_models(Path(folder))
        sessions = {name: _session(path, args.threads) for name, path in paths.items()}
        print(
            f"max |ragged - padded| on the long-tail corpus's first 64 texts: "
            f"{max_difference(sessions, tokenizer, corpora['long-tail'][:64]):.2e}"
        )
        for _, session_name, runner, batch in CELLS:  # warm-up
            runner(sessions[session_name], tokenizer, corpora["long-tail"][:128], batch)
        best: dict[str, float] = {}
        cpu: dict[str, list[float]] = {}
        load = os.getloadavg()[0]
        for round_index in range(args.rounds):
            for corpus, texts in corpora.items():
                for label, session_name, runner, batch in CELLS:
                    key = f"{corpus} | {label} | batch {batch}"
                    cpu_started = time.process_time()
                    rate = runner(sessions[session_name], tokenizer, texts, batch)
                    cpu_ms = (time.process_time() - cpu_started) * 1000 / len(texts)
                    best[key] = max(best.get(key, 0.0), rate)
                    cpu.setdefault(key, []).append(cpu_ms)
                    print(
                        f"round {round_index + 1}: {key}: {rate:.1f} sentences/s, {cpu_ms:.2f} CPU ms/sentence",
                        flush=True,
                    )
    print(f"\nONNX Runtime {args.threads} threads, load average at start {load:.2f}, end {os.getloadavg()[0]:.2f}")
    print(f"best wall-clock rate of {args.rounds} rounds | median CPU ms per sentence (all threads of the process):")
    for key, rate in best.items():
        print(f"  {key}: {rate:.1f} sentences/s | {float(np.median(cpu[key])):.2f} CPU ms/sentence")
    if args.out is not None:
        result = {"threads": args.threads, "size": args.size, "best_rate": best, "cpu_ms": cpu}
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
