"""TritonPythonModel of the preprocessing models: TEXT (BYTES [batch, 1]) -> int64 tensors.

Pair models (`inputs: pairs`, since 1.1.0) take QUERY and TEXT [batch, 1] and also output
TOKEN_TYPE_IDS; rerank models (`inputs: rerank`, no batching) take one QUERY [1] and TEXT [n]
and output the n pairs' tensors [n, tokens], which the inference model's batcher batches.
With `padding: none` (since 1.2.0) pair and rerank models output each request's pairs
unpadded for ragged models: INPUT_IDS, LENGTHS and TOKEN_TYPE_IDS (`pack_pair_request`).

All texts of all requests handed to one `execute` call are tokenized in ONE `encode_batch`
call and padded to one length, so that the inference model's dynamic batcher can merge the
requests again (it only merges tensors of identical shape). A request with a bad text gets
its own error, INVALID_ARG (HTTP 400, gRPC INVALID_ARGUMENT: the client's mistake); the other
requests of the call are answered normally. A tokenizer failure is INTERNAL (the server's).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from . import __version__, runs
from .tokenize import (
    CallPairs,
    CallTexts,
    Inputs,
    Padding,
    TextError,
    TokenizerSettings,
    encode,
    encode_pairs,
    encode_pairs_unpadded,
    encode_unpadded,
    gather_pairs,
    gather_texts,
    load_tokenizer,
    pack_pair_request,
    pack_request,
)

OUTPUT_NAMES = ("INPUT_IDS", "ATTENTION_MASK")
PAIR_OUTPUT_NAMES = ("INPUT_IDS", "ATTENTION_MASK", "TOKEN_TYPE_IDS")
RAGGED_PAIR_OUTPUT_NAMES = ("INPUT_IDS", "LENGTHS", "TOKEN_TYPE_IDS")


class TritonPythonModel:
    """Tokenizer model for the python backend."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        parameters = config.get("parameters", {})
        threads = parameters.get("tokenizer_threads", {}).get("string_value", "1")
        # Rayon starts its pool lazily with one thread per core unless told otherwise.
        os.environ["RAYON_NUM_THREADS"] = threads
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "true" if threads != "1" else "false")
        import tokenizers
        import triton_python_backend_utils as pb_utils

        self._pb = pb_utils
        model_dir = os.path.join(args["model_repository"], args["model_version"])
        self.settings = TokenizerSettings.from_parameters(parameters, model_dir)
        if self.settings.package_version and not runs(self.settings.package_version, __version__):
            raise ValueError(
                f"{args['model_name']}: made with tritongen-textprep {self.settings.package_version}, but the "
                f"model's environment has {__version__}: rebuild the environment (tritongen generate)"
            )
        self.tokenizer, self.pad_id = load_tokenizer(self.settings)
        self.model_name = args["model_name"]
        pb_utils.Logger.log_info(
            f"tritongen_textprep {__version__} model={self.model_name} "
            f"tokenizers={tokenizers.__version__} tokenizers_file={tokenizers.__file__} "
            f"numpy={np.__version__} max_length={self.settings.max_length} "
            f"padding={self.settings.padding.value} casing={self.settings.casing.value}"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        pb = self._pb
        if self.settings.inputs is not Inputs.TEXT:
            return self._execute_pairs(requests)
        tensors = [pb.get_input_tensor_by_name(request, "TEXT") for request in requests]
        call = gather_texts([None if t is None else t.as_numpy() for t in tensors], self.settings.max_text_bytes)
        if self.settings.padding is Padding.NONE:
            return self._execute_unpadded(call)
        encoded = failure = None
        if call.texts:
            try:
                encoded = encode(self.tokenizer, call.texts, self.settings, self.pad_id)
            except Exception as error:  # the tokenizer's own failure: the server's fault
                failure = pb.TritonError(f"{self.model_name}: tokenization failed: {error}", pb.TritonError.INTERNAL)
        return self._responses(call.rows, OUTPUT_NAMES, encoded, failure)

    def _execute_pairs(self, requests: list[Any]) -> list[Any]:
        """Pair and rerank models: every request's (query, text) pairs in one `encode_batch` call."""
        pb = self._pb

        def array(request: Any, name: str) -> Any:
            tensor = pb.get_input_tensor_by_name(request, name)
            return None if tensor is None else tensor.as_numpy()

        call = gather_pairs([(array(r, "QUERY"), array(r, "TEXT")) for r in requests], self.settings)
        if self.settings.padding is Padding.NONE:
            return self._execute_pairs_unpadded(call)
        encoded = failure = None
        if call.pairs:
            try:
                encoded = encode_pairs(self.tokenizer, call.pairs, self.settings, self.pad_id)
            except Exception as error:  # the tokenizer's own failure: the server's fault
                failure = pb.TritonError(f"{self.model_name}: tokenization failed: {error}", pb.TritonError.INTERNAL)
        return self._responses(call.rows, PAIR_OUTPUT_NAMES, encoded, failure)

    def _responses(self, rows_per_request: Any, names: Any, encoded: Any, failure: Any) -> list[Any]:
        """One response per request: its rows of every encoded tensor, its own rejection
        (INVALID_ARG), or the tokenizer's failure (INTERNAL) when the call could not be encoded."""
        pb = self._pb
        responses = []
        for rows in rows_per_request:
            if isinstance(rows, TextError):
                rejected = pb.TritonError(f"{self.model_name}: {rows}", pb.TritonError.INVALID_ARG)
                responses.append(pb.InferenceResponse(error=rejected))
            elif encoded is None:
                responses.append(pb.InferenceResponse(error=failure))
            else:
                start, stop = rows
                outputs = [pb.Tensor(name, tensor[start:stop]) for name, tensor in zip(names, encoded)]
                responses.append(pb.InferenceResponse(output_tensors=outputs))
        return responses

    def _execute_unpadded(self, call: CallTexts) -> list[Any]:
        """Ragged models: each request's tokens unpadded (`pack_request`), as INPUT_IDS and LENGTHS."""
        pb = self._pb
        token_ids: list[list[int]] = []
        failure = None
        if call.texts:
            try:
                token_ids = encode_unpadded(self.tokenizer, call.texts)
            except Exception as error:  # the tokenizer's own failure: the server's fault
                failure = pb.TritonError(f"{self.model_name}: tokenization failed: {error}", pb.TritonError.INTERNAL)
        responses = []
        for rows in call.rows:
            if isinstance(rows, TextError):
                rejected = pb.TritonError(f"{self.model_name}: {rows}", pb.TritonError.INVALID_ARG)
                responses.append(pb.InferenceResponse(error=rejected))
            elif failure is not None:
                responses.append(pb.InferenceResponse(error=failure))
            else:
                input_ids, lengths = pack_request(token_ids[rows[0] : rows[1]], self.pad_id)
                outputs = [pb.Tensor("INPUT_IDS", input_ids), pb.Tensor("LENGTHS", lengths)]
                responses.append(pb.InferenceResponse(output_tensors=outputs))
        return responses

    def _execute_pairs_unpadded(self, call: CallPairs) -> list[Any]:
        """Ragged rerankers: each request's pairs unpadded (`pack_pair_request`), as INPUT_IDS,
        LENGTHS and TOKEN_TYPE_IDS."""
        pb = self._pb
        token_ids: list[list[int]] = []
        type_ids: list[list[int]] = []
        failure = None
        if call.pairs:
            try:
                token_ids, type_ids = encode_pairs_unpadded(self.tokenizer, call.pairs)
            except Exception as error:  # the tokenizer's own failure: the server's fault
                failure = pb.TritonError(f"{self.model_name}: tokenization failed: {error}", pb.TritonError.INTERNAL)
        responses = []
        for rows in call.rows:
            if isinstance(rows, TextError):
                rejected = pb.TritonError(f"{self.model_name}: {rows}", pb.TritonError.INVALID_ARG)
                responses.append(pb.InferenceResponse(error=rejected))
            elif failure is not None:
                responses.append(pb.InferenceResponse(error=failure))
            else:
                start, stop = rows
                packed = pack_pair_request(token_ids[start:stop], type_ids[start:stop], self.pad_id)
                outputs = [pb.Tensor(name, tensor) for name, tensor in zip(RAGGED_PAIR_OUTPUT_NAMES, packed)]
                responses.append(pb.InferenceResponse(output_tensors=outputs))
        return responses

    def finalize(self) -> None:
        self.tokenizer = None
