"""The deploy outputs' registry: every output renders deterministically from the plan, no two
write the same file, and no file holds an admin key."""

from __future__ import annotations

import pytest

from generator.kinds.targets import TARGETS
from generator.pipeline.deploy import DEPLOY_OUTPUTS, render_deploy_files, render_deploy_outputs
from generator.pipeline.generate import DEFAULT_SPECS
from generator.pipeline.plan import RepositoryPlan, plan_repository
from generator.pipeline.spec import load_specs

FILES = {"config.pbtxt": 'name: "x"\n', "x/config.pbtxt": 'name: "y"\n'}


@pytest.fixture(scope="module", params=sorted(TARGETS))
def plan(request: pytest.FixtureRequest) -> RepositoryPlan:
    return plan_repository(load_specs(DEFAULT_SPECS), request.param, 2)


def test_output_is_deterministic() -> None:
    assert render_deploy_files("../repository") == render_deploy_files("../repository")
    assert set(render_deploy_files("../repository")) == {"docker-compose.yml", "docker-run.sh"}


def test_every_output_is_rendered_once(plan: RepositoryPlan) -> None:
    files = render_deploy_outputs(plan, FILES)
    assert files == render_deploy_outputs(plan, dict(FILES)) and list(files) == sorted(files)
    by_output = {name: output.render(plan, FILES) for name, output in DEPLOY_OUTPUTS.items()}
    assert sum(len(rendered) for rendered in by_output.values()) == len(files)
    assert set(by_output) == {"docker-run", "compose", "kubernetes", "kserve"}
    assert set(by_output["docker-run"]) == {"docker-run.sh"} and set(by_output["compose"]) == {"docker-compose.yml"}
    assert all(path.startswith("deploy/k8s/kserve/") for path in by_output["kserve"])
    assert not any(path.startswith("deploy/k8s/kserve/") for path in by_output["kubernetes"])


def test_the_targets_image_is_named_with_how_to_get_it(plan: RepositoryPlan) -> None:
    script = render_deploy_outputs(plan, FILES)["docker-run.sh"]
    assert f'IMAGE="${{TRITON_IMAGE:-{plan.target.image}}}"' in script
    assert f"# Image: {plan.target.image} ({plan.target.image_hint}); override" in script


def test_no_key_value_in_generated_files() -> None:
    """The files name where the key comes from, never a key (serve's restriction flags appear
    only with the shell variable the launcher fills at run time)."""
    for target in ("local", "ngc"):
        for text in render_deploy_files(".", target=target).values():
            assert text.count("admin-key=$key") == 2 or text.count("admin-key=$$key") == 2
            assert "admin-key=" not in text.replace("admin-key=$$key", "").replace("admin-key=$key", "")
