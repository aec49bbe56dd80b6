"""What the process-based server logged (test_serving.py's tests take only `server` so that
the container tests can rerun them; this one needs the process and its log)."""

from __future__ import annotations

import pytest

from generator.serving.process import TritonProcess

from . import assertions

pytestmark = pytest.mark.integration


def test_each_preprocessing_model_runs_in_its_own_environment(server_process: TritonProcess) -> None:
    assertions.check_environments_in_log(server_process.log_text())
