"""S2 (Tornado + PyTorch) and S3 (Tornado + Triton), the article's options 2 and 4.

`python -m bench.servers.tornado_app --system s2|s3 --port P --processes N ...`
S2: each process tokenizes and runs the TorchScript model in the handler (no batching).
S3: each process tokenizes (the preprocessing stays outside Triton, as in the article) and
awaits the Triton inference model `--triton-model <name>=<model>` names over gRPC (asyncio client).
`POST /embed/<name>` with {"text": ...} -> {"embedding": [384 floats]}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import Any

import numpy as np
import tornado.httpserver
import tornado.netutil
import tornado.process
import tornado.web

DEFAULT_NAME = "minilm_embed"


def _tokenizer(path: str) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(path)
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=128)
    return tokenizer


def _encode(tokenizer: Any, body: bytes) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray([tokenizer.encode(json.loads(body)["text"]).ids], dtype=np.int64)
    return ids, np.ones_like(ids)


def _reply(embedding: np.ndarray) -> str:
    return '{"embedding":' + json.dumps(embedding.tolist()) + "}"


class TorchHandler(tornado.web.RequestHandler):
    """S2: tokenizer + TorchScript forward pass inside the (blocking) handler."""

    def initialize(self, tokenizer: Any, model: Any) -> None:
        self.tokenizer, self.model = tokenizer, model

    def post(self, name: str = DEFAULT_NAME) -> None:
        import torch

        ids, mask = _encode(self.tokenizer, self.request.body)
        with torch.inference_mode():
            embedding = self.model(torch.from_numpy(ids), torch.from_numpy(mask))[0].numpy()
        self.set_header("Content-Type", "application/json")
        self.write(_reply(embedding))


class TritonHandler(tornado.web.RequestHandler):
    """S3: tokenize here, await Triton's inference model asynchronously."""

    def initialize(self, tokenizer: Any, client: Any, models: dict[str, str]) -> None:
        self.tokenizer, self.client, self.models = tokenizer, client, models

    async def post(self, name: str = DEFAULT_NAME) -> None:
        from tritonclient.grpc import aio as grpcclient

        if name not in self.models:
            raise tornado.web.HTTPError(404, f"no inference model for {name!r}")
        ids, mask = _encode(self.tokenizer, self.request.body)
        inputs = []
        for tensor_name, array in (("input_ids", ids), ("attention_mask", mask)):
            tensor = grpcclient.InferInput(tensor_name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        outputs = [grpcclient.InferRequestedOutput("embedding")]
        result = await self.client.infer(self.models[name], inputs, outputs=outputs)
        self.set_header("Content-Type", "application/json")
        self.write(_reply(result.as_numpy("embedding")[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=["s2", "s3"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--tokenizer", required=True, help="tokenizer.json")
    parser.add_argument("--torchscript", help="S2: model.pt (mean pooling inside)")
    parser.add_argument("--torch-threads", type=int, default=0, help="S2: 0 keeps torch's default")
    parser.add_argument("--triton-grpc", help="S3: 127.0.0.1:PORT")
    parser.add_argument(
        "--triton-model",
        action="append",
        default=[],
        metavar="NAME=MODEL",
        help="S3: the inference model `/embed/NAME` awaits (repeatable; from the repository's manifest)",
    )
    args = parser.parse_args()

    if args.processes > 1:
        # Each process binds its own SO_REUSEPORT socket: the kernel spreads connections evenly
        # (one shared socket lets the first process to wake accept most of them).
        tornado.process.fork_processes(args.processes)
        sockets = tornado.netutil.bind_sockets(args.port, address="127.0.0.1", reuse_port=True)
    else:
        sockets = tornado.netutil.bind_sockets(args.port, address="127.0.0.1")
    tokenizer = _tokenizer(args.tokenizer)
    kwargs: dict[str, Any] = {"tokenizer": tokenizer}
    if args.system == "s2":
        import torch

        if args.torch_threads:
            torch.set_num_threads(args.torch_threads)
        model = torch.jit.load(args.torchscript).eval()
        kwargs["model"] = model
        handler: type[tornado.web.RequestHandler] = TorchHandler
    else:
        kwargs["models"] = dict(pair.split("=", 1) for pair in args.triton_model)
        handler = TritonHandler

    async def serve() -> None:
        if args.system == "s3":
            from tritonclient.grpc import aio as grpcclient

            kwargs["client"] = grpcclient.InferenceServerClient(args.triton_grpc)
        app = tornado.web.Application([(r"/embed", handler, kwargs), (r"/embed/(\w+)", handler, kwargs)])
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets(sockets)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
