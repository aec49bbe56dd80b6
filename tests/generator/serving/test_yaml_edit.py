"""Line-level YAML edits (`tritongen tune --write`): only the touched keys' lines change."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.pipeline.generate import DEFAULT_SPECS
from generator.pipeline.spec import REPOSITORY_FILE, ModelSpec, load_spec, parse_spec
from generator.serving.tune import TUNED_HEADER, Trial, padding_of, ragged_candidate, with_settings, write_spec
from generator.serving.yaml_edit import DELETE, Change, YamlEditError, apply_changes, model_changes, render

SHIPPED = sorted(path for path in DEFAULT_SPECS.glob("*.yaml") if path.name != REPOSITORY_FILE)

FLOW = """\
# a spec written the way docs/models.md shows
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


def tuned_spec(spec: ModelSpec, settings: dict) -> ModelSpec | None:
    """What tune would write for `settings` (None: tune never proposes it for this spec)."""
    if settings.get("ragged"):
        return ragged_candidate(spec)
    padding = padding_of(spec)
    if "padding" in settings and (padding is None or padding[0] == "none"):
        return None
    return with_settings(spec, **settings)


CASES = [
    pytest.param(path, settings, id=f"{label}-{path.stem}")
    for path in SHIPPED
    for label, settings in TUNED_SETTINGS.items()
    if tuned_spec(load_spec(path), settings) is not None
]


@pytest.mark.parametrize(("spec_path", "settings"), CASES)
def test_tune_write_keeps_every_comment_of_the_shipped_specs(spec_path: Path, settings: dict, tmp_path: Path) -> None:
    original = spec_path.read_text(encoding="utf-8")
    loaded = load_spec(spec_path)
    tuned = tuned_spec(loaded, settings)
    assert tuned is not None
    path = tmp_path / spec_path.name
    path.write_text(original, encoding="utf-8")
    write_spec(path, Trial("best", tuned), "120 req/s")
    written = path.read_text(encoding="utf-8")
    assert written.startswith(f"{TUNED_HEADER}120 req/s\n")
    assert parse_spec(written, str(path)) == tuned
    assert comments(written)[1:] == comments(original), "a comment was lost"
    changed = set(written.splitlines()[1:]) ^ set(original.splitlines())
    assert len(changed) <= 2 * len(model_changes(loaded, tuned)) + 2, changed
    # A second run replaces the first run's summary line.
    write_spec(path, Trial("best", tuned), "130 req/s")
    assert path.read_text(encoding="utf-8").count(TUNED_HEADER) == 1
    assert parse_spec(path.read_text(encoding="utf-8"), str(path)) == tuned


def test_model_changes_list_only_the_fields_that_differ() -> None:
    spec = load_spec(DEFAULT_SPECS / "minilm_embed_padded.yaml")
    assert model_changes(spec, spec) == []
    tuned = with_settings(spec, instances=(2, 1), padding=("buckets", (16, 32, 128)), delay_us=0, preferred=())
    assert model_changes(spec, tuned) == [
        Change(("versions", 0, "preprocessing", "padding"), "buckets"),
        Change(("versions", 0, "preprocessing", "buckets"), [16, 32, 128]),
        Change(("batching", "preferred_batch_sizes"), DELETE),  # back to its default (none)
        Change(("batching", "max_queue_delay_us"), 0),
        Change(("instances", "model"), 2),
        Change(("instances", "model_threads"), 1),
    ]
    # Back from buckets: `buckets` goes (its default), `padding` is set in its line.
    assert model_changes(tuned, with_settings(tuned, padding=("batch_longest", ())))[1:] == [
        Change(("versions", 0, "preprocessing", "buckets"), DELETE)
    ]
    with pytest.raises(TypeError):
        model_changes(spec, spec.batching)
