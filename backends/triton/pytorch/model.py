"""Python-based Triton backend `pytorch`: runs a model's `model.pt` with torch.jit.

For the `local` target only: the embedded tritonserver (nvidia-pytriton) has no native
`pytorch` backend. It reads the same file (`<version>/model.pt`), follows the native
backend's input naming (config inputs and batch-input targets named like the `forward`
arguments are passed to them by name; otherwise `<NAME>__<i>` by index, else config order),
takes the outputs from the returned tuple in config order, reads its thread parameters
(`INTRA_OP_THREAD_COUNT`, `INTER_OP_THREAD_COUNT`) and batches requests as it does, ragged
inputs and `batch_input` included (`tritongen_batching`).
"""

import json
import os
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from tritongen_batching import BatchingConfig, argument_order, respond


def _parameter(config: dict[str, Any], key: str, default: str) -> str:
    return str(config.get("parameters", {}).get(key, {}).get("string_value", default))


class TritonPythonModel:
    """TorchScript on CPU with explicit thread counts."""

    def initialize(self, args: dict[str, str]) -> None:
        import torch

        config = json.loads(args["model_config"])
        self.batching = BatchingConfig.from_model_config(config)
        intra = int(_parameter(config, "INTRA_OP_THREAD_COUNT", "1"))
        torch.set_num_threads(intra)
        # As NVIDIA's backend: set inter-op threads only when configured (tritongen never does:
        # a second call in one process aborts the native server; `tritongen check` rejects it).
        inter_value = _parameter(config, "INTER_OP_THREAD_COUNT", "")
        if inter_value:
            torch.set_num_interop_threads(int(inter_value))
        inter = torch.get_num_interop_threads()
        path = os.path.join(args["model_repository"], args["model_version"], "model.pt")
        self.torch = torch
        self.module = torch.jit.load(path, map_location="cpu").eval()
        arguments = [a.name for a in self.module.forward.schema.arguments[1:]]
        self.arguments = argument_order(self.batching.feed_names, arguments)
        pb_utils.Logger.log_info(
            f"pytorch (Python-based) model={args['model_name']} torch={torch.__version__} "
            f"intra_op={intra} inter_op={inter} arguments={self.arguments}"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        return respond(pb_utils, self.batching, requests, self._run, "torchscript")

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            results = self.module(*[torch.from_numpy(np.ascontiguousarray(feed[name])) for name in self.arguments])
        if isinstance(results, torch.Tensor):
            results = (results,)
        return [np.ascontiguousarray(result.numpy()) for result in results]
