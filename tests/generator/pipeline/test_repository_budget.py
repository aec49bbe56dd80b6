"""The repository budget: its settings file, traffic weights, the memory rule and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.base.launch import ServerSettings
from generator.kinds.formats import FORMATS
from generator.kinds.targets import LOCAL, NGC
from generator.pipeline.generate import GenerateOptions, generate, layout_changes
from generator.pipeline.manifest import Manifest
from generator.pipeline.plan import STUB_SHM_MIB, RepositoryPlan, inference_cores, plan_repository, pod_memory_mib
from generator.pipeline.render import render_repository
from generator.pipeline.repository_settings import DEFAULT_MEMORY_MIB, Budget, detected_cores, resolve_budget
from generator.pipeline.spec import REPOSITORY_FILE, ModelSpec, SpecError, load_specs, parse_spec
from tests.generator.pipeline.test_cpu_budget import SPEC

INT8 = SPEC.replace("      format: onnx\n", "      format: onnx\n      quantize: dynamic_int8\n")


def catalogue(count: int, weights: list[float] | None = None, extra: str = "", text: str = SPEC) -> list[ModelSpec]:
    """`count` renamed copies of the spec, `m0`... (weights: their `traffic_weight`)."""
    found = []
    for index in range(count):
        weight = f"traffic_weight: {weights[index]}\n" if weights else ""
        found.append(parse_spec(text.replace("name: m", f"name: m{index}") + weight + extra, f"m{index}.yaml"))
    return found


def instances(plan: RepositoryPlan) -> dict[str, int]:
    return {inference.spec_name: inference.instances for inference in plan.inference_models()}


def floor_mib(count: int) -> float:
    """Expected memory on `local` of `count` onnx specs at one instance each (one shared preprocessing)."""
    return planned_floor(catalogue(count)).expected_memory_mib(LOCAL)


def planned_floor(specs: list[ModelSpec]) -> RepositoryPlan:
    pinned = [spec.model_copy(update={"instances": spec.instances.model_copy(update={"model": 1})}) for spec in specs]
    return plan_repository(pinned, "local", Budget(2, 10**6))


ONNX_INSTANCE_MIB = FORMATS["onnx"].memory(False, None).mib + STUB_SHM_MIB
"""One onnx instance on `local`, the target whose figures bind (its stand-ins are processes)."""


# --- the settings file ----------------------------------------------------------------------------


def test_settings_file_is_optional_and_cores_resolve_in_order(tmp_path: Path) -> None:
    assert resolve_budget(tmp_path) == Budget(
        detected_cores(), DEFAULT_MEMORY_MIB, tmp_path, "the cores of this machine"
    )
    assert resolve_budget(tmp_path, recorded_cores=6).cores == 6
    (tmp_path / REPOSITORY_FILE).write_text("memory_mib: 8192\n")
    assert (resolve_budget(tmp_path, recorded_cores=6).cores, resolve_budget(tmp_path).memory_mib) == (6, 8192)
    (tmp_path / REPOSITORY_FILE).write_text("cores: 4\nmemory_mib: 8192\n")
    budget = resolve_budget(tmp_path, recorded_cores=6)
    assert (budget.cores, budget.memory_mib, budget.cores_from) == (4, 8192, f"{tmp_path / REPOSITORY_FILE}: cores")
    assert resolve_budget(tmp_path, cores=3, recorded_cores=6).cores == 3  # --cores overrides the file


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("cores: 0\n", r"repository.yaml: cores: Input should be greater than or equal to 1 \(got 0\)"),
        ("cores: -2\n", r"repository.yaml: cores: Input should be greater than or equal to 1"),
        ("memory_mib: 0\n", r"repository.yaml: memory_mib: Input should be greater than or equal to 1"),
        ("cores: two\n", r"repository.yaml: cores: Input should be a valid integer"),
        ("gpus: 1\n", r"repository.yaml: gpus: unknown key"),
        ("- cores\n", r"repository.yaml: expected a mapping of repository settings, got list"),
        ("name: repository\nversions: []\n", r"repository.yaml: repository.yaml holds the repository's settings, not"),
    ],
)
def test_a_bad_budget_is_an_error_naming_the_file_and_the_field(tmp_path: Path, text: str, problem: str) -> None:
    (tmp_path / REPOSITORY_FILE).write_text(text)
    with pytest.raises(SpecError, match=problem):
        resolve_budget(tmp_path)


def test_a_budget_of_no_cores_is_an_error() -> None:
    with pytest.raises(SpecError, match=r"--cores: must be at least 1 \(got 0\)"):
        resolve_budget(Path("models"), cores=0)
    with pytest.raises(SpecError, match=r"the CPU budget must be at least 1 core \(got 0\)"):
        plan_repository(catalogue(1), "local", 0)


def test_the_settings_file_is_not_a_spec(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(SPEC)
    (tmp_path / REPOSITORY_FILE).write_text("cores: 2\n")
    assert [spec.name for spec in load_specs(tmp_path)] == ["m"]


def test_the_shipped_budget_is_the_one_the_shipped_repository_was_made_for() -> None:
    shipped = Path(__file__).resolve().parents[3] / "models"
    budget = resolve_budget(shipped)
    assert (budget.cores, budget.memory_mib) == (2, 16384)


# --- traffic weights ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["0", "-1", "high", "true", ".inf", ".nan", "[1]", "null"])
def test_a_traffic_weight_must_be_a_positive_number(bad: str) -> None:
    with pytest.raises(SpecError, match=r"models/m.yaml: traffic_weight: must be a positive number"):
        parse_spec(SPEC + f"traffic_weight: {bad}\n", "models/m.yaml")
    assert parse_spec(SPEC + "traffic_weight: 0.25\n", "m.yaml").traffic_weight == 0.25
    assert parse_spec(SPEC + "traffic_weight: 3\n", "m.yaml").traffic_weight == 3.0
    assert parse_spec(SPEC, "m.yaml").traffic_weight == 1.0


@pytest.mark.parametrize("cores", [2, 16])
def test_the_hottest_spec_can_use_every_core_and_the_others_follow_their_weight(cores: int) -> None:
    zipf = [1 / (rank + 1) for rank in range(6)]
    plan = plan_repository(catalogue(6, zipf), "local", Budget(cores, 10**6))
    threads = 1 if cores <= 4 else 2
    full = inference_cores(cores) // threads
    assert instances(plan)["m0"] * threads == inference_cores(cores)  # the hottest: every inference core
    assert instances(plan) == {f"m{rank}": max(1, -(-full // (rank + 1))) for rank in range(6)}
    assert plan.server_settings() == plan_repository(catalogue(1), "local", Budget(cores, 10**6)).server_settings()


def test_adding_a_spec_changes_no_other_layout_while_memory_lasts() -> None:
    before = plan_repository(catalogue(4, [4, 3, 2, 1]), "local", 2)
    after = plan_repository(catalogue(5, [4, 3, 2, 1, 1]), "local", 2)
    assert {name: count for name, count in instances(after).items() if name != "m4"} == instances(before)
    assert before.server_settings() == after.server_settings()


# --- memory -----------------------------------------------------------------------------------------


def test_expected_memory_adds_the_measured_footprints_per_target() -> None:
    [spec] = catalogue(1)
    plan = plan_repository([spec], "local", 2)
    [pre] = plan.preprocess_models()
    [inference] = plan.inference_models()
    assert (pre.instances, inference.instances) == (1, 2)
    local = LOCAL.server_memory.mib + pre.kind.memory.mib + STUB_SHM_MIB + 2 * ONNX_INSTANCE_MIB
    assert plan.expected_memory_mib() == pytest.approx(local)
    native_instance = FORMATS["onnx"].memory(True, None).mib  # inside tritonserver: no process, no shm
    native = NGC.server_memory.mib + pre.kind.memory.mib + STUB_SHM_MIB + 2 * native_instance
    assert plan.expected_memory_mib(NGC) == pytest.approx(native) and native_instance < ONNX_INSTANCE_MIB
    assert plan.pod_memory_mib() == pod_memory_mib(local) and plan.pod_memory_mib() % 64 == 0
    [int8] = plan_repository(catalogue(1, text=INT8), "ngc", 2).inference_models()
    assert int8.instance_memory_mib(NGC) == FORMATS["onnx"].memory(True, "dynamic_int8").mib == 38.5
    assert "on target local (server 50, 1 preprocessing instances 44, 2 inference instances 342)" in (
        plan.describe_memory()
    )


def test_extra_instances_go_to_the_most_weighted_specs_first_when_memory_is_short() -> None:
    count = 6
    room_for_three = pod_memory_mib(floor_mib(count) + 3 * ONNX_INSTANCE_MIB)
    weights = [1.0, 5.0, 1.0, 4.0, 3.0, 2.0]
    plan = plan_repository(catalogue(count, weights), "local", Budget(2, room_for_three))
    assert instances(plan) == {"m0": 1, "m1": 2, "m2": 1, "m3": 2, "m4": 2, "m5": 1}
    assert plan.pod_memory_mib() <= room_for_three
    # Equal weights: the extras go by name, deterministically.
    equal = plan_repository(catalogue(count), "local", Budget(2, room_for_three))
    assert instances(equal) == {"m0": 2, "m1": 2, "m2": 2, "m3": 1, "m4": 1, "m5": 1}


def test_both_targets_get_the_same_files_when_memory_is_short() -> None:
    budget = Budget(2, pod_memory_mib(floor_mib(6) + 2 * ONNX_INSTANCE_MIB))
    files = [
        {f.path: f.text for f in render_repository(plan_repository(catalogue(6), target, budget))}
        for target in ("local", "ngc")
    ]
    assert {path for path in files[0] if files[0][path] != files[1][path]} == {"tritongen-manifest.json"}


def test_a_target_that_cannot_hold_the_repository_does_not_shrink_the_others() -> None:
    """`local` cannot hold 11 models in this budget (generating for it fails), `ngc` can: there the
    hottest still gets every core."""
    budget = Budget(2, pod_memory_mib(floor_mib(10)))
    zipf = [1 / (rank + 1) for rank in range(11)]
    with pytest.raises(SpecError, match="memory_mib: the 11 specs need"):
        plan_repository(catalogue(11, zipf), "local", budget)
    assert instances(plan_repository(catalogue(11, zipf), "ngc", budget))["m0"] == 2


def test_a_model_alone_over_the_budget_is_an_error_naming_its_file() -> None:
    budget = Budget(2, 256, Path("models"))
    with pytest.raises(SpecError, match=r"models/m0.yaml: versions: this model alone needs a 448 MiB pod \("):
        plan_repository(catalogue(1), "local", budget)
    one = pod_memory_mib(floor_mib(1))
    with pytest.raises(SpecError, match=r"models/m0.yaml: instances.model: this model alone needs"):
        plan_repository(catalogue(1, extra="instances: {model: 8}\n"), "local", Budget(2, one))
    assert instances(plan_repository(catalogue(1), "local", Budget(2, one))) == {"m0": 1}  # `auto` fits


def test_a_repository_over_the_budget_is_an_error_naming_the_settings() -> None:
    budget = Budget(2, pod_memory_mib(floor_mib(8)), Path("models"))
    needed = f"{pod_memory_mib(floor_mib(9)):,}"  # the figure with one instance each, not with extras
    with pytest.raises(SpecError, match=rf"models/repository.yaml: memory_mib: the 9 specs need a {needed} MiB pod"):
        plan_repository(catalogue(9), "local", budget)
    with pytest.raises(SpecError, match=r"memory_mib: the 9 specs need"):  # on no target: nothing to size for
        plan_repository(catalogue(9), "local", Budget(2, pod_memory_mib(floor_mib(2))))
    # The native backends need less per model: the same budget holds them on `ngc`.
    assert plan_repository(catalogue(9), "ngc", budget).pod_memory_mib() <= budget.memory_mib


def test_an_instance_needing_more_cores_than_the_budget_is_an_error() -> None:
    with pytest.raises(
        SpecError,
        match=r"models/m0.yaml: instances.model_threads: an instance of 4 threads needs 4 cores, the budget has 2 ",
    ):
        plan_repository(catalogue(1, extra="instances: {model_threads: 4}\n"), "local", Budget(2))
    assert plan_repository(catalogue(1, extra="instances: {model_threads: 4}\n"), "local", Budget(4))


def test_generate_over_the_budget_writes_nothing(tmp_path: Path) -> None:
    specs, output = tmp_path / "models", tmp_path / "repository"
    specs.mkdir()
    output.mkdir()
    (output / "kept.txt").write_text("the previous repository")
    for spec in ("m0", "m1"):
        (specs / f"{spec}.yaml").write_text(SPEC.replace("name: m", f"name: {spec}"))
    (specs / REPOSITORY_FILE).write_text(f"cores: 2\nmemory_mib: {pod_memory_mib(floor_mib(1))}\n")
    said: list[str] = []
    with pytest.raises(SpecError, match=r"repository.yaml: memory_mib: the 2 specs need"):
        generate(GenerateOptions(specs_dir=specs, output=output, progress=said.append))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["models", "repository"]  # no staging left
    assert [path.name for path in output.iterdir()] == ["kept.txt"] and said == []


# --- what generate says -----------------------------------------------------------------------------


def _without_limiter(manifest: Manifest) -> Manifest:
    """The manifest as a tritongen that turned the limiter on above 4 specs only wrote it for 1."""
    models = {
        name: model.model_copy(update={"cpu_units": None}) if model.role == "inference" else model
        for name, model in manifest.models.items()
    }
    return manifest.model_copy(update={"rate_limit_cores": None, "models": models})


def test_generate_says_each_layout_change_and_each_server_setting_that_needs_a_restart() -> None:
    old = _without_limiter(plan_repository(catalogue(2), "local", 2).manifest())
    new = plan_repository(catalogue(3, [1, 1, 1]), "local", 2).manifest()
    lines = layout_changes(old, new)
    assert lines == [
        "layout m0_v1_model: instances 2 -> 2, threads 1 -> 1, limiter off -> cpu 1",
        "layout m1_v1_model: instances 2 -> 2, threads 1 -> 1, limiter off -> cpu 1",
        "layout m2_v1_model: new, 2 instances x 1 threads, limiter cpu 1",
        "layout: 3 models changed, new or removed, 1 unchanged",
        "server setting (a restart applies it; `tritongen update` refuses it): (none) -> --rate-limit=execution_count",
        "server setting (a restart applies it; `tritongen update` refuses it): (none) -> --rate-limit-resource=cpu:2",
    ]
    fewer = plan_repository(catalogue(1), "local", 2).manifest()
    assert layout_changes(new, fewer) == [
        "layout m1_v1_model: removed (was 2 instances x 1 threads, limiter cpu 1)",
        "layout m2_v1_model: removed (was 2 instances x 1 threads, limiter cpu 1)",
        "layout: 2 models changed, new or removed, 2 unchanged",
    ]
    assert layout_changes(None, new) == ["layout: 4 models, 7 instances (no previous manifest to compare with)"]
    assert ServerSettings(2, 4).changes(ServerSettings(2, 4)) == []
