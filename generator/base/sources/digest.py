"""Content digests of files and folders: what pins a spec's source to its bytes.

A digest is `sha256:<64 hex>` over the content files of a folder, sorted by their relative POSIX
path: one line `<path>\\0<size>\\0<sha256 of the bytes>\\n` per file. Hidden files and folders
(a name starting with `.`: `.git`, huggingface's `.cache`, `.gitattributes`, `.DS_Store`) are
skipped at any depth: no model loader reads them, and tools rewrite them. Symbolic links are
followed (a huggingface snapshot links its files into a blob store). A single file is one
line with an empty path, so its digest does not depend on its name. Each file's sha256 is
cached by (path, size, mtime) for the process: a 90 MB model folder is read once. A file
modified in the last `RECENT_S` seconds is read every time (as git does with racily clean
files): a rewrite within the file system's timestamp granularity keeps size and mtime.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
"""A content digest as specs and the manifest write it."""
DIGEST_ALGORITHM = "sha256"
RECENT_S = 2.0
"""Files modified this recently are hashed again on every call (module doc)."""

_FILE_SHA256: dict[tuple[str, int, int], str] = {}
"""(path, size, mtime_ns) -> sha256 hex of the file's bytes."""


def file_sha256(path: Path) -> str:
    """The sha256 (hex) of a file's bytes, read once per process while its size and mtime hold."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    known = _FILE_SHA256.get(key)
    if known is not None:
        return known
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if time.time_ns() - stat.st_mtime_ns > RECENT_S * 1e9:
        _FILE_SHA256[key] = digest.hexdigest()
    return digest.hexdigest()


def content_files(root: Path) -> list[tuple[str, Path]]:
    """(relative POSIX path, file) of every content file under `root`, sorted by path; a file
    `root` is itself, with the path `""` (module doc: what is skipped)."""
    if not root.is_dir():
        return [("", root)]
    found: list[tuple[str, Path]] = []
    seen: set[str] = set()
    for folder, folders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree
            folders[:] = []
            continue
        seen.add(real)
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in files:
            if not name.startswith("."):
                path = Path(folder) / name
                found.append((path.relative_to(root).as_posix(), path))
    return sorted(found)


def path_digest(root: Path) -> str:
    """`sha256:<hex>`: the content digest of a file or folder (module doc); OSError when unreadable."""
    digest = hashlib.sha256()
    for relative, path in content_files(root):
        size = path.stat().st_size
        digest.update(f"{relative}\0{size}\0{file_sha256(path)}\n".encode())
    return f"{DIGEST_ALGORITHM}:{digest.hexdigest()}"
