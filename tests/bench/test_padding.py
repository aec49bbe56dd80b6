"""bench.padding: the two specs `tritongen add` writes per model, the reranker's pairs and request
body, the per-cell comparison of its rounds and its report (no server, no load generator)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from bench import padding
from bench.run import Cell
from generator.pipeline.spec import load_spec
from tests.classifier_checkpoints import tiny_classifier


def _cell(model: str, rps: float, concurrency: int = 8, corpus: str = "corpus", batch: float | None = 4.0) -> Cell:
    return Cell(
        "S4", model, "http", concurrency, rps, 40.0, 200.0, 1.9, 2.0, 60, 9, 900.0, 800.0, 0, int(rps * 10),
        corpus=corpus, variant=padding.layout_of(model), avg_batch=batch, cpu_ms=1.9 / rps * 1000,
    )  # fmt: skip


def test_add_writes_an_unpadded_and_a_padded_spec_of_the_same_model(tmp_path: Path) -> None:
    folder = tiny_classifier(tmp_path / "model", ("a", "b", "c"), multi_label=False)
    specs = padding.write_specs({"tiny": folder}, tmp_path / "specs")
    assert [spec["name"] for spec in specs] == ["tiny_unpadded", "tiny_padded"]
    unpadded, padded = (load_spec(tmp_path / "specs" / f"{spec['name']}.yaml").versions[0] for spec in specs)
    assert (unpadded.model.format, specs[0]["versions"][0]["preprocessing"]["padding"]) == ("onnx_ragged", "none")
    assert padded.model.format == "onnx" and specs[1]["versions"][0]["preprocessing"].get("padding") != "none"
    assert unpadded.model.build == padded.model.build and unpadded.outputs == padded.outputs


def test_layouts_of_the_spec_names() -> None:
    assert padding.layout_of("roberta_unpadded") == "unpadded"
    assert padding.layout_of("distilbert_padded") == "padded"
    assert padding.layout_of(padding.RERANKER) == "padded"


def test_reranker_pairs_are_deterministic_questions_over_every_text() -> None:
    texts = ["One two three four five six seven eight nine.", "Alpha beta gamma.", "Red green blue cyan."]
    got = padding.pairs(texts, words=2)
    assert got == [("Alpha beta?", texts[0]), ("Red green?", texts[1]), ("One two?", texts[2])]
    assert padding.pairs(texts, words=2) == got
    body = json.loads(padding.pair_body(got[0]))
    assert body == {
        "inputs": [
            {"name": "QUERY", "shape": [1, 1], "datatype": "BYTES", "data": ["Alpha beta?"]},
            {"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": [texts[0]]},
        ]
    }


def test_the_recipe_pairs_are_a_relevant_and_an_unrelated_passage_of_one_question() -> None:
    (question, relevant), (same, unrelated) = padding.recipe_pairs()
    assert question == same and relevant != unrelated and question.endswith("?")


def test_the_comparison_is_per_corpus_and_concurrency_against_the_padded_spec() -> None:
    cells = [
        _cell("roberta_unpadded", 30.0),
        _cell("roberta_padded", 20.0),
        _cell(padding.RERANKER + "_unpadded", 50.0),
        _cell(padding.RERANKER + "_padded", 40.0),
        _cell("roberta_padded", 22.0),
        _cell("roberta_unpadded", 36.0),
        _cell("roberta_unpadded", 10.0, concurrency=32, batch=None),
        _cell("roberta_padded", 40.0, concurrency=32),
        _cell("roberta_unpadded", 11.0, corpus="long-tail"),
        _cell("roberta_padded", 5.5, corpus="long-tail"),
    ]
    rows = padding.comparison(cells)
    keys = [(row["corpus"], row["concurrency"], row["model"]) for row in rows]
    assert keys == [
        ("corpus", 8, "roberta_unpadded"),
        ("corpus", 8, "roberta_padded"),
        ("corpus", 8, padding.RERANKER + "_unpadded"),
        ("corpus", 8, padding.RERANKER + "_padded"),
        ("corpus", 32, "roberta_unpadded"),
        ("corpus", 32, "roberta_padded"),
        ("long-tail", 8, "roberta_unpadded"),
        ("long-tail", 8, "roberta_padded"),
    ]
    first = rows[0]
    assert first["rounds_rps"] == [30.0, 36.0] and first["rps"] == 33.0 and first["spread"] == pytest.approx(6 / 33)
    assert first["vs_padded"] == pytest.approx(33 / 21) and first["layout"] == "unpadded" and "vs_fp32" not in first
    assert rows[1]["vs_padded"] == 1.0
    assert rows[2]["vs_padded"] == pytest.approx(50 / 40) and rows[2]["layout"] == "unpadded"  # the reranker's pair
    assert rows[3]["vs_padded"] == 1.0 and rows[3]["layout"] == "padded"
    assert rows[4]["vs_padded"] == pytest.approx(0.25) and rows[4]["avg_batch"] is None
    assert rows[6]["vs_padded"] == pytest.approx(2.0)


def test_the_report_lists_rounds_ratios_and_the_reranker_both_ways() -> None:
    unpadded, padded = padding.RERANKER + "_unpadded", padding.RERANKER + "_padded"
    cells = [
        _cell("distilbert_unpadded", 30.0, concurrency=32),
        _cell("distilbert_padded", 20.0, concurrency=32, batch=None),
        _cell(unpadded, 50.0, concurrency=32),
        _cell(padded, 40.0, concurrency=32),
    ]
    data = {
        "host": "box", "cores": 2, "load_average": ["1.0", "1.1", "1.2"], "load_average_end": ["2.0", "2", "2"],
        "rounds": 1, "seconds": 10.0, "warmup_s": 3.0, "load": padding.comparison(cells),
        "formats": {
            "distilbert_unpadded": "onnx_ragged", "distilbert_padded": "onnx", unpadded: "onnx_ragged", padded: "onnx",
        },
        "tokens_per_text": {"corpus": {"distilbert": 52.8}},
    }  # fmt: skip
    text = padding.markdown(data)
    assert "| corpus | 32 | distilbert_unpadded | onnx_ragged | 30.0 | 30.0 | 0 % | 1.50 x | 40 | 200 |" in text
    assert "| corpus | 32 | distilbert_padded | onnx | 20.0 | 20.0 | 0 % | - | 40 | 200 | 95.0 | - | 0 |" in text
    assert (
        f"| {unpadded} | corpus | 32 | onnx_ragged | 50.0 | 50.0 | 0 % | 1.25 x | 40 | 200 | 38.0 | 4.0 | 0 |" in text
    )
    assert f"| {padded} | corpus | 32 | onnx | 40.0 | 40.0 | 0 % | - | 40 | 200 | 47.5 | 4.0 | 0 |" in text
    assert "textprep 1.2.0" in text and "corpus: distilbert 52.8" in text and "shared machine" in text


def test_the_reranker_is_measured_as_shipped_and_unpadded() -> None:
    unpadded, padded = padding.reranker_specs()
    assert (unpadded["name"], padded["name"]) == (padding.RERANKER + "_unpadded", padding.RERANKER + "_padded")
    assert unpadded["versions"] == padding.spec_dict(padding.RERANKER)["versions"]  # as shipped
    version = padded["versions"][0]
    assert version["model"]["format"] == "onnx" and version["preprocessing"]["padding"] == "batch_longest"
    assert version["model"]["build"] == unpadded["versions"][0]["model"]["build"]


def test_the_options_parse_lists_and_refuse_unknown_corpora() -> None:
    assert padding._corpora("corpus, long-tail") == ("corpus", "long-tail")
    assert padding._concurrencies("8,32") == (8, 32)
    with pytest.raises(argparse.ArgumentTypeError, match="choose among"):
        padding._corpora("tweets")
    with pytest.raises(argparse.ArgumentTypeError, match="not positive"):
        padding._concurrencies("8,0")
