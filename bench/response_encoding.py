"""What the HTTP JSON encoding of the 384-float EMBEDDING costs per request, against Triton's binary
tensor extension (and gRPC as a reference).

`python -m bench.response_encoding [--seconds 5] [--rounds 2] [--concurrency 1,32] [--spec minilm_embed]`
serves the spec (as `minilm_embed`, on the embedded tritonserver, like the benchmark's S4) and
measures, at each concurrency, the same request with its output asked for

- over HTTP as JSON (`"outputs": [{"name": "EMBEDDING", "parameters": {"binary_data": false}}]`:
  384 decimal numbers in the JSON body) or as binary (`"binary_data": true`: the JSON header
  then 1536 raw little-endian bytes, the length in the `Inference-Header-Content-Length` header),
  with two load generators: `wrk` (C, sends JSON requests, does not parse the answers: the
  server's side of the cost) and `tritonclient.http.aio` (Python, decodes every answer into a
  numpy array: a real client's side; inputs sent as JSON in both modes, so only the output differs);
- over gRPC with `tritonclient.grpc.aio` (protobuf, raw bytes), for reference.

Per cell: req/s, p50/p99, server CPU ms per request (the server's process tree, /proc) and client
CPU ms per request (wrk's rusage; the Python client's process time), median over `--rounds`
rounds, the modes alternating order from round to round. Writes
bench/results/<timestamp>-encoding/{results.md,results.json} and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import statistics
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from generator.base.launch import ServerOptions, ServerPorts
from generator.pipeline.plan import detected_cores
from generator.serving.ports import free_ports
from generator.serving.process import start_server

from . import corpus, loadgen, procstat
from .systems import (
    Running,
    average_batch,
    batch_counts,
    inference_model,
    make_repository,
    spec_dict,
    start_s4,
    stop,
)

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "minilm_embed"
OUTPUT = "EMBEDDING"
MODES = ("http json", "http binary", "grpc")
"""Response encodings: KServe v2 JSON, Triton's binary tensor extension over HTTP, gRPC protobuf."""


@dataclass
class EncodingCell:
    """One measured (load generator, mode, concurrency), one round."""

    client: str
    """`wrk` or `tritonclient`."""
    mode: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms: float
    """Server CPU ms per request (process tree)."""
    client_cpu_ms: float
    """Load generator CPU ms per request."""
    avg_batch: float | None
    requests: int
    errors: int


def request_body(text: str | list[str], binary: bool) -> str:
    """A KServe v2 JSON request for one text (or several), asking for EMBEDDING as binary or as JSON."""
    texts = [text] if isinstance(text, str) else text
    return json.dumps(
        {
            "inputs": [{"name": "TEXT", "shape": [len(texts), 1], "datatype": "BYTES", "data": texts}],
            "outputs": [{"name": OUTPUT, "parameters": {"binary_data": binary}}],
        }
    )


def decode_response(body: bytes, header_length: int | None) -> np.ndarray:
    """EMBEDDING of a KServe v2 HTTP answer: JSON `data`, or the binary tensor extension's bytes
    after a JSON header of `header_length` bytes (the `Inference-Header-Content-Length` header)."""
    header = json.loads(body if header_length is None else body[:header_length])
    offset = header_length or 0
    for output in header["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if output["name"] == OUTPUT:
            if size is None:
                return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
            return np.frombuffer(body[offset : offset + size], dtype="<f4").reshape(output["shape"])
        offset += size or 0
    raise KeyError(f"no {OUTPUT} in the answer")


def fetch_raw(url: str, texts: str | list[str], binary: bool) -> tuple[bytes, int | None]:
    """One HTTP request: the answer's body and its JSON header's length (binary answers)."""
    request = urllib.request.Request(
        f"{url}/v2/models/{MODEL}/infer",
        data=request_body(texts, binary).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        length = response.headers.get("Inference-Header-Content-Length")
        return response.read(), int(length) if length is not None else None


def fetch(url: str, text: str, binary: bool) -> tuple[np.ndarray, int]:
    """One HTTP request: the decoded EMBEDDING and the answer's body size in bytes."""
    body, length = fetch_raw(url, text, binary)
    return decode_response(body, length), len(body)


def decode_costs(running: Running, texts: list[str], sizes: tuple[int, ...], repeats: int) -> list[dict[str, Any]]:
    """CPU microseconds tritonclient spends turning one real answer into a numpy array, per
    encoding and texts per request (the answers fetched once, decoded `repeats` times in-process;
    gRPC: parsing the serialized ModelInferResponse, as its channel does, then `as_numpy`)."""
    import tritonclient.grpc as grpcclient
    from tritonclient.grpc import service_pb2
    from tritonclient.http import InferResult

    assert running.http_url is not None and running.grpc_url is not None
    rows = []
    client = grpcclient.InferenceServerClient(running.grpc_url)
    for size in sizes:
        batch = texts[:size]
        for mode in ("http json", "http binary"):
            body, length = fetch_raw(running.http_url, batch, binary=mode == "http binary")
            began = time.process_time()
            for _ in range(repeats):
                InferResult.from_response_body(body, False, length).as_numpy(OUTPUT)
            rows.append(_decode_row(mode, size, len(body), began, repeats))
        tensor = grpcclient.InferInput("TEXT", [size, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[t.encode()] for t in batch], dtype=object))
        raw = client.infer(MODEL, [tensor]).get_response().SerializeToString()
        began = time.process_time()
        for _ in range(repeats):
            grpcclient.InferResult(service_pb2.ModelInferResponse.FromString(raw)).as_numpy(OUTPUT)
        rows.append(_decode_row("grpc", size, len(raw), began, repeats))
    client.close()
    return rows


SERIALIZATION_SPAN = ("COMPUTE_OUTPUT_START", "INFER_RESPONSE_COMPLETE")
"""Trace span measured for the server's side: from the inference model's COMPUTE_OUTPUT_START
(its output ready) to the ensemble request's INFER_RESPONSE_COMPLETE (the HTTP frontend has
written the answer: JSON numbers or the binary buffer), before HTTP_SEND_START."""


def server_serialization(
    workdir: Path, repository: Path, texts: list[str], sizes: tuple[int, ...], pairs: int
) -> list[dict[str, Any]]:
    """The server's side of the encoding, from Triton's trace timestamps: a second server over the
    same repository with `--trace-config level=TIMESTAMPS rate=1`, `pairs` sequential requests in
    each encoding (alternating, so load drifts hit both), per texts-per-request size; the median
    of SERIALIZATION_SPAN per encoding (wall time, one request at a time)."""
    folder = workdir / "trace"
    trace = folder / "trace.json"
    trace.unlink(missing_ok=True)
    http, grpc, metrics = free_ports(3)
    flags = ("triton,file=" + str(trace), "level=TIMESTAMPS", "rate=1", "count=-1", "log_frequency=0")
    options = ServerOptions(
        repository=repository,
        ports=ServerPorts(http, grpc, metrics),
        models=(MODEL,),
        extra_args=tuple(f"--trace-config={flag}" for flag in flags),
    )
    server = start_server(options, folder)
    sent: list[tuple[str, int]] = []
    try:
        server.wait_ready(600)
        url = f"http://{server.http_url}"
        for size in sizes:
            for index in range(pairs):
                modes = ("http json", "http binary") if index % 2 == 0 else ("http binary", "http json")
                for mode in modes:
                    start = (index * size) % max(1, len(texts) - size)
                    fetch_raw(url, texts[start : start + size], binary=mode == "http binary")
                    sent.append((mode, size))
    finally:
        server.stop()
    spans = trace_spans(json.loads(trace.read_text()), inference_model(repository, MODEL))
    if len(spans) != len(sent):
        raise RuntimeError(f"{len(spans)} traced requests for {len(sent)} sent")
    rows = []
    for size in sizes:
        for mode in ("http json", "http binary"):
            values = [span for span, (m, n) in zip(spans, sent, strict=True) if (m, n) == (mode, size)]
            rows.append({"mode": mode, "texts": size, "requests": len(values), "median_us": statistics.median(values)})
    return rows


def trace_spans(records: list[dict[str, Any]], inference: str) -> list[float]:
    """SERIALIZATION_SPAN in microseconds of each ensemble request of a trace file, in request order."""
    traces: dict[int, dict[str, Any]] = {}
    for record in records:
        entry = traces.setdefault(record["id"], {"timestamps": {}})
        for key in ("model_name", "parent_id"):
            if key in record:
                entry[key] = record[key]
        for stamp in record.get("timestamps", []):
            entry["timestamps"][stamp["name"]] = stamp["ns"]
    spans = []
    for trace_id, entry in sorted(traces.items()):
        if entry.get("model_name") != MODEL or "parent_id" in entry:
            continue
        child = next(t for t in traces.values() if t.get("parent_id") == trace_id and t.get("model_name") == inference)
        began, ended = child["timestamps"][SERIALIZATION_SPAN[0]], entry["timestamps"][SERIALIZATION_SPAN[1]]
        spans.append((ended - began) / 1000)
    return spans


def _decode_row(mode: str, size: int, answer_bytes: int, began: float, repeats: int) -> dict[str, Any]:
    return {
        "mode": mode,
        "texts": size,
        "bytes": answer_bytes,
        "decode_us": (time.process_time() - began) / repeats * 1e6,
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _tritonclient_run(
    mode: str, running: Running, texts: list[str], concurrency: int, seconds: float
) -> tuple[list[float], int]:
    """`concurrency` tasks, each sending one text at a time for `seconds`: latencies (s), errors."""
    if mode == "grpc":
        import tritonclient.grpc.aio as grpcclient

        assert running.grpc_url is not None
        client: Any = grpcclient.InferenceServerClient(running.grpc_url)
        outputs: list[Any] = [grpcclient.InferRequestedOutput(OUTPUT)]

        def inputs(text: str) -> list[Any]:
            tensor = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=object))
            return [tensor]
    else:
        import tritonclient.http.aio as httpclient

        assert running.http_url is not None
        client = httpclient.InferenceServerClient(running.http_url.removeprefix("http://"), conn_limit=concurrency)
        outputs = [httpclient.InferRequestedOutput(OUTPUT, binary_data=mode == "http binary")]

        def inputs(text: str) -> list[Any]:
            tensor = httpclient.InferInput("TEXT", [1, 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=object), binary_data=False)
            return [tensor]

    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        nonlocal errors
        position = index * 7919
        while time.perf_counter() < deadline:
            position += 1
            began = time.perf_counter()
            try:
                result = await client.infer(MODEL, inputs(texts[position % len(texts)]), outputs=outputs)
                result.as_numpy(OUTPUT)
            except Exception:  # noqa: BLE001 - counted, like wrk's errors
                errors += 1
                continue
            latencies.append(time.perf_counter() - began)

    try:
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    finally:
        await client.close()
    return latencies, errors


def _percentile(values: list[float], share: float) -> float:
    return float(np.percentile(values, share)) * 1000 if values else 0.0


def measure(
    mode: str,
    running: Running,
    texts: list[str],
    concurrency: int,
    seconds: float,
    warmup_s: float,
    script: Path | None = None,
) -> EncodingCell:
    """Warm up, then one cell: throughput, latency, server and client CPU per request; with a wrk
    `script` the load is wrk's, else tritonclient's."""
    if script is not None:
        assert running.http_url is not None
        loadgen.wrk(running.http_url + "/", script, concurrency, warmup_s)
    else:
        asyncio.run(_tritonclient_run(mode, running, texts, concurrency, warmup_s))
    counts = batch_counts(running)
    sample = procstat.TreeSample(tuple(running.roots))
    sample.start()
    if script is not None:
        assert running.http_url is not None
        cpu0 = _children_cpu()
        result = loadgen.wrk(running.http_url + "/", script, concurrency, seconds)
        client_cpu = _children_cpu() - cpu0
        sample.stop()
        rps, p50, p99, requests, errors = result.rps, result.p50_ms, result.p99_ms, result.requests, result.errors
    else:
        cpu0, began = time.process_time(), time.perf_counter()
        latencies, errors = asyncio.run(_tritonclient_run(mode, running, texts, concurrency, seconds))
        wall = time.perf_counter() - began
        client_cpu = time.process_time() - cpu0
        sample.stop()
        requests = len(latencies)
        rps, p50, p99 = requests / wall, _percentile(latencies, 50), _percentile(latencies, 99)
    server_ms = sample.cores / rps * 1000 if rps else 0.0
    done = max(1, requests)
    return EncodingCell(
        "wrk" if script is not None else "tritonclient",
        mode,
        concurrency,
        rps,
        p50,
        p99,
        server_ms,
        client_cpu * 1000 / done,
        average_batch(counts, batch_counts(running)),
        requests,
        errors,
    )


def median_cells(cells: list[EncodingCell]) -> list[dict[str, Any]]:
    """One row per (client, mode, concurrency): the median of each figure over the rounds."""
    groups: dict[tuple[str, str, int], list[EncodingCell]] = {}
    for cell in cells:
        groups.setdefault((cell.client, cell.mode, cell.concurrency), []).append(cell)
    rows = []
    for (client, mode, concurrency), group in groups.items():
        row: dict[str, Any] = {"client": client, "mode": mode, "concurrency": concurrency, "rounds": len(group)}
        for name in ("rps", "p50_ms", "p99_ms", "server_cpu_ms", "client_cpu_ms"):
            row[name] = statistics.median(getattr(c, name) for c in group)
        batches = [c.avg_batch for c in group if c.avg_batch is not None]
        row["avg_batch"] = statistics.median(batches) if batches else None
        row["errors"] = sum(c.errors for c in group)
        rows.append(row)
    order = {"wrk": 0, "tritonclient": 1}
    rows.sort(key=lambda r: (order[r["client"]], r["concurrency"], MODES.index(r["mode"])))
    return rows


def markdown(data: dict[str, Any]) -> str:
    """The side-by-side table, with JSON's extra cost per request over binary."""
    sizes = data["response_bytes"]
    out = [
        f"# Response encoding: `{data['spec']}` served as `{MODEL}`, {data['cores']} cores "
        f"({data['host']}, load average at start {' '.join(data['load_average'])})",
        "",
        f"Answer body for one text: JSON {sizes['http json']} bytes, binary {sizes['http binary']} bytes "
        f"(JSON header + {4 * data['dim']} raw bytes); the two decode to the same floats "
        f"(max |difference| {data['max_difference']:.1e}).",
        "",
        "| client | output | c | req/s | p50 ms | p99 ms | server CPU ms/req | client CPU ms/req | "
        "total CPU ms/req | avg batch | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        batch = "-" if r["avg_batch"] is None else f"{r['avg_batch']:.1f}"
        out.append(
            f"| {r['client']} | {r['mode']} | {r['concurrency']} | {r['rps']:.1f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['server_cpu_ms']:.2f} | {r['client_cpu_ms']:.2f} | "
            f"{r['server_cpu_ms'] + r['client_cpu_ms']:.2f} | {batch} | {r['errors']} |"
        )
    out += ["", "JSON over binary, same client and concurrency:", ""]
    index = {(r["client"], r["mode"], r["concurrency"]): r for r in data["rows"]}
    for (client, mode, concurrency), json_row in index.items():
        binary = index.get((client, "http binary", concurrency))
        if mode != "http json" or binary is None:
            continue
        server = json_row["server_cpu_ms"] - binary["server_cpu_ms"]
        own = json_row["client_cpu_ms"] - binary["client_cpu_ms"]
        speed = binary["rps"] / json_row["rps"] if json_row["rps"] else 0.0
        out.append(
            f"- {client} c={concurrency}: JSON costs {server:+.2f} ms server CPU and {own:+.2f} ms client CPU "
            f"per request; binary serves {speed:.2f} x the requests/s"
        )
    if data.get("serialization"):
        out += [
            "",
            "The server's side, from Triton's trace timestamps (one request at a time; wall time from the "
            f"inference model's {SERIALIZATION_SPAN[0]} to the ensemble's {SERIALIZATION_SPAN[1]}: "
            "passing the output out of the ensemble and writing the HTTP answer):",
            "",
            "| output | texts per request | requests | median us |",
            "|---|---|---|---|",
        ]
        for row in data["serialization"]:
            out.append(f"| {row['mode']} | {row['texts']} | {row['requests']} | {row['median_us']:.0f} |")
    if data.get("decode"):
        out += [
            "",
            "Decoding one answer in the client (tritonclient, in-process, real answers decoded "
            f"{data['decode_repeats']} times):",
            "",
            "| output | texts per request | answer bytes | decode CPU us per answer |",
            "|---|---|---|---|",
        ]
        for row in data["decode"]:
            out.append(f"| {row['mode']} | {row['texts']} | {row['bytes']} | {row['decode_us']:.1f} |")
    out += [
        "",
        "server CPU: the server's process tree (/proc) over the cell, per request; client CPU: wrk's "
        "rusage, or the Python client's process time (tritonclient's aio clients, decoding every answer "
        "into numpy). The machine's cores are shared by server and client: compare rows, not machines. "
        f"Median of {data['rounds']} rounds of {data['seconds']:.0f} s per cell.",
    ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.response_encoding", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per cell")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", default="1,32", help="comma-separated concurrencies")
    parser.add_argument("--spec", default=MODEL, help="the models/<spec>.yaml served as minilm_embed")
    parser.add_argument("--decode-repeats", type=int, default=2000, help="decodings per answer (0: skip)")
    parser.add_argument("--trace-pairs", type=int, default=100, help="traced requests per encoding and size (0: skip)")
    parser.add_argument("--cores", type=int, default=None, help="CPU budget (default: detected)")
    parser.add_argument("--output", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    cores = args.cores or detected_cores()
    output = args.output or RESULTS / (time.strftime("%Y%m%d-%H%M%S") + "-encoding")
    workdir = output / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    load_average = Path("/proc/loadavg").read_text().split()[:3]
    print(f"[encoding] {platform.node()}: {cores} cores, load average {load_average}", flush=True)

    spec = {**spec_dict(args.spec), "name": MODEL}
    repository = make_repository(workdir / "s4", [spec], cores)
    texts = corpus.sentences()
    running = start_s4(workdir, repository, [MODEL], f"models/{args.spec}.yaml")
    try:
        assert running.http_url is not None
        as_json, json_bytes = fetch(running.http_url, texts[0], binary=False)
        as_binary, binary_bytes = fetch(running.http_url, texts[0], binary=True)
        difference = float(np.abs(as_json - as_binary).max())
        if as_json.shape != as_binary.shape or difference > 1e-6:
            raise RuntimeError(f"JSON and binary answers differ: shapes {as_json.shape}, {as_binary.shape}")
        scripts = {
            mode: loadgen.write_lua(
                workdir / f"{mode.replace(' ', '_')}.lua",
                [(f"/v2/models/{MODEL}/infer", request_body(t, mode == "http binary")) for t in texts],
            )
            for mode in MODES[:2]
        }
        sizes = (1, int(spec["batching"]["max_batch_size"]))  # one text, and the online entry point's most
        decode = decode_costs(running, texts, sizes, args.decode_repeats) if args.decode_repeats else []
        cells: list[EncodingCell] = []
        plan = [("wrk", m) for m in MODES[:2]] + [("tritonclient", m) for m in MODES]
        for round_index in range(args.rounds):
            for concurrency in concurrencies:
                for client, mode in plan if round_index % 2 == 0 else list(reversed(plan)):
                    script = scripts[mode] if client == "wrk" else None
                    cell = measure(mode, running, texts, concurrency, args.seconds, args.warmup, script)
                    cells.append(cell)
                    print(
                        f"[encoding] round {round_index + 1} {client:<12} {mode:<11} c={concurrency:<3} "
                        f"{cell.rps:7.1f} req/s  p50 {cell.p50_ms:6.1f}  p99 {cell.p99_ms:6.1f} ms  "
                        f"server {cell.server_cpu_ms:5.2f}  client {cell.client_cpu_ms:5.2f} CPU ms/req  "
                        f"errors {cell.errors}",
                        flush=True,
                    )
    finally:
        stop(running)
    serialization = (
        server_serialization(workdir, repository, texts, sizes, args.trace_pairs) if args.trace_pairs else []
    )
    data = {
        "spec": args.spec,
        "cores": cores,
        "host": platform.node(),
        "load_average": load_average,
        "load_average_end": Path("/proc/loadavg").read_text().split()[:3],
        "rounds": args.rounds,
        "seconds": args.seconds,
        "dim": int(as_json.size),
        "response_bytes": {"http json": json_bytes, "http binary": binary_bytes},
        "max_difference": difference,
        "decode": decode,
        "serialization": serialization,
        "decode_repeats": args.decode_repeats,
        "rows": median_cells(cells),
        "cells": [asdict(c) for c in cells],
    }
    (output / "results.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    table = markdown(data)
    (output / "results.md").write_text(table, encoding="utf-8")
    print(table)
    print(f"[encoding] results in {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
