"""Python-based Triton backend `tritongen_torchscript`: runs a model's `model.pt` with torch.jit.

For the `local` target only: the embedded tritonserver (nvidia-pytriton) has no native
`pytorch` backend. It reads the same file (`<version>/model.pt`), follows the native
backend's conventions (inputs `<NAME>__<i>` passed positionally, outputs `<NAME>__<i>` taken
from the returned tuple in order) and its thread parameters (`INTRA_OP_THREAD_COUNT`,
`INTER_OP_THREAD_COUNT`). Requests with equal shapes are concatenated and run as one batch.
"""

import json
import os
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


def _parameter(config: dict[str, Any], key: str, default: str) -> str:
    return str(config.get("parameters", {}).get(key, {}).get("string_value", default))


class TritonPythonModel:
    """TorchScript on CPU with explicit thread counts."""

    def initialize(self, args: dict[str, str]) -> None:
        import torch

        config = json.loads(args["model_config"])
        nice = int(_parameter(config, "process_nice", "0"))
        if nice:
            os.nice(nice)  # a bulk instance yields the CPU to online instances under contention
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]
        intra = int(_parameter(config, "INTRA_OP_THREAD_COUNT", "1"))
        inter = int(_parameter(config, "INTER_OP_THREAD_COUNT", "1"))
        torch.set_num_threads(intra)
        try:
            torch.set_num_interop_threads(inter)
        except RuntimeError:  # already set in this process
            pass
        path = os.path.join(args["model_repository"], args["model_version"], "model.pt")
        self.torch = torch
        self.module = torch.jit.load(path, map_location="cpu").eval()
        pb_utils.Logger.log_info(
            f"tritongen_torchscript model={args['model_name']} torch={torch.__version__} "
            f"intra_op={intra} inter_op={inter}"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        torch = self.torch
        inputs = [
            [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.input_names] for r in requests
        ]
        responses: list[Any] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for index, arrays in enumerate(inputs):
            groups.setdefault(tuple(a.shape[1:] for a in arrays), []).append(index)
        for members in groups.values():
            batch = [
                torch.from_numpy(np.concatenate([inputs[i][k] for i in members])) for k in range(len(self.input_names))
            ]
            try:
                with torch.inference_mode():
                    results = self.module(*batch)
            except Exception as error:  # TorchScript raises torch.jit errors
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"torchscript failed: {error}")
                    )
                continue
            if isinstance(results, torch.Tensor):
                results = (results,)
            arrays = [result.numpy() for result in results]
            start = 0
            for i in members:
                stop = start + inputs[i][0].shape[0]
                tensors = [
                    pb_utils.Tensor(name, np.ascontiguousarray(array[start:stop]))
                    for name, array in zip(self.output_names, arrays)
                ]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                start = stop
        return responses
