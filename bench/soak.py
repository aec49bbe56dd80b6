"""Soak: bounded mixed traffic against a real tritonserver, with malformed requests and memory.

    python -m bench.soak [--duration 600] [--rate 20] [--malformed 0.1] [--repository repository]

starts the embedded tritonserver on the repository (admin APIs restricted, stub watchdog
on, like `tritongen serve`), then sends requests at a fixed rate for `--duration` seconds:

- valid (90%): every ensemble entry point (`<name>`, `<name>_batch` at its priority 2,
  `<name>_v<N>`) over HTTP and gRPC, 1-4 texts each; a valid request fails unless it returns one row per text;
- malformed (10%): the bad inputs of the integration tests (wrong dtype/shape, empty batch or
  text, invalid UTF-8, 100 kB text, batch over max) and more: huge batches, unknown model,
  wrong input name, missing input, unknown output, wrong version, shape/data mismatch,
  invalid JSON and binary garbage over raw HTTP. Each must be rejected with an error that
  names the problem (keywords per case), and the server must stay live.

Every `--sample` seconds it records the resident memory (VmRSS from /proc) of the server
and of each stub. The report (JSON + a Markdown summary) gives valid sent/failed, latency,
malformed rejected clearly/unclearly/accepted per case, and memory growth after warm-up:
(mean of the last 10% of samples) / (mean of the samples just after warm-up) - 1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import secrets
import shutil
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from generator import PROJECT_ROOT
from generator.base.launch import ServerOptions, ServerPorts, admin_headers
from generator.pipeline.manifest import read_manifest
from generator.serving.ports import free_ports
from generator.serving.process import start_server
from generator.serving.update import content_index
from generator.serving.watchdog import StubWatchdog, rss_kib, stub_processes

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Solve for x: 3x - 7 = 11.",
    "Photosynthesis converts light energy into chemical energy.",
    "Who wrote the novel Pride and Prejudice?",
    "Ünïcödé têxt with àccents and emoji 🚀 still embeds fine.",
    "What is the capital of France? Paris is its capital and most populous city.",
    "a",
    "Water boils at one hundred degrees Celsius at sea level.",
    " ".join(["long"] * 300),
)


@dataclass(frozen=True)
class EntryPoint:
    """A client-facing ensemble."""

    name: str
    max_batch_size: int
    output: str
    priority: int = 0
    """The request priority its clients send (the manifest's; `<name>_batch`: 2)."""


def entry_points(repository: Path) -> list[EntryPoint]:
    """Every ensemble of the repository that takes TEXT alone (from its manifest)."""
    points = [
        EntryPoint(entry.name, entry.batching.max_batch_size, entry.outputs[0], entry.priority or 0)
        for entry in read_manifest(repository).ensembles()
        if entry.inputs == ("TEXT",)  # rerankers' entry points take QUERY too
    ]
    if not points:
        raise ValueError(f"{repository} has no ensembles")
    return points


# --- malformed requests ------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    http_url: str
    grpc_url: str


class Clients(threading.local):
    """One HTTP and one gRPC client per thread (the HTTP client is not thread-safe)."""

    def __init__(self, target: Target) -> None:
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient

        self.http = httpclient.InferenceServerClient(target.http_url, connection_timeout=60, network_timeout=120)
        self.grpc = grpcclient.InferenceServerClient(target.grpc_url)


def _tensor_request(
    clients: Clients,
    protocol: str,
    model: str,
    data: np.ndarray | None,
    datatype: str = "BYTES",
    input_name: str = "TEXT",
    shape: list[int] | None = None,
    outputs: tuple[str, ...] = (),
    version: str = "",
    priority: int = 0,
) -> Any:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    module: Any = httpclient if protocol == "http" else grpcclient
    client = clients.http if protocol == "http" else clients.grpc
    inputs = []
    if data is not None:
        tensor = module.InferInput(input_name, shape or list(data.shape), datatype)
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    requested = [module.InferRequestedOutput(name) for name in outputs] or None
    return client.infer(model, inputs, outputs=requested, model_version=version, priority=priority)


def _raw_http(target: Target, model: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    host, port = target.http_url.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request("POST", f"/v2/models/{model}/infer", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


Sender = Callable[[Clients, Target, str, EntryPoint], Any]
TEXTS = np.array([[b"hello"]], dtype=object)


def _bytes(texts: list[bytes]) -> np.ndarray:
    return np.array([[t] for t in texts], dtype=object)


MALFORMED: dict[str, tuple[Sender, tuple[str, ...]]] = {
    # The integration tests' BAD_REQUESTS (tests/integration/assertions.py) ...
    "wrong dtype": (
        lambda c, t, p, e: _tensor_request(c, p, e.name, np.array([[1], [2]], np.int32), "INT32"),
        ("data type", "datatype", "expected", "TYPE_STRING", "BYTES"),
    ),
    "wrong shape": (
        lambda c, t, p, e: _tensor_request(c, p, e.name, np.array([[b"a", b"b"]], dtype=object)),
        ("shape", "dims"),
    ),
    "empty batch": (
        lambda c, t, p, e: _tensor_request(c, p, e.name, np.zeros((0, 1), dtype=object)),
        ("empty", "batch", "shape", "0"),
    ),
    "empty string": (lambda c, t, p, e: _tensor_request(c, p, e.name, _bytes([b""])), ("empty",)),
    "invalid utf-8": (lambda c, t, p, e: _tensor_request(c, p, e.name, _bytes([b"\xff\xfe\xfa broken"])), ("UTF-8",)),
    "100 kB text": (lambda c, t, p, e: _tensor_request(c, p, e.name, _bytes([b"x" * 100_000])), ("bytes", "limit")),
    "batch over max": (
        lambda c, t, p, e: _tensor_request(c, p, e.name, _bytes([b"hi"] * (e.max_batch_size + 1))),
        ("batch", "max"),
    ),
    # ... and more.
    "huge batch": (lambda c, t, p, e: _tensor_request(c, p, e.name, _bytes([b"hi"] * 100_000)), ("batch", "max")),
    "unknown model": (
        lambda c, t, p, e: _tensor_request(c, p, e.name + "_nope", TEXTS),
        ("unknown model", "not found"),
    ),
    "wrong input name": (
        lambda c, t, p, e: _tensor_request(c, p, e.name, TEXTS, input_name="TEXTS"),
        ("unexpected inference input", "TEXTS"),
    ),
    "missing input": (lambda c, t, p, e: _tensor_request(c, p, e.name, None), ("expected 1 inputs", "input")),
    "unknown output": (
        lambda c, t, p, e: _tensor_request(c, p, e.name, TEXTS, outputs=("NOPE",)),
        ("unexpected inference output", "NOPE"),
    ),
    "wrong version": (
        lambda c, t, p, e: _tensor_request(c, p, e.name, TEXTS, version="7"),
        ("version", "unavailable", "not found"),
    ),
    "shape/data mismatch": (
        lambda c, t, p, e: _raw_http(
            t,
            e.name,
            json.dumps(
                {"inputs": [{"name": "TEXT", "shape": [3, 1], "datatype": "BYTES", "data": ["only one"]}]}
            ).encode(),
            {"Content-Type": "application/json"},
        ),
        ("shape", "expected", "elements", "size", "byte"),
    ),
    "invalid JSON": (
        lambda c, t, p, e: _raw_http(
            t, e.name, b'{"inputs": [{"name": "TEXT", "shape": [1, ', {"Content-Type": "application/json"}
        ),
        ("json", "parse", "invalid"),
    ),
    "binary garbage": (
        lambda c, t, p, e: _raw_http(t, e.name, random.randbytes(2048), {"Content-Type": "application/octet-stream"}),
        ("json", "parse", "invalid"),
    ),
    "binary garbage with header": (
        lambda c, t, p, e: _raw_http(t, e.name, random.randbytes(2048), {"Inference-Header-Content-Length": "1024"}),
        ("json", "parse", "invalid", "header"),
    ),
}
"""Case -> (send it, keywords one of which a clear error names). Raw HTTP cases return (status, body)."""
RAW_HTTP_CASES = ("shape/data mismatch", "invalid JSON", "binary garbage", "binary garbage with header")


@dataclass
class CaseStats:
    sent: int = 0
    rejected_clearly: int = 0
    rejected_unclearly: int = 0
    accepted: int = 0
    example: str = ""


@dataclass
class SoakReport:
    """Everything a soak measured."""

    duration_s: float
    rate: float
    malformed_share: float
    valid_sent: int = 0
    valid_failed: int = 0
    valid_errors: list[str] = field(default_factory=list)
    valid_by_entry_point: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    latency_by_entry_point: dict[str, dict[str, float]] = field(default_factory=dict)
    malformed: dict[str, CaseStats] = field(default_factory=dict)
    memory: list[dict[str, Any]] = field(default_factory=list)
    """Samples: t (s), server_kib, stubs_kib, stubs (count)."""
    memory_growth: dict[str, float] = field(default_factory=dict)
    server_live_at_end: bool = False
    watchdog_restarts: int = 0
    late_sends: int = 0
    """Requests sent more than 1 s behind schedule (the load generator fell behind)."""

    @property
    def malformed_sent(self) -> int:
        return sum(c.sent for c in self.malformed.values())

    @property
    def malformed_clear(self) -> int:
        return sum(c.rejected_clearly for c in self.malformed.values())

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["malformed_sent"] = self.malformed_sent
        data["malformed_rejected_clearly"] = self.malformed_clear
        return data

    def summary(self) -> str:
        """Markdown summary."""
        growth = self.memory_growth
        lines = [
            f"- duration {self.duration_s:.0f} s at {self.rate:g} req/s, {self.malformed_share:.0%} malformed",
            f"- valid requests: {self.valid_sent} sent, **{self.valid_failed} failed**; latency p50 "
            f"{self.latency_ms.get('p50', 0):.0f} ms, p99 {self.latency_ms.get('p99', 0):.0f} ms",
            f"- malformed requests: {self.malformed_sent} sent, {self.malformed_clear} rejected with a clear error, "
            f"{sum(c.rejected_unclearly for c in self.malformed.values())} with an unclear one, "
            f"{sum(c.accepted for c in self.malformed.values())} accepted",
            f"- resident memory (server + stubs): {growth.get('warm_mib', 0):.0f} MiB after warm-up -> "
            f"{growth.get('end_mib', 0):.0f} MiB at the end: **{growth.get('total_pct', 0):+.1f}%** "
            f"(server {growth.get('server_pct', 0):+.1f}%, stubs {growth.get('stubs_pct', 0):+.1f}%)",
            f"- server live at the end: {self.server_live_at_end}; stub restarts by the watchdog: "
            f"{self.watchdog_restarts}; sends more than 1 s late: {self.late_sends}",
            "",
            "| malformed case | sent | clear | unclear | accepted | example error |",
            "|---|---|---|---|---|---|",
        ]
        for label, case in self.malformed.items():
            example = case.example.replace("|", "/").replace("\n", " ")[:90]
            lines.append(
                f"| {label} | {case.sent} | {case.rejected_clearly} | {case.rejected_unclearly} "
                f"| {case.accepted} | {example} |"
            )
        lines += ["", "| entry point | valid sent | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|"]
        for name, latency in self.latency_by_entry_point.items():
            lines.append(
                f"| {name} | {self.valid_by_entry_point.get(name, 0)} | {latency['p50']:.0f} | {latency['p99']:.0f} "
                f"| {latency['max']:.0f} |"
            )
        return "\n".join(lines)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def memory_growth(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, float]:
    """Growth from just after warm-up to the end (means of 10% windows, at least one sample)."""
    after = [s for s in samples if s["t"] >= warmup_s] or samples
    if not after:
        return {}
    window = max(1, len(after) // 10)
    first, last = after[:window], after[-window:]

    def mean(rows: list[dict[str, Any]], key: str) -> float:
        return statistics.fmean(r[key] for r in rows)

    result = {}
    for key in ("server_kib", "stubs_kib"):
        result[key.replace("_kib", "_pct")] = 100 * (mean(last, key) / max(mean(first, key), 1) - 1)
    warm = mean(first, "server_kib") + mean(first, "stubs_kib")
    end = mean(last, "server_kib") + mean(last, "stubs_kib")
    result.update(warm_mib=warm / 1024, end_mib=end / 1024, total_pct=100 * (end / max(warm, 1) - 1))
    return result


def _sample_memory(server_pid: int, started: float) -> dict[str, Any]:
    stubs = stub_processes(server_pid)
    per_model: Counter[str] = Counter()
    for stub in stubs:
        per_model[stub.model] += rss_kib(stub.pid)
    return {
        "t": round(time.monotonic() - started, 1),
        "server_kib": rss_kib(server_pid),
        "stubs_kib": sum(per_model.values()),
        "stubs": len(stubs),
        "per_model_kib": dict(sorted(per_model.items())),
    }


def run_soak(
    target: Target,
    server_pid: int,
    repository: Path,
    duration_s: float = 600.0,
    rate: float = 20.0,
    malformed_share: float = 0.1,
    sample_s: float = 10.0,
    warmup_s: float | None = None,
    seed: int = 0,
    progress: Callable[[str], None] = print,
    watchdog: StubWatchdog | None = None,
) -> SoakReport:
    """Send the soak traffic to a running server and measure it (see the module doc)."""
    points = entry_points(repository)
    rng = random.Random(seed)
    report = SoakReport(duration_s, rate, malformed_share)
    report.malformed = {label: CaseStats() for label in MALFORMED}
    latencies: list[float] = []
    latencies_by_point: dict[str, list[float]] = {}
    lock = threading.Lock()
    target_clients = threading.local()

    def clients() -> Clients:
        if not hasattr(target_clients, "value"):
            target_clients.value = Clients(target)
        return target_clients.value  # type: ignore[no-any-return]

    def valid(point: EntryPoint, protocol: str, texts: list[str]) -> None:
        began = time.monotonic()
        error = ""
        try:
            result = _tensor_request(
                clients(),
                protocol,
                point.name,
                _bytes([t.encode() for t in texts]),
                outputs=(point.output,),
                priority=point.priority,
            )
            rows = result.as_numpy(point.output)
            if rows is None or rows.shape[0] != len(texts):
                error = f"{point.name}: {len(texts)} texts gave {None if rows is None else rows.shape}"
        except Exception as exc:  # every failure of a valid request counts
            error = f"{point.name} over {protocol}: {exc}"
        with lock:
            report.valid_sent += 1
            report.valid_by_entry_point[point.name] = report.valid_by_entry_point.get(point.name, 0) + 1
            if error:
                report.valid_failed += 1
                if len(report.valid_errors) < 20:
                    report.valid_errors.append(error)
            else:
                latencies.append(1000 * (time.monotonic() - began))
                latencies_by_point.setdefault(point.name, []).append(latencies[-1])

    def malformed(label: str, point: EntryPoint, protocol: str) -> None:
        send, keywords = MALFORMED[label]
        message, accepted = "", False
        try:
            answer = send(clients(), target, protocol, point)
            if label in RAW_HTTP_CASES:
                status, message = answer
                accepted = status < 400
        except Exception as exc:
            message = str(exc)
        clear = not accepted and any(k.lower() in message.lower() for k in keywords)
        with lock:
            case = report.malformed[label]
            case.sent += 1
            if accepted:
                case.accepted += 1
                case.example = f"ACCEPTED: {message[:200]}"
            elif clear:
                case.rejected_clearly += 1
                case.example = case.example or message[:200]
            else:
                case.rejected_unclearly += 1
                case.example = f"UNCLEAR: {message[:200]}"

    started = time.monotonic()
    report.memory.append(_sample_memory(server_pid, started))
    next_sample = started + sample_s
    labels = list(MALFORMED)
    with ThreadPoolExecutor(max_workers=16, thread_name_prefix="soak") as pool:
        sent = 0
        while (now := time.monotonic()) < started + duration_s:
            due = started + sent / rate
            if due > now:
                time.sleep(min(due - now, 0.05))
                continue
            if now - due > 1.0:
                report.late_sends += 1
            point = rng.choice(points)
            protocol = rng.choice(("http", "grpc"))
            if rng.random() < malformed_share:
                pool.submit(malformed, rng.choice(labels), point, protocol)
            else:
                texts = [rng.choice(SENTENCES) for _ in range(rng.randint(1, 4))]
                pool.submit(valid, point, protocol, texts)
            sent += 1
            if now >= next_sample:
                report.memory.append(_sample_memory(server_pid, started))
                next_sample += sample_s
                with lock:
                    progress(
                        f"soak {now - started:5.0f}s: valid {report.valid_sent} sent / {report.valid_failed} "
                        f"failed, malformed {report.malformed_sent}, server+stubs "
                        f"{(report.memory[-1]['server_kib'] + report.memory[-1]['stubs_kib']) / 1024:.0f} MiB"
                    )
    report.memory.append(_sample_memory(server_pid, started))
    report.latency_ms = {
        "p50": _percentile(latencies, 0.5),
        "p99": _percentile(latencies, 0.99),
        "max": max(latencies, default=0.0),
    }
    report.latency_by_entry_point = {
        name: {"p50": _percentile(values, 0.5), "p99": _percentile(values, 0.99), "max": max(values)}
        for name, values in sorted(latencies_by_point.items())
    }
    report.memory_growth = memory_growth(report.memory, warmup_s if warmup_s is not None else duration_s / 5)
    try:
        report.server_live_at_end = bool(clients().http.is_server_live())
    except Exception:
        report.server_live_at_end = False
    report.watchdog_restarts = len(watchdog.restarts) if watchdog else 0
    return report


def main(argv: list[str] | None = None) -> int:
    """Start a server on a copy of the repository, soak it, write the report."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=PROJECT_ROOT / "repository")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of traffic (default 600)")
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second (default 20)")
    parser.add_argument("--malformed", type=float, default=0.1, help="share of malformed requests (default 0.1)")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between memory samples")
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds before the memory baseline (default: a fifth of the duration)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        help="JSON report path (default bench/results/soak-<UTC time>.json; .md next to it)",
    )
    args = parser.parse_args(argv)
    content_index(args.repository)  # fails early with a clear error on a missing repository
    workdir = Path(tempfile.mkdtemp(prefix="tritongen-soak-"))
    key = secrets.token_urlsafe(24)
    http, grpc, metrics = free_ports(3)
    options = ServerOptions(repository=args.repository.resolve(), ports=ServerPorts(http, grpc, metrics), admin_key=key)
    server = start_server(options, workdir)
    watchdog = None
    try:
        server.wait_ready(600)
        watchdog = StubWatchdog(server.process.pid, server.http_url, admin_headers(key))
        watchdog.start()
        report = run_soak(
            Target(server.http_url, server.grpc_url),
            server.process.pid,
            args.repository,
            args.duration,
            args.rate,
            args.malformed,
            args.sample,
            args.warmup,
            watchdog=watchdog,
        )
    finally:
        if watchdog:
            watchdog.stop()
        server.stop()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = args.report or PROJECT_ROOT / "bench" / "results" / f"soak-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=1) + "\n")
    summary = report.summary()
    path.with_suffix(".md").write_text(f"# Soak {stamp}\n\n{summary}\n")
    shutil.copy(server.log_path, path.with_suffix(".tritonserver.log"))
    print(summary)
    print(f"report: {path}")
    return 0 if report.valid_failed == 0 and report.server_live_at_end else 1


if __name__ == "__main__":
    raise SystemExit(main())
