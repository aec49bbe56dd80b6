"""TorchScript, served by Triton's `pytorch` (libtorch) backend (local: the Python-based stand-in).

Thread parameters on NVIDIA's r24.10 pytorch backend (docs/ngc-standin.md): `INTER_OP_THREAD_COUNT`
calls `at::set_num_interop_threads` at every model load and a second call in one process
aborts the server, so it is never emitted (libtorch keeps its default); `INTRA_OP_THREAD_COUNT`
calls `at::set_num_threads`, process-wide, so every TorchScript model of a repository gets the
same count (`process_wide_threads`; `tritongen check` enforces both).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generator.base.footprint import Footprint
from generator.base.tensors import dims_agree
from generator.kinds.builders.base import ClassifierHead
from generator.kinds.formats.base import InferenceFormat
from generator.kinds.formats.onnx import sample_padded_inputs

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2 as mc

STANDIN_MEMORY: dict[str | None, Footprint] = {
    None: Footprint(
        267.0,
        "PSS of the shipped spec's torchscript inference stubs in the Kubernetes pod (baked local image, "
        "2 cores, every entry point answered over HTTP and gRPC; tests/integration/test_k8s_pod.py, "
        "2026-12-01); not measured on NVIDIA's pytorch backend: counted at this figure there too",
    ),
}
"""One instance of the torchscript formats on the `local` stand-in (full precision only)."""


class TorchScript(InferenceFormat):
    name = "torchscript"
    filename = "model.pt"
    backend = "pytorch"
    process_wide_threads = True
    classifiers = False
    ragged_variant = "torchscript_ragged"
    standin_memory = STANDIN_MEMORY

    def tensor_names(self, model_kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        # The native pytorch backend's `<name>__<index>` convention.
        return ("INPUT_IDS__0", "ATTENTION_MASK__1"), ("EMBEDDING__0",)

    def parameters(self, threads: int) -> dict[str, str]:
        return {"INTRA_OP_THREAD_COUNT": str(threads), "DISABLE_OPTIMIZED_EXECUTION": "false"}

    def check(self, path: Path, config: mc.ModelConfig) -> list[str]:
        return check_torchscript(path, config)

    def export_module(self, module: Any, output: Path, head: ClassifierHead | None) -> None:
        if head is not None:
            raise ValueError(f"{self.name} cannot return the string label of a classifier")
        export_torchscript(module, sample_padded_inputs(), output)


def export_torchscript(module: Any, sample: tuple[Any, ...], output: Path) -> None:
    """Trace `module` on `sample`, freeze it and write it with deterministic bytes."""
    import torch

    # Fresh TorchScript type state, so class names are not mangled by earlier exports.
    torch.jit._state._python_cu = torch._C.CompilationUnit()
    torch.jit._recursive.concrete_type_store = torch.jit._recursive.ConcreteTypeStore()
    with torch.no_grad():
        traced = torch.jit.trace(module, sample, check_trace=False, strict=False)
    frozen = torch.jit.freeze(traced.eval())
    buffer = io.BytesIO()
    torch.jit.save(frozen, buffer)
    output.write_bytes(deterministic_archive(buffer.getvalue()))


def deterministic_archive(archive: bytes) -> bytes:
    """Rewrite a TorchScript zip so that identical models give identical bytes.

    torch writes a random `.data/serialization_id`, replaced by one derived from the content,
    and `*.debug_pkl` source maps that record the Python call stack (paths of the checkout),
    which are dropped: they only enrich error messages and the loader does not need them.
    """
    source = zipfile.ZipFile(io.BytesIO(archive))
    entries = [(info, source.read(info)) for info in source.infolist() if not info.filename.endswith(".debug_pkl")]
    digest = hashlib.sha256()
    for info, data in entries:
        if not info.filename.endswith(".data/serialization_id"):
            digest.update(info.filename.encode() + data)
    stable_id = str(int(digest.hexdigest(), 16))[:40].encode()
    result = io.BytesIO()
    with zipfile.ZipFile(result, "w") as rewritten:
        for info, data in entries:
            copy = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            copy.compress_type = info.compress_type
            rewritten.writestr(copy, stable_id if info.filename.endswith(".data/serialization_id") else data)
    return result.getvalue()


def check_torchscript(path: Path, config: mc.ModelConfig) -> list[str]:
    """Load the TorchScript file and run a sample batch; check output count and dims."""
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")
        sample = list(sample_padded_inputs())[: len(config.input)]
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
