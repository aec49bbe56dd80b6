"""`python -m bench.padding`: unpadded (`onnx_ragged`) against padded (`onnx`) serving, by family.

The RoBERTa and DistilBERT classifiers of `bench.families` (base size, made once,
deterministically), each added twice by `tritongen add`: as it writes them by default (format
`onnx_ragged`, `padding: none`: every request's tokens unpadded, nothing computed on padding)
and with `--padded` (format `onnx`: each batch padded to its longest text), fp32. With them the
shipped cross-encoder `models/course_reranker.yaml` twice: unpadded as shipped (`onnx_ragged`,
`padding: none`, textprep 1.2.0 packing each pair's tokens and token types) and padded (`onnx`).
One embedded tritonserver serves the 6 ensembles; each is loaded over HTTP by wrk
(`bench.run.measure`: one text, or one pair, per request) at every `--concurrency` (8, 32),
`--rounds` rounds (3) per cell, the models alternating order round by round, on every
`--corpora` corpus (`corpus`: the bench sentences, 8-40 words; `long-tail`: the same with one
text in a hundred at 200-256 words: `bench.corpus`). Per cell: every round's req/s with the
spread, the medians of p50, p99, server CPU ms per request and the inference model's average
batch (inference_count / execution_count over the round, Triton's statistics). The reranker's
pairs: a bench sentence as the text, the first words of another as the query (`pairs`), on the
first corpus only.

Before the load, every classifier ensemble answers a short and a long text with the padded model
file's LOGITS (the unpadded graph equals the padded one within fp32 rounding), and the reranker
scores a relevant passage of its recipe's data above an unrelated one.

Writes bench/results/<timestamp>-padding/{results.md,results.json} and prints the tables.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from generator.kinds.preprocessing.textprep import RAGGED_PAIRS_SINCE
from generator.pipeline.add_model import PADDED_FORMAT, RAGGED_FORMAT, add_model
from generator.pipeline.plan import detected_cores
from generator.pipeline.spec import ModelSpec

from . import corpus, loadgen
from .arguments import positive
from .families import FAMILIES, MODELS, make_classifier, mean_tokens, summary, write_results
from .many import close_to, generate_repository, infer, reference_logits
from .run import CORPORA, RESULTS, Bench, Cell, Profile, http_script, measure, wrk_load
from .systems import PROJECT_ROOT, BenchError, inference_model, post_json, spec_dict, start_s4, started

LAYOUTS = {"unpadded": False, "padded": True}
"""Spec name suffix -> `tritongen add --padded`."""
RERANKER = "course_reranker"
"""The shipped cross-encoder (models/course_reranker.yaml, unpadded), measured unpadded and padded."""
RERANKER_NOTE = (
    f"{RERANKER}_unpadded: the shipped spec (format {RAGGED_FORMAT}, padding none, textprep {RAGGED_PAIRS_SINCE}: "
    f"each pair's tokens and token types unpadded); {RERANKER}_padded: the same with format {PADDED_FORMAT}, "
    "padding batch_longest."
)
QUERY_WORDS = 8
"""Words of a bench sentence that make a reranker query (the shortest bench sentence's count)."""


def spec_name(family: str, layout: str) -> str:
    return f"{family}_{layout}"


def is_reranker(name: str) -> bool:
    return name.startswith(RERANKER)


def reranker_specs() -> list[dict[str, Any]]:
    """The shipped reranker unpadded (as shipped) and padded, named by layout."""
    shipped = spec_dict(RERANKER)
    unpadded = {**copy.deepcopy(shipped), "name": spec_name(RERANKER, "unpadded")}
    unpadded["versions"][0]["model"]["format"] = RAGGED_FORMAT
    unpadded["versions"][0]["preprocessing"].update(padding="none", package_version=RAGGED_PAIRS_SINCE)
    padded = {**copy.deepcopy(unpadded), "name": spec_name(RERANKER, "padded")}
    padded["versions"][0]["model"]["format"] = PADDED_FORMAT
    padded["versions"][0]["preprocessing"]["padding"] = "batch_longest"
    return [unpadded, padded]


def layout_of(name: str) -> str:
    """`unpadded` or `padded` for a spec name (`padded` for one without a layout suffix)."""
    return name.rsplit("_", 1)[-1] if name.endswith(tuple(f"_{layout}" for layout in LAYOUTS)) else "padded"


def write_specs(models: dict[str, Path], folder: Path) -> list[dict[str, Any]]:
    """`tritongen add` of each model folder, unpadded (the default) and `--padded`: the spec dicts.
    Raises BenchError when the default is not the unpadded format (nothing to compare)."""
    specs = []
    for family, model in models.items():
        for layout, padded in LAYOUTS.items():
            added = add_model(model, folder, name=spec_name(family, layout), force=True, padded=padded)
            spec = yaml.safe_load(added.path.read_text(encoding="utf-8"))
            written = spec["versions"][0]["model"]["format"]
            wanted = PADDED_FORMAT if padded else RAGGED_FORMAT
            if written != wanted:
                raise BenchError(f"tritongen add wrote format {written} for {spec['name']}, not {wanted}")
            specs.append(spec)
    return specs


def pairs(texts: Sequence[str], words: int = QUERY_WORDS) -> list[tuple[str, str]]:
    """(query, text) per text: the text, and as query the first `words` words of the text half the
    corpus away, as a question (deterministic, varied lengths on the text side)."""
    half = len(texts) // 2
    return [
        (" ".join(texts[(index + half) % len(texts)].rstrip(".").split()[:words]) + "?", text)
        for index, text in enumerate(texts)
    ]


def pair_body(pair: tuple[str, str]) -> str:
    """KServe v2 JSON request with one (QUERY, TEXT) pair, shape [1, 1] each."""
    inputs = [
        {"name": name, "shape": [1, 1], "datatype": "BYTES", "data": [value]}
        for name, value in zip(("QUERY", "TEXT"), pair, strict=True)
    ]
    return json.dumps({"inputs": inputs})


def check_classifiers(url: str, repository: Path, specs: Sequence[dict[str, Any]], texts: Sequence[str]) -> None:
    """Both ensembles of a family answer every text with the padded model file's LOGITS."""
    by_name = {spec["name"]: spec for spec in specs}
    for family in FAMILIES:
        padded = by_name[spec_name(family, "padded")]
        for text in texts:
            expected = reference_logits(repository, padded, text)
            for layout in LAYOUTS:
                got = infer(url, spec_name(family, layout), text)["LOGITS"]
                if not close_to(got, expected):
                    raise BenchError(
                        f"{spec_name(family, layout)}: LOGITS {got} for a {len(text.split())}-word text differ "
                        f"from the padded model file's {expected.tolist()}"
                    )


def recipe_pairs() -> tuple[tuple[str, str], tuple[str, str]]:
    """A relevant and an unrelated (question, passage) pair of the reranker recipe's first question."""
    with (PROJECT_ROOT / "models/recipes/course_reranker/pairs.csv").open(encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle)]
    question = rows[0]["question"]
    mine = [row for row in rows if row["question"] == question]
    relevant = next(row["passage"] for row in mine if row["relevant"] == "1")
    unrelated = next(row["passage"] for row in mine if row["relevant"] == "0")
    return (question, relevant), (question, unrelated)


def check_reranker(url: str, name: str) -> tuple[float, float]:
    """The reranker `name`'s SCOREs of a relevant and an unrelated pair: in (0, 1), relevant above."""
    scores = tuple(
        float(post_json(f"http://{url}/v2/models/{name}/infer", pair_body(pair))["outputs"][0]["data"][0])
        for pair in recipe_pairs()
    )
    relevant, unrelated = scores
    if not 0.0 < unrelated < relevant < 1.0:
        raise BenchError(f"{name}: relevant pair scored {relevant}, unrelated {unrelated}")
    return relevant, unrelated


def comparison(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """`families.summary` per (corpus, concurrency) in first-seen order, each row with its corpus,
    concurrency, layout and `vs_padded` (req/s against the same family's, or the reranker's, padded
    spec in that cell)."""
    groups = list(dict.fromkeys((cell.corpus, cell.concurrency) for cell in cells))
    rows: list[dict[str, Any]] = []
    for corpus_name, concurrency in groups:
        mine = [cell for cell in cells if (cell.corpus, cell.concurrency) == (corpus_name, concurrency)]
        group = summary(mine)
        by_model = {row["model"]: row for row in group}
        for row in group:
            row.pop("vs_fp32", None)
            family, _, suffix = row["model"].rpartition("_")
            padded = by_model.get(spec_name(family, "padded")) if suffix in LAYOUTS else None
            row.update(corpus=corpus_name, concurrency=concurrency, layout=layout_of(row["model"]))
            row["vs_padded"] = row["rps"] / padded["rps"] if padded and padded["rps"] else None
        rows += group
    return rows


def _batch(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def markdown(data: dict[str, Any]) -> str:
    """The results as Markdown: the classifiers by corpus and concurrency, then the reranker."""
    lines = [
        f"# Unpadded against padded by family: {data['host']}, {data['cores']} cores, load average "
        f"{' '.join(data['load_average'])} at the start, {' '.join(data['load_average_end'])} at the end "
        "(a shared machine)",
        "",
        f"HTTP (wrk), one text (reranker: one pair) per request, {data['rounds']} rounds of {data['seconds']:g} s "
        f"after {data['warmup_s']:g} s warm-up per cell, models alternating order; fp32.",
        "",
        "| corpus | c | model | format | req/s per round | req/s (median) | spread | vs padded | p50 ms | p99 ms "
        "| CPU ms/req | avg batch | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    classifiers = [row for row in data["load"] if not is_reranker(row["model"])]
    reranker = [row for row in data["load"] if is_reranker(row["model"])]
    for row in classifiers:
        ratio = "-" if row["vs_padded"] is None or row["layout"] == "padded" else f"{row['vs_padded']:.2f} x"
        lines.append(
            f"| {row['corpus']} | {row['concurrency']} | {row['model']} | {data['formats'][row['model']]} | "
            f"{', '.join(f'{rate:.1f}' for rate in row['rounds_rps'])} | {row['rps']:.1f} | "
            f"{row['spread'] * 100:.0f} % | {ratio} | {row['p50_ms']:.0f} | {row['p99_ms']:.0f} | "
            f"{row['cpu_ms']:.1f} | {_batch(row['avg_batch'])} | {row['errors']} |"
        )
    if reranker:
        lines += [
            "",
            "| reranker | corpus | c | format | pairs/s per round | pairs/s (median) | spread | vs padded | p50 ms "
            "| p99 ms | CPU ms/pair | avg batch | errors |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in reranker:
            ratio = "-" if row["vs_padded"] is None or row["layout"] == "padded" else f"{row['vs_padded']:.2f} x"
            lines.append(
                f"| {row['model']} | {row['corpus']} | {row['concurrency']} | {data['formats'][row['model']]} | "
                f"{', '.join(f'{rate:.1f}' for rate in row['rounds_rps'])} | {row['rps']:.1f} | "
                f"{row['spread'] * 100:.0f} % | {ratio} | {row['p50_ms']:.0f} | {row['p99_ms']:.0f} | "
                f"{row['cpu_ms']:.1f} | {_batch(row['avg_batch'])} | {row['errors']} |"
            )
    tokens = "; ".join(
        f"{name}: " + ", ".join(f"{family} {mean:.1f}" for family, mean in means.items())
        for name, means in data["tokens_per_text"].items()
    )
    lines += [
        "",
        f"Tokens per text (mean, special tokens included): {tokens}.",
        f"- {RERANKER_NOTE}",
        *(f"- {note}" for note in data.get("notes", [])),
    ]
    return "\n".join(lines) + "\n"


def _corpora(value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in CORPORA]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"{value!r}: choose among {', '.join(CORPORA)}")
    return names


def _concurrencies(value: str) -> tuple[int, ...]:
    parse = positive(int)
    return tuple(int(parse(item)) for item in value.split(","))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.padding", description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=_concurrencies, default=(8, 32), help="comma-separated (default 8,32)")
    parser.add_argument("--corpora", type=_corpora, default=("corpus",), help="corpus, long-tail (default corpus)")
    parser.add_argument("--rounds", type=positive(int), default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement seconds per cell (default 10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds before each cell (default 3)")
    parser.add_argument("--no-reranker", action="store_true", help=f"leave {RERANKER} (both layouts) out")
    parser.add_argument("--cores", type=positive(int), default=None, help="CPU budget (default: detected)")
    parser.add_argument("--output", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    cores = args.cores or detected_cores()
    output = args.output or RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}-padding"
    workdir = output / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    profile = Profile(concurrency=args.concurrency, warmup_s=args.warmup, seconds=args.seconds)
    sentences = corpus.sentences()
    bench = Bench(profile, workdir, cores, sentences, corpus.long_tail(sentences))
    texts = {"corpus": bench.texts, "long-tail": bench.long_tail}
    load_average = Path("/proc/loadavg").read_text().split()[:3]
    bench.log(f"{platform.node()}: {cores} cores, load average {' '.join(load_average)}")

    models = {family: make_classifier(family, MODELS / family) for family in FAMILIES}
    specs = write_specs(models, workdir / "added")
    if not args.no_reranker:
        specs += reranker_specs()
    repository, generate_s = generate_repository(workdir, specs, cores, bench.log)
    bench.log(f"generated {len(specs)} specs in {generate_s:.0f}s")
    names = [spec["name"] for spec in specs]
    formats = {spec["name"]: spec["versions"][0]["model"]["format"] for spec in specs}
    by_name = {spec["name"]: spec for spec in specs}
    padded = {family: ModelSpec.model_validate(by_name[spec_name(family, "padded")]).versions[0] for family in FAMILIES}
    tokens = {name: {family: mean_tokens(texts[name], padded[family]) for family in FAMILIES} for name in args.corpora}

    with started(start_s4(workdir, repository, names, "padding")) as server:
        assert server.http_url is not None
        url = server.http_url.removeprefix("http://")
        longest = max(bench.long_tail, key=len)
        check_classifiers(url, repository, specs, [bench.texts[0], max(bench.texts, key=len), longest])
        bench.log("every classifier ensemble answers with its padded model file's LOGITS")
        for name in names if not args.no_reranker else []:
            if is_reranker(name):
                relevant, unrelated = check_reranker(url, name)
                bench.log(f"{name}: relevant pair {relevant:.3f}, unrelated {unrelated:.3f}")
        scripts = {
            (name, corpus_name): http_script(
                bench,
                f"{name}-{corpus_name}",
                lambda n: f"/v2/models/{n}/infer",
                lambda body: body,
                [name],
                [pair_body(pair) for pair in pairs(texts[corpus_name])]
                if is_reranker(name)
                else [loadgen.kserve_body(text) for text in texts[corpus_name]],
            )
            for name in names
            for corpus_name in args.corpora
            if not is_reranker(name) or corpus_name == args.corpora[0]  # the reranker: the first corpus only
        }
        for corpus_name in args.corpora:
            for concurrency in args.concurrency:
                measured = [n for n in names if not is_reranker(n) or corpus_name == args.corpora[0]]
                for round_index in range(args.rounds):
                    for name in measured if round_index % 2 == 0 else list(reversed(measured)):
                        running = dataclasses.replace(
                            server,
                            setting=name,
                            variant=layout_of(name),
                            stats_model=inference_model(repository, name),
                        )
                        load = wrk_load(running, scripts[(name, corpus_name)])
                        measure(bench, running, "http", concurrency, args.seconds, load, corpus_name=corpus_name)

    data = {
        "host": platform.node(),
        "cores": cores,
        "load_average": load_average,
        "load_average_end": Path("/proc/loadavg").read_text().split()[:3],
        "concurrency": list(args.concurrency),
        "corpora": list(args.corpora),
        "rounds": args.rounds,
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "generate_s": generate_s,
        "formats": formats,
        "tokens_per_text": tokens,
        "load": comparison(bench.cells),
        "cells": [asdict(cell) for cell in bench.cells],
        "notes": bench.notes,
        "specs": specs,
    }
    write_results(output, data, markdown(data), bench.log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
