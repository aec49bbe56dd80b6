"""Plans for unit tests: environments resolved to placeholders (no conda solve)."""

from __future__ import annotations

from pathlib import Path

from generator.pipeline.plan import BuiltEnvironmentPlan, RepositoryPlan, plan_repository
from generator.pipeline.spec import ModelSpec


def planned(specs: list[ModelSpec], target: str = "local", cores: int = 2) -> RepositoryPlan:
    """`plan_repository` with every environment 'built' as `_envs/<name>-0000.tar.gz`."""
    plan = plan_repository(specs, target, cores)
    built = {
        pre.name: BuiltEnvironmentPlan(f"_envs/{pre.environment.name}-0000.tar.gz", Path("/nonexistent"), "3.11", None)
        for pre in plan.preprocess_models()
        if pre.environment is not None
    }
    return plan.with_environments(built)
