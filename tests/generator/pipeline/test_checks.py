"""Offline validation: broken configs, miswired ensembles, ONNX mismatches, drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.kinds.formats.onnx import check_onnx
from generator.pipeline.checks import CheckError, check_configs, check_native_rules, drift
from generator.pipeline.generate import MANAGED_SUFFIXES
from generator.pipeline.render import render_repository
from generator.pipeline.spec import load_specs
from tests.generator.pipeline.planning import planned

PROJECT = Path(__file__).resolve().parents[3]


@pytest.fixture()
def files() -> dict[str, str]:
    plan = planned(load_specs(PROJECT / "models"), "local", 2)
    return {f.path: f.text for f in render_repository(plan)}


def test_generated_configs_pass(files: dict[str, str]) -> None:
    models = check_configs(files)
    assert sorted(models) == planned(load_specs(PROJECT / "models"), "local", 2).model_names()


def test_unparseable_config_named(files: dict[str, str]) -> None:
    files["minilm_embed_padded_v1_model/config.pbtxt"] += "\nmax_batch_sise: 4\n"
    with pytest.raises(CheckError, match="minilm_embed_padded_v1_model/config.pbtxt: not a valid Triton ModelConfig"):
        check_configs(files)


def test_folder_and_name_must_agree(files: dict[str, str]) -> None:
    path = "minilm_embed_padded_v1_model/config.pbtxt"
    files[path] = files[path].replace('name: "minilm_embed_padded_v1_model"', 'name: "other"')
    with pytest.raises(CheckError, match="differs from its folder"):
        check_configs(files)


@pytest.mark.parametrize(
    ("path", "old", "new", "message"),
    [
        (
            "minilm_embed_padded/config.pbtxt",
            'model_name: "minilm_embed_padded_v1_model"',
            'model_name: "nope"',
            "model 'nope' is not in the repository",
        ),
        (
            "minilm_embed_padded_v1_model/config.pbtxt",
            "data_type: TYPE_INT64",
            "data_type: TYPE_INT32",
            "is TYPE_INT32 but '_input_ids' is TYPE_INT64",
        ),
        (
            "minilm_embed_padded/config.pbtxt",
            'value: "_attention_mask"\n    }\n    input_map',
            'value: "_nothing"\n    }\n    input_map',
            "reads '_nothing', which no earlier step produces",
        ),
        (
            "minilm_embed_padded/config.pbtxt",
            "dims: 384",
            "dims: 768",
            "output 'EMBEDDING' is declared TYPE_FP32 [768] but its step produces TYPE_FP32 [384]",
        ),
        (
            "minilm_embed_padded_v1_model/config.pbtxt",
            "max_batch_size: 64",  # the bulk entry point's requests too
            "max_batch_size: 4",
            "max_batch_size 4 is below the ensemble's",
        ),
        ("minilm_embed_padded_v1_model/config.pbtxt", "kind: KIND_CPU", "kind: KIND_GPU", "is not KIND_CPU"),
    ],
)
def test_miswired_ensembles(files: dict[str, str], path: str, old: str, new: str, message: str) -> None:
    assert old in files[path]
    files[path] = files[path].replace(old, new, 1)
    with pytest.raises(CheckError) as raised:
        check_configs(files)
    assert message in str(raised.value)


def test_drift_reports_a_diff(tmp_path: Path, files: dict[str, str]) -> None:
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    assert drift(files, tmp_path, MANAGED_SUFFIXES) == ""
    edited = tmp_path / "minilm_embed_padded/config.pbtxt"
    edited.write_text(edited.read_text().replace("max_batch_size: 32", "max_batch_size: 16"))
    (tmp_path / "stale_model").mkdir()
    (tmp_path / "stale_model/config.pbtxt").write_text('name: "stale_model"\n')
    diff = drift(files, tmp_path, MANAGED_SUFFIXES)
    assert "-max_batch_size: 16" in diff and "+max_batch_size: 32" in diff
    assert "stale_model/config.pbtxt (not generated)" in diff


def test_onnx_graph_must_match_config(tmp_path: Path, files: dict[str, str]) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["input_ids"], ["embedding"], to=TensorProto.FLOAT)],
        "g",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["b", "s"])],
    )
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), str(path))
    config = check_configs(files)["minilm_embed_padded_v1_model"]
    problems = check_onnx(path, config)
    assert any(
        "config inputs ['attention_mask', 'input_ids'] differ from the ONNX graph's ['input_ids']" in p
        for p in problems
    ), problems


def _pytorch_config(name: str, parameters: dict[str, str], backend: str = "pytorch") -> str:
    lines = [f'name: "{name}"', f'backend: "{backend}"', "max_batch_size: 4"]
    lines += [f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}' for k, v in parameters.items()]
    return "\n".join(lines) + "\n"


def test_native_rules_pass_on_the_shipped_repository(files: dict[str, str]) -> None:
    check_native_rules(check_configs(files))


def test_two_interop_thread_counts_would_abort_nvidias_server() -> None:
    files = {
        f"{name}/config.pbtxt": _pytorch_config(name, {"INTER_OP_THREAD_COUNT": "1", "INTRA_OP_THREAD_COUNT": "1"})
        for name in ("a_v1_model", "b_v1_model")
    }
    with pytest.raises(CheckError, match=r"a_v1_model, b_v1_model each set INTER_OP_THREAD_COUNT.*aborts"):
        check_native_rules(check_configs(files))


def test_different_intra_op_threads_are_process_wide_on_pytorch() -> None:
    files = {
        "a/config.pbtxt": _pytorch_config("a", {"INTRA_OP_THREAD_COUNT": "1"}),
        "b/config.pbtxt": _pytorch_config("b", {"INTRA_OP_THREAD_COUNT": "4"}),
    }
    with pytest.raises(CheckError, match="process-wide"):
        check_native_rules(check_configs(files))


def test_a_backend_nvidias_image_lacks_fails_the_check() -> None:
    files = {"a/config.pbtxt": _pytorch_config("a", {}, backend="tritongen_textprep")}
    with pytest.raises(CheckError, match="not in NVIDIA's image"):
        check_native_rules(check_configs(files))


def test_the_plan_keeps_process_wide_threads_equal() -> None:
    from generator.kinds.formats import FORMATS

    plan = planned(load_specs(PROJECT / "models"), "local", 8)
    threads = {i.threads for i in plan.inference_models() if FORMATS["torchscript"] is i.format}
    assert len(threads) == 1


def test_drift_ignores_built_environments_and_caches(files: dict[str, str], tmp_path: Path) -> None:
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    for built in (
        "textprep_0123456789ab/_envs/env/lib/python3.10/site-packages/pkg/model.py",
        "textprep_0123456789ab/1/__pycache__/x/.keep",
    ):
        (tmp_path / built).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / built).write_text("not generated")
    assert drift(files, tmp_path, MANAGED_SUFFIXES) == ""
