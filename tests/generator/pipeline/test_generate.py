"""What `generate` says about its plan (the pipeline itself runs in the integration tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.pipeline.generate import plan_summary
from generator.pipeline.spec import load_specs
from tests.generator.pipeline.planning import planned

PROJECT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("target", ["local", "ngc"])
def test_plan_summary_names_the_target(target: str) -> None:
    specs = load_specs(PROJECT / "models")
    plan = planned(specs, target, 2)
    summary = plan_summary(plan)
    assert summary == (
        f"planned {len(specs)} specs -> {len(plan.model_names())} Triton models (target {target}, CPU budget 2 cores)"
    )
