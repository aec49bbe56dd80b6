"""Builders: how a model version's inference file is made (`model.build.builder` in a spec).

A `Builder` owns its spec section (a pydantic model whose `builder` field names it), its
source, the labels and example texts it declares, and the padded torch module the formats
export. The spec's `build` union is made from `BUILDERS`: adding a builder is one module with
its settings and its `Builder` subclass, plus one entry below.
"""

from __future__ import annotations

from generator.errors import TritongenError
from generator.kinds.builders.base import Builder
from generator.kinds.builders.cross_encoder import CrossEncoder
from generator.kinds.builders.file import File
from generator.kinds.builders.prototype_classifier import PrototypeClassifier
from generator.kinds.builders.sentence_embedding import SentenceEmbedding
from generator.kinds.builders.transformers_classifier import TransformersClassifier

BUILDERS: dict[str, Builder] = {
    builder.name: builder
    for builder in (
        SentenceEmbedding(),
        PrototypeClassifier(),
        File(),
        TransformersClassifier(),
        CrossEncoder(),
    )
}
"""Every builder by its spec name."""


class UnknownBuilderError(TritongenError, KeyError):
    """A builder name that is not in BUILDERS."""


def get_builder(name: str) -> Builder:
    """The builder called `name`, or an error listing the known ones."""
    try:
        return BUILDERS[name]
    except KeyError:
        raise UnknownBuilderError(f"unknown builder {name!r}: use one of {', '.join(BUILDERS)}") from None


__all__ = ["BUILDERS", "Builder", "get_builder"]
