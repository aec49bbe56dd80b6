"""Every entry point of the generated repository, on a real tritonserver, over HTTP and gRPC."""

from __future__ import annotations

import pytest

from . import assertions
from .assertions import Target

pytestmark = pytest.mark.integration
PROTOCOLS = ("http", "grpc")


@pytest.mark.parametrize(
    ("model", "protocol"),
    [
        # Both protocols on each format's online entry point; the bulk and pinned entry points
        # (other ensembles over the same inference model) once each, on alternating protocols.
        ("minilm_embed", "http"),
        ("minilm_embed", "grpc"),
        ("minilm_embed_batch", "grpc"),
        ("minilm_embed_v1", "http"),
        ("minilm_embed_padded", "grpc"),
        ("minilm_embed_ts", "http"),
        ("minilm_embed_ts", "grpc"),
        ("minilm_embed_ts_batch", "http"),
        ("minilm_embed_ts_v1", "grpc"),
    ],
)
def test_embeddings_match_reference(server: Target, protocol: str, model: str) -> None:
    assertions.check_embeddings(server, protocol, model)


@pytest.mark.parametrize("model", ["minilm_embed", "minilm_embed_padded", "minilm_embed_ts"])
def test_text_result_independent_of_batch(server: Target, model: str) -> None:
    assertions.check_single_texts_equal_batched(server, "http", model)


@pytest.mark.parametrize(
    ("model", "max_batch_size", "output", "protocol"),
    [
        ("minilm_embed", 16, "EMBEDDING", "http"),
        ("minilm_embed_batch", 64, "EMBEDDING", "grpc"),
        ("minilm_embed_padded", 32, "EMBEDDING", "http"),
        ("minilm_embed_ts", 32, "EMBEDDING", "grpc"),
        ("text_classifier", 32, "LABEL", "http"),
        ("text_classifier_batch", 64, "LABEL", "grpc"),
        ("text_classifier_v1", 32, "LOGITS", "grpc"),
    ],
)
def test_every_batch_size(server: Target, model: str, max_batch_size: int, output: str, protocol: str) -> None:
    assertions.check_batch_sizes(server, protocol, model, max_batch_size, output)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_classifier_versions_follow_their_own_preprocessing(server: Target, protocol: str) -> None:
    assertions.check_classifier(server, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_requests_get_clear_errors(server: Target, protocol: str) -> None:
    assertions.check_bad_requests(server, protocol)


def test_requests_without_body_or_text_say_so(server: Target) -> None:
    assertions.check_bad_http_bodies(server)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_requests_do_not_fail_valid_ones_of_the_same_call(server: Target, protocol: str) -> None:
    assertions.check_valid_requests_answered_next_to_bad_ones(server, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_ragged_classifier_version_equals_its_padded_classifier(server: Target, protocol: str) -> None:
    assertions.check_ragged_classifier_equals_padded(server, protocol)
