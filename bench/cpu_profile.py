"""`python -m bench.cpu_profile`: where the server's CPU goes per request, S4 padded vs ragged.

Serves the padded `models/minilm_embed_padded.yaml` (under the name `minilm_embed`) and the
shipped unpadded ("ragged") `models/minilm_embed.yaml` one after the other, drives
each with wrk over HTTP at one concurrency, and splits the CPU seconds of the window by
process and thread (from /proc):

- `tritonserver <thread name>`: the server process, grouped by thread name (HTTP front end,
  ensemble scheduler and dynamic batcher threads, the python backend's IPC threads, ...);
- `stub <model>`: each python-backend stub process (preprocessing, and on the `local` target
  the Python-based inference runner), identified by the model path on its command line;
- `wrk`: the load generator, measured for reference (it shares the machine's cores).

Triton's statistics of each model over the same window give the time spent inside each
model's `execute` per request (compute) and per batch, and the average batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from generator.pipeline.manifest import read_manifest

from . import corpus, limit, loadgen, procstat
from .systems import inference_file, make_repository, spec_dict, start_s4, stop, wait_answering

RESULTS = Path(__file__).resolve().parent / "results"
REFERENCE: list[Any] = []
"""The padded model's embedding of the first text (set by the padded variant, measured first)."""


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread name of one process."""
    out: dict[str, float] = defaultdict(float)
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[comm] += (int(fields[11]) + int(fields[12])) / procstat.CLOCK_TICKS
    return out


def _label(pid: int, server: int) -> str:
    """`tritonserver` or `stub <model folder>` for a process of the server's tree."""
    if pid == server:
        return "tritonserver"
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "other"
    if len(argv) > 1 and b"/1/" in argv[1]:  # the stub's first argument: <repository>/<model>/1/...
        return "stub " + Path(argv[1].decode().split("/1/")[0]).name
    return Path(argv[0].decode()).name or "other"


def snapshot(server: int) -> dict[str, float]:
    """CPU seconds so far per component of the server's process tree."""
    out: dict[str, float] = defaultdict(float)
    for pid in procstat.tree(server):
        label = _label(pid, server)
        if label == "tritonserver":
            for name, seconds in _thread_cpu(pid).items():
                out[f"tritonserver [{name}]"] += seconds
        else:
            out[label] += procstat.cpu_seconds([pid])
    return out


def _stats(http_url: str, model: str) -> dict[str, Any]:
    from generator.serving.tune import model_stats

    return model_stats(http_url, model)


def _stat_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """Requests, executions and ns per stage of one model between two statistics reads."""
    out = {
        "requests": float(int(after["inference_count"]) - int(before["inference_count"])),
        "executions": float(int(after["execution_count"]) - int(before["execution_count"])),
    }
    for stage in ("queue", "compute_input", "compute_infer", "compute_output"):
        out[stage] = float(int(after["inference_stats"][stage]["ns"]) - int(before["inference_stats"][stage]["ns"]))
    return out


def profile_variant(
    workdir: Path, label: str, spec: dict[str, Any], texts: list[str], cores: int, concurrency: int, seconds: float
) -> dict[str, Any]:
    """Serve one variant, load it, and return the CPU split and model statistics per request."""
    repository = make_repository(workdir / label, [spec], cores)
    running = start_s4(workdir, repository, ["minilm_embed"], label)
    try:
        assert running.triton is not None and running.http_url is not None
        script = loadgen.write_lua(
            workdir / f"{label}.lua",
            [("/v2/models/minilm_embed/infer", loadgen.kserve_body(t)) for t in texts],
        )
        url = running.http_url + "/"
        models = list(read_manifest(repository).models["minilm_embed"].depends_on)
        onnx = inference_file(repository, "minilm_embed")
        if label == "padded":  # the padded ONNX file is the reference for both
            REFERENCE[:] = list(limit.reference_embeddings(onnx, corpus.tokenizer_file(), texts[:1]))
        wait_answering(url + "v2/models/minilm_embed/infer", loadgen.kserve_body(texts[0]), REFERENCE[0])
        loadgen.wrk(url, script, concurrency, 3)  # warm-up
        server = running.triton.process.pid
        stats0 = {m: _stats(running.triton.http_url, m) for m in models}
        cpu0, t0 = snapshot(server), time.monotonic()
        result = loadgen.wrk(url, script, concurrency, seconds)
        elapsed = time.monotonic() - t0
        cpu1 = snapshot(server)
        stats1 = {m: _stats(running.triton.http_url, m) for m in models}
    finally:
        stop(running)
    requests = result.requests
    components = {k: (cpu1[k] - cpu0.get(k, 0.0)) * 1000 / requests for k in cpu1}
    per_model = {}
    for model in models:
        delta = _stat_delta(stats0[model], stats1[model])
        per_model[model] = {
            "avg_batch": delta["requests"] / delta["executions"] if delta["executions"] else 0.0,
            "compute_ms_per_request": (delta["compute_input"] + delta["compute_infer"] + delta["compute_output"])
            / 1e6
            / max(1.0, delta["requests"]),
            "queue_ms_per_request": delta["queue"] / 1e6 / max(1.0, delta["requests"]),
        }
    return {
        "variant": label,
        "rps": result.rps,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": result.errors,
        "elapsed_s": elapsed,
        "server_cpu_ms_per_request": sum(components.values()),
        "components_ms_per_request": dict(sorted(components.items(), key=lambda kv: -kv[1])),
        "models": per_model,
    }


def report(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        lines.append(
            f"## {row['variant']}: {row['rps']:.1f} req/s, p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, "
            f"errors {row['errors']}; server CPU {row['server_cpu_ms_per_request']:.2f} ms per request"
        )
        lines.append("")
        lines.append("| component | CPU ms per request |")
        lines.append("|---|---|")
        for name, ms in row["components_ms_per_request"].items():
            if ms >= 0.01:
                lines.append(f"| {name} | {ms:.2f} |")
        lines.append("")
        lines.append("| model | avg batch | compute ms per request (inside execute) | queue ms per request |")
        lines.append("|---|---|---|---|")
        for model, facts in row["models"].items():
            lines.append(
                f"| {model} | {facts['avg_batch']:.1f} | {facts['compute_ms_per_request']:.2f} | "
                f"{facts['queue_ms_per_request']:.1f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_profile", description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--corpus", choices=["corpus", "long-tail"], default="corpus")
    parser.add_argument("--cores", type=int, default=None)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    from generator.pipeline.plan import detected_cores

    cores = args.cores or detected_cores()
    output = args.output or RESULTS / (time.strftime("%Y%m%d-%H%M%S") + "-cpu-profile")
    workdir = output / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    texts = corpus.sentences()
    if args.corpus == "long-tail":
        texts = corpus.long_tail(texts)
    variants = [
        ("padded", {**spec_dict("minilm_embed_padded"), "name": "minilm_embed"}),  # served under the same name
        ("ragged", spec_dict("minilm_embed")),
    ]
    rows = [
        profile_variant(workdir, label, spec, texts, cores, args.concurrency, args.seconds) for label, spec in variants
    ]
    text = (
        f"# Server CPU per request at c={args.concurrency} ({args.corpus}, {cores} cores, load average "
        f"{Path('/proc/loadavg').read_text().split()[:3]})\n\n" + report(rows)
    )
    (output / "cpu_profile.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    (output / "cpu_profile.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
