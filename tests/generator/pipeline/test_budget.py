"""One copy of the weights per version (bulk at a lower priority) and the repository budget."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from generator.base.launch import ServerOptions, ServerSettings, server_command
from generator.pipeline.plan import (
    BULK_PRIORITY,
    ONLINE_PRIORITY,
    PYTHON_BACKEND_CONFIG,
    RepositoryPlan,
    inference_cores,
)
from generator.pipeline.render import render_repository
from generator.pipeline.spec import ModelSpec, SpecError, load_specs, parse_spec
from generator.serving.process import local_server_command
from tests.generator.pipeline.planning import planned
from tests.generator.pipeline.test_cpu_budget import SPEC

PROJECT = Path(__file__).resolve().parents[3]


def specs(count: int, extra: str = "") -> list[ModelSpec]:
    return [parse_spec(SPEC.replace("name: m", f"name: m{i}") + extra, f"m{i}.yaml") for i in range(count)]


def configs(plan: RepositoryPlan) -> dict[str, mc.ModelConfig]:
    return {
        f.path.split("/")[0]: text_format.Parse(f.text, mc.ModelConfig())
        for f in render_repository(plan)
        if f.path.endswith("config.pbtxt")
    }


def test_bulk_entry_point_runs_the_online_model_no_second_copy() -> None:
    plan = planned(load_specs(PROJECT / "models"), "local", 2)
    parsed = configs(plan)
    assert not [name for name in parsed if name.endswith("_bulk")]
    for model in plan.models:
        by_role = {e.role: e for e in model.ensembles}
        online, bulk = by_role["online"], by_role["bulk"]
        assert bulk.inference is online.inference and bulk.preprocess is online.preprocess
        assert len(model.inference) == len(model.spec.versions)  # one inference model per version
        steps = [s.model_name for s in parsed[bulk.name].ensemble_scheduling.step]
        assert steps == [s.model_name for s in parsed[online.name].ensemble_scheduling.step]
        # The shared model takes the bulk entry point's largest request; the ensembles keep their own.
        assert parsed[bulk.name].max_batch_size == model.spec.bulk_batching.max_batch_size
        assert parsed[online.name].max_batch_size == model.spec.batching.max_batch_size
        assert parsed[online.inference.name].max_batch_size == max(
            model.spec.batching.max_batch_size, model.spec.bulk_batching.max_batch_size
        )
        assert (bulk.priority, online.priority) == (BULK_PRIORITY, ONLINE_PRIORITY)
        manifest = plan.manifest().models
        assert (manifest[bulk.name].priority, manifest[online.name].priority) == (2, 1)


def test_switching_the_default_version_changes_no_inference_model() -> None:
    """`tritongen update` to another default version reloads the entry points, not the models."""
    [spec] = [s for s in load_specs(PROJECT / "models") if len(s.versions) > 1]
    other = next(v.version for v in spec.versions if v.version != spec.default_version)
    before = configs(planned([spec], "local", 2))
    after = configs(planned([spec.model_copy(update={"default_version": other})], "local", 2))
    models = [name for name in before if name.endswith("_model")]
    assert len(models) == len(spec.versions)
    assert all(before[name] == after[name] for name in models)
    assert before[f"{spec.name}_batch"] != after[f"{spec.name}_batch"]


def test_every_inference_batcher_has_the_priority_levels_and_preprocessing_one_queue() -> None:
    for name, config in configs(planned(load_specs(PROJECT / "models"), "local", 2)).items():
        if config.platform == "ensemble" or config.max_batch_size == 0:
            # Ensembles pass any priority on; a model without batching (a reranker's rerank
            # preprocessing) runs each request as it comes.
            assert not config.HasField("dynamic_batching"), name
            continue
        batching = config.dynamic_batching
        if config.backend == "python":  # preprocessing: one FIFO queue (a bulk priority falls back to it)
            assert (batching.priority_levels, batching.default_priority_level) == (0, 0), name
            continue
        assert (batching.priority_levels, batching.default_priority_level) == (2, ONLINE_PRIORITY), name
        assert batching.priority_levels >= BULK_PRIORITY


def test_bulk_batching_has_no_batcher_of_its_own() -> None:
    with pytest.raises(SpecError, match="preferred_batch_sizes: bulk requests share the online model's"):
        parse_spec(SPEC + "bulk_batching: {max_batch_size: 64, preferred_batch_sizes: [16, 64]}\n", "m.yaml")
    spec = parse_spec(SPEC + "bulk_batching: {max_batch_size: 128}\n", "m.yaml")
    assert spec.bulk_batching.max_batch_size == 128


@pytest.mark.parametrize("cores", [2, 16])
def test_server_settings_do_not_depend_on_the_number_of_specs(cores: int) -> None:
    """Adding or removing a spec never needs a restart: the limiter is on whatever the count."""
    settings = {planned(specs(count), "local", cores).server_settings() for count in (1, 2, 4, 5, 12)}
    assert len(settings) == 1
    [only] = settings
    assert only.rate_limit_cores == cores
    assert only.flags()[:2] == ["--rate-limit=execution_count", f"--rate-limit-resource=cpu:{cores}"]


@pytest.mark.parametrize("cores", [2, 16])
@pytest.mark.parametrize("count", [1, 4, 5])
def test_equal_weights_with_memory_to_spare_keep_the_full_layout_in_the_limiter(cores: int, count: int) -> None:
    plan = planned(specs(count), "local", cores)
    for inference in plan.inference_models():
        assert inference.rate_limit and inference.instances * inference.threads == inference_cores(cores)
        assert inference.threads == (1 if cores <= 4 else 2)
    for name, config in configs(plan).items():
        if name.endswith("_model"):
            [resource] = config.instance_group[0].rate_limiter.resources
            assert (resource.name, resource.count) == ("cpu", plan.inference_models()[0].threads)


def test_a_spec_overrides_the_defaults() -> None:
    plan = planned(specs(5, "instances: {model: 3, rate_limit: false}\n"), "local", 2)
    assert {(i.instances, i.cpu_units) for i in plan.inference_models()} == {(3, None)}
    assert plan.rate_limit_cores == 2  # the server's limiter stays: other specs may use it
    models = [config for name, config in configs(plan).items() if name.endswith("_model")]
    assert models and all(not config.instance_group[0].HasField("rate_limiter") for config in models)


def test_model_loading_is_parallel() -> None:
    for cores in (1, 2, 16):
        plan = planned(specs(1), "local", cores)
        assert plan.model_load_threads == max(4, 2 * cores)
        assert plan.manifest().model_load_threads == plan.model_load_threads
        assert f"--model-load-thread-count={plan.model_load_threads}" in plan.server_settings().flags()


def test_no_target_shares_onnxruntimes_global_thread_pool() -> None:
    """The shared pool starved the padded ensemble on NVIDIA's native backend: never emitted."""
    shipped = load_specs(PROJECT / "models")
    for target in ("local", "ngc"):
        for cores in (2, 16):
            assert planned(shipped, target, cores).server_settings().backend_configs == (PYTHON_BACKEND_CONFIG,)


def test_python_backend_instances_get_one_pool_thread_not_32() -> None:
    """Its per-instance pool serves BLS calls and decoupled responses only: nothing generated uses them."""
    assert PYTHON_BACKEND_CONFIG == "python,thread-pool-size=1"
    for target in ("local", "ngc"):
        plan = planned(load_specs(PROJECT / "models"), target, 2)
        assert f"--backend-config={PYTHON_BACKEND_CONFIG}" in plan.server_settings().flags()
        assert plan.manifest().backend_configs == (PYTHON_BACKEND_CONFIG,)  # the same for every target


def test_server_command_takes_the_settings_or_the_manifest(tmp_path: Path) -> None:
    settings = ServerSettings(2, 8, ("onnxruntime,enable-global-threadpool=1",))
    command = server_command(ServerOptions(tmp_path, models=("m",), settings=settings), tmp_path / "backends")
    assert command[-5:] == [
        "--rate-limit=execution_count",
        "--rate-limit-resource=cpu:2",
        "--model-load-thread-count=8",
        "--backend-config=onnxruntime,enable-global-threadpool=1",
        "--load-model=m",
    ]
    plan = planned(specs(5), "local", 2)
    plan.manifest().write(tmp_path)
    command = local_server_command(ServerOptions(tmp_path, models=("m0",)), tmp_path / "backends")
    assert "--rate-limit-resource=cpu:2" in command and "--model-load-thread-count=4" in command
    assert [flag for flag in command if flag.startswith("--backend-config")] == [
        f"--backend-config={PYTHON_BACKEND_CONFIG}"
    ]
