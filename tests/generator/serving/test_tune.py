"""`tritongen tune`'s pure parts: candidates, statistics deltas, the goal, spec edits."""

from __future__ import annotations

from generator.pipeline.spec import parse_spec
from generator.serving.tune import (
    StageStats,
    Trial,
    better,
    bucket_choices,
    layouts,
    preferred_sizes,
    stage_delta,
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
    fast_slow = Trial("a", {}, rps=200, p99_ms=900)
    slow_ok = Trial("b", {}, rps=100, p99_ms=100)
    fast_ok = Trial("c", {}, rps=150, p99_ms=150)
    assert better(fast_slow, slow_ok, 200) is slow_ok
    assert better(slow_ok, fast_ok, 200) is fast_ok
    assert better(fast_slow, Trial("d", {}, rps=300, p99_ms=500), 200).label == "d"  # lowest p99
    assert better(fast_ok, Trial("e", {}, rps=155, p99_ms=150), 200) is fast_ok  # within noise


def test_settings_make_a_valid_spec() -> None:
    import yaml

    base = yaml.safe_load(SPEC)
    tuned = with_settings(base, instances=(1, 2), padding=("buckets", (16, 32, 128)), delay_us=2000, preferred=(2, 4))
    spec = parse_spec(yaml.safe_dump(tuned), "m.yaml")
    assert (spec.instances.model, spec.instances.model_threads) == (1, 2)
    assert spec.versions[0].preprocessing.buckets == (16, 32, 128)
    assert spec.batching.max_queue_delay_us == 2000 and spec.batching.preferred_batch_sizes == (2, 4)
    assert "instances" not in base  # the input is not modified
