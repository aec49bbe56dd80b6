"""Content index, update planning, serve state, admin-key flags, load-error parsing (no server)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from bench.soak import memory_growth
from generator.base.launch import RESTRICTED_APIS, ServerOptions, ServerSettings, admin_headers, server_command
from generator.base.triton import TritonServerError
from generator.pipeline.manifest import (
    MANIFEST_FILE,
    SCHEMA_VERSION,
    Manifest,
    ManifestBatching,
    ManifestError,
    ManifestModel,
)
from generator.serving import update as upd
from generator.serving.diagnostics import failed_models
from generator.serving.watchdog import instance_count, stub_processes

PYTHON_MODEL = 'name: "{name}"\nbackend: "tritongen_textprep"\nmax_batch_size: 8\n{extra}'
ENSEMBLE = """# header comment
name: "{name}"
platform: "ensemble"
max_batch_size: 8
ensemble_scheduling {{
  step {{ model_name: "{pre}" model_version: -1 }}
  step {{ model_name: "{model}" model_version: -1 }}
}}
"""


def make_repository(root: Path) -> Path:
    """textprep_00000000d001 (preprocessing), demo_v1_model, demo_v1 and demo (ensembles) with artifacts."""
    for name in ("textprep_00000000d001", "demo_v1_model"):
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(PYTHON_MODEL.format(name=name, extra=""))
    (root / "textprep_00000000d001" / "1" / "tokenizer.json").write_text("{}")
    (root / "demo_v1_model" / "1" / "model.onnx").write_bytes(b"weights")
    for name in ("demo_v1", "demo"):
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / ".keep").write_text("")
        (root / name / "config.pbtxt").write_text(
            ENSEMBLE.format(name=name, pre="textprep_00000000d001", model="demo_v1_model")
        )
    write_manifest(root)
    return root


def write_manifest(root: Path, environment: str | None = None, rate_limit_cores: int | None = None) -> None:
    """The manifest `tritongen generate` would write for make_repository's models (with
    `rate_limit_cores`: the limiter on, the inference model taking that many `cpu` units)."""
    steps = ("textprep_00000000d001", "demo_v1_model")
    models = [
        ManifestModel(
            name=steps[0],
            role="preprocess",
            spec="demo",
            version=1,
            backend="python",
            files=("model.py", "tokenizer.json"),
            batching=ManifestBatching(max_batch_size=8, max_queue_delay_us=0),
            environment=environment,
        ),
        ManifestModel(
            name=steps[1],
            role="inference",
            spec="demo",
            version=1,
            backend="onnxruntime",
            format="onnx",
            files=("model.onnx",),
            batching=ManifestBatching(max_batch_size=8, max_queue_delay_us=1000),
            cpu_units=rate_limit_cores,
        ),
        *(
            ManifestModel(
                name=name,
                role=role,
                spec="demo",
                version=1,
                backend="ensemble",
                batching=ManifestBatching(max_batch_size=8),
                depends_on=steps,
            )
            for name, role in (("demo_v1", "pinned"), ("demo", "online"))
        ),
    ]
    Manifest(
        schema_version=SCHEMA_VERSION,
        target="local",
        image="tritongen-triton:latest",
        cpu_budget=2,
        rate_limit_cores=rate_limit_cores,
        model_load_threads=4,
        backend_configs=(),
        models={model.name: model for model in models},
    ).write(root)


def digests(root: Path) -> dict[str, str]:
    return {name: entry.digest for name, entry in upd.content_index(root).items()}


def test_content_index_changes_only_for_the_changed_model(tmp_path: Path) -> None:
    repository = make_repository(tmp_path / "repo")
    before = digests(repository)
    assert sorted(before) == ["demo", "demo_v1", "demo_v1_model", "textprep_00000000d001"]
    index = upd.content_index(repository)
    assert index["demo"].ensemble and index["demo"].steps == ("textprep_00000000d001", "demo_v1_model")
    assert not index["textprep_00000000d001"].ensemble
    artifact = repository / "demo_v1_model" / "1" / "model.onnx"
    artifact.unlink()
    artifact.write_bytes(b"new weights")
    after = digests(repository)
    assert [n for n in before if before[n] != after[n]] == ["demo_v1_model"]
    (repository / "textprep_00000000d001" / "1" / "extra.txt").write_text("x")
    assert digests(repository)["textprep_00000000d001"] != after["textprep_00000000d001"]


def test_content_index_ignores_the_bytecode_stubs_write(tmp_path: Path) -> None:
    """A loaded python model gets `1/__pycache__/model.cpython-311.pyc`: not a change to reload."""
    repository = make_repository(tmp_path / "repo")
    before = digests(repository)
    cache = repository / "textprep_00000000d001" / "1" / "__pycache__"
    cache.mkdir()
    (cache / "model.cpython-311.pyc").write_bytes(b"bytecode")
    (repository / "textprep_00000000d001" / "1" / "stray.pyc").write_bytes(b"bytecode")
    assert digests(repository) == before


def test_content_index_is_independent_of_location_links_and_mtimes(tmp_path: Path) -> None:
    repository = make_repository(tmp_path / "repo")
    linked = shutil.copytree(repository, tmp_path / "linked", copy_function=os.link)
    copied = shutil.copytree(repository, tmp_path / "copied")
    os.utime(copied / "demo" / "config.pbtxt", (1, 1))
    assert digests(repository) == digests(linked) == digests(copied)


def test_content_index_covers_an_environment_outside_the_model_folder(tmp_path: Path) -> None:
    repository = make_repository(tmp_path / "repo")
    (repository / "_envs").mkdir()
    tarball = repository / "_envs" / "env.tar.gz"
    tarball.write_bytes(b"env 1")
    value = "$$TRITON_MODEL_DIRECTORY/../_envs/env.tar.gz"
    extra = f'parameters {{ key: "EXECUTION_ENV_PATH" value {{ string_value: "{value}" }} }}'
    (repository / "textprep_00000000d001" / "config.pbtxt").write_text(
        PYTHON_MODEL.format(name="textprep_00000000d001", extra=extra)
    )
    write_manifest(repository, environment="_envs/env.tar.gz")
    before = digests(repository)
    assert "_envs" not in before
    tarball.unlink()
    tarball.write_bytes(b"env 2")
    assert digests(repository)["textprep_00000000d001"] != before["textprep_00000000d001"]


def test_invalid_config_is_a_clear_error(tmp_path: Path) -> None:
    repository = make_repository(tmp_path / "repo")
    (repository / "demo" / "config.pbtxt").unlink()
    with pytest.raises(upd.UpdateError, match=r"models \['demo'\] of the manifest have no config.pbtxt"):
        upd.content_index(repository)
    (repository / MANIFEST_FILE).write_text("{}")
    with pytest.raises(ManifestError, match="not a tritongen manifest"):
        upd.content_index(repository)
    with pytest.raises(upd.UpdateError, match="run `tritongen generate`"):
        upd.content_index(tmp_path / "missing")


def test_plan_loads_dependencies_first_and_entry_points_last() -> None:
    index = {
        "demo": upd.ModelEntry("d0", True, ("textprep_00000000d002", "demo_v2_model"), "online"),
        "demo_batch": upd.ModelEntry("b0", True, ("textprep_00000000d002", "demo_v2_model"), "bulk"),
        "demo_v1": upd.ModelEntry("e1", True, ("textprep_00000000d001", "demo_v1_model"), "pinned"),
        "demo_v2": upd.ModelEntry("e2", True, ("textprep_00000000d002", "demo_v2_model"), "pinned"),
        "textprep_00000000d001": upd.ModelEntry("p1"),
        "demo_v1_model": upd.ModelEntry("m1"),
        "textprep_00000000d002": upd.ModelEntry("p2"),
        "demo_v2_model": upd.ModelEntry("m2"),
    }
    recorded = {
        "demo": "old",
        "demo_batch": "old",
        "demo_v1": "e1",
        "textprep_00000000d001": "p1",
        "demo_v1_model": "m1",
        "demo_v1_model_bulk": "k1",  # generated before the bulk entry point shared the online model
    }
    ready = dict.fromkeys([*recorded], "READY")
    plan = upd.plan_update(index, recorded, ready)
    assert [name for name, _ in plan.load] == [
        "demo_v2_model",
        "textprep_00000000d002",
        "demo_v2",
        "demo",
        "demo_batch",
    ]
    assert dict(plan.load)["demo"] == "changed" and dict(plan.load)["textprep_00000000d002"] == "new"
    assert plan.unload == ["demo_v1_model_bulk"]
    assert sorted(plan.unchanged) == ["demo_v1", "demo_v1_model", "textprep_00000000d001"]
    assert "5 to load, 1 to unload, 3 unchanged" in plan.describe()
    # A model that is not ready is loaded again even if its content is recorded.
    again = upd.plan_update(index, recorded, {**ready, "textprep_00000000d001": "UNAVAILABLE"})
    assert ("textprep_00000000d001", "not ready") in again.load


def test_shared_preprocessing_loads_before_its_ensembles_and_unloads_when_unused() -> None:
    """a and b shared textprep_...aaa; a switched to textprep_...bbb (its preprocessing changed):
    the new model loads before a's ensembles, the old one stays while b uses it."""
    old, new = "textprep_000000000aaa", "textprep_000000000bbb"
    index = {
        "a": upd.ModelEntry("a1", True, (new, "a_v1_model"), "online"),
        "a_v1": upd.ModelEntry("av1", True, (new, "a_v1_model"), "pinned"),
        "b": upd.ModelEntry("b0", True, (old, "b_v1_model"), "online"),
        "a_v1_model": upd.ModelEntry("am"),
        "b_v1_model": upd.ModelEntry("bm"),
        old: upd.ModelEntry("p-old"),
        new: upd.ModelEntry("p-new"),
    }
    recorded = {"a": "a0", "a_v1": "av0", "b": "b0", "a_v1_model": "am", "b_v1_model": "bm", old: "p-old"}
    ready = dict.fromkeys(recorded, "READY")
    plan = upd.plan_update(index, recorded, ready)
    assert [name for name, _ in plan.load] == [new, "a_v1", "a"]
    assert plan.unload == [] and old in plan.unchanged
    # b switches too: no ensemble uses the old model any more, it is no longer in the repository.
    index = {**index, "b": upd.ModelEntry("b1", True, (new, "b_v1_model"), "online")}
    del index[old]
    recorded = {**{name: entry.digest for name, entry in index.items() if name != "b"}, "b": "b0", old: "p-old"}
    plan = upd.plan_update(index, recorded, dict.fromkeys(recorded, "READY"))
    assert [name for name, _ in plan.load] == ["b"] and plan.unload == [old]


def test_unload_takes_ensembles_before_the_models_they_run() -> None:
    """Models gone from the repository: a loaded ensemble never runs a step already unloaded."""
    index = {"keep": upd.ModelEntry("k")}
    loaded = ["keep", "aaa_model", "textprep_000000000ccc", "zeta", "zeta_v1"]
    plan = upd.plan_update(index, {"keep": "k"}, dict.fromkeys(loaded, "READY"), {"zeta", "zeta_v1"})
    assert plan.unload == ["zeta", "zeta_v1", "aaa_model", "textprep_000000000ccc"]


def test_state_round_trip_and_admin_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upd, "STATE_ROOT", tmp_path / "serve")
    path = upd.default_state_path("127.0.0.1:8123")
    assert path == tmp_path / "serve" / "port-8123" / "loaded.json"
    assert upd.read_state(path) == {}
    upd.write_state(path, tmp_path, {"b": "2", "a": "1"})
    assert upd.read_state(path) == {"a": "1", "b": "2"}
    path.write_text("{")
    with pytest.raises(upd.UpdateError, match="unreadable"):
        upd.read_state(path)
    monkeypatch.delenv(upd.ADMIN_KEY_VARIABLE, raising=False)
    assert upd.resolve_admin_key(None, "127.0.0.1:8123") is None
    key, key_file = upd.generate_admin_key("127.0.0.1:8123")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and len(key) >= 32
    assert upd.resolve_admin_key(None, "http://127.0.0.1:8123") == key
    monkeypatch.setenv(upd.ADMIN_KEY_VARIABLE, "from-environment-0123456789")
    assert upd.resolve_admin_key(None, "127.0.0.1:8123") == "from-environment-0123456789"
    assert upd.resolve_admin_key("explicit-key-0123456789", "127.0.0.1:8123") == "explicit-key-0123456789"
    with pytest.raises(upd.UpdateError, match="host:port"):
        upd.state_dir("localhost")


def test_the_state_records_the_settings_the_server_was_started_with(tmp_path: Path) -> None:
    path = tmp_path / "loaded.json"
    assert upd.read_server_settings(path) is None
    upd.write_state(path, tmp_path, {"a": "1"})
    assert upd.read_server_settings(path) is None  # a state written before settings were recorded
    settings = ServerSettings(2, 4, ("python,thread-pool-size=1",))
    upd.write_state(path, tmp_path, {"a": "1"}, settings)
    assert upd.read_server_settings(path) == settings and upd.read_state(path) == {"a": "1"}


class FakeServer:
    """The model-repository API of a tritonserver that loads whatever it is asked to (no server)."""

    def __init__(self, ready: dict[str, str]) -> None:
        self.ready = dict(ready)
        self.loaded: list[str] = []

    def get_model_repository_index(self, headers: dict[str, str]) -> list[dict[str, str]]:
        return [{"name": name, "state": state} for name, state in self.ready.items()]

    def is_model_ready(self, name: str) -> bool:
        return self.ready.get(name) == "READY"

    def get_model_config(self, name: str, headers: dict[str, str]) -> dict[str, str]:
        return {}

    def load_model(self, name: str, headers: dict[str, str]) -> None:
        self.loaded.append(name)
        self.ready[name] = "READY"

    def unload_model(self, name: str, headers: dict[str, str]) -> None:
        self.ready.pop(name, None)

    def close(self) -> None:
        pass


def test_update_holds_a_server_setting_change_for_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server runs without the limiter; the regenerated repository asks for it: the models
    load (a server without the limiter runs any instance), the settings are refused by name."""
    repository = make_repository(tmp_path / "repo")
    state = tmp_path / "loaded.json"
    running = ServerSettings(None, 4, ())
    upd.write_state(
        state, repository, {name: entry.digest for name, entry in upd.content_index(repository).items()}, running
    )
    write_manifest(repository, rate_limit_cores=2)
    (repository / "demo_v1_model" / "1" / "model.onnx").write_bytes(b"retrained")
    server = FakeServer(dict.fromkeys(upd.content_index(repository), "READY"))
    monkeypatch.setattr(upd, "http_client", lambda url, timeout_s=600.0: server)
    said: list[str] = []
    result = upd.update(repository, "127.0.0.1:8000", None, state, progress=said.append)
    assert server.loaded == ["demo_v1_model"] and not result.ok
    assert result.restart == [
        "(none) -> --rate-limit=execution_count",
        "(none) -> --rate-limit-resource=cpu:2",
    ]
    assert "server setting needs a restart: (none) -> --rate-limit-resource=cpu:2" in "\n".join(said)
    assert upd.read_server_settings(state) == running  # still what the running server has
    refusal = upd.restart_refusal(result.restart, repository)
    assert f"tritongen serve --repository {repository}" in refusal and "docs/operations.md" in refusal
    # The same settings: nothing to refuse.
    upd.write_state(state, repository, upd.read_state(state), ServerSettings(2, 4, ()))
    assert upd.update(repository, "127.0.0.1:8000", None, state, progress=said.append).ok


def test_models_the_running_limiter_cannot_run_wait_for_the_restart() -> None:
    index = {
        "demo": upd.ModelEntry("d1", True, ("textprep_00000000d001", "demo_v1_model"), "online"),
        "demo_v1_model": upd.ModelEntry("m2"),
        "textprep_00000000d001": upd.ModelEntry("p1"),
    }
    plan = upd.plan_update(index, {"textprep_00000000d001": "p1"}, {"textprep_00000000d001": "READY"})
    upd.hold_for_restart(plan, ServerSettings(2, 4), ServerSettings(4, 8), {"demo_v1_model": 4})
    assert plan.restart == [
        "--model-load-thread-count=4 -> --model-load-thread-count=8",
        "--rate-limit-resource=cpu:2 -> --rate-limit-resource=cpu:4",
    ]
    assert plan.held == {"demo_v1_model": "an instance takes 4 cpu units, the running server's rate limiter has 2"}
    assert [name for name, _ in plan.load] == ["demo"]
    server = FakeServer({})
    result = upd.apply_update(plan, index, server, {}, progress=lambda _: None)
    assert server.loaded == [] and result.restart == plan.restart  # demo runs the held model: not loaded
    assert set(result.skipped) == {"demo_v1_model", "demo"} and not result.ok


def test_server_command_restricts_admin_apis_only_with_a_key(tmp_path: Path) -> None:
    options = ServerOptions(repository=tmp_path, admin_key="k" * 20)
    command = server_command(options, tmp_path)
    restriction = f"{','.join(RESTRICTED_APIS)}:admin-key={'k' * 20}"
    assert f"--http-restricted-api={restriction}" in command
    assert f"--grpc-restricted-protocol={restriction}" in command
    assert not {"inference", "health", "metadata"} & set(RESTRICTED_APIS)
    assert "--strict-readiness=true" in command
    open_command = server_command(ServerOptions(repository=tmp_path, strict_readiness=False), tmp_path)
    assert not any("restricted" in arg for arg in open_command)
    assert "--strict-readiness=false" in open_command
    for bad in ("short", "with space 0123456789", "a,b:c=d-0123456789", "x" * 300):
        with pytest.raises(TritonServerError, match="admin key"):
            server_command(ServerOptions(repository=tmp_path, admin_key=bad), tmp_path)
    assert admin_headers("k" * 20) == {"admin-key": "k" * 20}
    assert admin_headers("k" * 20, "grpc") == {"triton-grpc-protocol-admin-key": "k" * 20}
    assert admin_headers(None) == {}


def test_failed_models_names_each_model_and_its_cause() -> None:
    log = "\n".join(
        [
            "E1128 14:43:39.286782 1 model_lifecycle.cc:642] \"failed to load 'demo_v1_model' version 1: Internal: "
            "InvalidProtobuf: Load model from /r/demo_v1_model/1/model.onnx failed:Protobuf parsing failed.\\n\\nAt:\\n"
            '  x.py(1): f\\n"',
            "I1128 14:43:39.286809 1 model_lifecycle.cc:777] \"failed to load 'demo_v1_model'\"",
            "E1128 14:43:40.0 1 model_lifecycle.cc:642] "
            "\"failed to load 'textprep_00000000d002' version 1: Invalid argument: x\"",
            "I1128 14:43:41.0 1 model_lifecycle.cc:839] \"successfully loaded 'textprep_00000000d002'\"",
        ]
    )
    assert failed_models(log) == {
        "demo_v1_model": "Internal: InvalidProtobuf: Load model from /r/demo_v1_model/1/model.onnx failed:"
        "Protobuf parsing failed."
    }


def test_watchdog_helpers() -> None:
    assert instance_count({"instance_group": [{"count": 2}, {"count": 1}]}) == 3
    assert instance_count({}) == 1
    assert stub_processes(os.getpid()) == []


def test_memory_growth_compares_the_end_with_the_start_after_warm_up() -> None:
    samples = [{"t": t, "server_kib": 1000 + (500 if t < 10 else 0), "stubs_kib": 9000 + 10 * t} for t in range(100)]
    growth = memory_growth(samples, warmup_s=10)
    assert growth["server_pct"] == pytest.approx(0)
    assert 8 < growth["stubs_pct"] < 10
    assert growth["warm_mib"] == pytest.approx((1000 + 9000 + 10 * 14) / 1024, rel=0.01)
