"""What a sentence-transformers model folder defines: sequence length, pooling, the layers after it.

The one source of these facts for the specs (`preprocessing.max_length` defaults to
`max_seq_length`) and for the `sentence_embedding` builder (pooling, `Dense` and `Normalize`
modules in the exported graph), so that served embeddings equal
`SentenceTransformer(folder).encode(...)`. Only the files are read (no sentence-transformers
import): `modules.json`, the Transformer module's `sentence_bert_config.json` (and its
`tokenizer_config.json` / `config.json` for the length), the pooling, Dense and Normalize
modules' `config.json`, and `config_sentence_transformers.json`. What `encode` does that the
exported graph and the tokenizer file cannot do exactly is refused by name (`SourceModelError`).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeGuard

PoolingMode = Literal["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]
POOLING_MODES: tuple[PoolingMode, ...] = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
"""Pooling modes the builder exports (sentence-transformers' `Pooling` names)."""
_POOLING_FLAGS: dict[str, PoolingMode] = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
"""The older save format's flags, in sentence-transformers' concatenation order."""
_TRANSFORMER_DEFAULTS: dict[str, Any] = {
    "transformer_task": "feature-extraction",
    "module_output_name": "token_embeddings",
    "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
}
"""`sentence_bert_config.json` keys the builder reproduces only at these values (a plain encoder's)."""
_SENTENCE_EMBEDDING = "sentence_embedding"


class SourceModelError(ValueError):
    """A model folder is missing or defines something the builder cannot reproduce exactly."""


@dataclass(frozen=True)
class Dense:
    """A `Dense` module: `activation(linear(x))`, with the weights in its folder."""

    folder: Path
    in_features: int
    out_features: int
    bias: bool
    activation: str
    """The `torch.nn` module class (dotted path, e.g. `torch.nn.modules.activation.Tanh`),
    instantiated without arguments as sentence-transformers does."""


@dataclass(frozen=True)
class Normalize:
    """A `Normalize` module: L2 normalization of the embedding."""


@dataclass(frozen=True)
class SentenceTransformerConfig:
    """The parts of a sentence-transformers model definition that decide its embeddings."""

    folder: Path
    encoder_folder: Path
    """The `Transformer` module's folder (holds `config.json` and the weights)."""
    max_seq_length: int
    """Texts are truncated to this many tokens, special tokens included."""
    max_seq_length_file: Path
    """The file that sets `max_seq_length` (named in messages)."""
    pooling: tuple[PoolingMode, ...]
    """Pooling modes, their outputs concatenated in this order (usually one)."""
    embedding_dim: int
    """Length of the embedding `encode` returns (after the pooling and the Dense modules)."""
    layers: tuple[Dense | Normalize, ...] = ()
    """The modules after the pooling, in `modules.json` order."""

    @property
    def normalize(self) -> bool:
        """A `Normalize` module comes last (unit-length embeddings)."""
        return bool(self.layers) and isinstance(self.layers[-1], Normalize)


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


def _read_object(path: Path, missing_ok: bool = False) -> dict[str, Any]:
    if missing_ok and not path.exists():
        return {}
    data = _read_json(path)
    if not isinstance(data, dict):
        raise SourceModelError(f"{path}: expected a mapping")
    return data


def _positive(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _module_kind(entry: dict[str, Any]) -> str:
    return str(entry.get("type", "")).rsplit(".", 1)[-1]


def _pooling_modes(path: Path, config: dict[str, Any]) -> tuple[PoolingMode, ...]:
    named = config.get("pooling_mode")
    if named is None:  # the older save format: one flag per mode, none set means mean
        flagged = tuple(mode for flag, mode in _POOLING_FLAGS.items() if config.get(flag))
        return flagged or ("mean",)
    names = [named] if isinstance(named, str) else named
    if not isinstance(names, list) or not names:
        raise SourceModelError(f"{path}: pooling_mode: expected a mode or a list of modes, got {named!r}")
    modes = []
    for name in names:
        mode = next((known for known in POOLING_MODES if known == name), None)
        if mode is None:
            raise SourceModelError(f"{path}: pooling_mode: {name!r} is not supported (only {list(POOLING_MODES)})")
        modes.append(mode)
    return tuple(modes)


def _check_transformer(bert_path: Path, bert: dict[str, Any]) -> None:
    if bert.get("do_lower_case"):
        raise SourceModelError(
            f"{bert_path}: do_lower_case: true (lowercasing added to the tokenizer by sentence-transformers, "
            "not in its tokenizer.json) is not supported"
        )
    for key, default in _TRANSFORMER_DEFAULTS.items():
        if key in bert and bert[key] != default:
            raise SourceModelError(f"{bert_path}: {key}: {bert[key]!r} is not supported (only {default!r})")
    if bert.get("processing_kwargs"):
        raise SourceModelError(
            f"{bert_path}: processing_kwargs {bert['processing_kwargs']!r} (tokenizer arguments of sentence-"
            "transformers, not in its tokenizer.json) are not supported"
        )


def _max_seq_length(encoder_folder: Path, bert_path: Path, bert: dict[str, Any]) -> tuple[int, Path]:
    """sentence-transformers' truncation length: `max_seq_length` of `sentence_bert_config.json`
    (older saves), else the tokenizer's `model_max_length` capped at the model's
    `max_position_embeddings`, or those alone (what sentence-transformers 5+ saves and does)."""
    if "max_seq_length" in bert:
        length = bert["max_seq_length"]
        if not _positive(length):
            raise SourceModelError(f"{bert_path}: max_seq_length: expected a positive integer, got {length!r}")
        return length, bert_path
    tokenizer_path = encoder_folder / "tokenizer_config.json"
    tokenizer_length = _read_object(tokenizer_path, missing_ok=True).get("model_max_length")
    config_path = encoder_folder / "config.json"
    positions = _read_object(config_path, missing_ok=True).get("max_position_embeddings")
    candidates = ((tokenizer_length, tokenizer_path), (positions, config_path))
    known = [(length, path) for length, path in candidates if _positive(length)]
    if not known:
        raise SourceModelError(
            f"{bert_path}: no max_seq_length, and neither {tokenizer_path} (model_max_length) nor {config_path} "
            "(max_position_embeddings) says how many tokens sentence-transformers keeps"
        )
    return min(known, key=lambda item: item[0])


def _dense(folder: Path) -> Dense:
    path = folder / "config.json"
    config = _read_object(path)
    in_features, out_features = config.get("in_features"), config.get("out_features")
    if not _positive(in_features) or not _positive(out_features):
        raise SourceModelError(f"{path}: in_features and out_features: expected positive integers")
    activation = config.get("activation_function", "torch.nn.modules.activation.Tanh")
    if not isinstance(activation, str) or not activation.startswith("torch.nn."):
        raise SourceModelError(
            f"{path}: activation_function {activation!r} is not supported (only torch.nn modules; "
            "sentence-transformers itself replaces others by Tanh unless trust_remote_code)"
        )
    if config.get("use_residual"):
        raise SourceModelError(f"{path}: use_residual: true is not supported")
    for key in ("module_input_name", "module_output_name"):
        if config.get(key, _SENTENCE_EMBEDDING) != _SENTENCE_EMBEDDING:
            raise SourceModelError(f"{path}: {key}: {config[key]!r} is not supported (only {_SENTENCE_EMBEDDING!r})")
    return Dense(folder, in_features, out_features, bool(config.get("bias", True)), activation)


def _normalize(folder: Path) -> Normalize:
    path = folder / "config.json"
    config = _read_object(path, missing_ok=True)  # older saves write no config
    for key in ("module_input_name", "module_output_name"):
        if config.get(key) not in (None, _SENTENCE_EMBEDDING):
            raise SourceModelError(f"{path}: {key}: {config[key]!r} is not supported (only {_SENTENCE_EMBEDDING!r})")
    return Normalize()


def read_sentence_transformer_config(folder: Path) -> SentenceTransformerConfig:
    """Read a sentence-transformers model folder; refuse what would not reproduce `encode`."""
    modules_path = folder / "modules.json"
    modules = _read_json(modules_path)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise SourceModelError(f"{modules_path}: expected a list of modules")
    kinds = [_module_kind(m) for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or any(kind not in ("Dense", "Normalize") for kind in kinds[2:]):
        raise SourceModelError(
            f"{modules_path}: modules {kinds} are not supported: the builder exports "
            "Transformer -> Pooling, then any Dense and Normalize modules"
        )
    encoder_folder = folder / str(modules[0].get("path", ""))
    bert_path = encoder_folder / "sentence_bert_config.json"
    bert = _read_object(bert_path)
    _check_transformer(bert_path, bert)
    length, length_file = _max_seq_length(encoder_folder, bert_path, bert)
    prompts_path = folder / "config_sentence_transformers.json"
    prompt = _read_object(prompts_path, missing_ok=True).get("default_prompt_name")
    if prompt:
        raise SourceModelError(
            f"{prompts_path}: default_prompt_name {prompt!r} (a prompt `encode` prepends to every text) "
            "is not supported"
        )
    pooling_path = folder / str(modules[1].get("path", "")) / "config.json"
    pooling = _read_object(pooling_path)
    dim = pooling.get("word_embedding_dimension", pooling.get("embedding_dimension"))
    if not _positive(dim):
        raise SourceModelError(f"{pooling_path}: word_embedding_dimension: expected a positive integer, got {dim!r}")
    modes = _pooling_modes(pooling_path, pooling)
    layers: list[Dense | Normalize] = []
    width = dim * len(modes)
    for entry, kind in zip(modules[2:], kinds[2:], strict=True):
        module_folder = folder / str(entry.get("path", ""))
        if kind == "Normalize":
            layers.append(_normalize(module_folder))
            continue
        dense = _dense(module_folder)
        if dense.in_features != width:
            raise SourceModelError(
                f"{module_folder / 'config.json'}: in_features {dense.in_features}, but the module before gives {width}"
            )
        layers.append(dense)
        width = dense.out_features
    return SentenceTransformerConfig(
        folder=folder,
        encoder_folder=encoder_folder,
        max_seq_length=length,
        max_seq_length_file=length_file,
        pooling=modes,
        embedding_dim=width,
        layers=tuple(layers),
    )
