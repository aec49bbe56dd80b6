"""TritonPythonModel of the preprocessing models: TEXT (BYTES [batch, 1]) -> int64 tensors.

All texts of all requests handed to one `execute` call are tokenized in ONE `encode_batch`
call and padded to one length, so that the inference model's dynamic batcher can merge the
requests again (it only merges tensors of identical shape). A request with a bad text gets
its own error; the other requests of the call are answered normally.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from . import __version__
from .tokenize import TextError, TokenizerSettings, decode_texts, encode, load_tokenizer

OUTPUT_NAMES = ("INPUT_IDS", "ATTENTION_MASK")


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
        self.tokenizer, self.pad_id = load_tokenizer(self.settings)
        self.model_name = args["model_name"]
        pb_utils.Logger.log_info(
            f"tritongen_textprep {__version__} model={self.model_name} "
            f"tokenizers={tokenizers.__version__} tokenizers_file={tokenizers.__file__} "
            f"numpy={np.__version__} max_length={self.settings.max_length} "
            f"padding={self.settings.padding} lowercase={self.settings.lowercase}"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        pb = self._pb
        texts: list[str] = []
        spans: list[tuple | None] = []
        errors: list[str | None] = []
        for request in requests:
            tensor = pb.get_input_tensor_by_name(request, "TEXT")
            try:
                if tensor is None:
                    raise TextError("input TEXT is missing")
                decoded = decode_texts(tensor.as_numpy(), self.settings.max_text_bytes)
            except TextError as error:
                spans.append(None)
                errors.append(f"{self.model_name}: {error}")
                continue
            spans.append((len(texts), len(texts) + len(decoded)))
            errors.append(None)
            texts.extend(decoded)

        input_ids = attention_mask = np.zeros((0, 0), dtype=np.int64)
        if texts:
            input_ids, attention_mask = encode(self.tokenizer, texts, self.settings, self.pad_id)

        responses = []
        for span, error in zip(spans, errors):
            if span is None:
                responses.append(pb.InferenceResponse(error=pb.TritonError(error)))
                continue
            start, stop = span
            outputs = [
                pb.Tensor(OUTPUT_NAMES[0], input_ids[start:stop]),
                pb.Tensor(OUTPUT_NAMES[1], attention_mask[start:stop]),
            ]
            responses.append(pb.InferenceResponse(output_tensors=outputs))
        return responses

    def finalize(self) -> None:
        self.tokenizer = None
