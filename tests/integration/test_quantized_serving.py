"""A dynamic-int8 model served by the session's real tritonserver and its onnxruntime runner.

The quantized file of minilm_embed_padded v1 (padded inputs: input_ids, attention_mask) is
loaded next to the generated models with Triton's load API (config and file in the request:
nothing is added to the session's repository), with the config generate wrote for the fp32
inference model, and unloaded afterwards. (No ensemble
around it: Triton polls an ensemble's members from the repository, where this one is not.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from generator import PROJECT_ROOT
from generator.kinds.formats.onnx import onnx_session
from generator.pipeline.artifacts import build_artifact, tokenize_like_server
from generator.pipeline.spec import Quantize, load_spec
from generator.serving.process import TritonProcess

from .assertions import SENTENCES, cosines, reference_embeddings

pytestmark = pytest.mark.integration

MODEL = "quantize_test_int8_model"


def _config(path: Path, name: str) -> mc.ModelConfig:
    config = text_format.Parse(path.read_text(encoding="utf-8"), mc.ModelConfig())
    config.name = name
    return config


def _as_json(config: mc.ModelConfig) -> str:
    return json_format.MessageToJson(config, preserving_proto_field_name=True)


def _infer(
    client: httpclient.InferenceServerClient, model: str, feed: dict[str, np.ndarray], output: str
) -> np.ndarray:
    inputs = []
    for name, array in feed.items():
        tensor = httpclient.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer(model, inputs, outputs=[httpclient.InferRequestedOutput(output)])
    return np.asarray(result.as_numpy(output))


def test_quantized_model_is_served_by_the_onnxruntime_runner(
    server_process: TritonProcess, generated_repository: Path
) -> None:
    version = load_spec(PROJECT_ROOT / "models" / "minilm_embed_padded.yaml").version(1)
    artifact = version.model.model_copy(update={"quantize": Quantize(method="dynamic_int8")})
    built = build_artifact(artifact, version.preprocessing, progress=print, label="minilm_embed_padded v1")
    manifest = json.loads((generated_repository / "tritongen-manifest.json").read_text())["models"]
    pinned = manifest["minilm_embed_padded_v1"]
    inference = next(name for name in pinned["depends_on"] if manifest[name]["role"] == "inference")
    model_config = _config(generated_repository / inference / "config.pbtxt", MODEL)
    client = httpclient.InferenceServerClient(server_process.http_url, network_timeout=120)
    client.load_model(MODEL, config=_as_json(model_config), files={"file:1/model.onnx": built.path.read_bytes()})
    try:
        # The texts tokenized as the version's preprocessing model does (the same code and settings).
        ids, mask = tokenize_like_server(list(SENTENCES), version.preprocessing)
        feed = {"input_ids": ids, "attention_mask": mask}
        served = _infer(client, MODEL, feed, "embedding")
        local = onnx_session(built.path, 2).run(["embedding"], feed)[0]
        assert np.allclose(served, local, atol=1e-5), np.abs(served - local).max()
        to_fp32 = cosines(served, _infer(client, inference, feed, "embedding"))
        to_reference = cosines(served, reference_embeddings(SENTENCES))
        assert to_fp32.min() >= 0.97 and to_fp32.mean() >= 0.985, to_fp32
        assert to_reference.min() >= 0.97, to_reference
        print(f"served int8: cosine to served fp32 min {to_fp32.min():.5f} mean {to_fp32.mean():.5f}")
    finally:
        client.unload_model(MODEL)
