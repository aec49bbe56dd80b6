"""TorchScript, served by Triton's `pytorch` (libtorch) backend (local: the Python-based stand-in).

Thread parameters on NVIDIA's r24.10 pytorch backend (../shared/FACTS.md): `INTER_OP_THREAD_COUNT`
calls `at::set_num_interop_threads` at every model load and a second call in one process
aborts the server, so it is never emitted (libtorch keeps its default); `INTRA_OP_THREAD_COUNT`
calls `at::set_num_threads`, process-wide, so every TorchScript model of a repository gets the
same count (`process_wide_threads`; `tritongen check` enforces both).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from generator.kinds.formats import InferenceFormat

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2 as mc


class TorchScript(InferenceFormat):
    name = "torchscript"
    filename = "model.pt"
    backend = "pytorch"
    process_wide_threads = True
    classifiers = False
    ragged_variant = "torchscript_ragged"

    def tensor_names(self, model_kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        # The native pytorch backend's `<name>__<index>` convention.
        return ("INPUT_IDS__0", "ATTENTION_MASK__1"), ("EMBEDDING__0",)

    def parameters(self, threads: int) -> dict[str, str]:
        return {"INTRA_OP_THREAD_COUNT": str(threads), "DISABLE_OPTIMIZED_EXECUTION": "false"}

    def check(self, path: Path, config: mc.ModelConfig) -> list[str]:
        return check_torchscript(path, config)


def check_torchscript(path: Path, config: mc.ModelConfig) -> list[str]:
    """Load the TorchScript file and run a sample batch; check output count and dims."""
    import torch

    from generator.pipeline.checks import dims_agree

    try:
        module = torch.jit.load(str(path), map_location="cpu")
        ids = torch.tensor([[101, 2023, 2003, 102], [101, 7592, 102, 0]], dtype=torch.int64)
        sample = [ids, (ids != 0).to(torch.int64)][: len(config.input)]
        with torch.inference_mode():
            result = module(*sample)
    except Exception as error:  # torch raises many error types on load/run
        return [f"{config.name}: TorchScript file {path} does not load and run: {error}"]
    results = (result,) if isinstance(result, torch.Tensor) else tuple(result)
    if len(results) != len(config.output):
        return [f"{config.name}: TorchScript returns {len(results)} outputs, config declares {len(config.output)}"]
    problems = []
    for tensor, output in zip(config.output, results, strict=True):
        if not dims_agree(tuple(output.shape[1:]), tuple(tensor.dims)) or output.shape[0] != 2:
            problems.append(
                f"{config.name}: output {tensor.name!r} has shape {list(output.shape)} for a batch "
                f"of 2, config declares {list(tensor.dims)}"
            )
    return problems
