"""Preprocessing kinds: what turns a request's inputs into the inference model's tensors.

A `PreprocessingKind` owns its spec section (`settings`), the Triton backend and model code of
the preprocessing model, its parameter contract (rendered from the spec, parsed by the package
that runs it), its client input and its output tensors, the files it needs in the version
folder, and tokenizing texts as the server does. The spec's `preprocessing` section is made
from `PREPROCESSORS`: adding a kind is one module with its settings and its subclass, plus one
entry below.
"""

from __future__ import annotations

from generator.errors import TritongenError
from generator.kinds.preprocessing.base import PreprocessingKind, PreprocessingSettings
from generator.kinds.preprocessing.textprep import TextPrep

PREPROCESSORS: dict[str, PreprocessingKind] = {preprocessor.name: preprocessor for preprocessor in (TextPrep(),)}
"""Every preprocessing kind by its spec name."""


class UnknownPreprocessingError(TritongenError, KeyError):
    """A preprocessing kind that is not in PREPROCESSORS."""


def get_preprocessor(name: str) -> PreprocessingKind:
    """The preprocessing kind called `name`, or an error listing the known ones."""
    try:
        return PREPROCESSORS[name]
    except KeyError:
        known = ", ".join(PREPROCESSORS)
        raise UnknownPreprocessingError(f"unknown preprocessing kind {name!r}: use one of {known}") from None


__all__ = ["PREPROCESSORS", "PreprocessingKind", "PreprocessingSettings", "get_preprocessor"]
