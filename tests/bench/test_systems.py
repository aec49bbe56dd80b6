"""bench.systems: shipped specs as dicts, generated repositories and their manifest, Triton's
statistics (recorded), answers and process trees (no server)."""

from __future__ import annotations

import copy
import re
import signal
import subprocess
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import numpy as np
import onnx
import pytest
import yaml

from bench import systems
from bench.systems import Running
from generator.environments.settings import CHANNELS_VARIABLE
from generator.pipeline.manifest import ManifestError, read_manifest
from generator.pipeline.spec import ModelSpec, SpecError
from generator.serving.process import TritonProcess

from .recorded import INFERENCE_MODEL, STATS_AFTER, STATS_FRESH, replay, stats_answer

HTTP = "127.0.0.1:8000"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`minilm_embed` and `minilm_embed_ts` without their environments, as the bench runs them."""
    specs = [systems.without_environments(systems.spec_dict(n)) for n in ("minilm_embed", "minilm_embed_ts")]
    return systems.make_repository(tmp_path_factory.mktemp("bench"), specs, 2)


def _config(repository: Path, model: str) -> str:
    return (repository / model / "config.pbtxt").read_text(encoding="utf-8")


def test_spec_dict_is_the_shipped_yaml_and_a_fresh_copy_each_time() -> None:
    spec = systems.spec_dict("minilm_embed")
    assert spec == yaml.safe_load((systems.PROJECT_ROOT / "models" / "minilm_embed.yaml").read_text(encoding="utf-8"))
    spec["name"] = "copy00"
    spec["versions"][0]["preprocessing"]["padding"] = "buckets"
    again = systems.spec_dict("minilm_embed")
    assert again["name"] == "minilm_embed"
    assert again["versions"][0]["preprocessing"]["padding"] == "none"  # the shipped spec is unpadded


def test_without_environments_drops_them_from_every_version_and_leaves_the_input_alone() -> None:
    spec = systems.spec_dict("minilm_embed")
    second = {**copy.deepcopy(spec["versions"][0]), "version": 2}
    second["preprocessing"]["environment_format"] = "folder"
    spec["versions"].append(second)
    before = copy.deepcopy(spec)
    stripped = systems.without_environments(spec)
    assert spec == before
    for version in stripped["versions"]:
        assert "environment" not in version["preprocessing"]
        assert "environment_format" not in version["preprocessing"]
    for version in before["versions"]:
        version["preprocessing"].pop("environment")
        version["preprocessing"].pop("environment_format", None)
    assert stripped == before
    single = systems.without_environments(systems.spec_dict("minilm_embed"))
    assert ModelSpec.model_validate(single).versions[0].preprocessing.environment is None


def test_make_repository_writes_the_specs_and_generates_them(repository: Path) -> None:
    assert repository.name == "repository"
    written = sorted((repository.parent / "specs").glob("*.yaml"))
    assert [p.name for p in written] == ["minilm_embed.yaml", "minilm_embed_ts.yaml"]
    for path in written:
        expected = systems.without_environments(systems.spec_dict(path.stem))
        assert yaml.safe_load(path.read_text(encoding="utf-8")) == expected
    manifest = read_manifest(repository)
    assert {m.name for m in manifest.entry_points("online")} == {"minilm_embed", "minilm_embed_ts"}
    assert all(m.environment is None for m in manifest.models.values())


@pytest.mark.parametrize(
    ("ensemble", "backend", "suffix"), [("minilm_embed", "onnxruntime", ".onnx"), ("minilm_embed_ts", "pytorch", ".pt")]
)
def test_inference_model_and_file_are_the_ensembles_last_step(
    repository: Path, ensemble: str, backend: str, suffix: str
) -> None:
    model = systems.inference_model(repository, ensemble)
    steps = re.findall(r'model_name: "([^"]+)"', _config(repository, ensemble))
    assert model == steps[-1] != ensemble
    config = _config(repository, model)
    assert f'backend: "{backend}"' in config
    path = systems.inference_file(repository, ensemble)
    assert path.is_file() and path.suffix == suffix
    assert path.parent == repository / model / "1"
    if suffix == ".onnx":
        inputs = {i.name for i in onnx.load(str(path), load_external_data=False).graph.input}
        declared = set(re.findall(r'input \{\s+name: "([^"]+)"', config))
        batch_inputs = set(re.findall(r'target_name: "([^"]+)"', config))  # the unpadded model's offsets
        assert declared == {"input_ids", "lengths"} and batch_inputs == {"token_offsets", "text_offsets"}
        assert inputs == declared | batch_inputs
    else:
        assert zipfile.is_zipfile(path)  # a TorchScript archive


def test_inference_model_of_an_unknown_ensemble_names_it(repository: Path) -> None:
    with pytest.raises(ManifestError, match="'minilm_embed_v1_model' is not an ensemble"):
        systems.inference_model(repository, "minilm_embed_v1_model")


def test_make_repository_serves_preprocessing_in_the_server_python_when_environments_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A channel that does not exist: the environment build fails at once, offline.
    monkeypatch.setenv(CHANNELS_VARIABLE, (tmp_path / "no-channel").as_uri())
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "stale.yaml").write_text("name: stale\n", encoding="utf-8")  # a previous run's
    repository = systems.make_repository(tmp_path, [systems.spec_dict("minilm_embed")], 2)
    message = capsys.readouterr().out
    assert "execution environments could not be built (environment 'textprep-tok023'" in message
    assert "serving the preprocessing in the server's own Python instead" in message
    assert [p.name for p in (tmp_path / "specs").iterdir()] == ["minilm_embed.yaml"]
    written = yaml.safe_load((tmp_path / "specs" / "minilm_embed.yaml").read_text(encoding="utf-8"))
    assert written == systems.without_environments(systems.spec_dict("minilm_embed"))
    manifest = read_manifest(repository)
    assert manifest.models[manifest.preprocessing("minilm_embed")].environment is None


def test_make_repository_raises_what_is_not_an_environment_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = systems.without_environments(systems.spec_dict("minilm_embed"))
    spec["versions"][0]["preprocessing"]["padding"] = "sideways"
    with pytest.raises(SpecError, match="padding"):
        systems.make_repository(tmp_path, [spec], 2)
    assert "environments could not be built" not in capsys.readouterr().out
    assert not (tmp_path / "repository").exists()


def _running(stats_model: str | None = INFERENCE_MODEL, triton: bool = True) -> Running:
    server = cast(TritonProcess, SimpleNamespace(http_url=HTTP)) if triton else None
    return Running("S4", "test", triton=server, stats_model=stats_model)


def test_batch_counts_reads_the_inference_models_statistics(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://{HTTP}/v2/models/{INFERENCE_MODEL}/stats"
    asked = replay(monkeypatch, {url: [stats_answer(STATS_FRESH), stats_answer(STATS_AFTER)]})
    running = _running()
    before = systems.batch_counts(running)
    after = systems.batch_counts(running)
    assert (before, after) == ((0, 0), (40, 10))
    assert asked == [url, url]
    assert systems.average_batch(before, after) == 4.0


def test_batch_counts_without_statistics_asks_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = replay(monkeypatch, {})
    assert systems.batch_counts(_running(triton=False)) is None  # S1, S2: no Triton
    assert systems.batch_counts(_running(stats_model=None)) is None  # several inference models
    assert asked == []


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ((10, 5), (50, 15), 4.0),
        ((10, 5), (11, 6), 1.0),
        ((10, 5), (10, 5), None),  # no execution in between
        (None, (10, 5), None),
        ((10, 5), None, None),
    ],
)
def test_average_batch_is_inferences_per_execution_in_between(
    before: tuple[int, int] | None, after: tuple[int, int] | None, expected: float | None
) -> None:
    assert systems.average_batch(before, after) == expected


def test_embedding_of_reads_every_answer_format() -> None:
    values = [0.25, -0.5, 1.0]
    baseline = systems.embedding_of({"embedding": values})
    # Infinity's OpenAI-style answer (as it answered `loadgen.openai_body`, the embedding shortened)
    openai = systems.embedding_of(
        {
            "object": "list",
            "data": [{"object": "embedding", "embedding": values, "index": 0}],
            "model": "minilm",
            "usage": {"prompt_tokens": 13, "total_tokens": 13},
            "id": "infinity-0b3e4c2a",
            "created": 1796680000,
        }
    )
    kserve = systems.embedding_of(
        {
            "model_name": "minilm_embed",
            "model_version": "1",
            "outputs": [{"name": "EMBEDDING", "datatype": "FP32", "shape": [1, 3], "data": values}],
        }
    )
    for got in (baseline, openai, kserve):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, np.array(values, dtype=np.float32))


def test_embedding_of_an_error_answer_is_a_key_error() -> None:
    # wait_answering retries on KeyError: a server still loading answers {"error": ...}.
    with pytest.raises(KeyError):
        systems.embedding_of({"error": "Request for unknown model: 'minilm_embed' is not found"})


def test_wait_answering_stops_when_the_server_exited() -> None:
    process = subprocess.Popen(["sh", "-c", "exit 3"])
    process.wait()
    with pytest.raises(systems.BenchError, match="server exited with code 3"):
        systems.wait_answering("http://127.0.0.1:9/embed", "{}", np.ones(3, np.float32), process=process)


def test_started_stops_the_servers_even_when_the_measurement_fails() -> None:
    process = subprocess.Popen(["sleep", "60"], start_new_session=True)
    running = Running("S1", "test", roots=[process.pid], processes=[process])
    with pytest.raises(RuntimeError, match="measurement failed"), systems.started(running) as inside:
        assert inside is running and process.poll() is None
        raise RuntimeError("measurement failed")
    assert process.returncode == -signal.SIGTERM
    systems.stop(running)  # stopping again is harmless
