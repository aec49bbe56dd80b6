"""`python -m bench.families`: int8 against fp32 for a RoBERTa and a DistilBERT classifier, served.

No real RoBERTa or DistilBERT weights are available offline, so the run makes, once and
deterministically (`bench.checkpoints`), two sequence classifiers of base size: DistilBERT-base
(6 layers, hidden 768, 12 heads, vocab_size 30522) and distilroberta-base (the same depth and
width, vocab_size 50265), each with a tokenizer of its family's algorithm (WordPiece, byte-level
BPE) trained by `tokenizers` on the bench corpus and 3 labels. Random weights give near-tied
logits (every text's [CLS] state is about the same), which would make label agreement
meaningless: the head's last layer gets a larger init (`HEAD_STD`) and its bias centres the
logits over calibration texts, so labels differ between texts. They still mean nothing: label
agreement here measures how often int8 noise flips a decision, not accuracy.

Then: `tritongen add` writes a spec per model and precision (`<family>_fp32`, `<family>_int8`,
the latter with `model.quantize: dynamic_int8`, its gate thresholds lowered so that every
figure is reported: the table says whether the defaults pass), `generate` builds the
repository, one embedded tritonserver serves the 4 ensembles, and each is loaded over HTTP by
wrk (`bench.run.measure`: one text per request, the bench corpus) at `--concurrency` (32), for
`--rounds` rounds (3), the models alternating order round by round. Fidelity: the fp32 and int8
model files of the repository run, in this process, the quantize gate's own texts (as
`generate` does) and `--fidelity-texts` bench sentences: min and mean cosine of the logits,
label agreement, and the share of the fp32 model's most frequent label.

Writes bench/results/<timestamp>-families/{results.md,results.json} and prints the table.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from generator.kinds.formats import get_format
from generator.kinds.preprocessing import get_preprocessor
from generator.pipeline.add_model import add_model
from generator.pipeline.plan import detected_cores
from generator.pipeline.quantize import gate_texts, measure_fidelity, run_texts
from generator.pipeline.spec import ModelSpec, Quantize, Version

from . import corpus, loadgen
from .arguments import positive
from .checkpoints import BASE, CORPUS, Vocabulary, model_config, save_tokenizer
from .many import close_to, generate_repository, infer, reference_logits
from .run import RESULTS, Bench, Cell, Profile, http_script, measure, wrk_load
from .systems import BenchError, inference_file, inference_model, start_s4, started

FAMILIES = ("roberta", "distilbert")
VOCAB_SIZES = {"roberta": 50265, "distilbert": 30522}
"""The models' `vocab_size`: the real checkpoints' embedding tables (the trained tokenizers use
fewer ids, which the spec allows)."""
VOCABULARY = Vocabulary(wordpiece=4000, bpe=8000, unigram=8000)
"""Tokenizer sizes: about one or two tokens per bench-corpus word."""
LABELS = ("negative", "neutral", "positive")
HEAD_STD = 1.0
"""Std of the classifier's last layer (Transformers' init: 0.02): logits that differ by units."""
CALIBRATION_TEXTS = 64
"""Bench sentences whose mean logits the head's bias cancels (the last ones: not measured)."""
MODELS_VERSION = "1"
"""Bump when the made models change: they are cached under bench/results/families-models/v<N>."""
MODELS = RESULTS / f"families-models/v{MODELS_VERSION}"
PRECISIONS = ("fp32", "int8")
LENIENT_GATE = {"min_cosine": 0.01, "min_mean_cosine": 0.01, "min_label_agreement": 0.0}
"""The int8 specs' gate thresholds: every figure is reported; the defaults are evaluated after."""


def spec_name(family: str, precision: str) -> str:
    return f"{family}_{precision}"


def tokenizer_texts() -> tuple[str, ...]:
    """The tokenizers' training text: the bench corpus and the tests' multilingual sentences."""
    return (*corpus.sentences(), *CORPUS)


def make_classifier(family: str, folder: Path) -> Path:
    """A base-size 3-label sequence classifier of `family` with its trained tokenizer in `folder`
    (made in a temporary folder, then moved: it appears whole or not at all; kept if present)."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        tokenizer = save_tokenizer(family, work, tokenizer_texts(), VOCABULARY)
        config = model_config(
            family,
            VOCAB_SIZES[family],
            tokenizer.pad_token_id,
            BASE,
            num_labels=len(LABELS),
            id2label=dict(enumerate(LABELS)),
            label2id={label: index for index, label in enumerate(LABELS)},
        )
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_config(config).eval()
        head = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == len(LABELS)][-1]
        with torch.no_grad():
            generator = torch.Generator().manual_seed(1)
            head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * HEAD_STD)
            head.bias.zero_()
            batch = tokenizer(list(corpus.sentences()[-CALIBRATION_TEXTS:]), padding=True, return_tensors="pt")
            mean = model(**{k: v for k, v in batch.items() if k != "token_type_ids"}).logits.mean(0)
            head.bias.copy_(-mean.round(decimals=3))
        model.save_pretrained(str(work))
        os.replace(work, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder


def quantized(spec: dict[str, Any], name: str) -> dict[str, Any]:
    """The spec as `name`, served as its `dynamic_int8` copy, gated leniently (`LENIENT_GATE`)."""
    spec = copy.deepcopy(spec)
    spec["name"] = name
    for version in spec["versions"]:
        version["model"]["quantize"] = {"method": "dynamic_int8", **LENIENT_GATE}
    return spec


def write_specs(models: dict[str, Path], folder: Path) -> list[dict[str, Any]]:
    """`tritongen add --padded` of each model folder (the fp32 spec), and its int8 copy; the spec
    dicts. Padded (`onnx`), as the recorded figures were measured: `python -m bench.padding`
    compares the unpadded format."""
    specs = []
    for family, model in models.items():
        added = add_model(model, folder, name=spec_name(family, "fp32"), force=True, padded=True)
        fp32 = yaml.safe_load(added.path.read_text(encoding="utf-8"))
        specs += [fp32, quantized(fp32, spec_name(family, "int8"))]
    return specs


@dataclass(frozen=True)
class FidelityRow:
    """The int8 file against the fp32 one, on one set of texts."""

    texts: str
    examples: int
    min_cosine: float
    mean_cosine: float
    label_agreement: float
    fp32_top_label_share: float
    """The share of the fp32 model's most frequent label (1.0: agreement says nothing)."""
    passes_defaults: bool
    """The figures pass `Quantize`'s default thresholds."""


def fidelity(repository: Path, spec: dict[str, Any], texts: tuple[str, ...], name: str) -> FidelityRow:
    """The int8 spec's model file against its fp32 file (the repository's two files) on `texts`."""
    version = ModelSpec.model_validate(spec).versions[0]
    fp32_spec = spec["name"].replace("_int8", "_fp32")
    fp32, int8 = inference_file(repository, fp32_spec), inference_file(repository, spec["name"])
    inference_format = get_format(version.model.format)
    measured = measure_fidelity(inference_format, fp32, int8, texts, version.preprocessing)
    outputs = run_texts(inference_format, inference_format.runner(fp32, 2), texts, version.preprocessing)
    labels = Counter(outputs["label"].reshape(-1).tolist())
    defaults = Quantize(method="dynamic_int8")
    return FidelityRow(
        name,
        measured.examples,
        measured.min_cosine,
        measured.mean_cosine,
        float(measured.label_agreement or 0.0),
        max(labels.values()) / len(texts),
        not measured.problems(defaults),
    )


def mean_tokens(texts: Sequence[str], version: Version) -> float:
    """Mean tokens per text (special tokens included), tokenized as the server does."""
    preprocessing = version.preprocessing
    return float(np.mean(get_preprocessor(preprocessing.kind).token_lengths(preprocessing, list(texts))))


def check(url: str, repository: Path, specs: Sequence[dict[str, Any]], text: str) -> None:
    """One request per ensemble: its LOGITS equal its model file's in this process."""
    for spec in specs:
        got = infer(url, spec["name"], text)["LOGITS"]
        expected = reference_logits(repository, spec, text)
        if not close_to(got, expected):
            raise BenchError(f"{spec['name']}: LOGITS {got} differ from the model file's {expected.tolist()}")


def summary(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """One row per model (`Cell.setting`, in first-seen order): every round's req/s, their median
    and spread ((max - min) / median), and the medians of p50, p99, CPU ms per request and batch."""
    names = list(dict.fromkeys(cell.setting for cell in cells))
    rows: list[dict[str, Any]] = []
    for name in names:
        mine = [cell for cell in cells if cell.setting == name]
        rates = [cell.rps for cell in mine]
        median = statistics.median(rates)
        batches = [cell.avg_batch for cell in mine if cell.avg_batch is not None]
        rows.append(
            {
                "model": name,
                "rounds_rps": rates,
                "rps": median,
                "spread": (max(rates) - min(rates)) / median if median else 0.0,
                "p50_ms": statistics.median(cell.p50_ms for cell in mine),
                "p99_ms": statistics.median(cell.p99_ms for cell in mine),
                "cpu_ms": statistics.median(cell.cpu_ms for cell in mine),
                "avg_batch": statistics.median(batches) if batches else None,
                "errors": sum(cell.errors for cell in mine),
            }
        )
    by_name = {row["model"]: row for row in rows}
    for row in rows:
        fp32 = by_name.get(row["model"].replace("_int8", "_fp32"))
        row["vs_fp32"] = row["rps"] / fp32["rps"] if fp32 and fp32["rps"] else None
    return rows


def markdown(data: dict[str, Any]) -> str:
    """The results as Markdown: load per model, then fidelity per int8 model."""
    lines = [
        f"# int8 against fp32 by family: {data['host']}, {data['cores']} cores, load average "
        f"{' '.join(data['load_average'])} at the start (a shared machine)",
        "",
        f"HTTP (wrk), c={data['concurrency']}, one text per request (bench corpus), {data['rounds']} rounds of "
        f"{data['seconds']:g} s after {data['warmup_s']:g} s warm-up, models alternating order.",
        "",
        "| model | file MB | req/s per round | req/s (median) | spread | vs fp32 | p50 ms | p99 ms | CPU ms/req "
        "| avg batch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in data["load"]:
        ratio = "-" if row["vs_fp32"] is None or row["model"].endswith("_fp32") else f"{row['vs_fp32']:.2f} x"
        batch = "-" if row["avg_batch"] is None else f"{row['avg_batch']:.1f}"
        lines.append(
            f"| {row['model']} | {data['file_mb'][row['model']]:.0f} | "
            f"{', '.join(f'{rate:.1f}' for rate in row['rounds_rps'])} | {row['rps']:.1f} | "
            f"{row['spread'] * 100:.0f} % | {ratio} | {row['p50_ms']:.0f} | {row['p99_ms']:.0f} | "
            f"{row['cpu_ms']:.1f} | {batch} |"
        )
    lines += [
        "",
        "| int8 model | texts | n | min cosine | mean cosine | label agreement | fp32 top label share "
        "| passes default gate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, rows in data["fidelity"].items():
        for row in rows:
            lines.append(
                f"| {model} | {row['texts']} | {row['examples']} | {row['min_cosine']:.4f} | "
                f"{row['mean_cosine']:.4f} | {row['label_agreement']:.3f} | {row['fp32_top_label_share']:.2f} | "
                f"{'yes' if row['passes_defaults'] else 'no'} |"
            )
    tokens = ", ".join(f"{family} {mean:.1f}" for family, mean in data["tokens_per_text"].items())
    lines += [
        "",
        f"Tokens per corpus text (mean, special tokens included): {tokens}. Random weights (see "
        "bench/families.py): label agreement counts flipped decisions, not accuracy.",
        *(f"- {note}" for note in data.get("notes", [])),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.families", description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=positive(int), default=32)
    parser.add_argument("--rounds", type=positive(int), default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement seconds per cell (default 10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds before each cell (default 3)")
    parser.add_argument(
        "--fidelity-texts", type=positive(int), default=200, help="bench sentences for fidelity (default 200)"
    )
    parser.add_argument("--cores", type=positive(int), default=None, help="CPU budget (default: detected)")
    parser.add_argument("--output", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    cores = args.cores or detected_cores()
    output = args.output or RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}-families"
    workdir = output / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    profile = Profile(concurrency=(args.concurrency,), warmup_s=args.warmup, seconds=args.seconds)
    bench = Bench(profile, workdir, cores, corpus.sentences())
    load_average = Path("/proc/loadavg").read_text().split()[:3]
    bench.log(f"{platform.node()}: {cores} cores, load average {' '.join(load_average)}")

    models = {family: make_classifier(family, MODELS / family) for family in FAMILIES}
    bench.log(f"models: {', '.join(str(folder) for folder in models.values())}")
    specs = write_specs(models, workdir / "added")
    repository, generate_s = generate_repository(workdir, specs, cores, bench.log)
    bench.log(f"generated {len(specs)} specs in {generate_s:.0f}s")
    names = [spec["name"] for spec in specs]
    file_mb = {name: inference_file(repository, name).stat().st_size / 1e6 for name in names}

    texts = tuple(bench.texts[: args.fidelity_texts])
    fidelities: dict[str, list[dict[str, Any]]] = {}
    tokens: dict[str, float] = {}
    for spec in specs:
        version = ModelSpec.model_validate(spec).versions[0]
        if spec["name"].endswith("_fp32"):
            tokens[spec["name"].removesuffix("_fp32")] = mean_tokens(texts, version)
            continue
        rows = [
            fidelity(repository, spec, gate_texts(version.model), "the gate's examples"),
            fidelity(repository, spec, texts, "bench corpus"),
        ]
        fidelities[spec["name"]] = [asdict(row) for row in rows]
        for row in rows:
            bench.log(f"{spec['name']} fidelity on {row.texts}: {row}")

    with started(start_s4(workdir, repository, names, "families")) as server:
        assert server.http_url is not None
        check(server.http_url.removeprefix("http://"), repository, specs, bench.texts[0])
        scripts = {
            name: http_script(bench, name, lambda n: f"/v2/models/{n}/infer", loadgen.kserve_body, [name])
            for name in names
        }
        for round_index in range(args.rounds):
            for name in names if round_index % 2 == 0 else list(reversed(names)):
                running = dataclasses.replace(
                    server, setting=name, variant=name, stats_model=inference_model(repository, name)
                )
                measure(bench, running, "http", args.concurrency, args.seconds, wrk_load(running, scripts[name]))

    data = {
        "host": platform.node(),
        "cores": cores,
        "load_average": load_average,
        "load_average_end": Path("/proc/loadavg").read_text().split()[:3],
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "generate_s": generate_s,
        "file_mb": file_mb,
        "tokens_per_text": tokens,
        "load": summary(bench.cells),
        "fidelity": fidelities,
        "cells": [asdict(cell) for cell in bench.cells],
        "notes": bench.notes,
        "specs": specs,
    }
    write_results(output, data, markdown(data), bench.log)
    return 0


def write_results(output: Path, data: dict[str, Any], text: str, log: Callable[[str], None]) -> None:
    """results.json (`data`) and results.md (`text`, also printed) in `output`."""
    (output / "results.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
    (output / "results.md").write_text(text, encoding="utf-8")
    print(text, flush=True)
    log(f"wrote {output}")


if __name__ == "__main__":
    raise SystemExit(main())
