"""`docker-compose.yml`: valid YAML, the right image, ports, mount, shm and command."""

from __future__ import annotations

import pytest
import yaml

from generator.base.launch import ServerPorts
from generator.kinds.targets import TARGETS
from generator.pipeline.deploy import render_deploy_files
from generator.pipeline.deploy.launcher import LAUNCH_COMMAND, container_command, launch_arguments


@pytest.mark.parametrize(("target", "image"), [("local", "tritongen-triton:latest"), ("ngc", TARGETS["ngc"].image)])
def test_compose_file(target: str, image: str) -> None:
    text = render_deploy_files("../repository", ServerPorts(9000, 9001, 9002), target)["docker-compose.yml"]
    service = yaml.safe_load(text)["services"]["triton"]
    assert service["image"] == "${TRITON_IMAGE:-" + image + "}"
    assert service["ports"] == ["9000:8000", "9001:8001", "9002:8002"]
    assert service["shm_size"] == "256m"
    assert service["volumes"] == [{"type": "bind", "source": "../repository", "target": "/models", "read_only": True}]
    # Compose interpolates `$` in every value: the launcher's are doubled, nothing else differs.
    command = [argument.replace("$$", "$") for argument in service["command"]]
    assert command == launch_arguments() == [*LAUNCH_COMMAND, *container_command()]
    assert "--model-control-mode=explicit" in command
    assert service["environment"] == ["TRITONGEN_ADMIN_KEY", "TRITONGEN_ADMIN_KEY_FILE", "TRITONGEN_ADMIN_OPEN"]
    assert "entrypoint" not in service  # the image's entrypoint is kept (NVIDIA's sets up CUDA)
