"""Ragged rerankers: the unpadded cross-encoder graph (`onnx_ragged`, `torchscript_ragged`), fed as
Triton's ragged batching feeds it (the textprep package's unpadded pairs, several requests
concatenated), scores as `CrossEncoder.predict` and as the padded graph, for a family given token
types and one not."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from generator.base.sources import FolderSource
from generator.kinds.builders import get_builder
from generator.kinds.builders.cross_encoder import CrossEncoderBuild
from generator.kinds.formats import get_format
from generator.kinds.formats import unpadded_encoder as ragged
from generator.kinds.formats.onnx import onnx_runner
from generator.kinds.preprocessing import get_preprocessor
from generator.kinds.preprocessing.textprep import TextPrepSettings
from tests import model_folders
from tests.generator.kinds.builders.test_cross_encoder import FOLDERS, MAX_LENGTH, pairs

FAMILIES = ("bert", "distilbert")
"""BERT: its tokenizer returns the pairs' segments, the model gets them; DistilBERT takes none."""
REQUESTS = ((0, 1), (1, 4), (4, 5), (5, 6))
"""Rows of `pairs()` per request: one pair, three (a pair request of n rows), then the long ones."""


def settings(folder: Path, padding: str) -> TextPrepSettings:
    tokenizer = FolderSource(folder=str(folder), path="tokenizer.json")
    return TextPrepSettings(tokenizer=tokenizer, max_length=MAX_LENGTH, package_version="1.2.0", padding=padding)  # type: ignore[arg-type]


@functools.cache
def exported(family: str, tmp: Path, name: str = "model") -> tuple[Path, Path]:
    """(the seeded folder, its `onnx_ragged` graph)."""
    folder = tmp / family
    if not folder.is_dir():
        model_folders.cross_encoder(family, folder, **FOLDERS[family])  # type: ignore[arg-type]
    build = CrossEncoderBuild(builder="cross_encoder", source=FolderSource(folder=str(folder)))
    output = tmp / f"{family}-{name}.onnx"
    get_format("onnx_ragged").export(get_builder("cross_encoder"), build, settings(folder, "none"), output, None)
    return folder, output


def ragged_batch(folder: Path) -> dict[str, np.ndarray]:
    """The pairs as the backend concatenates the tokenizer's per-request outputs (`REQUESTS`)."""
    from tritongen_textprep.tokenize import TokenizerSettings, encode_pairs_unpadded, load_tokenizer, pack_pair_request

    package = TokenizerSettings(tokenizer_file=str(folder / "tokenizer.json"), max_length=MAX_LENGTH)
    tokenizer, pad_id = load_tokenizer(package)
    token_ids, type_ids = encode_pairs_unpadded(tokenizer, pairs())
    packed = [pack_pair_request(token_ids[a:b], type_ids[a:b], pad_id) for a, b in REQUESTS]
    for ids, lengths, types in packed:  # token types packed exactly like the tokens
        assert ids.shape == types.shape and lengths.shape == (ids.shape[0], 1)
    return {
        "input_ids": np.concatenate([p[0].ravel() for p in packed]),
        "lengths": np.concatenate([p[1].ravel() for p in packed]),
        "token_type_ids": np.concatenate([p[2].ravel() for p in packed]),
        "token_offsets": np.cumsum([0] + [p[0].size for p in packed]).astype(np.int32),
        "text_offsets": np.cumsum([0] + [p[1].size for p in packed]).astype(np.int32),
    }


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ragged-cross-encoders")


def test_unpadded_pairs_are_the_padded_pairs_tokens_and_segments(tmp: Path) -> None:
    folder, _ = exported("bert", tmp)
    batch = ragged_batch(folder)
    ids, mask, types = get_preprocessor("textprep").tokenize_pairs(pairs(), settings(folder, "batch_longest"))
    lengths = mask.sum(axis=1)
    assert list(batch["lengths"]) == list(lengths)
    assert int(lengths.max()) == MAX_LENGTH  # the long pairs are truncated (longest first)
    starts = batch["token_offsets"][:-1]
    for (first, last), start in zip(REQUESTS, starts, strict=True):
        row_ids = np.concatenate([ids[row, : lengths[row]] for row in range(first, last)])
        row_types = np.concatenate([types[row, : lengths[row]] for row in range(first, last)])
        assert list(batch["input_ids"][start : start + row_ids.size]) == list(row_ids)
        assert list(batch["token_type_ids"][start : start + row_types.size]) == list(row_types)
    assert batch["token_type_ids"].max() == 1  # BERT's tokenizer marks the text's segment


@pytest.mark.parametrize("family", FAMILIES)
def test_ragged_scores_equal_cross_encoder_predict_and_the_padded_graph(family: str, tmp: Path) -> None:
    from sentence_transformers import CrossEncoder

    folder, graph = exported(family, tmp)
    got = onnx_runner(graph, 1)(ragged_batch(folder))["score"]
    batch = pairs()
    assert got.shape == (len(batch), 1) and got.dtype == np.float32
    want = CrossEncoder(str(folder), max_length=MAX_LENGTH, device="cpu").predict(batch, batch_size=2)
    assert np.abs(got[:, 0] - want).max() <= 1e-4, np.abs(got[:, 0] - want)
    assert list(np.argsort(-got[:, 0], kind="stable")) == list(np.argsort(-want, kind="stable"))
    padded_graph = tmp / f"{family}-padded.onnx"
    build = CrossEncoderBuild(builder="cross_encoder", source=FolderSource(folder=str(folder)))
    padded_settings = settings(folder, "batch_longest")
    get_format("onnx").export(get_builder("cross_encoder"), build, padded_settings, padded_graph, None)
    ids, mask, types = get_preprocessor("textprep").tokenize_pairs(batch, padded_settings)
    padded = onnx_runner(padded_graph, 1)({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    assert np.abs(got - padded["score"]).max() <= 1e-4


def test_token_types_reach_a_bert_model_only(tmp: Path) -> None:
    """Segments change a BERT cross-encoder's scores; DistilBERT's graph ignores them."""
    for family, matters in (("bert", True), ("distilbert", False)):
        folder, graph = exported(family, tmp)
        run = onnx_runner(graph, 1)
        batch = ragged_batch(folder)
        zeroed = run({**batch, "token_type_ids": np.zeros_like(batch["token_type_ids"])})["score"]
        differs = bool(np.abs(run(batch)["score"] - zeroed).max() > 1e-6)
        assert differs is matters, family


def test_the_graph_has_the_pair_contract_and_exports_deterministically(tmp: Path) -> None:
    import onnx

    folder, graph = exported("bert", tmp)
    kind = get_format("onnx_ragged")
    model = onnx.load(str(graph)).graph
    initializers = {i.name for i in model.initializer}
    inputs = [i.name for i in model.input if i.name not in initializers]
    assert inputs == list(ragged.PAIR_INPUT_NAMES)
    declared = [t.name for t in kind.inputs("reranker")] + [b.target for b in kind.batch_inputs()]
    assert declared == inputs
    assert [t.ragged for t in kind.inputs("reranker")] == [True, True, True]
    assert [(o.name, o.type.tensor_type.shape.dim[1].dim_value) for o in model.output] == [("score", 1)]
    _, again = exported("bert", tmp, "again")
    assert graph.read_bytes() == again.read_bytes()


def test_torchscript_ragged_scores_as_the_onnx_graph_and_passes_its_check(tmp: Path) -> None:
    import torch
    from tritonclient.grpc import model_config_pb2 as mc

    folder, graph = exported("bert", tmp)
    build = CrossEncoderBuild(builder="cross_encoder", source=FolderSource(folder=str(folder)))
    kind = get_format("torchscript_ragged")
    output = tmp / "bert.pt"
    kind.export(get_builder("cross_encoder"), build, settings(folder, "none"), output, None)
    batch = ragged_batch(folder)
    with torch.inference_mode():
        got = torch.jit.load(str(output))(**{name: torch.from_numpy(value) for name, value in batch.items()}).numpy()
    assert np.abs(got - onnx_runner(graph, 1)(batch)["score"]).max() <= 1e-5
    config = mc.ModelConfig(name="ranker")
    for name in kind.tensor_names("reranker")[0]:
        config.input.add(name=name)
    config.output.add(name="score", dims=[1])
    assert kind.check(output, config) == []
    again = tmp / "bert-again.pt"
    kind.export(get_builder("cross_encoder"), build, settings(folder, "none"), again, None)
    assert output.read_bytes() == again.read_bytes()
