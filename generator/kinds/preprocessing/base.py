"""What every preprocessing kind is, and the spec settings every kind shares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field

from generator.base.footprint import Footprint
from generator.base.sources import Source, StrictModel
from generator.base.tensors import TensorPlan


class PreprocessingSettings(StrictModel):
    """Preprocessing of one model version: the fields every kind has (a kind adds its own)."""

    kind: str
    """Preprocessing kind (`generator/kinds/preprocessing/`): `textprep` runs the versioned
    `tritongen-textprep` tokenizer package in the python backend."""
    package_version: str = Field(default="1.0.0", pattern=r"^\d+\.\d+\.\d+$")
    """Version of the `tritongen-textprep` package this model version was trained with; its
    environment may pin a later minor version of the same major one, which tokenizes what the
    earlier one did alike (1.1.0, which adds (query, text) pairs, runs 1.0.0's models)."""
    environment: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_.-]*$")
    """Execution environment (`envs/<name>.yml`, conda-packed); None runs in the server's own Python."""
    environment_format: Literal["tarball", "folder"] = "tarball"
    """`tarball`: the conda-pack .tar.gz (Triton extracts it at load); `folder`: shipped unpacked
    (faster load, larger repository)."""
    ship_stub: bool = False
    """Allow an environment whose Python differs from the target server's stub: the stub of the
    environment's Python (from nvidia-pytriton) is then placed in the model folder."""
    tokenizer: Source
    """The `tokenizer.json` file (tokenizers format)."""
    max_length: int = Field(ge=1, le=8192)
    """Tokens per text, special tokens included (longer texts are truncated). Omit it to use the
    model's own length: for a sentence-transformers model (builders `sentence_embedding`,
    `prototype_classifier`) its `max_seq_length`, what sentence-transformers truncates at; for a
    `transformers_classifier` checkpoint the tokens its model takes (`max_position_embeddings`,
    minus 2 for RoBERTa, XLM-RoBERTa and MPNet), at most its tokenizer's `model_max_length`
    (`tokenizer_config.json`). A lower value is a deliberate deviation from the model (say so in
    the spec); a higher one than the model takes is an error. Required for `file` builds."""


Layout = Literal["text", "pairs", "rerank"]
"""What a preprocessing model's requests hold: `text` (TEXT [batch, 1]), `pairs` (QUERY and TEXT
[batch, 1], a reranker's `<name>`) or `rerank` (one QUERY [1] and TEXT [n], no batching: a
reranker's `<name>_rerank`)."""


class PreprocessingKind(ABC):
    """One preprocessing kind (subclasses are stateless singletons)."""

    name: ClassVar[str]
    """The spec's `preprocessing.kind` value."""
    settings: ClassVar[type[PreprocessingSettings]]
    """The pydantic model of its `preprocessing` section (its `kind` field is `Literal[name]`)."""
    backend: ClassVar[str]
    """Triton backend of the preprocessing model (one of NVIDIA's image)."""
    package: ClassVar[str]
    """Distribution name of the versioned package the model runs, pinned in its environment."""
    memory: ClassVar[Footprint]
    """Memory of one instance: a python-backend stub process on every target (NVIDIA's image runs
    python models in stubs too), counted in the repository's expected memory."""

    layouts: ClassVar[tuple[Layout, ...]] = ("text",)
    """The request layouts it can take (`Layout`)."""

    @abstractmethod
    def inputs(self, layout: Layout = "text") -> tuple[TensorPlan, ...]:
        """The client-facing inputs (the ensemble's inputs)."""

    @abstractmethod
    def outputs(self, settings: Any, layout: Layout = "text") -> tuple[TensorPlan, ...]:
        """Tensors handed to the inference model, in the order of its inputs."""

    @abstractmethod
    def parameters(self, settings: Any, layout: Layout = "text", max_texts: int = 0) -> dict[str, str]:
        """The model config's parameters for one version's preprocessing settings (`max_texts`:
        a `rerank` request's most texts)."""

    def layout_problem(self, settings: Any, layout: Layout) -> str | None:
        """Why this version's preprocessing cannot take `layout` requests (starting with the
        field, `preprocessing...: `), or None."""
        if layout not in self.layouts:
            return f"preprocessing.kind: {self.name} takes {', '.join(self.layouts)} requests, not {layout}"
        return None

    def runs_on(self, made_with: str, installed: str) -> bool:
        """Whether a model made with `package_version` `made_with` runs on the package version an
        environment pins (default: only the same)."""
        return made_with == installed

    @abstractmethod
    def model_code(self) -> str:
        """Text of the version folder's `model.py` (python backend)."""

    @abstractmethod
    def version_files(self, settings: Any) -> Mapping[str, Source]:
        """Artifacts of the version folder: file name -> spec source (resolved by the pipeline)."""

    def unpadded(self, settings: Any) -> bool:
        """Whether the tensors carry each request's tokens unpadded (ragged formats need it)."""
        return False

    @abstractmethod
    def tokenize_padded(self, texts: list[str], settings: Any) -> tuple[Any, Any]:
        """`texts` as the server's model would tokenize them, padded to the longest: int64
        `input_ids` and `attention_mask` arrays [texts, tokens] (builders and gates run them)."""

    def tokenize_pairs(self, pairs: list[tuple[str, str]], settings: Any) -> tuple[Any, Any, Any]:
        """(query, text) pairs as the server's pair model tokenizes them, padded to the longest:
        int64 `input_ids`, `attention_mask` and `token_type_ids` [pairs, tokens]."""
        raise NotImplementedError(f"preprocessing kind {self.name} does not tokenize pairs")

    def sample_texts(self, settings: Any, count: int, seed: int) -> list[str]:
        """`count` seeded inputs to measure with when the user gives none (`tritongen tune`)."""
        raise NotImplementedError(f"preprocessing kind {self.name} cannot make sample texts")

    def token_lengths(self, settings: Any, texts: list[str]) -> list[int]:
        """Tokens per text as the model sees them (truncated), to choose padding buckets (`tune`)."""
        raise NotImplementedError(f"preprocessing kind {self.name} does not count tokens")
