"""Line-level YAML edits (`tritongen tune --write`): only the touched keys' lines change."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from generator.pipeline.generate import DEFAULT_SPECS
from generator.pipeline.spec import parse_spec
from generator.serving.tune import TUNED_HEADER, Trial, ragged_candidate, with_settings, write_spec
from generator.serving.yaml_edit import DELETE, Change, YamlEditError, apply_changes, changes_between, render

SHIPPED = sorted(DEFAULT_SPECS.glob("*.yaml"))

FLOW = """\
# a spec written the README's way
name: m   # the entry point
batching: {max_batch_size: 32, preferred_batch_sizes: [4, 8], max_queue_delay_us: 500}  # online
versions:
  - version: 1
    preprocessing:
      padding: batch_longest   # the default
      max_length: 128
    model: {format: onnx}
"""


def comments(text: str) -> list[str]:
    return [line[line.index("#") :] for line in text.splitlines() if "#" in line]


def test_flow_mapping_keys_are_set_added_and_deleted_in_place() -> None:
    edited = apply_changes(
        FLOW,
        [
            Change(("batching", "max_queue_delay_us"), 2000),
            Change(("batching", "preferred_batch_sizes"), DELETE),
            Change(("versions", 0, "preprocessing", "padding"), "buckets"),
            Change(("versions", 0, "preprocessing", "buckets"), [16, 32]),
            Change(("instances",), {"model": 2, "model_threads": 1}),
        ],
    )
    assert "batching: {max_batch_size: 32, max_queue_delay_us: 2000}  # online" in edited
    assert "      padding: buckets   # the default\n      max_length: 128\n      buckets: [16, 32]\n" in edited
    assert edited.endswith("instances: {model: 2, model_threads: 1}\n")
    assert comments(edited) == comments(FLOW)


def test_an_edit_that_would_load_differently_is_refused() -> None:
    with pytest.raises(YamlEditError):
        apply_changes("a: {b: [1,\n  2]}\n", [Change(("a", "b"), 3)])


def test_render_writes_flow_values() -> None:
    assert render([4, 8]) == "[4, 8]" and render("batch_longest") == "batch_longest" and render("1.0") == "'1.0'"
    assert render({"model": 2, "model_threads": "auto"}) == "{model: 2, model_threads: auto}"


TUNED_SETTINGS = {
    "layout-batching": {"instances": (1, 2), "delay_us": 2000, "preferred": (2, 4)},
    "buckets": {"padding": ("buckets", (8, 16, 32)), "preferred": ()},
    "batch-longest": {"padding": ("batch_longest", ()), "delay_us": 0},
    "ragged": {"ragged": True},
}
"""What tune may write; padding edits only where tune tunes padding (not for ragged formats),
the ragged variant where tune measures it (`ragged_candidate`: padded encoder formats)."""


def tuned_spec(spec: dict, settings: dict) -> dict | None:
    """What tune would write for `settings` (None: tune never proposes it for this spec)."""
    if settings.get("ragged"):
        return ragged_candidate(spec)
    default = next(v for v in spec["versions"] if v["version"] == spec["default_version"])
    if "padding" in settings and default["preprocessing"].get("padding") == "none":
        return None
    return with_settings(spec, **settings)


CASES = [
    pytest.param(path, settings, id=f"{label}-{path.stem}")
    for path in SHIPPED
    for label, settings in TUNED_SETTINGS.items()
    if tuned_spec(yaml.safe_load(path.read_text(encoding="utf-8")), settings) is not None
]


@pytest.mark.parametrize(("spec_path", "settings"), CASES)
def test_tune_write_keeps_every_comment_of_the_shipped_specs(spec_path: Path, settings: dict, tmp_path: Path) -> None:
    original = spec_path.read_text(encoding="utf-8")
    tuned = tuned_spec(yaml.safe_load(original), settings)
    assert tuned is not None
    path = tmp_path / spec_path.name
    path.write_text(original, encoding="utf-8")
    write_spec(path, Trial("best", copy.deepcopy(tuned)), "120 req/s")
    written = path.read_text(encoding="utf-8")
    assert written.startswith(f"{TUNED_HEADER}120 req/s\n")
    assert yaml.safe_load(written) == tuned
    assert comments(written)[1:] == comments(original), "a comment was lost"
    changed = set(written.splitlines()[1:]) ^ set(original.splitlines())
    assert len(changed) <= 2 * len(changes_between(yaml.safe_load(original), tuned)) + 2, changed
    parse_spec(written, str(path))
    # A second run replaces the first run's summary line.
    write_spec(path, Trial("best", copy.deepcopy(tuned)), "130 req/s")
    assert path.read_text(encoding="utf-8").count(TUNED_HEADER) == 1
