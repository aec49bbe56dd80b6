"""The batching core of the Python-based runners: requests -> one feed -> per-request outputs.

Pure numpy (no Triton, no framework imports), shared by `onnxruntime/model.py` and
`pytorch/model.py`; `assemble_backend_directory` copies it next to each runner (a Python-based
backend's folder is on the stub's `sys.path`). It does what Triton's native backends do with
the requests the dynamic batcher hands over (triton-inference-server/backend
`BackendInputCollector`, `BackendOutputResponder`, r24.10):

- inputs without `allow_ragged_batch` are concatenated along the batch dimension (requests
  whose shapes differ are run in separate groups; the batcher does not mix them anyway);
- an input with `allow_ragged_batch` becomes ONE 1-D tensor: every request's elements
  flattened and concatenated in request order;
- each `batch_input` is computed from its `source_input` per request (R requests):
  BATCH_ELEMENT_COUNT [R] element counts; BATCH_ACCUMULATED_ELEMENT_COUNT [R] running sums;
  BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO [R + 1] the same, starting with 0;
  BATCH_MAX_ELEMENT_COUNT_AS_SHAPE shape [max element count] (only the shape carries
  information; the native backend leaves the data unset, here zeros); BATCH_ITEM_SHAPE
  [sum of batch sizes, rank - 1], each batch item's shape without the batch dimension;
  BATCH_ITEM_SHAPE_FLATTEN the same flattened. Data type TYPE_INT32 or TYPE_FP32, else an
  error at load, as in Triton;
- outputs are split back along their first dimension by each request's batch size (the first
  dimension of its first input); a model output with too few rows fails those requests with
  the native backend's message.
"""

import re
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

KINDS = (
    "BATCH_ELEMENT_COUNT",
    "BATCH_ACCUMULATED_ELEMENT_COUNT",
    "BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO",
    "BATCH_MAX_ELEMENT_COUNT_AS_SHAPE",
    "BATCH_ITEM_SHAPE",
    "BATCH_ITEM_SHAPE_FLATTEN",
)
DATA_TYPES = {"TYPE_INT32": np.int32, "TYPE_FP32": np.float32}


class BatchingError(Exception):
    """A request or a config that cannot be batched; `code` names the Triton error code."""

    def __init__(self, message: str, code: str = "INVALID_ARG") -> None:
        super().__init__(message)
        self.code = code


class BatchInput:
    """One `batch_input` of a model config."""

    def __init__(self, kind: str, target_names: Sequence[str], data_type: str, source_input: str) -> None:
        self.kind = kind
        self.target_names = tuple(target_names)
        self.data_type = data_type
        self.source_input = source_input

    def tensor(self, sources: Sequence[np.ndarray]) -> np.ndarray:
        """The tensor for one batch, from the source input of each request, in request order."""
        dtype = DATA_TYPES[self.data_type]
        counts = [int(source.size) for source in sources]
        if self.kind == "BATCH_ELEMENT_COUNT":
            return np.array(counts, dtype=dtype)
        if self.kind == "BATCH_ACCUMULATED_ELEMENT_COUNT":
            return np.cumsum(counts, dtype=np.int64).astype(dtype)
        if self.kind == "BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO":
            return np.cumsum([0] + counts, dtype=np.int64).astype(dtype)
        if self.kind == "BATCH_MAX_ELEMENT_COUNT_AS_SHAPE":
            return np.zeros(max(counts), dtype=dtype)
        items = [np.tile(np.array(source.shape[1:], dtype=dtype), (source.shape[0], 1)) for source in sources]
        rank = max(len(source.shape) for source in sources) - 1
        shapes = np.concatenate(items) if items else np.zeros((0, rank), dtype=dtype)
        shapes = shapes.reshape(-1, rank)
        return shapes.reshape(-1) if self.kind == "BATCH_ITEM_SHAPE_FLATTEN" else shapes


def argument_order(feed_names: Sequence[str], forward_arguments: Sequence[str]) -> List[str]:
    """Feed names in the order a TorchScript `forward` takes them (the pytorch backend's naming:
    all names are `forward` arguments -> by name; all `<NAME>__<i>` -> by i; else as given)."""
    arguments = list(forward_arguments)
    if set(feed_names) <= set(arguments):
        return sorted(feed_names, key=arguments.index)
    if all(re.fullmatch(r".+__\d+", name) for name in feed_names):
        return sorted(feed_names, key=lambda name: int(name.rsplit("__", 1)[1]))
    return list(feed_names)


def _names(value: Any) -> List[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


class BatchingConfig:
    """What the core needs from a model config (the JSON Triton passes to `initialize`)."""

    def __init__(
        self,
        input_names: Sequence[str],
        output_names: Sequence[str],
        ragged: Sequence[str] = (),
        batch_inputs: Sequence[BatchInput] = (),
        max_batch_size: int = 1,
    ) -> None:
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)
        self.ragged = frozenset(ragged)
        self.batch_inputs = tuple(batch_inputs)
        self.max_batch_size = max_batch_size

    @staticmethod
    def from_model_config(config: Dict[str, Any]) -> "BatchingConfig":
        """Read and validate inputs, outputs, `allow_ragged_batch` and `batch_input`."""
        inputs = config.get("input", [])
        names = [str(tensor["name"]) for tensor in inputs]
        ragged = [str(tensor["name"]) for tensor in inputs if tensor.get("allow_ragged_batch", False)]
        max_batch_size = int(config.get("max_batch_size", 0))
        if ragged and max_batch_size == 0:
            raise BatchingError(f"ragged inputs {ragged} need a batching model (max_batch_size > 0)")
        batch_inputs = []
        for entry in config.get("batch_input", []):
            kind = str(entry.get("kind", "BATCH_ELEMENT_COUNT"))
            if kind not in KINDS:
                raise BatchingError(f"unknown batch input kind '{kind}'")
            data_type = str(entry.get("data_type", "TYPE_INVALID"))
            if data_type not in DATA_TYPES:
                raise BatchingError("batch input data type must be TYPE_INT32 or TYPE_FP32")
            targets, sources = _names(entry.get("target_name")), _names(entry.get("source_input"))
            if len(sources) != 1:
                raise BatchingError(f"batch input kind '{kind}' expects 1 source input, got {len(sources)}")
            if sources[0] not in names:
                raise BatchingError(f"unknown source input name '{sources[0]}' of batch input")
            if not targets:
                raise BatchingError(f"batch input kind '{kind}' has no target name")
            batch_inputs.append(BatchInput(kind, targets, data_type, sources[0]))
        outputs = [str(tensor["name"]) for tensor in config.get("output", [])]
        return BatchingConfig(names, outputs, ragged, batch_inputs, max_batch_size)

    @property
    def feed_names(self) -> Tuple[str, ...]:
        """Inputs, then batch-input targets: the tensors the model receives."""
        return self.input_names + tuple(t for b in self.batch_inputs for t in b.target_names)

    def groups(self, inputs: Sequence[Dict[str, np.ndarray]]) -> List[List[int]]:
        """Request indices that run as one batch: equal shapes of every non-ragged input."""
        if self.max_batch_size == 0:
            return [[index] for index in range(len(inputs))]
        groups: "OrderedDict[tuple, List[int]]" = OrderedDict()
        for index, arrays in enumerate(inputs):
            key = tuple((n, arrays[n].shape[1:]) for n in self.input_names if n not in self.ragged)
            groups.setdefault(key, []).append(index)
        return list(groups.values())

    def feed(self, inputs: Sequence[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
        """One batch's model inputs from its requests' inputs (all requests of one group)."""
        feed: Dict[str, np.ndarray] = {}
        for name in self.input_names:
            arrays = [arrays[name] for arrays in inputs]
            if name in self.ragged:
                feed[name] = np.concatenate([a.reshape(-1) for a in arrays])
            elif self.max_batch_size == 0:
                feed[name] = arrays[0]
            else:
                feed[name] = np.concatenate(arrays)
        for batch_input in self.batch_inputs:
            tensor = batch_input.tensor([arrays[batch_input.source_input] for arrays in inputs])
            for target in batch_input.target_names:
                feed[target] = tensor
        return feed

    def split(
        self, inputs: Sequence[Dict[str, np.ndarray]], outputs: Sequence[np.ndarray]
    ) -> List[Union[List[np.ndarray], BatchingError]]:
        """Each request's slice of every output (or the error that request gets)."""
        if self.max_batch_size == 0:
            return [list(outputs) for _ in inputs]
        results: List[Union[List[np.ndarray], BatchingError]] = []
        offset = 0
        first = self.input_names[0]
        for arrays in inputs:
            size = int(arrays[first].shape[0])
            sliced: Union[List[np.ndarray], BatchingError] = []
            for name, output in zip(self.output_names, outputs):
                rows = int(output.shape[0]) if output.ndim else 0
                if offset + size > rows:
                    sliced = BatchingError(
                        f"failed to split the output tensor '{name}' in responses: expected batch size "
                        f"of atleast {offset + size} in model output, got {rows}",
                        "UNSUPPORTED",
                    )
                    break
                assert isinstance(sliced, list)
                sliced.append(np.ascontiguousarray(output[offset : offset + size]))
            results.append(sliced)
            offset += size
        return results

    def execute(
        self,
        inputs: Sequence[Dict[str, np.ndarray]],
        run: Callable[[Dict[str, np.ndarray]], Sequence[np.ndarray]],
        on_error: Optional[Callable[[Exception], BatchingError]] = None,
    ) -> List[Union[List[np.ndarray], BatchingError]]:
        """Run every group of `inputs` through `run` (feed -> outputs in `output_names` order)."""
        results: List[Union[List[np.ndarray], BatchingError]] = [BatchingError("not run", "INTERNAL")] * len(inputs)
        for members in self.groups(inputs):
            group = [inputs[i] for i in members]
            try:
                outputs = run(self.feed(group))
            except BatchingError as error:
                group_results: List[Union[List[np.ndarray], BatchingError]] = [error] * len(members)
            except Exception as error:  # the framework's own exception types
                if on_error is None:
                    raise
                group_results = [on_error(error)] * len(members)
            else:
                group_results = self.split(group, outputs)
            for index, result in zip(members, group_results):
                results[index] = result
        return results


def respond(
    pb_utils: Any,
    config: BatchingConfig,
    requests: Sequence[Any],
    run: Callable[[Dict[str, np.ndarray]], Sequence[np.ndarray]],
    framework: str,
) -> List[Any]:
    """A runner's `execute`: read the requests, batch them with `config`, build responses.

    `pb_utils` is the stub's `triton_python_backend_utils` (passed in so that this module
    imports without Triton). A request lacking an input gets INVALID_ARG; a model failure
    INTERNAL, prefixed with `framework`.
    """
    responses: List[Any] = [None] * len(requests)
    readable: List[int] = []
    inputs: List[Dict[str, np.ndarray]] = []
    for index, request in enumerate(requests):
        arrays = {}
        for name in config.input_names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                responses[index] = _error_response(pb_utils, BatchingError(f"input '{name}' is missing"))
                break
            arrays[name] = tensor.as_numpy()
        else:
            readable.append(index)
            inputs.append(arrays)

    def failed(error: Exception) -> BatchingError:
        return BatchingError(f"{framework} failed: {error}", "INTERNAL")

    for index, result in zip(readable, config.execute(inputs, run, failed)):
        if isinstance(result, BatchingError):
            responses[index] = _error_response(pb_utils, result)
        else:
            tensors = [pb_utils.Tensor(name, array) for name, array in zip(config.output_names, result)]
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
    return responses


def _error_response(pb_utils: Any, error: BatchingError) -> Any:
    code = getattr(pb_utils.TritonError, error.code, pb_utils.TritonError.INTERNAL)
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error), code))
