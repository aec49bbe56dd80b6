"""The runners' batching core: ragged concatenation, batch inputs and output splitting exactly
as Triton's native backends do them (BackendInputCollector / BackendOutputResponder, r24.10)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

BACKENDS = Path(__file__).resolve().parents[2] / "backends" / "triton"
_spec = importlib.util.spec_from_file_location("tritongen_batching", BACKENDS / "tritongen_batching.py")
assert _spec is not None and _spec.loader is not None
batching: Any = importlib.util.module_from_spec(_spec)
sys.modules["tritongen_batching"] = batching
_spec.loader.exec_module(batching)
BatchingConfig, BatchingError = batching.BatchingConfig, batching.BatchingError


def ragged_config(*batch_inputs: dict[str, Any], max_batch_size: int = 64) -> Any:
    """The ragged encoder's composing-model config (as JSON, the way `initialize` gets it)."""
    return BatchingConfig.from_model_config(
        {
            "max_batch_size": max_batch_size,
            "input": [
                {"name": "input_ids", "data_type": "TYPE_INT64", "dims": [-1], "allow_ragged_batch": True},
                {"name": "lengths", "data_type": "TYPE_INT64", "dims": [1], "allow_ragged_batch": True},
            ],
            "batch_input": list(batch_inputs),
            "output": [{"name": "embedding", "data_type": "TYPE_FP32", "dims": [2]}],
        }
    )


def batch_input(kind: str, target: str, source: str = "input_ids", data_type: str = "TYPE_INT32") -> dict[str, Any]:
    return {"kind": kind, "target_name": [target], "data_type": data_type, "source_input": [source]}


def request(*texts: list[int]) -> dict[str, np.ndarray]:
    """One request of n texts, packed like the tokenizer does (`ragged.pack_request`)."""
    from generator.kinds.formats.unpadded_encoder import pack_request

    ids, lengths = pack_request([list(t) for t in texts])
    return {"input_ids": ids, "lengths": lengths}


# Three requests: one text of 3 tokens; two texts of 2 + 3 tokens ([2, 3] with one pad); one of 4.
REQUESTS = [request([1, 2, 3]), request([4, 5], [6, 7, 8]), request([9, 10, 11, 12])]


def test_ragged_inputs_are_flattened_and_concatenated_in_request_order() -> None:
    feed = ragged_config().feed(REQUESTS)
    assert REQUESTS[1]["input_ids"].tolist() == [[4, 5, 6], [7, 8, 0]]
    assert feed["input_ids"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 0, 9, 10, 11, 12]
    assert feed["lengths"].tolist() == [3, 2, 3, 4]
    assert feed["input_ids"].ndim == 1 and feed["input_ids"].dtype == np.int64


@pytest.mark.parametrize(
    ("kind", "source", "expected"),
    [
        ("BATCH_ELEMENT_COUNT", "input_ids", [3, 6, 4]),
        ("BATCH_ACCUMULATED_ELEMENT_COUNT", "input_ids", [3, 9, 13]),
        ("BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO", "input_ids", [0, 3, 9, 13]),
        ("BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO", "lengths", [0, 1, 3, 4]),
        ("BATCH_ITEM_SHAPE", "input_ids", [[3], [3], [3], [4]]),
        ("BATCH_ITEM_SHAPE_FLATTEN", "input_ids", [3, 3, 3, 4]),
    ],
)
@pytest.mark.parametrize(("data_type", "dtype"), [("TYPE_INT32", np.int32), ("TYPE_FP32", np.float32)])
def test_batch_inputs_have_the_native_kind_dtype_and_shape(
    kind: str, source: str, expected: list[Any], data_type: str, dtype: type
) -> None:
    feed = ragged_config(batch_input(kind, "x", source, data_type)).feed(REQUESTS)
    assert feed["x"].dtype == dtype
    assert feed["x"].shape == np.array(expected).shape
    assert feed["x"].tolist() == expected


def test_max_element_count_is_carried_by_the_shape() -> None:
    feed = ragged_config(batch_input("BATCH_MAX_ELEMENT_COUNT_AS_SHAPE", "x")).feed(REQUESTS)
    assert feed["x"].shape == (6,) and feed["x"].dtype == np.int32


def test_batch_of_one() -> None:
    config = ragged_config(
        batch_input("BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO", "token_offsets"),
        batch_input("BATCH_ACCUMULATED_ELEMENT_COUNT", "ends"),
        batch_input("BATCH_ELEMENT_COUNT", "counts"),
    )
    feed = config.feed([request([7, 8, 9])])
    assert feed["input_ids"].tolist() == [7, 8, 9]
    assert feed["token_offsets"].tolist() == [0, 3]
    assert feed["ends"].tolist() == [3] and feed["counts"].tolist() == [3]
    assert config.feed_names == ("input_ids", "lengths", "token_offsets", "ends", "counts")


def test_one_tensor_under_every_target_name() -> None:
    entry = batch_input("BATCH_ELEMENT_COUNT", "a")
    entry["target_name"] = ["a", "b"]
    feed = ragged_config(entry).feed(REQUESTS)
    assert feed["a"].tolist() == feed["b"].tolist() == [3, 6, 4]


def test_outputs_are_split_by_each_requests_batch_size() -> None:
    config = ragged_config()
    rows = np.arange(8, dtype=np.float32).reshape(4, 2)  # one row per text: 1 + 2 + 1
    results = config.split(REQUESTS, [rows])
    assert [r[0].tolist() for r in results] == [[[0, 1]], [[2, 3], [4, 5]], [[6, 7]]]


def test_string_rows_are_split_with_their_texts() -> None:
    """A multi-label classifier's `labels` [texts, labels]: strings, "" where a label is off."""
    rows = np.array([[b"a", b""], [b"", b"b"], [b"a", b"b"], [b"", b""]], dtype=object)
    results = ragged_config().split(REQUESTS, [rows])
    assert [r[0].tolist() for r in results] == [[[b"a", b""]], [[b"", b"b"], [b"a", b"b"]], [[b"", b""]]]
    assert all(r[0].dtype == object for r in results)


def test_too_few_output_rows_fail_like_the_native_backend() -> None:
    """One row per request (what an element-count-only model returns) fails multi-text requests."""
    results = ragged_config().split(REQUESTS, [np.zeros((3, 2), dtype=np.float32)])
    assert isinstance(results[0], list)
    error = results[2]
    assert isinstance(error, BatchingError) and error.code == "UNSUPPORTED"
    assert "expected batch size of atleast 4 in model output, got 3" in str(error)


def test_execute_runs_each_shape_group_once() -> None:
    config = BatchingConfig.from_model_config(
        {
            "max_batch_size": 8,
            "input": [{"name": "x", "data_type": "TYPE_INT64", "dims": [-1]}],
            "output": [{"name": "y", "data_type": "TYPE_INT64", "dims": [1]}],
        }
    )
    inputs = [{"x": np.ones((1, 2), np.int64)}, {"x": np.ones((2, 3), np.int64)}, {"x": np.ones((1, 2), np.int64)}]
    seen: list[tuple[int, ...]] = []

    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        seen.append(feed["x"].shape)
        return [feed["x"].sum(1, keepdims=True)]

    results = config.execute(inputs, run)
    assert seen == [(2, 2), (2, 3)]
    assert [r[0].tolist() for r in results] == [[[2]], [[3], [3]], [[2]]]


def test_model_failures_become_errors_of_their_group_only() -> None:
    config = ragged_config()

    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise RuntimeError("boom")

    results = config.execute(REQUESTS, run, lambda e: BatchingError(f"framework failed: {e}", "INTERNAL"))
    assert all(isinstance(r, BatchingError) and r.code == "INTERNAL" and "boom" in str(r) for r in results)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (batch_input("BATCH_ELEMENT_COUNT", "x", data_type="TYPE_INT64"), "must be TYPE_INT32 or TYPE_FP32"),
        (batch_input("BATCH_SOMETHING", "x"), "unknown batch input kind"),
        (batch_input("BATCH_ELEMENT_COUNT", "x", source="nope"), "unknown source input name 'nope'"),
        ({**batch_input("BATCH_ELEMENT_COUNT", "x"), "source_input": []}, "expects 1 source input, got 0"),
    ],
)
def test_invalid_batch_inputs_are_refused_at_load(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(BatchingError, match=message):
        ragged_config(entry)


def test_ragged_needs_a_batching_model() -> None:
    with pytest.raises(BatchingError, match="max_batch_size > 0"):
        ragged_config(max_batch_size=0)


def test_non_batching_model_runs_each_request_alone() -> None:
    config = BatchingConfig.from_model_config(
        {"max_batch_size": 0, "input": [{"name": "x"}], "output": [{"name": "y"}]}
    )
    inputs = [{"x": np.ones(3)}, {"x": np.ones(3)}]
    results = config.execute(inputs, lambda feed: [feed["x"] * 2])
    assert [r[0].tolist() for r in results] == [[2, 2, 2], [2, 2, 2]]


def test_torchscript_inputs_are_passed_by_forward_argument_name() -> None:
    feed = ("input_ids", "lengths", "token_offsets", "text_offsets")
    forward = ["input_ids", "lengths", "token_offsets", "text_offsets"]
    assert batching.argument_order(feed[::-1], forward) == forward
    assert batching.argument_order(("B__1", "A__0"), ["x", "y"]) == ["A__0", "B__1"]
    assert batching.argument_order(("b", "a"), ["x", "y"]) == ["b", "a"]


def test_every_runner_folder_gets_the_core(tmp_path: Path) -> None:
    """A Python-based backend's folder is on its stub's sys.path: the core is copied into each."""
    from generator.base.triton import assemble_backend_directory

    assembled = assemble_backend_directory(tmp_path / "backends")
    for runner in ("onnxruntime", "pytorch"):
        copy = assembled / runner / "tritongen_batching.py"
        assert copy.read_bytes() == (BACKENDS / "tritongen_batching.py").read_bytes()
        assert "from tritongen_batching import" in (assembled / runner / "model.py").read_text()
