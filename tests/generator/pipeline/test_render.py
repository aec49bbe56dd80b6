"""Planning and rendering: naming scheme, CPU sizing, targets, determinism."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from generator.kinds.targets import NGC_IMAGE
from generator.pipeline.manifest import MANIFEST_FILE, Manifest
from generator.pipeline.plan import PlanError, plan_repository
from generator.pipeline.render import render_repository
from generator.pipeline.spec import SpecError, load_specs, parse_spec
from tests.generator.pipeline.planning import planned

PROJECT = Path(__file__).resolve().parents[3]
SPECS = load_specs(PROJECT / "models")


def configs(target: str = "local", cores: int = 2) -> dict[str, mc.ModelConfig]:
    files = render_repository(planned(SPECS, target, cores))  # type: ignore[arg-type]
    parsed = {}
    for f in files:
        if f.path.endswith("config.pbtxt"):
            parsed[f.path.split("/")[0]] = text_format.Parse(f.text, mc.ModelConfig())
    return parsed


def pre_model(ensemble: str) -> str:
    """The preprocessing model an ensemble runs (named by content: read from the plan)."""
    return next(e.preprocess.name for e in planned(SPECS).ensembles() if e.name == ensemble)


def test_naming_scheme() -> None:
    names = set(configs())
    pres = {p.name for p in planned(SPECS).preprocess_models()}
    assert pres and all(re.fullmatch(r"textprep_[0-9a-f]{12}", name) for name in pres), pres
    assert pres <= names
    assert {
        "minilm_embed",
        "minilm_embed_batch",
        "minilm_embed_v1",
        pre_model("minilm_embed_v1"),
        "minilm_embed_v1_model",
    } <= names
    assert {"text_classifier_v1", "text_classifier_v2", pre_model("text_classifier_v1")} <= names
    assert pre_model("text_classifier_v1") != pre_model("text_classifier_v2")  # their preprocessing differs
    assert not [name for name in names if name.endswith("_bulk")]  # bulk runs the online model


def test_entry_points_follow_default_version() -> None:
    parsed = configs()
    steps = [s.model_name for s in parsed["text_classifier"].ensemble_scheduling.step]
    assert steps == [pre_model("text_classifier_v2"), "text_classifier_v2_model"]
    bulk = [s.model_name for s in parsed["text_classifier_batch"].ensemble_scheduling.step]
    assert bulk == [pre_model("text_classifier_v2"), "text_classifier_v2_model"]  # at priority 2


def test_client_contract() -> None:
    parsed = configs()
    text = parsed["minilm_embed"].input[0]
    assert (text.name, text.data_type, list(text.dims)) == ("TEXT", mc.TYPE_STRING, [1])
    assert [(o.name, o.data_type, list(o.dims)) for o in parsed["minilm_embed"].output] == [
        ("EMBEDDING", mc.TYPE_FP32, [384])
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in parsed["text_classifier"].output] == [
        ("LOGITS", mc.TYPE_FP32, [4]),
        ("PROBABILITIES", mc.TYPE_FP32, [4]),
        ("LABEL", mc.TYPE_STRING, [1]),
    ]


@pytest.mark.parametrize("cores", [1, 2, 8, 16])
def test_instances_times_threads_fit_the_budget(cores: int) -> None:
    for name, config in configs(cores=cores).items():
        if not name.endswith("_model"):
            continue
        threads = config.parameters.get("intra_op_thread_count") or config.parameters["INTRA_OP_THREAD_COUNT"]
        assert config.instance_group[0].count * int(threads.string_value) <= cores
        assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
        assert config.dynamic_batching.max_queue_delay_microseconds > 0


def test_targets_get_the_same_model_files() -> None:
    """What the tests serve (local) is what users deploy (ngc): identical model files; the
    manifests differ only in the target and its image."""
    local = render_repository(planned(SPECS, "local", 2))
    ngc = render_repository(planned(SPECS, "ngc", 2))
    assert [(f.path, f.text) for f in local if f.path != MANIFEST_FILE] == [
        (f.path, f.text) for f in ngc if f.path != MANIFEST_FILE
    ]
    manifests = [Manifest.parse(next(f.text for f in files if f.path == MANIFEST_FILE)) for files in (local, ngc)]
    assert [(m.target, m.image) for m in manifests] == [("local", "tritongen-triton:latest"), ("ngc", NGC_IMAGE)]
    assert manifests[0].model_copy(update={"target": "ngc", "image": NGC_IMAGE}) == manifests[1]
    backends = {line for f in local for line in f.text.splitlines() if line.startswith("backend:")}
    assert backends == {'backend: "python"', 'backend: "onnxruntime"', 'backend: "pytorch"'}
    models = {f.path.split("/")[0] for f in local if f.path.endswith("/1/model.py")}
    assert models == {p.name for p in planned(SPECS).preprocess_models()}


def test_rendering_is_deterministic() -> None:
    first = render_repository(planned(SPECS, "local", 2))
    second = render_repository(planned(load_specs(PROJECT / "models"), "local", 2))
    assert first == second


def test_name_collisions_between_specs_are_rejected() -> None:
    base = (PROJECT / "models" / "minilm_embed.yaml").read_text()
    clash = parse_spec(base.replace("name: minilm_embed", "name: minilm_embed_v1"), "x.yaml")
    with pytest.raises(PlanError, match="generated by both"):
        plan_repository([next(s for s in SPECS if s.name == "minilm_embed"), clash], "local", 2)


def test_preprocessing_parameters_per_version() -> None:
    parsed = configs()
    v1 = parsed[pre_model("text_classifier_v1")].parameters
    v2 = parsed[pre_model("text_classifier_v2")].parameters
    assert (v1["max_length"].string_value, v1["casing"].string_value) == ("128", "keep")
    assert (v2["max_length"].string_value, v2["casing"].string_value) == ("32", "lowercase")
    assert v1["padding"].string_value == "batch_longest" and v2["padding"].string_value == "none"


def test_the_ragged_classifier_version_renders_ragged_and_keeps_the_client_contract() -> None:
    parsed = configs()
    v1, v2 = parsed["text_classifier_v1_model"], parsed["text_classifier_v2_model"]
    assert not any(i.allow_ragged_batch for i in v1.input) and not v1.batch_input
    assert [(i.name, list(i.dims), i.allow_ragged_batch) for i in v2.input] == [
        ("input_ids", [-1], True),
        ("lengths", [1], True),
    ]
    assert [list(b.target_name) for b in v2.batch_input] == [["token_offsets"], ["text_offsets"]]
    for model in (v1, v2):
        assert [(o.name, o.data_type, list(o.dims)) for o in model.output] == [
            ("logits", mc.TYPE_FP32, [4]),
            ("probabilities", mc.TYPE_FP32, [4]),
            ("label", mc.TYPE_STRING, [1]),
        ]
    assert [o.name for o in parsed[pre_model("text_classifier_v2")].output] == ["INPUT_IDS", "LENGTHS"]
    for ensemble in ("text_classifier", "text_classifier_v1", "text_classifier_v2"):
        assert [o.name for o in parsed[ensemble].output] == ["LOGITS", "PROBABILITIES", "LABEL"]


def test_a_ragged_format_renders_ragged_inputs_and_batch_inputs() -> None:
    files = {f.path: f.text for f in render_repository(planned(SPECS, "local", 2))}
    model = text_format.Parse(files["minilm_embed_v1_model/config.pbtxt"], mc.ModelConfig())
    assert [(i.name, list(i.dims), i.allow_ragged_batch) for i in model.input] == [
        ("input_ids", [-1], True),
        ("lengths", [1], True),
    ]
    assert [(list(b.target_name), mc.BatchInput.Kind.Name(b.kind), b.data_type, list(b.source_input))
            for b in model.batch_input] == [
        (["token_offsets"], "BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO", mc.TYPE_INT32, ["input_ids"]),
        (["text_offsets"], "BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO", mc.TYPE_INT32, ["lengths"]),
    ]  # fmt: skip
    pre = text_format.Parse(files[f"{pre_model('minilm_embed_v1')}/config.pbtxt"], mc.ModelConfig())
    assert [o.name for o in pre.output] == ["INPUT_IDS", "LENGTHS"]
    assert pre.parameters["padding"].string_value == "none"


@pytest.mark.parametrize(
    ("fmt", "padding", "message"),
    [
        ("onnx_ragged", "batch_longest", "takes unpadded tokens: set `padding: none`"),
        ("onnx", "none", "`none` (unpadded tokens) needs a ragged format"),
    ],
)
def test_ragged_formats_and_unpadded_preprocessing_go_together(fmt: str, padding: str, message: str) -> None:
    import yaml

    data = yaml.safe_load((PROJECT / "models" / "minilm_embed.yaml").read_text())
    data["versions"][0]["model"]["format"] = fmt
    data["versions"][0]["preprocessing"]["padding"] = padding
    with pytest.raises(SpecError, match=re.escape(message)):
        parse_spec(yaml.safe_dump(data), "models/minilm_embed.yaml")
