"""A running tritonserver and a regenerated repository: `tritongen update` adds a spec without a
restart, and refuses a new CPU budget by name (the server's flags) while it keeps serving."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml

from generator import PROJECT_ROOT
from generator.base.launch import ServerOptions, ServerPorts, admin_headers
from generator.pipeline.generate import DEFAULT_SPECS, GenerateOptions, generate
from generator.pipeline.spec import REPOSITORY_FILE
from generator.serving.ports import free_ports
from generator.serving.process import start_server
from generator.serving.update import content_index, read_server_settings, record_loaded, update

from .conftest import FIXTURE_EXIT_TIMEOUT, READY_TIMEOUT_S

pytestmark = pytest.mark.integration

ADMIN_KEY = "test-admin-key-restart-0123456789"


def write_specs(folder: Path, names: list[str], cores: int) -> None:
    """Copies of the shipped `minilm_embed` spec named `names`, and a budget of `cores`."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.yaml"):
        old.unlink()
    shipped = yaml.safe_load((DEFAULT_SPECS / "minilm_embed.yaml").read_text())
    for name in names:
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({**shipped, "name": name}, sort_keys=False))
    (folder / REPOSITORY_FILE).write_text(f"cores: {cores}\n")


def embedding(client: httpclient.InferenceServerClient, model: str) -> np.ndarray:
    tensor = httpclient.InferInput("TEXT", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[b"a text to embed"]], dtype=object))
    return client.infer(model, [tensor]).as_numpy("EMBEDDING")[0]


def test_a_new_spec_needs_no_restart_and_a_new_budget_is_refused_by_name(
    tmp_path: Path, conda_channels: list[str]
) -> None:
    specs, repository, state = tmp_path / "specs", tmp_path / "repository", tmp_path / "loaded.json"

    def regenerate(names: list[str], cores: int) -> None:
        write_specs(specs, names, cores)
        generate(GenerateOptions(specs_dir=specs, output=repository, channels=conda_channels, progress=lambda _: None))

    regenerate(["embed_a"], cores=2)
    http, grpc, metrics = free_ports(3)
    index = content_index(repository)
    server = start_server(
        ServerOptions(
            repository=repository,
            ports=ServerPorts(http, grpc, metrics),
            admin_key=ADMIN_KEY,
            extra_args=(FIXTURE_EXIT_TIMEOUT,),
        ),
        tmp_path,
    )
    try:
        server.wait_ready(READY_TIMEOUT_S)
        record_loaded(repository, server.http_url, ADMIN_KEY, index, state)
        started_with = read_server_settings(state)
        assert started_with is not None and started_with.rate_limit_cores == 2
        client = httpclient.InferenceServerClient(server.http_url)
        # One spec more: loaded into the running server, nothing refused.
        regenerate(["embed_a", "embed_b"], cores=2)
        added = update(repository, server.http_url, ADMIN_KEY, state, progress=lambda _: None)
        assert added.ok and added.restart == [] and {"embed_b", "embed_b_v1_model"} <= set(added.loaded)
        assert np.allclose(embedding(client, "embed_b"), embedding(client, "embed_a"), atol=1e-5)
        # A new budget: its server flags are refused by name, with the command that applies them;
        # the models the running limiter can run (1 cpu unit each) are loaded meanwhile.
        regenerate(["embed_a", "embed_b"], cores=3)
        command = [sys.executable, "-m", "generator.cli", "update", "--repository", str(repository)]
        command += ["--url", server.http_url, "--admin-key", ADMIN_KEY, "--state", str(state)]
        refused = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT, check=False, timeout=600)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "--rate-limit-resource=cpu:2 -> --rate-limit-resource=cpu:3" in refused.stderr
        assert "--model-load-thread-count=4 -> --model-load-thread-count=6" in refused.stderr
        assert f"tritongen serve --repository {repository}" in refused.stderr
        config = client.get_model_config("embed_a_v1_model", headers=admin_headers(ADMIN_KEY))
        assert config["instance_group"][0]["count"] == 3  # the new layout, loaded without a restart
        assert embedding(client, "embed_a").shape == (384,)
        assert read_server_settings(state) == started_with  # still what the running server has
    finally:
        server.stop()
