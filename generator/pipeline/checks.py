"""Offline validation of a model repository (rendered text plus built artifacts).

`check_configs` works on config text alone: every `config.pbtxt` parses into Triton's
`ModelConfig`, names match folders, and every ensemble is wired step to step with agreeing
tensor names, data types and dims. `check_artifacts` opens the model files: ONNX graph
inputs/outputs match the config, the TorchScript file loads and runs a sample batch.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc


class CheckError(ValueError):
    """The repository is invalid; the message lists every problem found."""


def parse_config(text: str, where: str) -> mc.ModelConfig:
    """Parse `config.pbtxt` text into a ModelConfig, or raise naming the file and the cause."""
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise CheckError(f"{where}: not a valid Triton ModelConfig: {error}") from error
    return config


def _tensor_types(tensors: object) -> dict[str, tuple[int, tuple[int, ...]]]:
    return {t.name: (t.data_type, tuple(t.dims)) for t in tensors}  # type: ignore[attr-defined]


def _dims_agree(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b, strict=True))


def _type_name(data_type: int) -> str:
    return str(mc.DataType.Name(data_type))


def check_ensemble(config: mc.ModelConfig, models: Mapping[str, mc.ModelConfig]) -> list[str]:
    """Problems in one ensemble's wiring (names, dtypes, dims, batching), as messages."""
    problems = []
    where = f"{config.name}/config.pbtxt"
    available = _tensor_types(config.input)  # tensor name inside the ensemble -> type
    for index, step in enumerate(config.ensemble_scheduling.step):
        at = f"{where}: step {index} ({step.model_name})"
        model = models.get(step.model_name)
        if model is None:
            problems.append(f"{at}: model {step.model_name!r} is not in the repository")
            continue
        if model.max_batch_size < config.max_batch_size:
            problems.append(
                f"{at}: max_batch_size {model.max_batch_size} is below the ensemble's {config.max_batch_size}"
            )
        model_inputs = _tensor_types(model.input)
        for model_input, source in step.input_map.items():
            if model_input not in model_inputs:
                problems.append(f"{at}: {step.model_name} has no input {model_input!r}")
            elif source not in available:
                problems.append(f"{at}: input {model_input!r} reads {source!r}, which no earlier step produces")
            else:
                want, have = model_inputs[model_input], available[source]
                if want[0] != have[0]:
                    problems.append(
                        f"{at}: input {model_input!r} is {_type_name(want[0])} but {source!r} is {_type_name(have[0])}"
                    )
                elif not _dims_agree(want[1], have[1]):
                    problems.append(
                        f"{at}: input {model_input!r} has dims {list(want[1])} but {source!r} has {list(have[1])}"
                    )
        missing = set(model_inputs) - set(step.input_map)
        if missing:
            problems.append(f"{at}: inputs {sorted(missing)} of {step.model_name} are not mapped")
        model_outputs = _tensor_types(model.output)
        for model_output, target in step.output_map.items():
            if model_output not in model_outputs:
                problems.append(f"{at}: {step.model_name} has no output {model_output!r}")
            else:
                available[target] = model_outputs[model_output]
    for output in config.output:
        if output.name not in available:
            problems.append(f"{where}: output {output.name!r} is produced by no step")
        else:
            have = available[output.name]
            if have[0] != output.data_type or not _dims_agree(have[1], tuple(output.dims)):
                problems.append(
                    f"{where}: output {output.name!r} is declared {_type_name(output.data_type)} "
                    f"{list(output.dims)} but its step produces {_type_name(have[0])} {list(have[1])}"
                )
    return problems


def check_configs(files: Mapping[str, str]) -> dict[str, mc.ModelConfig]:
    """Parse and cross-check every `<model>/config.pbtxt` of `files` (path -> text)."""
    problems: list[str] = []
    models: dict[str, mc.ModelConfig] = {}
    for path, text in sorted(files.items()):
        if not path.endswith("/config.pbtxt"):
            continue
        folder = path.split("/")[0]
        try:
            config = parse_config(text, path)
        except CheckError as error:
            problems.append(str(error))
            continue
        if config.name != folder:
            problems.append(f"{path}: name {config.name!r} differs from its folder {folder!r}")
        if not config.backend and not config.platform:
            problems.append(f"{path}: neither backend nor platform is set")
        for group in config.instance_group:
            if group.kind != mc.ModelInstanceGroup.KIND_CPU:
                problems.append(f"{path}: instance group {group.name!r} is not KIND_CPU")
        models[folder] = config
    for config in models.values():
        if config.platform == "ensemble":
            problems += check_ensemble(config, models)
    if problems:
        raise CheckError("\n".join(problems))
    return models


ONNX_TYPES = {1: "TYPE_FP32", 7: "TYPE_INT64", 8: "TYPE_STRING", 6: "TYPE_INT32", 11: "TYPE_FP64"}


def check_onnx(path: Path, config: mc.ModelConfig) -> list[str]:
    """Problems between an ONNX graph's inputs/outputs and the model config."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    problems = []
    for kind, declared, actual in (
        ("input", config.input, [i for i in graph.input if i.name not in initializers]),
        ("output", config.output, list(graph.output)),
    ):
        graph_tensors = {t.name: t for t in actual}
        if set(graph_tensors) != {t.name for t in declared}:
            problems.append(
                f"{config.name}: config {kind}s {sorted(t.name for t in declared)} differ from the "
                f"ONNX graph's {sorted(graph_tensors)} ({path})"
            )
            continue
        for tensor in declared:
            info = graph_tensors[tensor.name].type.tensor_type
            onnx_type = ONNX_TYPES.get(info.elem_type, f"onnx type {info.elem_type}")
            if onnx_type != _type_name(tensor.data_type):
                problems.append(
                    f"{config.name}: {kind} {tensor.name!r} is {_type_name(tensor.data_type)} in "
                    f"the config but {onnx_type} in the ONNX graph"
                )
            graph_dims = [d.dim_value if d.HasField("dim_value") else -1 for d in info.shape.dim]
            expected = [-1] + list(tensor.dims) if config.max_batch_size > 0 else list(tensor.dims)
            if not _dims_agree(tuple(graph_dims), tuple(expected)):
                problems.append(
                    f"{config.name}: {kind} {tensor.name!r} has dims {expected} (with batch) in "
                    f"the config but {graph_dims} in the ONNX graph"
                )
    return problems


def check_torchscript(path: Path, config: mc.ModelConfig) -> list[str]:
    """Load the TorchScript file and run a sample batch; check output count and dims."""
    import torch

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
        if not _dims_agree(tuple(output.shape[1:]), tuple(tensor.dims)) or output.shape[0] != 2:
            problems.append(
                f"{config.name}: output {tensor.name!r} has shape {list(output.shape)} for a batch "
                f"of 2, config declares {list(tensor.dims)}"
            )
    return problems


def check_artifacts(repository: Path, models: Mapping[str, mc.ModelConfig]) -> None:
    """Check every model file in `repository` against its config."""
    problems = []
    for name, config in sorted(models.items()):
        if config.platform == "ensemble":
            continue
        version_dir = repository / name / "1"
        if config.default_model_filename:
            path = version_dir / config.default_model_filename
            if not path.is_file():
                problems.append(f"{name}: model file {path} is missing (run `tritongen generate`)")
            elif path.suffix == ".onnx":
                problems += check_onnx(path, config)
            elif path.suffix == ".pt":
                problems += check_torchscript(path, config)
        tokenizer = config.parameters.get("tokenizer_file")
        if tokenizer is not None and not (version_dir / tokenizer.string_value).is_file():
            problems.append(f"{name}: tokenizer file {version_dir / tokenizer.string_value} is missing")
    if problems:
        raise CheckError("\n".join(problems))


def drift(expected: Mapping[str, str], repository: Path, managed_suffixes: tuple[str, ...]) -> str:
    """Unified diff between freshly rendered files and the files on disk ('' when equal).

    Files on disk with a managed suffix that the specs no longer produce count as drift.
    """
    chunks = []
    on_disk = (
        {
            str(p.relative_to(repository)): p
            for p in repository.rglob("*")
            if p.is_file() and (p.name.endswith(managed_suffixes))
        }
        if repository.is_dir()
        else {}
    )
    for path in sorted(set(expected) | set(on_disk)):
        want = expected.get(path)
        have = on_disk[path].read_text(encoding="utf-8") if path in on_disk else None
        if want == have:
            continue
        chunks.append(
            "".join(
                difflib.unified_diff(
                    (have or "").splitlines(keepends=True),
                    (want or "").splitlines(keepends=True),
                    fromfile=f"repository/{path}" + ("" if have is not None else " (missing)"),
                    tofile=f"generated/{path}" + ("" if want is not None else " (not generated)"),
                )
            )
            or f"{path}: differs\n"
        )
    return "".join(chunks)
