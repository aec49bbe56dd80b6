"""Checks that a served Triton restricts its admin APIs to the admin key (HTTP and gRPC).

Shared by the container tests of the deploy files and the Kubernetes pod test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from generator.base.launch import ADMIN_HEADER, GRPC_ADMIN_HEADER

WRONG_KEY = "wrong-key-0123456789abcdef"
MODEL = "minilm_embed"


def _admin_calls(http: Any, grpc: Any) -> dict[str, tuple[Callable[[dict[str, str]], Any], ...]]:
    """Admin calls over (HTTP, gRPC), by what they touch; none changes the server when refused."""
    return {
        "repository index": (
            lambda h: http.get_model_repository_index(headers=h),
            lambda h: grpc.get_model_repository_index(headers=h),
        ),
        "load": (lambda h: http.load_model(MODEL, headers=h), lambda h: grpc.load_model(MODEL, headers=h)),
        "unload": (lambda h: http.unload_model(MODEL, headers=h), lambda h: grpc.unload_model(MODEL, headers=h)),
        "config": (
            lambda h: http.get_model_config(MODEL, headers=h),
            lambda h: grpc.get_model_config(MODEL, headers=h),
        ),
        "statistics": (
            lambda h: http.get_inference_statistics(headers=h),
            lambda h: grpc.get_inference_statistics(headers=h),
        ),
        "logging": (lambda h: http.get_log_settings(headers=h), lambda h: grpc.get_log_settings(headers=h)),
        "trace": (lambda h: http.get_trace_settings(headers=h), lambda h: grpc.get_trace_settings(headers=h)),
        "shared memory": (
            lambda h: http.get_system_shared_memory_status(headers=h),
            lambda h: grpc.get_system_shared_memory_status(headers=h),
        ),
    }


def check_admin_restricted(http_url: str, grpc_url: str, key: str) -> None:
    """Every admin API refuses a client without the key or with a wrong one (HTTP 403, gRPC
    "restricted"), answers with the key (read-only calls only), and clients keep health,
    metadata and the model being ready without a key."""
    http = httpclient.InferenceServerClient(http_url, connection_timeout=30, network_timeout=60)
    grpc = grpcclient.InferenceServerClient(grpc_url)
    refused = []
    for label, (over_http, over_grpc) in _admin_calls(http, grpc).items():
        for headers in ({}, {ADMIN_HEADER: WRONG_KEY}):
            try:
                over_http(headers)
            except InferenceServerException as error:
                assert "403" in str(error) and "restricted" in str(error), (label, str(error))
            else:
                raise AssertionError(f"HTTP {label} answered a client without the admin key")
        for metadata in ({}, {GRPC_ADMIN_HEADER: WRONG_KEY}):
            try:
                over_grpc(metadata)
            except InferenceServerException as error:
                assert "restricted" in str(error), (label, str(error))
            else:
                raise AssertionError(f"gRPC {label} answered a client without the admin key")
        refused.append(label)
    assert http.get_model_repository_index(headers={ADMIN_HEADER: key})
    assert grpc.get_model_repository_index(headers={GRPC_ADMIN_HEADER: key}).models
    assert http.get_inference_statistics(headers={ADMIN_HEADER: key})
    assert grpc.get_model_config(MODEL, headers={GRPC_ADMIN_HEADER: key}).config.name == MODEL
    for client in (http, grpc):
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
        assert client.get_server_metadata() and client.get_model_metadata(MODEL)
    print(f"admin APIs refused without the key over HTTP and gRPC: {', '.join(refused)}")
