"""Content digests: stable, sensitive to every byte, name and file, blind to hidden files."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from generator.base.sources.digest import DIGEST_PATTERN, content_files, file_sha256, path_digest


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "checkpoint"
    (root / "1_Pooling").mkdir(parents=True)
    (root / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (root / "tokenizer.json").write_text('{"model": {}}', encoding="utf-8")
    (root / "1_Pooling" / "config.json").write_text("{}", encoding="utf-8")
    return root


def test_the_digest_is_stable_and_names_its_algorithm(folder: Path, tmp_path: Path) -> None:
    digest = path_digest(folder)
    assert re.fullmatch(DIGEST_PATTERN, digest)
    assert path_digest(folder) == digest
    copy = tmp_path / "elsewhere" / "other-name"
    copy.mkdir(parents=True)
    for relative, path in content_files(folder):
        (copy / relative).parent.mkdir(parents=True, exist_ok=True)
        (copy / relative).write_bytes(path.read_bytes())
    assert path_digest(copy) == digest  # the content, not where the folder is or its name


def test_one_changed_byte_changes_it(folder: Path) -> None:
    before = path_digest(folder)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[1000] ^= 1
    weights.write_bytes(bytes(data))
    assert path_digest(folder) != before


def test_an_added_or_renamed_file_changes_it(folder: Path) -> None:
    before = path_digest(folder)
    (folder / "extra.txt").write_text("", encoding="utf-8")
    added = path_digest(folder)
    assert added != before
    (folder / "extra.txt").rename(folder / "1_Pooling" / "extra.txt")
    assert path_digest(folder) not in (before, added)
    (folder / "1_Pooling" / "extra.txt").unlink()
    assert path_digest(folder) == before


def test_hidden_files_and_folders_are_skipped(folder: Path) -> None:
    before = path_digest(folder)
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "model.safetensors.metadata").write_text("etag", encoding="utf-8")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref", encoding="utf-8")
    (folder / "1_Pooling" / ".DS_Store").write_bytes(b"\0")
    assert path_digest(folder) == before
    assert [relative for relative, _ in content_files(folder)] == [
        "1_Pooling/config.json",
        "model.safetensors",
        "tokenizer.json",
    ]


def test_linked_files_count_by_their_content(folder: Path, tmp_path: Path) -> None:
    """A huggingface snapshot links its files into a blob store."""
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshot"
    blobs.mkdir()
    snapshot.mkdir()
    for relative, path in content_files(folder):
        blob = blobs / relative.replace("/", "_")
        blob.write_bytes(path.read_bytes())
        (snapshot / relative).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / relative).symlink_to(blob)
    (snapshot / "loop").symlink_to(snapshot)  # a link back up the tree is walked once
    assert path_digest(snapshot) == path_digest(folder)


def test_a_file_digest_does_not_depend_on_its_name(folder: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "renamed.json"
    renamed.write_bytes((folder / "tokenizer.json").read_bytes())
    assert path_digest(renamed) == path_digest(folder / "tokenizer.json") != path_digest(folder)
    assert content_files(renamed) == [("", renamed)]


def test_each_file_is_read_once_while_its_size_and_mtime_hold(folder: Path) -> None:
    weights = folder / "model.safetensors"
    an_hour_ago = time.time_ns() - 3600 * 10**9
    os.utime(weights, ns=(an_hour_ago, an_hour_ago))
    before = path_digest(folder)
    sha = file_sha256(weights)
    data = bytearray(weights.read_bytes())
    data[0] ^= 1
    weights.write_bytes(bytes(data))  # same size ...
    os.utime(weights, ns=(an_hour_ago, an_hour_ago))  # ... and mtime: the cached hash
    assert file_sha256(weights) == sha and path_digest(folder) == before
    os.utime(weights, ns=(an_hour_ago, an_hour_ago + 1))  # touched: read again
    assert file_sha256(weights) != sha and path_digest(folder) != before


def test_a_recently_modified_file_is_read_every_time(folder: Path) -> None:
    """A rewrite within the file system's timestamp granularity keeps size and mtime."""
    weights = folder / "model.safetensors"
    sha = file_sha256(weights)
    stat = weights.stat()
    data = bytearray(weights.read_bytes())
    data[0] ^= 1
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as if rewritten in the same tick
    assert file_sha256(weights) != sha
