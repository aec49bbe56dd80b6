"""Python-based Triton backend `tritongen_onnxruntime`: runs a model's `model.onnx` with onnxruntime.

For the `local` target only: the embedded tritonserver (nvidia-pytriton) has no native
`onnxruntime` backend. It reads the same file (`<version>/model.onnx`) and the same thread
parameters (`intra_op_thread_count`, `inter_op_thread_count`) as Triton's native backend.
Requests handed over by the dynamic batcher are concatenated when their shapes agree and run
as one batch, then split again.
"""

import json
import os
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


def _parameter(config: dict[str, Any], key: str, default: str) -> str:
    return str(config.get("parameters", {}).get(key, {}).get("string_value", default))


class TritonPythonModel:
    """onnxruntime on CPU with explicit thread counts."""

    def initialize(self, args: dict[str, str]) -> None:
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        nice = int(_parameter(config, "process_nice", "0"))
        if nice:
            os.nice(nice)  # a bulk instance yields the CPU to online instances under contention
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(_parameter(config, "intra_op_thread_count", "1"))
        options.inter_op_num_threads = int(_parameter(config, "inter_op_thread_count", "1"))
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        pb_utils.Logger.log_info(
            f"tritongen_onnxruntime model={args['model_name']} onnxruntime={ort.__version__} "
            f"intra_op={options.intra_op_num_threads} inter_op={options.inter_op_num_threads}"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        inputs = [
            [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.input_names] for r in requests
        ]
        responses: list[Any] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for index, arrays in enumerate(inputs):
            groups.setdefault(tuple(a.shape[1:] for a in arrays), []).append(index)
        for members in groups.values():
            feed = {name: np.concatenate([inputs[i][k] for i in members]) for k, name in enumerate(self.input_names)}
            try:
                results = self.session.run(self.output_names, feed)
            except Exception as error:  # onnxruntime raises its own exception types
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"onnxruntime failed: {error}")
                    )
                continue
            start = 0
            for i in members:
                stop = start + inputs[i][0].shape[0]
                tensors = [
                    pb_utils.Tensor(name, _as_output(result[start:stop]))
                    for name, result in zip(self.output_names, results)
                ]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                start = stop
        return responses


def _as_output(array: np.ndarray) -> np.ndarray:
    """String outputs come back from onnxruntime as str objects; Triton wants bytes."""
    if array.dtype == object:
        flat = [s.encode() if isinstance(s, str) else s for s in array.ravel()]
        return np.array(flat, dtype=object).reshape(array.shape)
    return np.ascontiguousarray(array)
