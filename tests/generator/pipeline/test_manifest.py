"""The repository manifest: written from the plan, read back equal; invalid files name the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generator.base.sources import source_digest
from generator.pipeline.checks import CheckError, check_artifacts, check_configs
from generator.pipeline.manifest import MANIFEST_FILE, SCHEMA_VERSION, Manifest, ManifestError, find_manifest
from generator.pipeline.render import render_repository
from generator.pipeline.spec import load_specs
from tests.generator.pipeline.planning import planned

PROJECT = Path(__file__).resolve().parents[3]
SPECS = load_specs(PROJECT / "models")


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return planned(SPECS, "local", 2).manifest()


@pytest.mark.parametrize(("target", "cores"), [("local", 2), ("ngc", 16)])
def test_written_manifest_reads_back_equal(target: str, cores: int, tmp_path: Path) -> None:
    plan = planned(SPECS, target, cores)
    written = plan.manifest()
    path = written.write(tmp_path)
    assert path == tmp_path / MANIFEST_FILE
    assert Manifest.read(tmp_path) == written == find_manifest(tmp_path)
    text = path.read_text(encoding="utf-8")
    assert text == written.to_text() == plan.manifest().to_text()  # deterministic
    assert text.endswith("}\n") and text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    assert (written.target, written.image, written.cpu_budget) == (target, plan.target.image, cores)
    assert written.names() == plan.model_names()
    assert written.server_settings() == plan.server_settings()


def test_the_checked_in_repository_manifest_parses() -> None:
    checked_in = Manifest.read(PROJECT / "repository")
    assert checked_in.schema_version == SCHEMA_VERSION and checked_in.target == "local"
    assert checked_in.names() == planned(SPECS, "local", checked_in.cpu_budget).model_names()


def test_models_record_what_the_tools_need(manifest: Manifest) -> None:
    online = manifest.models["minilm_embed"]
    assert (online.role, online.spec, online.version, online.is_ensemble) == ("online", "minilm_embed", 1, True)
    assert manifest.preprocessing("minilm_embed") == online.depends_on[0]
    inference = manifest.models[manifest.inference_model("minilm_embed")]
    assert (inference.role, inference.format, inference.files) == ("inference", "onnx_ragged", ("model.onnx",))
    assert inference.batching.max_queue_delay_us is not None and inference.threads
    pre = manifest.models[manifest.preprocessing("minilm_embed")]
    assert "model.py" in pre.files and pre.users and pre.inputs == ("TEXT",)
    assert online.batching.max_queue_delay_us is None and online.inputs == ("TEXT",)
    assert [m.name for m in manifest.entry_points("bulk", "text_classifier")] == ["text_classifier_batch"]
    order = manifest.load_order(["minilm_embed", inference.name, pre.name])
    assert order.index("minilm_embed") == 2
    assert "minilm_embed" in manifest.dependents(inference.name)
    with pytest.raises(ManifestError, match="not an ensemble"):
        manifest.inference_model(inference.name)


def _broken(manifest: Manifest, tmp_path: Path, edit: object) -> str:
    data = json.loads(manifest.to_text())
    edit(data)  # type: ignore[operator]
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(ManifestError) as raised:
        Manifest.read(tmp_path)
    assert str(tmp_path / MANIFEST_FILE) in str(raised.value)
    return str(raised.value)


def test_a_missing_field_names_the_file_and_the_field(manifest: Manifest, tmp_path: Path) -> None:
    assert "cpu_budget" in _broken(manifest, tmp_path, lambda data: data.pop("cpu_budget"))
    message = _broken(manifest, tmp_path, lambda data: data["models"]["minilm_embed"].pop("role"))
    assert "models.minilm_embed.role" in message


def test_a_wrong_type_names_the_file_and_the_field(manifest: Manifest, tmp_path: Path) -> None:
    assert "cpu_budget" in _broken(manifest, tmp_path, lambda data: data.update(cpu_budget="2"))
    message = _broken(manifest, tmp_path, lambda data: data["models"]["minilm_embed"].update(role="entry"))
    assert "models.minilm_embed.role" in message
    assert "unknown" in _broken(manifest, tmp_path, lambda data: data.update(unknown=1)).lower()
    assert "schema_version" in _broken(manifest, tmp_path, lambda data: data.update(schema_version=0))


def test_inconsistent_models_are_refused(manifest: Manifest, tmp_path: Path) -> None:
    renamed = _broken(manifest, tmp_path, lambda data: data["models"]["minilm_embed"].update(name="other"))
    assert "is named 'other'" in renamed
    missing = _broken(manifest, tmp_path, lambda data: data["models"]["minilm_embed"].update(depends_on=["gone"]))
    assert "['gone']" in missing


def test_not_json_or_no_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=f"{tmp_path / MANIFEST_FILE} is missing"):
        Manifest.read(tmp_path)
    assert find_manifest(tmp_path) is None
    (tmp_path / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ManifestError, match=f"{tmp_path / MANIFEST_FILE}: not a tritongen manifest"):
        Manifest.read(tmp_path)


def test_check_artifacts_takes_the_model_files_from_the_manifest(tmp_path: Path) -> None:
    files = {f.path: f.text for f in render_repository(planned(SPECS, "local", 2))}
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    manifest = Manifest.read(tmp_path)
    with pytest.raises(CheckError) as raised:
        check_artifacts(tmp_path, check_configs(files))
    expected = [
        f"{name}: file {tmp_path / name / '1' / filename} is missing"
        for name, model in sorted(manifest.models.items())
        for filename in model.files
        if filename != "model.py"  # rendered, the others are built
    ]
    assert expected and str(raised.value).splitlines() == [f"{line} (run `tritongen generate`)" for line in expected]


def test_inference_models_record_the_digests_of_their_versions_sources(manifest: Manifest) -> None:
    version = next(spec for spec in SPECS if spec.name == "minilm_embed").version(1)
    inference = manifest.models[manifest.inference_model("minilm_embed")]
    assert inference.sources == {
        "preprocessing.tokenizer": source_digest(version.preprocessing.tokenizer),
        "model.build.source": source_digest(version.model.build.source),
    }
    assert inference.sources["model.build.source"].startswith("sha256:")
    assert "/" not in json.dumps(inference.sources)  # no path of this machine
    assert all(not model.sources for model in manifest.models.values() if model.role != "inference")
