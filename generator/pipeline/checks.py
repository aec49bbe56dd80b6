"""Offline validation of a model repository (rendered text plus built artifacts).

`check_configs` works on config text alone: every `config.pbtxt` parses into Triton's
`ModelConfig`, names match folders, and every ensemble is wired step to step with agreeing
tensor names, data types and dims. `check_artifacts` opens the model files the manifest lists:
every one is there, and each inference model's file, in the manifest's format, matches its config
(ONNX graph inputs/outputs, the TorchScript file loads and runs a sample batch).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from generator.base.tensors import dims_agree, type_name
from generator.errors import TritongenError
from generator.kinds.formats import UnknownFormatError, get_format
from generator.kinds.targets import NATIVE_BACKENDS
from generator.pipeline.manifest import Manifest
from generator.pipeline.plan import TRITON_VERSION_DIR


class CheckError(TritongenError, ValueError):
    """The repository is invalid; the message lists every problem found."""


def parse_config(text: str, where: str) -> mc.ModelConfig:
    """Parse `config.pbtxt` text into a ModelConfig, or raise naming the file and the cause."""
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise CheckError(f"{where}: not a valid Triton ModelConfig: {error}") from error
    return config


TensorType = tuple[int, tuple[int, ...], tuple[int, ...]]
"""A tensor's data type, dims, and full dims (with the batch dimension of a batching model)."""


def _tensor_types(tensors: Iterable[mc.ModelInput | mc.ModelOutput], batching: bool) -> dict[str, TensorType]:
    return {t.name: (t.data_type, tuple(t.dims), ((-1,) if batching else ()) + tuple(t.dims)) for t in tensors}


def _shapes_agree(want: TensorType, have: TensorType) -> bool:
    """Triton's ensemble rule: the dims agree, or the full dims do (a tensor between a model
    without batching, [-1, d...], and a batching one, [d...])."""
    return dims_agree(want[1], have[1]) or dims_agree(want[2], have[2])


def check_ensemble(config: mc.ModelConfig, models: Mapping[str, mc.ModelConfig]) -> list[str]:
    """Problems in one ensemble's wiring (names, dtypes, dims, batching), as messages."""
    problems = []
    where = f"{config.name}/config.pbtxt"
    available = _tensor_types(config.input, config.max_batch_size > 0)  # tensor name inside the ensemble -> type
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
        model_inputs = _tensor_types(model.input, model.max_batch_size > 0)
        for model_input, source in step.input_map.items():
            if model_input not in model_inputs:
                problems.append(f"{at}: {step.model_name} has no input {model_input!r}")
            elif source not in available:
                problems.append(f"{at}: input {model_input!r} reads {source!r}, which no earlier step produces")
            else:
                want, have = model_inputs[model_input], available[source]
                if want[0] != have[0]:
                    problems.append(
                        f"{at}: input {model_input!r} is {type_name(want[0])} but {source!r} is {type_name(have[0])}"
                    )
                elif not _shapes_agree(want, have):
                    problems.append(
                        f"{at}: input {model_input!r} has dims {list(want[1])} but {source!r} has {list(have[1])}"
                    )
        missing = set(model_inputs) - set(step.input_map)
        if missing:
            problems.append(f"{at}: inputs {sorted(missing)} of {step.model_name} are not mapped")
        model_outputs = _tensor_types(model.output, model.max_batch_size > 0)
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
            declared = _tensor_types([output], config.max_batch_size > 0)[output.name]
            if have[0] != output.data_type or not _shapes_agree(declared, have):
                problems.append(
                    f"{where}: output {output.name!r} is declared {type_name(output.data_type)} "
                    f"{list(output.dims)} but its step produces {type_name(have[0])} {list(have[1])}"
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


def check_native_rules(models: Mapping[str, mc.ModelConfig]) -> None:
    """Reject configs that would fail to load, abort or be misconfigured on NVIDIA's image.

    Facts of tritonserver 24.10 with NVIDIA's native backends (docs/ngc-standin.md): only
    NVIDIA's backends exist there; the pytorch backend calls `at::set_num_interop_threads` for
    INTER_OP_THREAD_COUNT at every load, and a second call in the process aborts the server;
    INTRA_OP_THREAD_COUNT calls `at::set_num_threads`, process-wide (the last loaded wins).
    """
    problems = []
    interop = []
    intra: dict[str, list[str]] = {}
    for name, config in sorted(models.items()):
        if config.platform == "ensemble":
            continue
        if config.backend not in NATIVE_BACKENDS:
            problems.append(
                f"{name}: backend {config.backend!r} is not in NVIDIA's image ({', '.join(sorted(NATIVE_BACKENDS))}): "
                "it would fail to load with `unable to find backend library`"
            )
        for batch_input in config.batch_input:
            if batch_input.data_type not in (mc.TYPE_INT32, mc.TYPE_FP32):
                problems.append(
                    f"{name}: batch input {list(batch_input.target_name)} is {type_name(batch_input.data_type)}: "
                    "NVIDIA's backends refuse it (`batch input data type must be TYPE_INT32 or TYPE_FP32`)"
                )
        if config.backend == "pytorch":
            if "INTER_OP_THREAD_COUNT" in config.parameters:
                interop.append(name)
            if "INTRA_OP_THREAD_COUNT" in config.parameters:
                intra.setdefault(config.parameters["INTRA_OP_THREAD_COUNT"].string_value, []).append(name)
    if len(interop) > 1:
        problems.append(
            f"pytorch models {', '.join(interop)} each set INTER_OP_THREAD_COUNT: NVIDIA's r24.10 pytorch backend "
            "calls at::set_num_interop_threads at every load and the second call aborts the whole server"
        )
    if len(intra) > 1:
        detail = "; ".join(f"{value}: {', '.join(names)}" for value, names in sorted(intra.items()))
        problems.append(
            f"pytorch models set different INTRA_OP_THREAD_COUNT ({detail}): it is process-wide on NVIDIA's "
            "backend (the last loaded model wins), so the CPU plan would not hold"
        )
    if problems:
        raise CheckError("\n".join(problems))


def check_artifacts(repository: Path, models: Mapping[str, mc.ModelConfig]) -> None:
    """Check every model file the repository's manifest lists: present, and each inference
    model's file (in the manifest's format) against its config in `models`."""
    manifest = Manifest.read(repository)
    problems = []
    for name, entry in sorted(manifest.models.items()):
        version_dir = repository / name / TRITON_VERSION_DIR
        missing = [filename for filename in entry.files if not (version_dir / filename).is_file()]
        problems += [
            f"{name}: file {version_dir / filename} is missing (run `tritongen generate`)" for filename in missing
        ]
        if entry.role != "inference" or missing:
            continue
        config = models.get(name)
        if config is None:
            problems.append(f"{name}: the manifest lists it, but it has no config.pbtxt")
            continue
        try:
            inference_format = get_format(entry.format or "")
        except UnknownFormatError as error:
            problems.append(f"{name}: {error.args[0]}")
            continue
        problems += inference_format.check(version_dir / inference_format.filename, config)
    if problems:
        raise CheckError("\n".join(problems))


def drift(expected: Mapping[str, str], repository: Path, managed_suffixes: tuple[str, ...]) -> str:
    """Unified diff between freshly rendered files and the files on disk ('' when equal).

    Files on disk with a managed suffix that the specs no longer produce count as drift;
    built content (environments in `_envs/` folders, stub caches) is not generated text.
    """
    chunks = []
    on_disk = (
        {
            str(p.relative_to(repository)): p
            for p in repository.rglob("*")
            if p.is_file()
            and p.name.endswith(managed_suffixes)
            and not {"_envs", "__pycache__"} & set(p.relative_to(repository).parts)
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
