"""Requests and answers of the response-encoding benchmark: JSON data and the binary tensor extension."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from bench.response_encoding import decode_response, request_body, trace_spans


def test_request_asks_for_the_embedding_as_binary_or_json() -> None:
    for binary in (True, False):
        body = json.loads(request_body("Hello.", binary))
        assert body["inputs"] == [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["Hello."]}]
        assert body["outputs"] == [{"name": "EMBEDDING", "parameters": {"binary_data": binary}}]


def test_json_and_binary_answers_decode_to_the_same_floats() -> None:
    vector = np.random.default_rng(0).standard_normal((1, 384)).astype(np.float32)
    as_json = {"outputs": [{"name": "EMBEDDING", "datatype": "FP32", "shape": [1, 384], "data": vector[0].tolist()}]}
    assert np.array_equal(decode_response(json.dumps(as_json).encode(), None), vector)
    raw = vector.astype("<f4").tobytes()
    outputs = [
        {"name": "LOGITS", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}},
        {"name": "EMBEDDING", "datatype": "FP32", "shape": [1, 384], "parameters": {"binary_data_size": len(raw)}},
    ]
    header = json.dumps({"outputs": outputs}).encode()
    body = header + np.zeros(2, dtype="<f4").tobytes() + raw
    assert np.array_equal(decode_response(body, len(header)), vector)


def test_trace_spans_pair_each_ensemble_request_with_its_inference_model() -> None:
    def stamps(trace_id: int, **ns: int) -> list[dict[str, Any]]:
        return [{"id": trace_id, "timestamps": [{"name": name, "ns": value}]} for name, value in ns.items()]

    records = [
        {"id": 1, "model_name": "minilm_embed", "model_version": 1},
        {"id": 2, "model_name": "textprep_0123", "model_version": 1, "parent_id": 1},
        {"id": 3, "model_name": "minilm_embed_v1_model", "model_version": 1, "parent_id": 1},
        *stamps(3, COMPUTE_OUTPUT_START=10_000, COMPUTE_END=12_000),
        *stamps(1, REQUEST_START=0, INFER_RESPONSE_COMPLETE=55_000),
        {"id": 4, "model_name": "minilm_embed", "model_version": 1},
        {"id": 5, "model_name": "minilm_embed_v1_model", "model_version": 1, "parent_id": 4},
        *stamps(5, COMPUTE_OUTPUT_START=100_000),
        *stamps(4, INFER_RESPONSE_COMPLETE=102_500),
    ]
    assert trace_spans(records, "minilm_embed_v1_model") == [45.0, 2.5]
