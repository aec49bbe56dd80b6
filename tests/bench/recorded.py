"""Answers recorded from the embedded tritonserver, and a stand-in for `urllib.request.urlopen`
that replays them (bench code reads Triton's statistics and metrics over HTTP).

Recorded from `minilm_embed` (`models/minilm_embed.yaml` without its environment, 2 cores):
once right after loading, once after 40 one-text requests sent by 16 concurrent clients.
"""

from __future__ import annotations

import io
import json
import re
import urllib.request
from typing import Any

import pytest

INFERENCE_MODEL = "minilm_embed_v1_model"
"""The inference model the `minilm_embed` ensemble feeds (it runs `textprep_7a66210452c9` first)."""

STATS_FRESH: dict[str, Any] = {
    "name": "minilm_embed_v1_model",
    "version": "1",
    "last_inference": 0,
    "inference_count": 0,
    "execution_count": 0,
    "inference_stats": {
        "success": {"count": 0, "ns": 0},
        "fail": {"count": 0, "ns": 0},
        "queue": {"count": 0, "ns": 0},
        "compute_input": {"count": 0, "ns": 0},
        "compute_infer": {"count": 0, "ns": 0},
        "compute_output": {"count": 0, "ns": 0},
        "cache_hit": {"count": 0, "ns": 0},
        "cache_miss": {"count": 0, "ns": 0},
    },
    "response_stats": {},
    "batch_stats": [],
    "memory_usage": [],
}
"""`GET /v2/models/minilm_embed_v1_model/stats` right after loading (its `model_stats[0]`)."""

STATS_AFTER: dict[str, Any] = {
    "name": "minilm_embed_v1_model",
    "version": "1",
    "last_inference": 1796671742957,
    "inference_count": 40,
    "execution_count": 10,
    "inference_stats": {
        "success": {"count": 40, "ns": 681640135},
        "fail": {"count": 0, "ns": 0},
        "queue": {"count": 40, "ns": 147900368},
        "compute_input": {"count": 40, "ns": 1388796},
        "compute_infer": {"count": 40, "ns": 505376797},
        "compute_output": {"count": 40, "ns": 26757566},
        "cache_hit": {"count": 0, "ns": 0},
        "cache_miss": {"count": 0, "ns": 0},
    },
    "response_stats": {},
    "batch_stats": [
        {
            "batch_size": 1,
            "compute_input": {"count": 2, "ns": 47240},
            "compute_infer": {"count": 2, "ns": 27953623},
            "compute_output": {"count": 2, "ns": 310443},
        },
        {
            "batch_size": 2,
            "compute_input": {"count": 2, "ns": 37125},
            "compute_infer": {"count": 2, "ns": 20097405},
            "compute_output": {"count": 2, "ns": 434328},
        },
        {
            "batch_size": 3,
            "compute_input": {"count": 1, "ns": 20821},
            "compute_infer": {"count": 1, "ns": 9014665},
            "compute_output": {"count": 1, "ns": 193218},
        },
        {
            "batch_size": 4,
            "compute_input": {"count": 2, "ns": 48492},
            "compute_infer": {"count": 2, "ns": 36919492},
            "compute_output": {"count": 2, "ns": 1170666},
        },
        {
            "batch_size": 5,
            "compute_input": {"count": 1, "ns": 35193},
            "compute_infer": {"count": 1, "ns": 8498675},
            "compute_output": {"count": 1, "ns": 378275},
        },
        {
            "batch_size": 8,
            "compute_input": {"count": 1, "ns": 36425},
            "compute_infer": {"count": 1, "ns": 11040927},
            "compute_output": {"count": 1, "ns": 960733},
        },
        {
            "batch_size": 10,
            "compute_input": {"count": 1, "ns": 54351},
            "compute_infer": {"count": 1, "ns": 13168561},
            "compute_output": {"count": 1, "ns": 1073891},
        },
    ],
    "memory_usage": [],
}
"""The same after the 40 requests: 40 inferences in 10 executions (average batch 4)."""

METRICS_AFTER = """\
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="minilm_embed",version="1"} 40
nv_inference_request_success{model="textprep_7a66210452c9",version="1"} 40
nv_inference_request_success{model="minilm_embed_v1_model",version="1"} 40
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="minilm_embed",reason="OTHER",version="1"} 0
nv_inference_request_failure{model="minilm_embed",reason="CANCELED",version="1"} 0
nv_inference_request_failure{model="minilm_embed",reason="REJECTED",version="1"} 0
nv_inference_request_failure{model="textprep_7a66210452c9",reason="BACKEND",version="1"} 0
nv_inference_request_failure{model="textprep_7a66210452c9",reason="OTHER",version="1"} 0
nv_inference_request_failure{model="textprep_7a66210452c9",reason="CANCELED",version="1"} 0
nv_inference_request_failure{model="minilm_embed_v1_model",reason="OTHER",version="1"} 0
nv_inference_request_failure{model="textprep_7a66210452c9",reason="REJECTED",version="1"} 0
nv_inference_request_failure{model="minilm_embed_v1_model",reason="BACKEND",version="1"} 0
nv_inference_request_failure{model="minilm_embed",reason="BACKEND",version="1"} 0
nv_inference_request_failure{model="minilm_embed_v1_model",reason="CANCELED",version="1"} 0
nv_inference_request_failure{model="minilm_embed_v1_model",reason="REJECTED",version="1"} 0
# TYPE nv_inference_count counter
nv_inference_count{model="minilm_embed",version="1"} 40
nv_inference_count{model="textprep_7a66210452c9",version="1"} 40
nv_inference_count{model="minilm_embed_v1_model",version="1"} 40
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{model="minilm_embed",version="1"} 40
nv_inference_exec_count{model="textprep_7a66210452c9",version="1"} 19
nv_inference_exec_count{model="minilm_embed_v1_model",version="1"} 10
# TYPE nv_inference_request_duration_us counter
nv_inference_request_duration_us{model="minilm_embed",version="1"} 1447090
nv_inference_request_duration_us{model="textprep_7a66210452c9",version="1"} 804388
nv_inference_request_duration_us{model="minilm_embed_v1_model",version="1"} 681620
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="minilm_embed",version="1"} 17
nv_inference_queue_duration_us{model="textprep_7a66210452c9",version="1"} 694735
nv_inference_queue_duration_us{model="minilm_embed_v1_model",version="1"} 147883
# TYPE nv_inference_compute_input_duration_us counter
nv_inference_compute_input_duration_us{model="minilm_embed",version="1"} 3986
nv_inference_compute_input_duration_us{model="textprep_7a66210452c9",version="1"} 2606
nv_inference_compute_input_duration_us{model="minilm_embed_v1_model",version="1"} 1369
# TYPE nv_inference_compute_infer_duration_us counter
nv_inference_compute_infer_duration_us{model="minilm_embed",version="1"} 561179
nv_inference_compute_infer_duration_us{model="textprep_7a66210452c9",version="1"} 55804
nv_inference_compute_infer_duration_us{model="minilm_embed_v1_model",version="1"} 505353
# TYPE nv_inference_compute_output_duration_us counter
nv_inference_compute_output_duration_us{model="minilm_embed",version="1"} 77797
nv_inference_compute_output_duration_us{model="textprep_7a66210452c9",version="1"} 51041
nv_inference_compute_output_duration_us{model="minilm_embed_v1_model",version="1"} 26730
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="minilm_embed",version="1"} 0
nv_inference_pending_request_count{model="textprep_7a66210452c9",version="1"} 0
nv_inference_pending_request_count{model="minilm_embed_v1_model",version="1"} 0
# TYPE nv_pinned_memory_pool_total_bytes gauge
nv_pinned_memory_pool_total_bytes 0
# TYPE nv_pinned_memory_pool_used_bytes gauge
nv_pinned_memory_pool_used_bytes 0
# TYPE nv_cpu_utilization gauge
nv_cpu_utilization 0
# TYPE nv_cpu_memory_total_bytes gauge
nv_cpu_memory_total_bytes 0
# TYPE nv_cpu_memory_used_bytes gauge
nv_cpu_memory_used_bytes 0
"""
"""`GET /metrics` (Prometheus text) after the 40 requests, its `# HELP` lines left out."""

METRICS_FRESH = "\n".join(
    line if line.startswith("#") else re.sub(r" \d+$", " 0", line) for line in METRICS_AFTER.split("\n")
)
"""`GET /metrics` right after loading: the same lines, every counter 0 (as recorded)."""


def stats_answer(stats: dict[str, Any]) -> str:
    """The body of `GET /v2/models/<model>/stats` holding one model's statistics."""
    return json.dumps({"model_stats": [stats]})


def replay(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    """Make `urllib.request.urlopen(url)` answer each URL of `answers` with its bodies in turn
    (any other URL, or one asked once too often, fails the test); returns the URLs asked."""
    asked: list[str] = []

    def urlopen(url: str, timeout: float | None = None) -> io.BytesIO:
        asked.append(url)
        bodies = answers.get(url)
        if not bodies:
            raise AssertionError(f"unexpected request: {url}")
        return io.BytesIO(bodies.pop(0).encode())

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return asked
