"""Request bodies of the load generators (no server)."""

from __future__ import annotations

import json

from bench import corpus, loadgen


def test_token_bodies_hold_the_models_own_tokens_truncated() -> None:
    """T's requests: what the model folder's `AutoTokenizer` gives each text, cut at `max_length`."""
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(str(corpus.model_dir()))
    body = loadgen.token_body(corpus.tokenizer_file(), 16)
    for text in ("Why is the sky blue?", "word " * 40):
        inputs = {tensor["name"]: tensor for tensor in json.loads(body(text))["inputs"]}
        want = reference(text, truncation=True, max_length=16)["input_ids"]
        assert inputs["input_ids"]["data"] == want
        assert inputs["input_ids"]["shape"] == inputs["attention_mask"]["shape"] == [1, len(want)]
        assert inputs["attention_mask"]["data"] == [1] * len(want)
        assert inputs["input_ids"]["datatype"] == "INT64"
