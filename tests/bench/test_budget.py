"""bench.budget: the repositories it generates, Triton's counters (recorded) and the ensemble wait
derived from them, and the command line (no server, no client)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench import budget, systems
from generator.pipeline.manifest import read_manifest
from generator.pipeline.plan import detected_cores

from .recorded import INFERENCE_MODEL, METRICS_AFTER, METRICS_FRESH, replay

METRICS = "127.0.0.1:8002"
COUNTERS = {
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
    "nv_inference_pending_request_count",
}


def _counters(monkeypatch: pytest.MonkeyPatch, text: str, model: str) -> dict[str, float]:
    asked = replay(monkeypatch, {f"http://{METRICS}/metrics": [text]})
    counters = budget.model_counters(METRICS, model)
    assert asked == [f"http://{METRICS}/metrics"]
    return counters


def test_model_counters_are_one_models_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    ensemble = _counters(monkeypatch, METRICS_AFTER, "minilm_embed")
    assert set(ensemble) == COUNTERS
    assert ensemble["nv_inference_request_success"] == 40
    assert ensemble["nv_inference_exec_count"] == 40
    assert ensemble["nv_inference_request_duration_us"] == 1_447_090
    assert ensemble["nv_inference_request_failure"] == 0  # four reasons, each 0
    model = _counters(monkeypatch, METRICS_AFTER, INFERENCE_MODEL)
    assert set(model) == COUNTERS
    assert model["nv_inference_exec_count"] == 10  # not the ensemble's 40: `model="minilm_embed"` is exact
    assert _counters(monkeypatch, METRICS_AFTER, "minilm") == {}


def test_model_counters_add_up_a_models_label_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    second_version = (
        f'nv_inference_exec_count{{model="{INFERENCE_MODEL}",version="2"}} 5\n'
        f'nv_inference_request_failure{{model="{INFERENCE_MODEL}",reason="BACKEND",version="2"}} 2\n'
        f'nv_inference_request_failure{{model="{INFERENCE_MODEL}",reason="OTHER",version="2"}} 1\n'
    )
    counters = _counters(monkeypatch, METRICS_AFTER + second_version, INFERENCE_MODEL)
    assert counters["nv_inference_exec_count"] == 15
    assert counters["nv_inference_request_failure"] == 3


def test_ensemble_wait_is_its_duration_less_its_steps_compute(monkeypatch: pytest.MonkeyPatch) -> None:
    before = _counters(monkeypatch, METRICS_FRESH, "minilm_embed")
    after = _counters(monkeypatch, METRICS_AFTER, "minilm_embed")
    wait = budget.ensemble_wait_ms(before, after)
    assert wait == round((1_447_090 - 3_986 - 561_179 - 77_797) / 40 / 1000, 2) == 20.1
    # What it stands for: the composing models' queues (textprep's and the inference model's).
    queued = (694_735 + 147_883) / 40 / 1000
    assert wait == pytest.approx(queued, rel=0.1)
    assert budget.ensemble_wait_ms(after, after) is None  # no request in between


@pytest.fixture
def shipped_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The shipped spec without its environment (no conda solve), as the spec `budget` copies."""
    spec = systems.without_environments(systems.spec_dict("minilm_embed"))
    path = tmp_path / "minilm_embed.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    monkeypatch.setattr(budget, "SPEC", path)
    return spec


def test_make_repository_copies_the_spec_under_numbered_names(tmp_path: Path, shipped_spec: dict[str, Any]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    repository = budget.make_repository(work, 2, 2)
    assert repository == work / "repository"
    written = {p.name: yaml.safe_load(p.read_text(encoding="utf-8")) for p in (work / "specs").iterdir()}
    assert written == {"m00.yaml": {**shipped_spec, "name": "m00"}, "m01.yaml": {**shipped_spec, "name": "m01"}}
    manifest = read_manifest(repository)
    assert [m.name for m in manifest.entry_points("online")] == ["m00", "m01"]
    assert manifest.cpu_budget == 2


def test_make_repository_of_one_copy_keeps_the_name_and_its_bulk_entry_point(
    tmp_path: Path, shipped_spec: dict[str, Any]
) -> None:
    repository = budget.make_repository(tmp_path, 1, 2)
    manifest = read_manifest(repository)
    # What `priority` relies on: `<name>` and `<name>_batch` share the inference model; bulk has a priority.
    [online] = manifest.entry_points("online")
    [bulk] = manifest.entry_points("bulk", online.spec)
    assert (online.name, bulk.name) == ("minilm_embed", "minilm_embed_batch")
    assert manifest.inference_model(online.name) == manifest.inference_model(bulk.name)
    assert bulk.priority == 2 and (online.priority or 0) < bulk.priority


def test_make_repository_of_a_spec_folder_takes_its_specs_as_they_are(
    tmp_path: Path, shipped_spec: dict[str, Any]
) -> None:
    specs = tmp_path / "mine"
    specs.mkdir()
    (specs / "embed.yaml").write_text(yaml.safe_dump({**shipped_spec, "name": "embed"}), encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    repository = budget.make_repository(work, 6, 2, specs)
    assert [m.name for m in read_manifest(repository).entry_points("online")] == ["embed"]
    assert not (work / "specs").exists()


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, argparse.Namespace]]:
    """`run_priority` and `run_threads` replaced: the commands `main` ran, with their arguments."""
    ran: list[tuple[str, argparse.Namespace]] = []

    def command(name: str) -> Callable[[argparse.Namespace], dict[str, Any]]:
        def stand_in(args: argparse.Namespace) -> dict[str, Any]:
            ran.append((name, args))
            return {"command": name, "ok": 1}

        return stand_in

    monkeypatch.setattr(budget, "run_priority", command("priority"))
    monkeypatch.setattr(budget, "run_threads", command("threads"))
    return ran


def test_main_runs_priority_with_its_defaults_and_prints_the_result(
    commands: list[tuple[str, argparse.Namespace]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert budget.main(["--cores", "3", "priority", "--duration", "5"]) == 0
    [(name, args)] = commands
    assert name == "priority"
    assert (args.cores, args.duration, args.online, args.bulk, args.bulk_batch) == (3, 5.0, 4, 2, 64)
    assert json.loads(capsys.readouterr().out) == {"command": "priority", "ok": 1}


def test_main_runs_threads_with_its_defaults(tmp_path: Path, commands: list[tuple[str, argparse.Namespace]]) -> None:
    assert budget.main(["threads", "--specs", str(tmp_path)]) == 0
    [(name, args)] = commands
    assert name == "threads"
    assert (args.cores, args.copies, args.specs, args.load_threads) == (detected_cores(), 6, tmp_path, None)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: command"),
        (["sizes"], "argument command: invalid choice: 'sizes'"),
        (["--cores", "two", "threads"], "argument --cores: 'two' is not an integer"),
        (["priority", "--duration", "0"], "argument --duration: '0' is not positive"),
        (["priority", "--online", "-1"], "argument --online: '-1' is not positive"),
        (["priority", "--bulk-batch", "2000"], "--bulk-batch must be below the corpus's 2000 texts, not 2000"),
        (["threads", "--copies", "0"], "argument --copies: '0' is not positive"),
        (["threads", "--load-threads", "1.5"], "argument --load-threads: '1.5' is not an integer"),
    ],
)
def test_main_rejects_bad_options_before_any_work(
    argv: list[str],
    message: str,
    commands: list[tuple[str, argparse.Namespace]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        budget.main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert commands == []
