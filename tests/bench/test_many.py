"""bench.many: the catalogue's specs, the server-log parsing and the targets (no server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import many
from generator.pipeline.plan import plan_repository
from generator.pipeline.repository_settings import resolve_budget
from generator.pipeline.spec import REPOSITORY_FILE, ModelSpec, load_specs


@pytest.fixture(scope="module")
def specs() -> list[dict[str, Any]]:
    return many.catalogue(12)


def test_catalogue_specs_are_valid_classifiers_with_their_own_heads(specs: list[dict[str, Any]]) -> None:
    validated = [ModelSpec.model_validate(spec) for spec in specs]
    assert len({spec.name for spec in validated}) == 12
    heads = {
        (tuple(spec.versions[0].model.build.labels.items()), spec.versions[0].model.build.scale)  # type: ignore[union-attr]
        for spec in validated
    }
    assert len(heads) == 12
    assert {len(spec.versions[0].outputs.labels or ()) for spec in validated} == {2, 3, 4, 5, 6}


def test_catalogue_preprocessing_is_identical_and_the_shipped_ones(specs: list[dict[str, Any]]) -> None:
    shipped = many.spec_dict("minilm_embed_padded")["versions"][0]["preprocessing"]
    assert all(spec["versions"][0]["preprocessing"] == shipped for spec in specs)
    assert len({ModelSpec.model_validate(spec).versions[0].preprocessing for spec in specs}) == 1


def test_catalogue_is_deterministic_and_retraining_changes_the_scale_only(specs: list[dict[str, Any]]) -> None:
    assert many.catalogue(3) == specs[:3]
    changed = many.retrained(specs[0])
    build, new = specs[0]["versions"][0]["model"]["build"], changed["versions"][0]["model"]["build"]
    assert new["scale"] == pytest.approx(build["scale"] * 1.5)
    assert {**new, "scale": build["scale"]} == build
    assert {k: v for k, v in changed.items() if k != "versions"} == {
        k: v for k, v in specs[0].items() if k != "versions"
    }


def test_load_completions_from_the_server_log() -> None:
    log = (
        'I1201 23:59:59.500000 5066 server.cc:1] "start"\n'
        'I1201 23:59:59.900000 5066 model_lifecycle.cc:472] "loading: clf000_v1_model:1"\n'
        "I1202 00:00:02.000000 5066 model_lifecycle.cc:838] \"successfully loaded 'clf000_v1_model'\"\n"
        "I1202 00:00:03.250000 5066 model_lifecycle.cc:838] \"successfully loaded 'clf000'\"\n"
    )
    assert many.load_completions(log) == {"clf000_v1_model": pytest.approx(2.5), "clf000": pytest.approx(3.75)}


def _row(models: int, ready: float, pss: float, threads: int, rps: float, p99: float) -> dict[str, Any]:
    return {"models": models, "ready_s": ready, "load": {"pss_mb": pss, "threads": threads, "rps": rps, "p99_ms": p99}}


def test_targets_are_evaluated_against_the_single_model_run() -> None:
    single = _row(1, 10.0, 1000.0, 60, 100.0, 400.0)
    crowd = _row(100, 170.0, 1000.0 + 99 * 131.0, 900, 95.0, 500.0)
    crowd["update"] = {"failed": 0, "requests": 900, "returncode": 0, "update_s": 12.0, "serves_new_head": True}
    verdicts = {t["target"]: t["met"] for t in many.evaluate(single, crowd)}
    assert verdicts == {
        "100 models ready <= 180 s": True,
        "PSS <= 130 MiB per extra model": False,
        "<= 10 threads per model": True,
        "Zipf throughput >= 0.9 x single": True,
        "Zipf p99 <= 1.5 x single": True,
        "one model updated under load: 0 failed": True,
    }
    crowd["update"]["failed"] = 1
    assert not many.evaluate(single, crowd)[-1]["met"]


def test_a_run_that_did_not_load_misses_the_ready_target() -> None:
    verdicts = many.evaluate(_row(1, 10.0, 1.0, 1, 1.0, 1.0), {"models": 100, "failed": "stopped while loading"})
    assert [t["met"] for t in verdicts] == [False]


def test_queue_summary_splits_the_hottest_model_from_the_others() -> None:
    before = {"a": (10, 5, 0, 0), "b": (0, 0, 0, 0), "c": (0, 0, 0, 0)}
    after = {"a": (110, 55, 100 * 8_000_000, 50 * 20_000_000), "b": (20, 20, 20 * 1_000_000, 0), "c": (0, 0, 0, 0)}
    summary = many.queue_summary(before, after, "a")
    assert summary["hottest"] == {
        "models": 1,
        "requests": 100,
        "queue_ms": pytest.approx(8.0),
        "batch": pytest.approx(2.0),
        "compute_ms_per_batch": pytest.approx(20.0),
    }
    assert summary["others"]["models"] == 2 and summary["others"]["queue_ms"] == pytest.approx(1.0)


def test_catalogue_weights_are_the_zipf_shares_and_give_the_hottest_the_cores(specs: list[dict[str, Any]]) -> None:
    assert [spec["traffic_weight"] for spec in specs[:3]] == [1.0, 0.5, 0.333333]
    plan = plan_repository([ModelSpec.model_validate(spec) for spec in specs[:5]], "local", 2)
    assert [(i.spec_name, i.instances, i.threads) for i in plan.inference_models()] == [
        ("clf000", 2, 1),
        *((f"clf00{index}", 1, 1) for index in range(1, 5)),
    ]


def test_written_specs_carry_the_memory_budget(specs: list[dict[str, Any]], tmp_path: Path) -> None:
    folder = many.write_specs(tmp_path, specs[:2], memory_mib=4096)
    assert [spec.name for spec in load_specs(folder)] == ["clf000", "clf001"]
    assert resolve_budget(folder, cores=2).memory_mib == 4096
    many.write_specs(tmp_path, specs[:1])
    assert sorted(path.name for path in folder.iterdir()) == ["clf000.yaml", REPOSITORY_FILE]


def _step(models: int, rps: float, p99: float, failed: int = 0, returncode: int = 0) -> dict[str, Any]:
    step: dict[str, Any] = {
        "models": models,
        "hottest": "2 x 1",
        "instances": models + 1,
        "load": {
            "rps": rps,
            "p50_ms": p99 / 3,
            "p99_ms": p99,
            "pss_mb": 400.0 + 80 * models,
            "threads": 60,
            "processes": 3 + models,
            "errors": 0,
            "requests": int(rps * 10),
        },
        "server_setting_changes": [],
    }
    if models > 1:
        step["update"] = {
            "seconds": 3.0,
            "returncode": returncode,
            "refused": False,
            "loaded": [],
            "requests": 500,
            "failed": failed,
            "p99_ms_max": p99 * 2,
        }
    return step


def test_growth_targets_count_every_request_and_compare_with_the_first_step() -> None:
    steps = [_step(1, 100.0, 400.0), _step(2, 98.0, 420.0), _step(3, 95.0, 500.0)]
    verdicts = {t["target"]: t["met"] for t in many.evaluate_growth(steps)}
    assert verdicts == {
        "0 failed requests": True,
        "every model added by `tritongen update`, no restart": True,
        "Zipf throughput with 3 models >= 0.9 x single": True,
        "Zipf p99 with 3 models <= 1.5 x single": True,
    }
    steps[1]["update"]["failed"] = 2
    steps[2]["server_setting_changes"] = ["server setting ...: (none) -> --rate-limit=execution_count"]
    failed = {t["target"]: t for t in many.evaluate_growth(steps)}
    assert not failed["0 failed requests"]["met"] and failed["0 failed requests"]["detail"].startswith("2 of ")
    assert not failed["every model added by `tritongen update`, no restart"]["met"]
    stopped = [_step(1, 100.0, 400.0), {"models": 2, "update": {**_step(2, 0, 0)["update"], "returncode": 1}}]
    assert [t["met"] for t in many.evaluate_growth(stopped)] == [True, False]


def test_growth_report_has_a_row_per_step() -> None:
    steps = [_step(1, 100.0, 400.0), _step(2, 98.0, 420.0)]
    data = {
        "steps": steps,
        "targets": many.evaluate_growth(steps),
        "quantize": "dynamic_int8",
        "cores": 2,
        "memory_mib": 16384,
        "host": "h",
        "load_average": ["1", "1", "1"],
        "concurrency": 32,
        "seconds": 10,
        "warmup_s": 3,
        "notes": ["n"],
    }
    text = many.growth_markdown(data)
    assert "1 -> 2 classifiers (dynamic_int8)" in text
    unmeasured = {"models": 2, "update": _step(2, 0, 0)["update"], "script": "grow-2.lua"}
    skipping = many.growth_markdown({**data, "steps": [steps[0], unmeasured, _step(3, 95.0, 500.0)]})
    assert "| 2 | - | - | 3.0 | 0 of 500 | not measured |" in skipping
    assert "| 2 | 2 x 1 | 3 | 3.0 | 0 of 500 | 98.0 | 0.98 | 140 | 420 | 1.05 | 560 | 80.0 | 60 | 5 | 0 |" in text
    assert "**MET**" in text and "- note: n" in text


def test_an_int8_answer_is_checked_by_argmax_and_cosine_an_fp32_one_exactly() -> None:
    expected = np.array([5.96, 1.79, 4.98], dtype=np.float32)
    served = [5.98, 1.89, 5.12]  # the int8 file, its text padded in a shared tokenizer call
    assert many.close_to(served, expected, quantized=True) and not many.close_to(served, expected)
    assert not many.close_to([4.98, 1.79, 5.96], expected, quantized=True)  # another argmax
    assert not many.close_to([5.96, 1.79], expected, quantized=True)
