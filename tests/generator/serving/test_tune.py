"""`tritongen tune`'s pure parts: candidates, statistics deltas, the goal, spec edits."""

from __future__ import annotations

import pytest

from generator.pipeline.generate import DEFAULT_SPECS
from generator.pipeline.spec import ModelSpec, SpecError, load_spec, parse_spec
from generator.serving.tune import (
    StageStats,
    Trial,
    better,
    bucket_choices,
    layouts,
    padding_of,
    preferred_sizes,
    proposal,
    ragged_candidate,
    ragged_label,
    stage_delta,
    strip_environments,
    with_settings,
)
from tests.generator.pipeline.test_cpu_budget import SPEC


def _stats(count: int, executions: int, queue_ns: int, infer_ns: int, batches: dict[int, tuple[int, int]]) -> dict:
    zero = {"count": 0, "ns": 0}
    return {
        "inference_count": count,
        "execution_count": executions,
        "inference_stats": {
            "queue": {"count": count, "ns": queue_ns},
            "compute_input": zero,
            "compute_infer": {"count": count, "ns": infer_ns},
            "compute_output": zero,
        },
        "batch_stats": [
            {"batch_size": size, "compute_input": zero, "compute_output": zero, "compute_infer": {"count": n, "ns": ns}}
            for size, (n, ns) in batches.items()
        ],
    }


def test_stage_delta_gives_per_request_and_per_batch_costs() -> None:
    before = _stats(10, 10, 10_000_000, 50_000_000, {1: (10, 50_000_000)})
    after = _stats(30, 15, 50_000_000, 130_000_000, {1: (12, 60_000_000), 4: (3, 30_000_000), 8: (1, 40_000_000)})
    stage = stage_delta(before, after)
    assert (stage.requests, stage.executions) == (20, 5)
    assert stage.average_batch == 4.0
    assert stage.queue_ms == 2.0 and stage.compute_ms_per_request == 4.0
    assert stage.batches == {1: 2, 4: 3, 8: 1}
    assert stage.compute_ms_per_batch == {1: 5.0, 4: 10.0, 8: 40.0}


def test_candidates_fit_the_budget() -> None:
    assert layouts(2) == [(2, 1), (1, 2)]
    assert all(i * t == 8 for i, t in layouts(8))
    assert layouts(1) == [(1, 1)]
    lengths = sorted(range(11, 44))
    for buckets in bucket_choices(lengths, 128):
        assert list(buckets) == sorted(set(buckets)) and buckets[-1] == 128
        assert all(b % 8 == 0 for b in buckets) and max(lengths) <= buckets[-2]
    assert preferred_sizes(StageStats(batches={1: 50, 2: 9, 5: 4, 9: 1}), 32) == (2, 4)


def test_goal_prefers_throughput_within_the_bound() -> None:
    spec = parse_spec(SPEC, "m.yaml")
    fast_slow = Trial("a", spec, rps=200, p99_ms=900)
    slow_ok = Trial("b", spec, rps=100, p99_ms=100)
    fast_ok = Trial("c", spec, rps=150, p99_ms=150)
    assert better(fast_slow, slow_ok, 200) is slow_ok
    assert better(slow_ok, fast_ok, 200) is fast_ok
    assert better(fast_slow, Trial("d", spec, rps=300, p99_ms=500), 200).label == "d"  # lowest p99
    assert better(fast_ok, Trial("e", spec, rps=155, p99_ms=150), 200) is fast_ok  # within noise


def test_settings_make_a_valid_spec() -> None:
    base = parse_spec(SPEC, "m.yaml")
    spec = with_settings(base, instances=(1, 2), padding=("buckets", (16, 32, 128)), delay_us=2000, preferred=(2, 4))
    assert isinstance(spec, ModelSpec)
    assert (spec.instances.model, spec.instances.model_threads) == (1, 2)
    assert spec.versions[0].preprocessing.buckets == (16, 32, 128)  # type: ignore[attr-defined]
    assert spec.batching.max_queue_delay_us == 2000 and spec.batching.preferred_batch_sizes == (2, 4)
    assert base.instances.model == "auto" and padding_of(base) == ("batch_longest", ())  # the input is unchanged
    # Back to batch_longest: the buckets go with it.
    assert padding_of(with_settings(spec, padding=("batch_longest", ()))) == ("batch_longest", ())


def test_an_invalid_candidate_is_a_spec_error_naming_the_field() -> None:
    base = parse_spec(SPEC, "m.yaml")
    with pytest.raises(SpecError, match=r"m \(tuned candidate\): .*largest bucket exceeds max_length"):
        with_settings(base, padding=("buckets", (16, 4096)))
    with pytest.raises(SpecError, match="preferred batch size 64 exceeds max_batch_size"):
        with_settings(base, preferred=(2, 64))
    with pytest.raises(SpecError, match="needs a ragged format"):
        with_settings(base, padding=("none", ()))


def test_candidates_are_generated_without_environments() -> None:
    shipped = _shipped("minilm_embed_ts")
    assert shipped.versions[0].preprocessing.environment is not None
    stripped = strip_environments(shipped)
    preprocessing = stripped.versions[0].preprocessing
    assert (preprocessing.environment, preprocessing.environment_format, preprocessing.ship_stub) == (
        None,
        "tarball",
        False,
    )
    assert stripped.versions[0].model == shipped.versions[0].model


def _shipped(name: str) -> ModelSpec:
    return load_spec(DEFAULT_SPECS / f"{name}.yaml")


def test_padded_encoders_get_a_ragged_candidate() -> None:
    for name, padded, expected in (
        ("minilm_embed_padded", "onnx", "onnx_ragged"),
        ("minilm_embed_ts", "torchscript", "torchscript_ragged"),
    ):
        base = _shipped(name)
        candidate = ragged_candidate(base)
        assert candidate is not None, name
        assert (candidate.version(1).model.format, padding_of(candidate)) == (expected, ("none", ()))
        assert ragged_label(candidate) == f"ragged: {expected}, padding none"
        assert base.versions[0].model.format == padded  # the input is not modified
    # The classifier's padded version 1 as default: its ragged variant is a valid spec too.
    classifier = _shipped("text_classifier").model_copy(update={"default_version": 1})
    candidate = ragged_candidate(classifier)
    assert candidate is not None
    assert candidate.version(1).model.format == "onnx_ragged" and candidate.version(2).model.format == "onnx_ragged"
    assert padding_of(candidate) == ("none", ())


def test_ragged_or_file_built_models_get_no_ragged_candidate() -> None:
    assert ragged_candidate(_shipped("minilm_embed")) is None
    assert ragged_candidate(_shipped("text_classifier")) is None  # its default version 2 is ragged
    data = _shipped("minilm_embed_padded").model_dump()
    data["versions"][0]["model"]["build"] = {"builder": "file", "source": {"file": "models/x.onnx"}}
    assert ragged_candidate(ModelSpec.model_validate(data)) is None


def test_the_proposal_names_the_format() -> None:
    candidate = ragged_candidate(_shipped("minilm_embed_padded"))
    assert candidate is not None
    proposed = proposal(Trial(ragged_label(candidate), candidate))
    assert (proposed["format"], proposed["padding"]) == ("onnx_ragged", "none") and "buckets" not in proposed
