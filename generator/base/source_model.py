"""What a packaged sentence-transformers model folder defines: sequence length, pooling, normalisation.

The one source of these facts for the specs (`preprocessing.max_length` defaults to
`max_seq_length`) and for the `sentence_embedding` builder (pooling and normalisation in the
exported graph), so that served embeddings equal `SentenceTransformer(folder).encode(...)`.
Only the files are read (no sentence-transformers import): `modules.json`,
`sentence_bert_config.json` and the pooling module's `config.json`.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

PoolingMode = Literal["mean", "cls", "max", "mean_sqrt_len_tokens"]
POOLING_MODES: tuple[PoolingMode, ...] = ("mean", "cls", "max", "mean_sqrt_len_tokens")
"""Pooling modes the builder exports (sentence-transformers' `Pooling` names)."""
_POOLING_FLAGS: dict[str, PoolingMode] = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
}
_OTHER_POOLING_FLAGS = ("pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")


class SourceModelError(ValueError):
    """A model folder is missing or defines something the builder cannot reproduce exactly."""


@dataclass(frozen=True)
class SentenceTransformerConfig:
    """The parts of a sentence-transformers model definition that decide its embeddings."""

    folder: Path
    encoder_folder: Path
    """The `Transformer` module's folder (holds `config.json` and the weights)."""
    max_seq_length: int
    """Texts are truncated to this many tokens, special tokens included."""
    pooling: PoolingMode
    embedding_dim: int
    normalize: bool
    """A `Normalize` module follows the pooling (unit-length embeddings)."""


def package_path(package: str, path: str) -> Path:
    """The local path of `path` inside the installed package `package` (may not exist)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SourceModelError(f"package {package!r} is not installed (needed for {path})")
    return Path(next(iter(spec.submodule_search_locations))) / path


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceModelError(f"{path} does not exist") from None
    except (OSError, ValueError) as error:
        raise SourceModelError(f"{path}: cannot be read as JSON: {error}") from None


def _module_kind(entry: dict[str, Any]) -> str:
    return str(entry.get("type", "")).rsplit(".", 1)[-1]


def _pooling_mode(path: Path, config: dict[str, Any]) -> PoolingMode:
    if isinstance(config.get("pooling_mode"), str):  # newer sentence-transformers save format
        named = config["pooling_mode"]
        for mode in POOLING_MODES:
            if named == mode:
                return mode
        raise SourceModelError(f"{path}: pooling_mode: {named!r} is not supported (only {list(POOLING_MODES)})")
    chosen = [mode for flag, mode in _POOLING_FLAGS.items() if config.get(flag)]
    unsupported = [flag for flag in _OTHER_POOLING_FLAGS if config.get(flag)]
    if unsupported or len(chosen) != 1:
        flags = [f for f in (*_POOLING_FLAGS, *_OTHER_POOLING_FLAGS) if config.get(f)]
        raise SourceModelError(
            f"{path}: exactly one of {list(_POOLING_FLAGS)} must be true to be exported exactly, got {flags}"
        )
    return chosen[0]


def read_sentence_transformer_config(folder: Path) -> SentenceTransformerConfig:
    """Read a sentence-transformers model folder; refuse what would not reproduce `encode`."""
    modules_path = folder / "modules.json"
    modules = _read_json(modules_path)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise SourceModelError(f"{modules_path}: expected a list of modules")
    kinds = [_module_kind(m) for m in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise SourceModelError(
            f"{modules_path}: modules {kinds} are not supported: the builder exports exactly "
            "Transformer -> Pooling [-> Normalize]"
        )
    encoder_folder = folder / str(modules[0].get("path", ""))
    bert_path = encoder_folder / "sentence_bert_config.json"
    bert = _read_json(bert_path)
    length = bert.get("max_seq_length") if isinstance(bert, dict) else None
    if not isinstance(length, int) or isinstance(length, bool) or length < 1:
        raise SourceModelError(f"{bert_path}: max_seq_length: expected a positive integer, got {length!r}")
    if bert.get("do_lower_case"):
        raise SourceModelError(
            f"{bert_path}: do_lower_case: true (Python lowercasing before the tokenizer) is not supported"
        )
    pooling_path = folder / str(modules[1].get("path", "")) / "config.json"
    pooling = _read_json(pooling_path)
    if not isinstance(pooling, dict):
        raise SourceModelError(f"{pooling_path}: expected a mapping")
    dim = pooling.get("word_embedding_dimension", pooling.get("embedding_dimension"))
    if not isinstance(dim, int) or dim < 1:
        raise SourceModelError(f"{pooling_path}: word_embedding_dimension: expected a positive integer, got {dim!r}")
    return SentenceTransformerConfig(
        folder=folder,
        encoder_folder=encoder_folder,
        max_seq_length=length,
        pooling=_pooling_mode(pooling_path, pooling),
        embedding_dim=dim,
        normalize=kinds[-1] == "Normalize",
    )
