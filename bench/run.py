"""`python -m bench.run [--quick]`: the article's comparison on `minilm_embed`, side by side.

Systems: S1 Gunicorn+Flask+Transformers, S2 Tornado+PyTorch, S3 Tornado+Triton (tokenizing
outside Triton), T Triton alone fed tokens the client made (the padded inference model, KServe v2
JSON), S4 this project's ensembles (padded, length buckets, ragged; HTTP via wrk, gRPC
via perf_analyzer), Infinity (infinity-emb, optimum and torch engines, its own venv), and L the
compute limits in one process (padded: bench/limit.py; unpadded: bench/ragged_limit.py). Every
cell: correctness check, then `--rounds` rounds (systems alternating order) of warm-up and
measurement, server CPU and threads from /proc, the inference model's average batch from Triton's
statistics; every round's req/s is printed and listed with the median and the spread. The S4
variants are measured again on the long-tail corpus (1% of texts at 200-256 tokens) at the top
concurrency. Then the many-models scenario (N copies, Zipf mix).
Writes bench/results/<timestamp>/{results.md,results.json,plot.png} and prints the table.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from generator.pipeline.plan import detected_cores

from . import corpus, infinity, limit, loadgen, procstat, ragged_limit, report
from .arguments import positive
from .systems import (
    BenchError,
    Running,
    average_batch,
    batch_counts,
    embedding_of,
    grpc_check,
    inference_file,
    inference_model,
    make_repository,
    post_json,
    spec_dict,
    start_s1,
    start_s2,
    start_s3,
    start_s4,
    start_t,
    started,
    stop,
    wait_answering,
    without_environments,
)

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Cell:
    """One measured (system, setting, protocol, concurrency)."""

    system: str
    setting: str
    protocol: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_cores: float
    machine_cores: float
    threads: int
    processes: int
    rss_mb: float
    pss_mb: float
    errors: int
    requests: int
    corpus: str = "corpus"
    """`corpus` (bench/corpus.py `sentences`) or `long-tail` (`long_tail` of it)."""
    variant: str = ""
    """The S4 spec variant: `padded`, `buckets`, `ragged`, `tuned` (empty for other systems)."""
    avg_batch: float | None = None
    """Inferences per execution of the inference model over the cell (Triton statistics)."""
    cpu_ms: float = 0.0
    """Server CPU ms per request: cpu_cores / rps * 1000."""
    rounds_rps: list[float] = field(default_factory=list)
    """req/s of every round, in the order measured (the cell's figures are the rounds' medians)."""
    spread: float = 1.0
    """Worst round's req/s over the median (1.0: every round alike, or one round)."""


CORPORA = ("corpus", "long-tail")
SYSTEMS = ("L", "S1", "S2", "S3", "T", "S4", "Infinity")
S4_VARIANTS = ("padded", "buckets", "ragged")


@dataclass
class Profile:
    """Durations and sizes of one run (`--quick` or full)."""

    concurrency: tuple[int, ...] = (1, 8, 32)
    warmup_s: float = 3.0
    seconds: float = 10.0
    sweep_seconds: float = 5.0
    limit_texts: int = 400
    rounds: int = 3
    """Rounds per cell in the side-by-side measurement (systems alternate order round by round)."""
    many_models: int = 20
    sweep: bool = True
    tune: bool = True
    grpc: bool = True
    corpora: tuple[str, ...] = CORPORA
    s4_variants: tuple[str, ...] = S4_VARIANTS
    infinity_engines: tuple[str, ...] = infinity.ENGINES
    """Infinity's engines, one server each (`--infinity`; none without `Infinity` in `--systems`)."""
    p99_bound_ms: float = 1000.0
    """The goal given to `tritongen tune`: highest throughput with p99 under this bound."""


QUICK = Profile(
    concurrency=(1, 8),
    warmup_s=1.0,
    seconds=3.0,
    sweep_seconds=2.0,
    limit_texts=120,
    many_models=3,
    rounds=2,
    sweep=False,
    tune=False,
)


@dataclass
class Bench:
    """State of one benchmark run."""

    profile: Profile
    workdir: Path
    cores: int
    texts: list[str]
    long_tail: list[str] = field(default_factory=list)
    reference: object = None
    cells: list[Cell] = field(default_factory=list)
    thread_reports: dict[str, str] = field(default_factory=dict)
    sweeps: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    tune_log: list[str] = field(default_factory=list)

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def http_script(
    bench: Bench,
    name: str,
    path: Callable[[str], str],
    body: Callable[[str], str],
    names: list[str] | None = None,
    texts: list[str] | None = None,
) -> Path:
    """A wrk script over the corpus (or `texts`); with `names`, each request goes to a Zipf-drawn model."""
    texts = texts if texts is not None else bench.texts
    if names:
        picks = corpus.zipf_indices(len(texts), len(names))
        requests = [(path(names[i]), body(t)) for i, t in zip(picks, texts, strict=True)]
    else:
        requests = [(path("minilm_embed"), body(t)) for t in texts]
    return loadgen.write_lua(bench.workdir / f"{name}.lua", requests)


def measure(
    bench: Bench,
    running: Running,
    protocol: str,
    concurrency: int,
    seconds: float,
    load: Callable[[int, float, Callable[[], None] | None], loadgen.LoadResult],
    record: bool = True,
    corpus_name: str = "corpus",
) -> Cell:
    """Warm up, then measure one cell with the server's process-tree CPU, RSS and threads, and the
    inference model's average batch (Triton statistics, delta over the measurement)."""
    cell, threads = measure_round(bench, running, protocol, concurrency, seconds, load, corpus_name)
    if record:
        record_cell(bench, cell, threads)
    return cell


def record_cell(bench: Bench, cell: Cell, threads: str) -> None:
    """Keep a measured cell, and the threads of its server read half-way through."""
    bench.cells.append(cell)
    where = "" if cell.corpus == "corpus" else f" {cell.corpus}"
    bench.thread_reports[f"{cell.system} {cell.protocol} c={cell.concurrency}{where} ({cell.setting})"] = threads


def measure_round(
    bench: Bench,
    running: Running,
    protocol: str,
    concurrency: int,
    seconds: float,
    load: Callable[[int, float, Callable[[], None] | None], loadgen.LoadResult],
    corpus_name: str = "corpus",
) -> tuple[Cell, str]:
    """One warmed-up measurement (logged), and the server's threads read half-way through it."""
    load(concurrency, bench.profile.warmup_s, None)
    counts = batch_counts(running)
    sample = procstat.TreeSample(tuple(running.roots))
    sample.start()
    midway: dict[str, str] = {}

    def during() -> None:
        midway["threads"] = procstat.thread_report(tuple(running.roots))

    result = load(concurrency, seconds, during)
    sample.stop()
    batch = average_batch(counts, batch_counts(running))
    cell = Cell(
        running.name,
        running.setting,
        protocol,
        concurrency,
        result.rps,
        result.p50_ms,
        result.p99_ms,
        sample.cores,
        sample.machine_cores,
        sample.thread_total,
        sample.processes,
        sample.rss / 2**20,
        sample.pss / 2**20,
        result.errors,
        result.requests,
        corpus=corpus_name,
        variant=running.variant,
        avg_batch=batch,
        cpu_ms=sample.cores / result.rps * 1000 if result.rps else 0.0,
    )
    where = "" if corpus_name == "corpus" else f" {corpus_name}"
    bench.log(
        f"{running.name:<3} {protocol:<4} c={concurrency:<3} {result.rps:7.1f} req/s  "
        f"p50 {result.p50_ms:7.1f} ms  p99 {result.p99_ms:7.1f} ms  cpu {sample.cores:.2f}"
        f"/{sample.machine_cores:.2f} ({cell.cpu_ms:.1f} ms/req)  "
        f"batch {'-' if batch is None else f'{batch:.1f}'}  "
        f"threads {sample.thread_total}  errors {result.errors}{where}  [{running.setting}]"
    )
    if result.errors:
        bench.notes.append(f"{running.name} {protocol} c={concurrency}{where}: {result.errors} errors")
    return cell, midway.get("threads", "")


def combined(rounds: list[Cell]) -> Cell:
    """One cell from its rounds: the medians of the figures, errors and requests summed, and every
    round's req/s with the spread (worst round over the median)."""
    rates = [c.rps for c in rounds]
    median = float(np.median(rates))

    def mid(name: str) -> float:
        return float(np.median([getattr(c, name) for c in rounds]))

    batches = [c.avg_batch for c in rounds if c.avg_batch is not None]
    return dataclasses.replace(
        rounds[-1],
        rps=median,
        p50_ms=mid("p50_ms"),
        p99_ms=mid("p99_ms"),
        cpu_cores=mid("cpu_cores"),
        machine_cores=mid("machine_cores"),
        threads=round(mid("threads")),
        rss_mb=mid("rss_mb"),
        pss_mb=mid("pss_mb"),
        errors=sum(c.errors for c in rounds),
        requests=sum(c.requests for c in rounds),
        avg_batch=float(np.median(batches)) if batches else None,
        cpu_ms=mid("cpu_ms"),
        rounds_rps=rates,
        spread=min(rates) / median if median else 0.0,
    )


Job = tuple[Running, str, Callable[..., loadgen.LoadResult]]
"""(server, protocol, load generator) of one cell."""


def measure_rounds(
    bench: Bench,
    jobs: list[Job],
    concurrency: int,
    seconds: float,
    reverse: bool = False,
    corpus_name: str = "corpus",
) -> list[Cell]:
    """`profile.rounds` rounds of every job at `concurrency`, the jobs alternating order round by
    round (`reverse`: the first round in reverse order); each job's rounds recorded as one cell."""
    rounds: list[list[Cell]] = [[] for _ in jobs]
    threads = [""] * len(jobs)
    for index in range(bench.profile.rounds):
        order = list(range(len(jobs)))
        if (index + reverse) % 2:
            order.reverse()
        for job in order:
            running, protocol, load = jobs[job]
            cell, threads[job] = measure_round(bench, running, protocol, concurrency, seconds, load, corpus_name)
            rounds[job].append(cell)
    cells = []
    for job, measured in enumerate(rounds):
        cell = combined(measured)
        record_cell(bench, cell, threads[job])
        where = "" if corpus_name == "corpus" else f" {corpus_name}"
        bench.log(
            f"{cell.system:<3} {cell.protocol:<4} c={concurrency:<3} rounds "
            f"{', '.join(f'{r:.1f}' for r in cell.rounds_rps)} req/s: median {cell.rps:.1f}, "
            f"worst/median {cell.spread:.2f}{where}  [{cell.setting}]"
        )
        cells.append(cell)
    return cells


def wrk_load(running: Running, script: Path) -> Callable[..., loadgen.LoadResult]:
    assert running.http_url is not None
    url = running.http_url + "/"
    return lambda c, s, during: loadgen.wrk(url, script, c, s, during)


def pa_load(bench: Bench, running: Running, model: str, data: Path) -> Callable[..., loadgen.LoadResult]:
    assert running.grpc_url is not None
    grpc_url = running.grpc_url
    return lambda c, s, during: loadgen.perf_analyzer(model, grpc_url, data, c, s, bench.workdir, during)


def best_of(
    bench: Bench, label: str, candidates: list[Callable[[], Running]], check: Callable[[Running], None], script: Path
) -> Callable[[], Running]:
    """Measure each candidate setting briefly at the highest concurrency; return the fastest."""
    if not bench.profile.sweep or len(candidates) == 1:
        return candidates[0]
    top = max(bench.profile.concurrency)
    scores: list[tuple[str, float]] = []
    for start in candidates:
        with started(start()) as running:
            check(running)
            cell = measure(
                bench, running, "http", top, bench.profile.sweep_seconds, wrk_load(running, script), record=False
            )
            scores.append((running.setting, cell.rps))
    bench.sweeps[label] = scores
    best = max(range(len(candidates)), key=lambda i: scores[i][1])
    bench.log(f"{label}: best setting {scores[best][0]} ({scores[best][1]:.1f} req/s at c={top})")
    return candidates[best]


def baseline_check(bench: Bench, path: str = "/embed") -> Callable[[Running], None]:
    body = loadgen.plain_body(bench.texts[0])
    expected = bench.reference[0]  # type: ignore[index]

    def check(running: Running) -> None:
        assert running.http_url is not None
        process = running.processes[0] if running.processes else None
        cosine = wait_answering(running.http_url + path, body, expected, process=process)
        bench.log(f"{running.name} answers correctly (cosine {cosine:.6f}) [{running.setting}]")

    return check


def choose_baselines(bench: Bench, repository: Path, systems: set[str]) -> dict[str, Callable[[], Running]]:
    """S1, S2, S3: the best of a few settings each (short runs at the top concurrency)."""
    script = http_script(bench, "plain", lambda n: f"/embed/{n}", loadgen.plain_body)
    check = baseline_check(bench)
    wd, cores = bench.workdir, bench.cores
    options: dict[str, list[Callable[[], Running]]] = {
        "S1": [
            lambda: start_s1(wd, cores, 4, 1),
            lambda: start_s1(wd, 1, 8, None),
            lambda: start_s1(wd, cores, 4, None),
            lambda: start_s1(wd, 2 * cores, 2, 1),
        ],
        "S2": [
            lambda: start_s2(wd, repository, cores, 1),
            lambda: start_s2(wd, repository, 1, None),
            lambda: start_s2(wd, repository, 1, 1),
        ],
        "S3": [
            lambda: start_s3(wd, repository, 1, ["minilm_embed"]),
            lambda: start_s3(wd, repository, cores, ["minilm_embed"]),
        ],
    }
    return {
        system: best_of(bench, system, candidates, check, script)
        for system, candidates in options.items()
        if system in systems
    }


Load = Callable[..., loadgen.LoadResult]


S4Variant = tuple[str, str, dict]  # type: ignore[type-arg]
"""(variant key, setting label, spec) of one S4 repository."""


def side_by_side(
    bench: Bench, chosen: dict[str, Callable[[], Running]], variants: list[S4Variant]
) -> dict[str, dict[str, float]]:
    """Every system up at once; each concurrency measured across all systems before the next.

    Systems alternate order from one concurrency to the next, so that a drift of the
    machine's background load does not favour the systems measured first. Then every S4
    variant over HTTP at the top concurrency on the long-tail corpus (in the opposite order).
    """
    plain = http_script(bench, "plain", lambda n: f"/embed/{n}", loadgen.plain_body)
    kserve = http_script(bench, "kserve", lambda n: f"/v2/models/{n}/infer", loadgen.kserve_body)
    long_tail = http_script(
        bench, "kserve_long_tail", lambda n: f"/v2/models/{n}/infer", loadgen.kserve_body, texts=bench.long_tail
    )
    data = loadgen.write_pa_data(bench.workdir / "pa_data.json", bench.texts)
    expected = bench.reference[0]  # type: ignore[index]
    check = baseline_check(bench)
    entries: list[tuple[Running, list[tuple[str, Load]]]] = []
    memory: dict[str, dict[str, float]] = {"rss_mb": {}, "pss_mb": {}}
    try:
        for system in ("S1", "S2", "S3"):
            if system in chosen:
                running = chosen[system]()
                entries.append((running, [("http", wrk_load(running, plain))]))
                check(running)
        if "T" in chosen:
            running = chosen["T"]()
            path = f"/v2/models/{running.stats_model}/infer"
            tokens = loadgen.token_body(corpus.tokenizer_file(), 256)
            entries.append(
                (running, [("http", wrk_load(running, http_script(bench, "tokens", lambda _: path, tokens)))])
            )
            cosine = wait_answering(f"{running.http_url}{path}", tokens(bench.texts[0]), expected)
            bench.log(f"T answers correctly (cosine {cosine:.6f}) [{running.setting}]")
        if bench.profile.infinity_engines:
            openai = http_script(
                bench, "openai", lambda _: "/embeddings", lambda t: loadgen.openai_body(t, infinity.MODEL_NAME)
            )
            for engine in bench.profile.infinity_engines:
                running = infinity.start_infinity(bench.workdir, engine, bench.log)
                entries.append((running, [("http", wrk_load(running, openai))]))
                infinity_check(bench, running)
        for index, (key, label, spec) in enumerate(variants):
            repository = make_repository(bench.workdir / f"s4-{index}", [spec], bench.cores)
            running = start_s4(bench.workdir, repository, ["minilm_embed"], label, variant=key)
            loads: list[tuple[str, Load]] = [("http", wrk_load(running, kserve))]
            if bench.profile.grpc:
                loads.append(("grpc", pa_load(bench, running, "minilm_embed", data)))
            entries.append((running, loads))
            assert running.http_url is not None and running.grpc_url is not None
            wait_answering(
                f"{running.http_url}/v2/models/minilm_embed/infer", loadgen.kserve_body(bench.texts[0]), expected
            )
            cosine = grpc_check(running.grpc_url, "minilm_embed", bench.texts[0], expected)
            bench.log(f"S4 answers correctly over HTTP and gRPC (cosine {cosine:.6f}) [{label}]")
        idle = procstat.TreeSample(())
        idle.start()
        time.sleep(3)
        idle.stop()
        bench.notes.append(
            f"with every server up and idle, the machine was {idle.machine_cores:.2f} cores busy "
            "(other users' processes and idle servers)"
        )
        if "corpus" in bench.profile.corpora:
            jobs = [(running, protocol, load) for running, loads in entries for protocol, load in loads]
            for step, concurrency in enumerate(bench.profile.concurrency):
                measure_rounds(bench, jobs, concurrency, bench.profile.seconds, reverse=step % 2 == 1)
        servers = [running for running, _ in entries if running.name == "S4"]
        if "long-tail" in bench.profile.corpora and servers:
            long_tail_check(bench, servers)
            jobs = [(running, "http", wrk_load(running, long_tail)) for running in reversed(servers)]
            top = max(bench.profile.concurrency)
            measure_rounds(bench, jobs, top, bench.profile.seconds, corpus_name="long-tail")
        for running, _ in entries:
            if running.name == "S4":
                pids = procstat.tree(running.roots[0])
                memory["rss_mb"][running.setting] = procstat.rss_bytes(pids) / 2**20
                memory["pss_mb"][running.setting] = procstat.pss_bytes(pids) / 2**20
    finally:
        for running, _ in entries:
            stop(running)
    return memory


def infinity_check(bench: Bench, running: Running, count: int = 3) -> None:
    """Infinity answers the first `count` corpus texts as sentence-transformers does (cosine >= 0.999)."""
    assert running.http_url is not None
    url = running.http_url + "/embeddings"
    expected = sentence_transformers_embeddings(bench.texts[:count])
    cosines = [
        wait_answering(url, loadgen.openai_body(text, infinity.MODEL_NAME), row, process=running.processes[0])
        for text, row in zip(bench.texts[:count], expected, strict=True)
    ]
    bench.log(
        f"Infinity answers {count} texts as sentence-transformers (cosine >= {min(cosines):.6f}) [{running.setting}]"
    )


def sentence_transformers_embeddings(texts: list[str]) -> np.ndarray:
    """`SentenceTransformer(<model folder>).encode(texts)`: the reference Infinity is checked against."""
    from sentence_transformers import SentenceTransformer

    return np.asarray(SentenceTransformer(str(corpus.model_dir()), device="cpu").encode(texts), dtype=np.float32)


def long_tail_check(bench: Bench, servers: list[Running]) -> None:
    """Every S4 variant answers the long-tail corpus's first long text as the first variant does."""
    short = set(bench.texts)
    text = next(t for t in bench.long_tail if t not in short)
    answers = []
    for running in servers:
        assert running.http_url is not None
        url = f"{running.http_url}/v2/models/minilm_embed/infer"
        answers.append(embedding_of(post_json(url, loadgen.kserve_body(text))))
    for running, got in zip(servers[1:], answers[1:], strict=True):
        cosine = float(got @ answers[0] / (np.linalg.norm(got) * np.linalg.norm(answers[0])))
        if cosine < 0.999:
            raise BenchError(f"{running.setting}: long text answered unlike {servers[0].setting} (cosine {cosine:.5f})")
        words = len(text.split())
        bench.log(f"{running.setting}: a {words}-word text answered as by {servers[0].setting} (cosine {cosine:.6f})")


def padded_spec() -> dict:  # type: ignore[type-arg]
    """`models/minilm_embed_padded.yaml` served as `minilm_embed`: the base repository (L and S3
    feed its model padded input_ids + attention_mask), the many-models copies, the padded S4."""
    return {**spec_dict("minilm_embed_padded"), "name": "minilm_embed"}


def s4_variants(bench: Bench) -> list[S4Variant]:
    """Spec variants measured as S4 (padding/grouping choices), all served as `minilm_embed`,
    those the profile names, in this order: padded, buckets, ragged (the shipped spec)."""
    padded = padded_spec()
    buckets = copy.deepcopy(padded)
    buckets["versions"][0]["preprocessing"].update(padding="buckets", buckets=[16, 32, 48, 64, 128])
    variants: list[S4Variant] = [
        ("padded", "padding batch_longest (models/minilm_embed_padded.yaml)", padded),
        ("buckets", "padding buckets 16,32,48,64,128", buckets),
        ("ragged", "ragged, unpadded (models/minilm_embed.yaml)", spec_dict("minilm_embed")),
    ]
    return [v for v in variants if v[0] in bench.profile.s4_variants]


def tuned_variant(bench: Bench) -> tuple[str, dict]:  # type: ignore[type-arg]
    """Run `tritongen tune` on the bench corpus at the top concurrency; its best spec is a variant."""
    from generator.serving.tune import TuneOptions, describe, padding_of, tune, tuned_text

    folder = bench.workdir / "tune"
    folder.mkdir(parents=True, exist_ok=True)
    spec = without_environments(spec_dict("minilm_embed"))
    path = folder / "minilm_embed.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    options = TuneOptions(
        spec_path=path,
        cores=bench.cores,
        concurrency=max(bench.profile.concurrency),
        p99_ms=bench.profile.p99_bound_ms,
        seconds=bench.profile.sweep_seconds + 2,
        texts=bench.texts,
        workdir=folder,
    )
    best = tune(options)
    bench.tune_log = [describe(t) for t in options.trials]
    instances, batching = best.spec.instances, best.spec.batching
    padding, buckets = padding_of(best.spec) or ("-", ())
    label = (
        f"tuned: {instances.model}x{instances.model_threads} threads, "
        f"{padding}{' ' + ','.join(map(str, buckets)) if buckets else ''}, "
        f"delay {batching.max_queue_delay_us} us, preferred {list(batching.preferred_batch_sizes)}"
    )
    bench.log(f"tune picked: {label}")
    # The spec as `tune --write` would leave it (a dict, like the other variants).
    return label, yaml.safe_load(tuned_text(path.read_text(encoding="utf-8"), str(path), best.spec))


def bench_many(bench: Bench, chosen: dict[str, Callable[[], Running]], systems: set[str]) -> list[dict]:  # type: ignore[type-arg]
    """N copies of the model under a Zipf mix: S1 (LRU 8), S3 and S4 at the top concurrency."""
    count, top = bench.profile.many_models, max(bench.profile.concurrency)
    names = [f"copy{i:02d}" for i in range(count)]
    specs, limited = [], []
    for name in names:
        spec = padded_spec()  # padded: S3 feeds the copies' inference models input_ids + attention_mask
        spec["name"] = name
        specs.append(spec)
        spec = copy.deepcopy(spec)
        spec.setdefault("instances", {})["rate_limit"] = True
        limited.append(spec)
    repository = make_repository(bench.workdir / "many", specs, bench.cores)
    rate_limited = make_repository(bench.workdir / "many-rate-limited", limited, bench.cores)
    plain = http_script(bench, "many_plain", lambda n: f"/embed/{n}", loadgen.plain_body, names)
    kserve = http_script(bench, "many_kserve", lambda n: f"/v2/models/{n}/infer", loadgen.kserve_body, names)
    expected = bench.reference[0]  # type: ignore[index]
    rows = []
    starts: list[tuple[str, Callable[[], Running], Path, str]] = []
    if "S1" in systems and "S1" in chosen:
        starts.append(("S1", chosen["S1"], plain, f"/embed/{names[0]}"))
    if "S3" in systems:
        s3_processes = _s3_processes(bench)
        starts.append(
            ("S3", lambda: start_s3(bench.workdir, repository, s3_processes, names), plain, f"/embed/{names[0]}")
        )
        starts.append(
            (
                "S3",
                lambda: _renamed(start_s3(bench.workdir, rate_limited, s3_processes, names), " (instances.rate_limit)"),
                plain,
                f"/embed/{names[0]}",
            )
        )
    if "S4" in systems:
        starts.append(
            (
                "S4",
                lambda: start_s4(bench.workdir, repository, names, f"{count} ensembles"),
                kserve,
                f"/v2/models/{names[0]}/infer",
            )
        )
        starts.append(
            (
                "S4",
                lambda: start_s4(bench.workdir, rate_limited, names, f"{count} ensembles, instances.rate_limit"),
                kserve,
                f"/v2/models/{names[0]}/infer",
            )
        )
    for system, start, script, path in starts:
        body = loadgen.kserve_body(bench.texts[0]) if system == "S4" else loadgen.plain_body(bench.texts[0])
        began = time.monotonic()
        running = start()
        try:
            wait_answering(running.http_url + path, body, expected)  # type: ignore[operator]
            load_s = time.monotonic() - began
            cell = measure(bench, running, "http", top, bench.profile.seconds, wrk_load(running, script), record=False)
            row = {"system": system, "models": count, "setting": running.setting, "load_s": load_s, **asdict(cell)}
            if running.triton is not None:
                row["queues"] = inference_queues(running.triton.http_url, running.triton.options.repository, names)
            rows.append(row)
        finally:
            stop(running)
    return rows


def inference_queues(http_url: str, repository: Path, names: list[str]) -> dict[str, float]:
    """Mean queue wait (ms per request) and requests of each copy's inference model, from Triton's
    statistics: shows whether the hottest models wait while the others idle."""
    from generator.serving.tune import model_stats

    queues = {}
    for name in names:
        stats = model_stats(http_url, inference_model(repository, name))
        count = int(stats["inference_count"])
        queue_ns = int(stats["inference_stats"]["queue"]["ns"])
        queues[name] = queue_ns / count / 1e6 if count else 0.0
        queues[f"{name}_requests"] = count
    return queues


def _renamed(running: Running, suffix: str) -> Running:
    running.setting += suffix
    return running


def _s3_processes(bench: Bench) -> int:
    """Tornado processes of S3's best setting in the single-model sweep."""
    best = bench.sweeps.get("S3")
    if best:
        setting = max(best, key=lambda s: s[1])[0]
        return int(setting.split()[1])
    return 1


def drop_weights(workdir: Path) -> int:
    """Delete the model files copied into the work folder's repositories (configs and logs stay)."""
    removed = 0
    for path in workdir.rglob("*"):
        if path.suffix in {".onnx", ".pt"} and path.is_file() and not path.is_symlink():
            removed += path.stat().st_size
            path.unlink()
    return removed


def _choices(parser: argparse.ArgumentParser, option: str, value: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """The comma-separated `value`, each item one of `allowed` (else a usage error)."""
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [v for v in items if v not in allowed]
    if unknown or not items:
        parser.error(f"{option}: {', '.join(unknown) or 'nothing'} not in {','.join(allowed)}")
    return items


def _positive_ints(parser: argparse.ArgumentParser, option: str, value: str) -> tuple[int, ...]:
    """The comma-separated `value` as positive integers (else a usage error)."""
    items = [v.strip() for v in value.split(",")]
    if not all(v.isdecimal() and int(v) > 0 for v in items):
        parser.error(f"{option}: {value!r} is not a comma-separated list of positive integers")
    return tuple(int(v) for v in items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke: short cells, no sweeps, 3 copies")
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {','.join(SYSTEMS)} (default: all)"
    )
    parser.add_argument(
        "--infinity",
        default=",".join(infinity.ENGINES),
        help="comma-separated subset of optimum,torch (Infinity's engines, one server each)",
    )
    parser.add_argument("--rounds", type=positive(int), help="rounds per cell (default: 3; quick: 2)")
    parser.add_argument("--no-many", action="store_true", help="skip the many-models scenario")
    parser.add_argument("--no-tune", action="store_true", help="skip the `tritongen tune` S4 variant")
    parser.add_argument(
        "--corpora",
        default=",".join(CORPORA),
        help="comma-separated subset of corpus,long-tail (long-tail: the S4 variants at the top concurrency)",
    )
    parser.add_argument(
        "--s4", default=",".join(S4_VARIANTS), help="comma-separated subset of padded,buckets,ragged (S4 variants)"
    )
    parser.add_argument("--concurrency", help="comma-separated concurrencies (default: 1,8,32; quick: 1,8)")
    parser.add_argument("--no-grpc", action="store_true", help="skip the S4 gRPC cells (perf_analyzer)")
    parser.add_argument(
        "--ragged-targets",
        action="store_true",
        help="only what the ragged S4's targets need: --systems L,S3,T,S4 --s4 padded,ragged --no-many --no-tune "
        "--no-grpc --concurrency 8,32 --corpora corpus,long-tail (explicit options override)",
    )
    parser.add_argument("--models", type=positive(int), help="copies in the many-models scenario")
    parser.add_argument("--seconds", type=positive(float), help="measurement seconds per cell")
    parser.add_argument("--cores", type=positive(int), default=None, help="CPU budget (default: detected)")
    parser.add_argument("--output", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    if args.ragged_targets:
        preset = {"systems": "L,S3,T,S4", "s4": "padded,ragged", "concurrency": "8,32"}
        for name, value in preset.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
        args.no_many = args.no_tune = args.no_grpc = True

    profile = copy.deepcopy(QUICK if args.quick else Profile())
    if args.models:
        profile.many_models = args.models
    if args.seconds:
        profile.seconds = args.seconds
    if args.rounds:
        profile.rounds = args.rounds
    if args.concurrency:
        profile.concurrency = _positive_ints(parser, "--concurrency", args.concurrency)
    profile.corpora = _choices(parser, "--corpora", args.corpora, CORPORA)
    profile.s4_variants = _choices(parser, "--s4", args.s4, S4_VARIANTS)
    profile.grpc = not args.no_grpc
    systems = set(_choices(parser, "--systems", args.systems, SYSTEMS))
    engines = _choices(parser, "--infinity", args.infinity, infinity.ENGINES)
    profile.infinity_engines = engines if "Infinity" in systems else ()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    output = args.output or RESULTS / (stamp + ("-quick" if args.quick else ""))
    workdir = output / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    cores = args.cores or detected_cores()
    texts = corpus.sentences()
    bench = Bench(profile, workdir, cores, texts, corpus.long_tail(texts))
    started_at = time.monotonic()
    bench.log(f"{platform.node()}: {cores} cores, load average {Path('/proc/loadavg').read_text().split()[:3]}")

    base = make_repository(workdir / "base", [padded_spec(), spec_dict("minilm_embed_ts")], cores)
    onnx = inference_file(base, "minilm_embed")
    bench.reference = limit.reference_embeddings(onnx, corpus.tokenizer_file(), texts[:1])
    limits: list[limit.LimitResult] = []
    if "L" in systems:
        limits = limit.measure(onnx, corpus.tokenizer_file(), texts[: profile.limit_texts], cores)
        ragged = make_repository(workdir / "ragged-limit", [spec_dict("minilm_embed")], cores)
        ragged_onnx = inference_file(ragged, "minilm_embed")
        limits += ragged_limit.limits(ragged_onnx, texts[: profile.limit_texts], cores)
        for result in limits:
            bench.log(
                f"{result.name}: {result.rps:.1f} req/s at batch {result.batch_size}, {result.setting} "
                f"({', '.join(f'{b}: {r:.0f}' for b, r in result.per_batch.items())})"
            )
    chosen = choose_baselines(bench, base, systems)
    if "T" in systems:
        chosen["T"] = lambda: start_t(workdir, base)
    variants: list[S4Variant] = []
    if "S4" in systems:
        variants = s4_variants(bench)
        if profile.tune and not args.no_tune:
            label, tuned = tuned_variant(bench)
            if tuned == without_environments(spec_dict("minilm_embed")):
                bench.notes.append(f"tritongen tune kept the shipped settings ({label})")
            else:
                variants.append(("tuned", label, tuned))
    memory = side_by_side(bench, chosen, variants)
    many = [] if args.no_many else bench_many(bench, chosen, systems)

    data = {
        "profile": asdict(profile),
        "cores": cores,
        "host": platform.node(),
        "load_average": Path("/proc/loadavg").read_text().split()[:3],
        "limits": [asdict(r) for r in limits],
        "cells": [asdict(c) for c in bench.cells],
        "sweeps": bench.sweeps,
        "many": many,
        "s4_memory": memory,
        "notes": bench.notes,
        "thread_reports": bench.thread_reports,
        "tune_log": bench.tune_log,
        "elapsed_s": time.monotonic() - started_at,
    }
    (output / "results.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    markdown = report.markdown(data)
    (output / "results.md").write_text(markdown, encoding="utf-8")
    report.plot(data, output / "plot.png")
    print(markdown)
    removed = drop_weights(workdir)
    bench.log(
        f"results in {output} ({time.monotonic() - started_at:.0f}s; {removed / 2**20:.0f} MiB of "
        "model copies removed from work/)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
