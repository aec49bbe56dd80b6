"""Tensors as the plan and the kinds describe them: a model's inputs, outputs and batch inputs.

Data types are Triton's config names (`TYPE_INT64`, `TYPE_STRING`, ...); dims exclude the batch
dimension, -1 is a variable size.
"""

from __future__ import annotations

from dataclasses import dataclass

from tritonclient.grpc import model_config_pb2 as mc


@dataclass(frozen=True)
class TensorPlan:
    """One input or output of a Triton model (dims exclude the batch dimension)."""

    name: str
    data_type: str
    dims: tuple[int, ...]
    ragged: bool = False
    """`allow_ragged_batch`: requests of any shape batch, concatenated into one flat tensor."""


@dataclass(frozen=True)
class BatchInputPlan:
    """A tensor the backend computes from the batch (Triton's `batch_input`)."""

    kind: str
    """`BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO`, ... (`ModelConfig.BatchInput.Kind`)."""
    target: str
    data_type: str
    source: str
    """The ragged input it counts."""


def dims_agree(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Same rank, and every dim equal or variable (-1) on either side."""
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b, strict=True))


def type_name(data_type: int) -> str:
    """Triton's config name of a `DataType` value (`TYPE_FP32`)."""
    return str(mc.DataType.Name(data_type))
