"""The benchmark table's per-cell columns and the ragged S4's targets, from hand-made results (no server)."""

from __future__ import annotations

from typing import Any

from bench import report


def _cell(system: str, setting: str, rps: float, p99: float, **extra: Any) -> dict[str, Any]:
    cell = {
        "system": system,
        "setting": setting,
        "protocol": "http",
        "concurrency": 32,
        "rps": rps,
        "p50_ms": p99 / 2,
        "p99_ms": p99,
        "cpu_cores": 1.5,
        "machine_cores": 2.0,
        "threads": 40,
        "processes": 5,
        "rss_mb": 900.0,
        "pss_mb": 800.0,
        "errors": 0,
        "requests": int(rps * 10),
    }
    cell.update(extra)
    return cell


PADDED = "padding batch_longest (models/minilm_embed_padded.yaml)"
RAGGED = "ragged, unpadded (models/minilm_embed.yaml)"


def _data(cells: list[dict[str, Any]], limits: bool = True) -> dict[str, Any]:
    return {
        "cores": 2,
        "host": "test",
        "load_average": ["0.5", "0.5", "0.5"],
        "limits": [{"name": "L_sorted", "batch_size": 32, "rps": 240.0, "per_batch": {}, "setting": ""}]
        if limits
        else [],
        "cells": cells,
        "sweeps": {},
        "many": [],
        "notes": [],
        "thread_reports": {},
    }


def _run() -> dict[str, Any]:
    return _data(
        [
            _cell("S3", "tornado 1 processes -> triton minilm_embed_v1_model", 140.0, 300.0, avg_batch=1.8),
            _cell("S4", PADDED, 150.0, 350.0, variant="padded", avg_batch=1.1, corpus="corpus"),
            _cell("S4", RAGGED, 200.0, 180.0, variant="ragged", avg_batch=12.5, corpus="corpus"),
            _cell("S4", PADDED, 100.0, 600.0, variant="padded", avg_batch=1.1, corpus="long-tail"),
            _cell("S4", RAGGED, 130.0, 400.0, variant="ragged", avg_batch=9.0, corpus="long-tail"),
        ]
    )


def test_ragged_targets_read_off_the_cells() -> None:
    lines = report.ragged_targets(_run())
    text = "\n".join(lines)
    assert "- ragged S4 >= 0.75 x L_sorted: MET (0.83: 200.0 vs 240.0 req/s)" in text
    assert "- ragged S4 > padded S4: MET (1.33 x" in text
    assert "- ragged S4 > S3: MET (1.43 x" in text
    assert "- average inference batch >= 8: MET (12.5; padded S4 1.1)" in text
    assert "- p99 <= 0.6 x padded S4's p99: MET (0.51: 180 vs 350 ms)" in text
    # long-tail: 130 / 100 = 1.3
    assert "- long-tail corpus, ragged S4 >= 1.2 x padded S4: MET (1.30: 130.0 vs 100.0 req/s)" in text
    assert "ragged S4 7.5 ms; padded S4 10.0 ms; S3 10.7 ms" in text


def test_ragged_targets_missed_and_not_measured() -> None:
    data = _run()
    data["cells"] = [c for c in data["cells"] if report.corpus_of(c) != "long-tail"]
    data["cells"][2].update(rps=140.0, p99_ms=300.0, avg_batch=3.0)
    data["limits"] = []
    text = "\n".join(report.ragged_targets(data))
    assert "0.75 x L_sorted: not measured" in text
    assert "- ragged S4 > padded S4: MISSED" in text
    assert "- ragged S4 > S3: MISSED" in text
    assert "- average inference batch >= 8: MISSED (3.0" in text
    assert "- p99 <= 0.6 x padded S4's p99: MISSED (0.86" in text
    assert "long-tail corpus, ragged S4 >= 1.2 x padded S4: not measured" in text


def test_table_has_corpus_cpu_per_request_and_batch_columns() -> None:
    text = report.markdown(_run())
    header = next(line for line in text.splitlines() if line.startswith("| system |"))
    assert "| corpus |" in header and "| CPU ms/req | avg batch |" in header
    row = next(line for line in text.splitlines() if RAGGED in line and "long-tail" in line)
    assert "| 130.0 |" in row and "| 11.5 | 9.0 |" in row  # 1.5 cores / 130 req/s = 11.5 ms
    assert "## Targets of the ragged S4" in text
    # the serving targets' S4 choice ignores the long-tail cells
    assert report.s4_choice(_run()) == RAGGED


def test_results_written_before_the_new_columns_still_render() -> None:
    old = _cell("S4", RAGGED, 200.0, 180.0)
    data = _data([old, _cell("S4", PADDED, 150.0, 350.0)])
    assert report.variant_of(old) == "ragged"
    text = report.markdown(data)
    assert "| corpus | http | 32 | - | 200.0 | - |" in text  # no rounds recorded
    assert "- average inference batch >= 8: not measured" in text


RECORDED_ROUNDS: dict[str, Any] = {
    "cores": 2,
    "host": "vm",
    "load_average": ["10.70", "10.50", "7.24"],
    "limits": [
        {
            "name": "L_sorted",
            "batch_size": 16,
            "rps": 240.76029694141485,
            "per_batch": {"16": 240.76029694141485},
            "setting": "2 intra-op threads, spinning off",
        },
        {
            "name": "L_ragged_arrival",
            "batch_size": 32,
            "rps": 70.94896705367498,
            "per_batch": {"32": 70.94896705367498},
            "setting": "unpadded (ragged) model, 2 intra-op threads, spinning off",
        },
    ],
    "cells": [
        {
            "system": "Infinity",
            "setting": "infinity-emb engine optimum, batch 32, cpu",
            "protocol": "http",
            "concurrency": 8,
            "rps": 66.04634031888811,
            "p50_ms": 118.935,
            "p99_ms": 374.96299999999997,
            "cpu_cores": 0.6988105184903414,
            "machine_cores": 2.0010375887791083,
            "threads": 16,
            "processes": 1,
            "rss_mb": 2707.8515625,
            "pss_mb": 2613.91552734375,
            "errors": 0,
            "requests": 403,
            "corpus": "corpus",
            "variant": "",
            "avg_batch": None,
            "cpu_ms": 10.857136288122836,
            "rounds_rps": [83.42561205395813, 48.6670685838181],
            "spread": 0.7368624567060252,
        },
        {
            "system": "Infinity",
            "setting": "infinity-emb engine torch, batch 32, cpu",
            "protocol": "http",
            "concurrency": 8,
            "rps": 59.810141316167204,
            "p50_ms": 142.91400000000002,
            "p99_ms": 220.225,
            "cpu_cores": 0.7527325983669874,
            "machine_cores": 1.9947435577630817,
            "threads": 17,
            "processes": 1,
            "rss_mb": 753.41015625,
            "pss_mb": 602.650390625,
            "errors": 0,
            "requests": 368,
            "corpus": "corpus",
            "variant": "",
            "avg_batch": None,
            "cpu_ms": 12.686561007548512,
            "rounds_rps": [42.93713609957745, 76.68314653275696],
            "spread": 0.7178905642874842,
        },
    ],
    "sweeps": {},
    "many": [],
    "notes": [],
    "thread_reports": {},
}
"""Part of `results.json` of `python -m bench.run --quick --systems L,Infinity --concurrency 8 --no-many
--corpora corpus` (2 rounds of 3 s per cell, 2 cores shared with other work)."""  # fmt: skip


def test_table_lists_every_round_the_median_and_the_spread() -> None:
    lines = report.markdown(RECORDED_ROUNDS).splitlines()
    header = next(line for line in lines if line.startswith("| system |"))
    assert "| c | req/s per round | req/s (median) | worst / median | p50 ms |" in header
    optimum = next(line for line in lines if "engine optimum" in line)
    assert "| corpus | http | 8 | 83.4, 48.7 | 66.0 | 0.74 | 118.9 | 375.0 |" in optimum
    torch = next(line for line in lines if "engine torch" in line)
    assert "| 42.9, 76.7 | 59.8 | 0.72 |" in torch
    ragged = next(line for line in lines if line.startswith("| L_ragged_arrival |"))
    assert "| corpus | - | - | - | 70.9 | - | - | - | 2 | 28.2 | 32 |" in ragged
    assert "| 0.29 |" in ragged  # over L_sorted (padded), the same run
    for line in (header, optimum, torch, ragged):
        assert line.count("|") == header.count("|")


def test_the_shipped_defaults_targets_read_off_the_cells() -> None:
    data = _run()
    data["cells"] += [
        _cell("T", "triton direct -> minilm_embed_v1_model (client tokenizes)", 150.0, 200.0),
        _cell("Infinity", "infinity optimum", 130.0, 250.0),
        _cell("Infinity", "infinity torch", 60.0, 500.0),
        _cell("S4", RAGGED, 180.0, 50.0, variant="ragged", concurrency=8, p50_ms=20.0, rounds_rps=[170.0, 180.0]),
    ]
    data["cells"][2].update(rounds_rps=[150.0, 200.0, 210.0], spread=0.75)
    data["cells"][-1]["spread"] = 170.0 / 180.0
    text = "\n".join(report.default_targets(data))
    assert "- c=8: worst round >= 0.9 x median: MET (0.94; rounds 170.0, 180.0 req/s)" in text
    assert "- c=8: p99 <= 2 x p50: MISSED (2.50: 50 vs 20 ms)" in text
    assert "- c=32: worst round >= 0.9 x median: MISSED (0.75; rounds 150.0, 200.0, 210.0 req/s)" in text
    assert "- c=32: >= 0.85 x L_sorted: MISSED (0.83: 200.0 vs 240.0 req/s)" in text
    assert "- c=32: >= 1.5 x Infinity's best: MET (1.54: 200.0 vs 130.0 req/s, infinity optimum)" in text
    assert "- c=32: >= 1.3 x T: MET (1.33: 200.0 vs 150.0 req/s)" in text
    assert "- c=32: p99 <= T's p99: MET (180 vs 200 ms)" in text
    data["cells"] = [c for c in data["cells"] if c["system"] != "T"]
    assert "- c=32: against T: not measured (`--systems ...,T`)" in report.default_targets(data)
