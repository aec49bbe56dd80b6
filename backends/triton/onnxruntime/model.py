"""Python-based Triton backend `onnxruntime`: runs a model's `model.onnx` with onnxruntime.

For the `local` target only: the embedded tritonserver (nvidia-pytriton) has no native
`onnxruntime` backend. It reads the same file (`<version>/model.onnx`) and the same thread
parameters (`intra_op_thread_count`, `inter_op_thread_count`) as Triton's native backend, and
batches requests as it does, ragged inputs and `batch_input` included (`tritongen_batching`).
"""

import json
import os
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from tritongen_batching import BatchingConfig, respond


def _parameter(config: dict[str, Any], key: str, default: str) -> str:
    return str(config.get("parameters", {}).get(key, {}).get("string_value", default))


class TritonPythonModel:
    """onnxruntime on CPU with explicit thread counts."""

    def initialize(self, args: dict[str, str]) -> None:
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        self.batching = BatchingConfig.from_model_config(config)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(_parameter(config, "intra_op_thread_count", "1"))
        options.inter_op_num_threads = int(_parameter(config, "inter_op_thread_count", "1"))
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        pb_utils.Logger.log_info(
            f"onnxruntime (Python-based) model={args['model_name']} onnxruntime={ort.__version__} "
            f"intra_op={options.intra_op_num_threads} inter_op={options.inter_op_num_threads}"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        return respond(pb_utils, self.batching, requests, self._run, "onnxruntime")

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self.session.run(list(self.batching.output_names), feed)
        return [_as_output(result) for result in results]


def _as_output(array: np.ndarray) -> np.ndarray:
    """String outputs come back from onnxruntime as str objects; Triton wants bytes."""
    if array.dtype == object:
        flat = [s.encode() if isinstance(s, str) else s for s in array.ravel()]
        return np.array(flat, dtype=object).reshape(array.shape)
    return np.ascontiguousarray(array)
