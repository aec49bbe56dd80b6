"""S1, the article's option 1: Gunicorn + Flask + Transformers, one request = one forward pass.

Run: `gunicorn -k gthread -w W --threads T bench.servers.flask_app:app`. Environment:
BENCH_MODEL_DIR (transformers folder), BENCH_LRU (models kept in memory per worker, the
article's 8), BENCH_TORCH_THREADS (torch intra-op threads; unset keeps torch's default).
`POST /embed/<name>` with {"text": ...} -> {"embedding": [384 floats]}; every distinct
<name> is a separate model instance (loaded on a miss, evicted least-recently-used).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

import torch
from flask import Flask, Response, request
from transformers import AutoModel, AutoTokenizer

MODEL_DIR = os.environ["BENCH_MODEL_DIR"]
LRU_SIZE = int(os.environ.get("BENCH_LRU", "8"))
if os.environ.get("BENCH_TORCH_THREADS"):
    torch.set_num_threads(int(os.environ["BENCH_TORCH_THREADS"]))

app = Flask(__name__)
_cache: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
_lock = threading.Lock()
_loading: dict[str, threading.Lock] = {}


def load(name: str) -> tuple[Any, Any]:
    """Tokenizer and model of `name` from the LRU cache, loading it on a miss."""
    with _lock:
        if name in _cache:
            _cache.move_to_end(name)
            return _cache[name]
        loading = _loading.setdefault(name, threading.Lock())
    with loading:  # one load per name; other threads wait for it
        with _lock:
            if name in _cache:
                return _cache[name]
        tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
        model = AutoModel.from_pretrained(MODEL_DIR).eval()
        with _lock:
            _cache[name] = (tokenizer, model)
            while len(_cache) > LRU_SIZE:
                _cache.popitem(last=False)
    return tokenizer, model


load("minilm_embed")  # each worker loads the default model at start (the article's preloading)


@app.post("/embed")
@app.post("/embed/<name>")
def embed(name: str = "minilm_embed") -> Response:
    text = request.get_json()["text"]
    tokenizer, model = load(name)
    inputs = tokenizer(text, return_tensors="pt", truncation=True, max_length=128)
    with torch.inference_mode():
        hidden = model(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        embedding = torch.nn.functional.normalize(pooled, dim=-1)[0]
    return Response('{"embedding":' + str(embedding.tolist()) + "}", mimetype="application/json")
