"""bench.run: the command line, a cell's bookkeeping around a load generator, the sweep's choice,
the wrk scripts, the S4 variants and the work folder's clean-up (no server, no load generator)."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from bench import corpus, loadgen, run, systems
from bench.run import Bench, Profile
from bench.systems import Running
from generator.pipeline.manifest import read_manifest
from generator.pipeline.plan import detected_cores
from generator.pipeline.spec import ModelSpec
from generator.serving.process import TritonProcess
from generator.serving.tune import padding_of

from .recorded import INFERENCE_MODEL, STATS_AFTER, STATS_FRESH, replay, stats_answer

RESULT = loadgen.LoadResult(rps=50.0, p50_ms=12.0, p99_ms=40.0, errors=0, requests=100)


class FakeLoad:
    """A stand-in load generator: spends `cpu_s` of this process's CPU, calls `during`, and
    reports `result`; remembers each call as (concurrency, seconds, with `during`)."""

    def __init__(self, result: loadgen.LoadResult = RESULT, cpu_s: float = 0.05) -> None:
        self.result, self.cpu_s = result, cpu_s
        self.calls: list[tuple[int, float, bool]] = []

    def __call__(self, concurrency: int, seconds: float, during: Callable[[], None] | None) -> loadgen.LoadResult:
        self.calls.append((concurrency, seconds, during is not None))
        end = time.process_time() + self.cpu_s
        while time.process_time() < end:
            pass
        if during is not None:
            during()
        return self.result


def _bench(workdir: Path, **profile: Any) -> Bench:
    return Bench(Profile(**profile), workdir, 2, ["A first text.", "A second text."])


def _this_process(setting: str = "padded [test]", **fields: Any) -> Running:
    """This test process as the 'server' whose process tree is sampled."""
    return Running("S4", setting, roots=[os.getpid()], **fields)


# --- the command line -------------------------------------------------------------------------


class Parsed(Exception):
    """Raised instead of starting the benchmark: what `main` would run it with."""

    def __init__(self, profile: Profile, workdir: Path, cores: int, texts: list[str], long_tail: list[str]) -> None:
        super().__init__()
        self.profile, self.workdir, self.cores, self.texts, self.long_tail = profile, workdir, cores, texts, long_tail


@pytest.fixture
def parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Parsed]:
    """`main(argv)` up to the benchmark's start (its `Bench`), which raises `Parsed`."""

    def stand_in(*args: Any) -> Bench:
        raise Parsed(*args)

    monkeypatch.setattr(run, "Bench", stand_in)

    def parse(*argv: str) -> Parsed:
        with pytest.raises(Parsed) as caught:
            run.main([*argv, "--output", str(tmp_path / "out")])
        return caught.value

    return parse


def test_main_defaults_to_the_full_profile_on_the_detected_cores(parse: Callable[..., Parsed], tmp_path: Path) -> None:
    parsed = parse()
    assert parsed.profile == Profile()
    assert parsed.cores == detected_cores()
    assert parsed.workdir == tmp_path / "out" / "work" and parsed.workdir.is_dir()
    assert parsed.texts == corpus.sentences()
    assert parsed.long_tail == corpus.long_tail(parsed.texts)


def test_main_quick_with_overrides_leaves_the_quick_profile_alone(parse: Callable[..., Parsed]) -> None:
    parsed = parse("--quick", "--seconds", "7.5", "--models", "5", "--concurrency", "2, 4", "--cores", "3")
    assert parsed.profile == Profile(
        concurrency=(2, 4),
        warmup_s=run.QUICK.warmup_s,
        seconds=7.5,
        sweep_seconds=run.QUICK.sweep_seconds,
        limit_texts=run.QUICK.limit_texts,
        many_models=5,
        rounds=run.QUICK.rounds,
        sweep=False,
        tune=False,
    )
    assert parsed.cores == 3
    assert (run.QUICK.seconds, run.QUICK.many_models, run.QUICK.concurrency) == (3.0, 3, (1, 8))


def test_main_choices_keep_their_order_and_drop_blanks(parse: Callable[..., Parsed]) -> None:
    parsed = parse("--s4", " ragged,,padded ", "--corpora", "long-tail", "--no-grpc")
    assert parsed.profile.s4_variants == ("ragged", "padded")
    assert parsed.profile.corpora == ("long-tail",)
    assert parsed.profile.grpc is False


def test_main_ragged_targets_preset_and_explicit_options_over_it(parse: Callable[..., Parsed]) -> None:
    preset = parse("--ragged-targets").profile
    assert (preset.concurrency, preset.s4_variants, preset.corpora, preset.grpc) == (
        (8, 32),
        ("padded", "ragged"),
        ("corpus", "long-tail"),
        False,
    )
    explicit = parse("--ragged-targets", "--concurrency", "1,8", "--s4", "ragged").profile
    assert (explicit.concurrency, explicit.s4_variants) == ((1, 8), ("ragged",))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--systems", "S1,S9"], "--systems: S9 not in L,S1,S2,S3,T,S4,Infinity"),
        (["--corpora", " , "], "--corpora: nothing not in corpus,long-tail"),
        (["--s4", "padded,sideways,flat"], "--s4: sideways, flat not in padded,buckets,ragged"),
        (["--ragged-targets", "--systems", "S5"], "--systems: S5 not in L,S1,S2,S3,T,S4,Infinity"),
        (["--concurrency", "1,x"], "--concurrency: '1,x' is not a comma-separated list of positive integers"),
        (["--concurrency", "8,0"], "--concurrency: '8,0' is not a comma-separated list of positive integers"),
        (["--concurrency", "4,"], "--concurrency: '4,' is not a comma-separated list of positive integers"),
        (["--seconds", "0"], "argument --seconds: '0' is not positive"),
        (["--seconds", "nan"], "argument --seconds: 'nan' is not positive"),
        (["--seconds", "soon"], "argument --seconds: 'soon' is not a number"),
        (["--models", "2.5"], "argument --models: '2.5' is not an integer"),
        (["--cores", "-1"], "argument --cores: '-1' is not positive"),
    ],
)
def test_main_rejects_bad_options_before_any_work(
    argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(run, "Bench", lambda *_: pytest.fail("the benchmark started"))
    with pytest.raises(SystemExit) as exited:
        run.main([*argv, "--output", str(tmp_path / "out")])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m bench.run") and f"error: {message}\n" in err
    assert not (tmp_path / "out").exists()


def test_choices_are_the_comma_separated_allowed_items(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench")
    assert run._choices(parser, "--systems", " S4, L ,S1", ("L", "S1", "S4")) == ("S4", "L", "S1")
    with pytest.raises(SystemExit):
        run._choices(parser, "--systems", "S4,s1", ("L", "S1", "S4"))
    assert "--systems: s1 not in L,S1,S4" in capsys.readouterr().err


def test_profiles_are_json_and_quick_is_shorter_everywhere() -> None:
    full = Profile()
    json.dumps(asdict(full))  # results.json holds it
    assert run.QUICK.seconds < full.seconds and run.QUICK.warmup_s < full.warmup_s
    assert run.QUICK.sweep_seconds < full.sweep_seconds and run.QUICK.limit_texts < full.limit_texts
    assert run.QUICK.many_models < full.many_models and max(run.QUICK.concurrency) < max(full.concurrency)
    assert not run.QUICK.sweep and not run.QUICK.tune and full.sweep and full.tune


# --- one cell -----------------------------------------------------------------------------------


def test_measure_warms_up_then_records_the_cell_with_the_process_tree(tmp_path: Path) -> None:
    bench = _bench(tmp_path, warmup_s=0.5)
    load = FakeLoad(loadgen.LoadResult(rps=50.0, p50_ms=12.0, p99_ms=40.0, errors=2, requests=100))
    cell = run.measure(bench, _this_process(variant="padded"), "http", 8, 2.0, load)
    assert load.calls == [(8, 0.5, False), (8, 2.0, True)]
    assert (cell.system, cell.setting, cell.protocol, cell.concurrency, cell.variant, cell.corpus) == (
        "S4",
        "padded [test]",
        "http",
        8,
        "padded",
        "corpus",
    )
    assert (cell.rps, cell.p50_ms, cell.p99_ms, cell.errors, cell.requests) == (50.0, 12.0, 40.0, 2, 100)
    assert cell.cpu_cores > 0  # the load spent this process's CPU while it was measured
    assert cell.machine_cores > 0
    assert cell.cpu_ms == pytest.approx(cell.cpu_cores / 50.0 * 1000)
    assert cell.threads >= 1 and cell.processes >= 1 and cell.rss_mb > 0 and cell.pss_mb > 0
    assert cell.avg_batch is None  # no Triton statistics
    assert bench.cells == [cell]
    assert re.search(rf"^\s*{os.getpid()} .* \d+ threads$", bench.thread_reports["S4 http c=8 (padded [test])"], re.M)
    assert bench.notes == ["S4 http c=8: 2 errors"]


def test_measure_unrecorded_long_tail_cell(tmp_path: Path) -> None:
    bench = _bench(tmp_path)
    load = FakeLoad(loadgen.LoadResult(rps=0.0, p50_ms=0.0, p99_ms=0.0, errors=3, requests=0))
    cell = run.measure(bench, _this_process(), "grpc", 32, 1.0, load, record=False, corpus_name="long-tail")
    assert cell.corpus == "long-tail" and cell.cpu_ms == 0.0  # no request answered: no ms per request
    assert bench.cells == [] and bench.thread_reports == {}
    assert bench.notes == ["S4 grpc c=32 long-tail: 3 errors"]


def test_measure_average_batch_counts_only_the_measurement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:8000/v2/models/{INFERENCE_MODEL}/stats"
    asked = replay(monkeypatch, {url: [stats_answer(STATS_FRESH), stats_answer(STATS_AFTER)]})
    asked_when_loaded: list[int] = []

    class Load(FakeLoad):
        def __call__(self, concurrency: int, seconds: float, during: Callable[[], None] | None) -> loadgen.LoadResult:
            asked_when_loaded.append(len(asked))
            return super().__call__(concurrency, seconds, during)

    triton = cast(TritonProcess, SimpleNamespace(http_url="127.0.0.1:8000"))
    running = _this_process(triton=triton, stats_model=INFERENCE_MODEL)
    cell = run.measure(_bench(tmp_path), running, "http", 8, 1.0, Load())
    assert asked_when_loaded == [0, 1]  # statistics read after the warm-up and after the measurement
    assert cell.avg_batch == 4.0  # 40 inferences in 10 executions
    assert "batch 4.0" in capsys.readouterr().out


# --- the sweep ----------------------------------------------------------------------------------


def test_best_of_without_a_sweep_starts_nothing(tmp_path: Path) -> None:
    def never() -> Running:
        pytest.fail("a candidate was started")

    def first() -> Running:
        return _this_process()

    def unchecked(_: Running) -> None:
        pytest.fail("a candidate was checked")

    script = tmp_path / "plain.lua"
    assert run.best_of(_bench(tmp_path, sweep=False), "S1", [first, never], unchecked, script) is first
    assert run.best_of(_bench(tmp_path), "S1", [first], unchecked, script) is first


def test_best_of_measures_each_setting_alone_and_returns_the_fastest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = _bench(tmp_path, concurrency=(1, 32, 8), warmup_s=0.25, sweep_seconds=1.5)
    rps = {"a": 10.0, "b": 30.0, "c": 20.0}
    processes: list[subprocess.Popen[bytes]] = []
    loads: list[FakeLoad] = []
    checked: list[str] = []
    script = tmp_path / "plain.lua"

    def candidate(setting: str) -> Callable[[], Running]:
        def start() -> Running:
            process = subprocess.Popen(["sleep", "60"], start_new_session=True)
            processes.append(process)
            return Running("S1", setting, "http://127.0.0.1:9", roots=[process.pid], processes=[process])

        return start

    def wrk_load(running: Running, path: Path) -> FakeLoad:
        assert path == script
        assert all(p.poll() is not None for p in processes[:-1]), "an earlier setting still runs"
        loads.append(FakeLoad(loadgen.LoadResult(rps[running.setting], 1.0, 2.0, 0, 10), cpu_s=0.0))
        return loads[-1]

    monkeypatch.setattr(run, "wrk_load", wrk_load)
    candidates = [candidate(s) for s in rps]
    best = run.best_of(bench, "S1", candidates, lambda r: checked.append(r.setting), script)
    assert best is candidates[1]
    assert bench.sweeps == {"S1": [("a", 10.0), ("b", 30.0), ("c", 20.0)]}
    assert checked == ["a", "b", "c"]
    assert [load.calls for load in loads] == [[(32, 0.25, False), (32, 1.5, True)]] * 3
    assert bench.cells == []  # sweep cells are not results
    assert [p.returncode for p in processes] == [-signal.SIGTERM] * 3


def test_s3_processes_of_the_best_sweep_setting(tmp_path: Path) -> None:
    bench = _bench(tmp_path)
    assert run._s3_processes(bench) == 1  # no sweep
    bench.sweeps["S3"] = [
        ("tornado 1 processes -> triton minilm_embed_v1_model", 90.0),
        ("tornado 2 processes -> triton minilm_embed_v1_model", 120.0),
    ]
    assert run._s3_processes(bench) == 2


# --- wrk scripts and S4 variants ------------------------------------------------------------------


def _requests(script: Path) -> list[tuple[str, str]]:
    return re.findall(r"\{\[===\[(.*?)\]===\], \[===\[(.*?)\]===\]\}", script.read_text(encoding="utf-8"))


def test_http_script_sends_every_text_to_the_model(tmp_path: Path) -> None:
    bench = _bench(tmp_path)
    script = run.http_script(bench, "plain", lambda n: f"/embed/{n}", loadgen.plain_body)
    assert script == tmp_path / "plain.lua"
    assert _requests(script) == [("/embed/minilm_embed", loadgen.plain_body(t)) for t in bench.texts]


def test_http_script_draws_a_zipf_model_per_text(tmp_path: Path) -> None:
    bench = _bench(tmp_path)
    texts = corpus.sentences(300)
    names = ["copy00", "copy01", "copy02"]
    path = run.http_script(bench, "many", lambda n: f"/v2/models/{n}/infer", loadgen.kserve_body, names, texts)
    requests = _requests(path)
    assert [body for _, body in requests] == [loadgen.kserve_body(t) for t in texts]
    models = [url.split("/")[3] for url, _ in requests]
    assert models == [names[i] for i in corpus.zipf_indices(len(texts), len(names))]
    assert models.count("copy00") > models.count("copy01") > models.count("copy02") > 0


def test_s4_variants_are_valid_specs_served_as_minilm_embed(tmp_path: Path) -> None:
    variants = run.s4_variants(_bench(tmp_path))
    assert [key for key, _, _ in variants] == ["padded", "buckets", "ragged"]
    specs = {key: spec for key, _, spec in variants}
    assert specs["padded"] == {**systems.spec_dict("minilm_embed_padded"), "name": "minilm_embed"}
    assert specs["ragged"] == systems.spec_dict("minilm_embed")  # the shipped spec, unpadded
    validated = {key: ModelSpec.model_validate(spec) for key, spec in specs.items()}
    assert {spec.name for spec in validated.values()} == {"minilm_embed"}
    assert padding_of(validated["padded"]) == ("batch_longest", ())
    assert padding_of(validated["buckets"]) == ("buckets", (16, 32, 48, 64, 128))
    assert validated["ragged"].versions[0].model.format == "onnx_ragged"
    buckets = specs["buckets"]["versions"][0]["preprocessing"]
    shipped = specs["padded"]["versions"][0]["preprocessing"]
    assert {k: v for k, v in buckets.items() if k not in ("padding", "buckets")} == {
        k: v for k, v in shipped.items() if k != "padding"
    }


def test_s4_variants_follow_the_profile_in_a_fixed_order(tmp_path: Path) -> None:
    variants = run.s4_variants(_bench(tmp_path, s4_variants=("ragged", "padded")))
    assert [key for key, _, _ in variants] == ["padded", "ragged"]


# --- Triton statistics of many copies, and the clean-up --------------------------------------------


def test_inference_queues_read_each_copys_inference_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    specs = []
    for name in ("copy00", "copy01"):
        spec = systems.without_environments(systems.spec_dict("minilm_embed"))
        spec["name"] = name
        specs.append(spec)
    repository = systems.make_repository(tmp_path, specs, 2)
    manifest = read_manifest(repository)
    hot, cold = manifest.inference_model("copy00"), manifest.inference_model("copy01")
    assert hot != cold
    url = "http://127.0.0.1:8000/v2/models/{}/stats"
    replay(
        monkeypatch,
        {
            url.format(hot): [stats_answer({**STATS_AFTER, "name": hot})],
            url.format(cold): [stats_answer({**STATS_FRESH, "name": cold})],
        },
    )
    queues = run.inference_queues("127.0.0.1:8000", repository, ["copy00", "copy01"])
    assert queues == {
        "copy00": pytest.approx(147_900_368 / 40 / 1e6),  # queue ns over the 40 requests, in ms
        "copy00_requests": 40,
        "copy01": 0.0,
        "copy01_requests": 0,
    }


def test_drop_weights_removes_model_copies_only(tmp_path: Path) -> None:
    work, cache = tmp_path / "work", tmp_path / "cache"
    (work / "s4-0" / "repository" / "m_model" / "1").mkdir(parents=True)
    cache.mkdir()
    onnx_file = work / "s4-0" / "repository" / "m_model" / "1" / "model.onnx"
    onnx_file.write_bytes(b"x" * 1000)
    (work / "base" / "m_ts").mkdir(parents=True)
    (work / "base" / "m_ts" / "model.pt").write_bytes(b"y" * 24)
    (work / "base" / "m_ts" / "config.pbtxt").write_text("name: 'm_ts'\n")
    (work / "triton.log").write_text("log\n")
    (cache / "model.onnx").write_bytes(b"z" * 50)
    (work / "linked.onnx").symlink_to(cache / "model.onnx")
    assert run.drop_weights(work) == 1024
    left = sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file())
    assert left == ["base/m_ts/config.pbtxt", "linked.onnx", "triton.log"]
    assert (cache / "model.onnx").read_bytes() == b"z" * 50
    assert run.drop_weights(work) == 0


# --- rounds and Infinity ------------------------------------------------------------------------


def test_main_selects_infinity_engines_and_rounds(parse: Callable[..., Parsed]) -> None:
    assert parse().profile.infinity_engines == ("optimum", "torch")
    parsed = parse("--systems", "Infinity", "--infinity", "torch", "--rounds", "5")
    assert parsed.profile.infinity_engines == ("torch",) and parsed.profile.rounds == 5
    assert parse("--systems", "L,S4", "--infinity", "torch").profile.infinity_engines == ()
    assert parse("--ragged-targets").profile.infinity_engines == ()


def test_main_rejects_an_unknown_infinity_engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run.main(["--infinity", "optimum,ct2", "--output", str(tmp_path / "out")])
    assert "--infinity: ct2 not in optimum,torch" in capsys.readouterr().err


def _round(rps: float, p99: float, batch: float | None = None, errors: int = 0) -> run.Cell:
    return run.Cell(
        "S4", "ragged", "http", 32, rps, p99 / 2, p99, 1.5, 2.0, 40, 4, 900.0, 800.0, errors, int(rps * 10),
        variant="ragged", avg_batch=batch, cpu_ms=1.5 / rps * 1000,
    )  # fmt: skip


def test_combined_takes_the_rounds_medians_and_keeps_every_round() -> None:
    cell = run.combined([_round(100.0, 300.0, 8.0), _round(80.0, 500.0, 6.0, errors=1), _round(110.0, 200.0)])
    assert cell.rounds_rps == [100.0, 80.0, 110.0]
    assert (cell.rps, cell.p99_ms, cell.p50_ms) == (100.0, 300.0, 150.0)
    assert cell.spread == pytest.approx(0.8)  # worst round / median
    assert cell.avg_batch == 7.0  # the median of the rounds that have statistics
    assert (cell.errors, cell.requests) == (1, 1000 + 800 + 1100)
    assert cell.cpu_ms == pytest.approx(1.5 / 100.0 * 1000)
    one = run.combined([_round(50.0, 90.0)])
    assert (one.rounds_rps, one.spread, one.avg_batch) == ([50.0], 1.0, None)


def test_measure_rounds_alternates_the_order_and_records_one_cell_per_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = _bench(tmp_path, warmup_s=0.1, rounds=3)
    order: list[str] = []

    class Load(FakeLoad):
        def __init__(self, name: str, rates: list[float]) -> None:
            super().__init__(cpu_s=0.01)
            self.name, self.rates = name, rates

        def __call__(self, concurrency: int, seconds: float, during: Callable[[], None] | None) -> loadgen.LoadResult:
            if during is None:  # the warm-up
                return super().__call__(concurrency, seconds, during)
            order.append(self.name)
            self.result = loadgen.LoadResult(self.rates.pop(0), 10.0, 20.0, 0, 100)
            return super().__call__(concurrency, seconds, during)

    jobs: list[run.Job] = [
        (_this_process("a"), "http", Load("a", [10.0, 12.0, 11.0])),
        (_this_process("b"), "http", Load("b", [20.0, 30.0, 40.0])),
    ]
    cells = run.measure_rounds(bench, jobs, 8, 0.2, reverse=True, corpus_name="long-tail")
    assert order == ["b", "a", "a", "b", "b", "a"]  # reversed first, then alternating
    assert [(c.setting, c.rounds_rps, c.rps, c.corpus) for c in cells] == [
        ("a", [10.0, 12.0, 11.0], 11.0, "long-tail"),
        ("b", [20.0, 30.0, 40.0], 30.0, "long-tail"),
    ]
    assert bench.cells == cells
    assert set(bench.thread_reports) == {"S4 http c=8 long-tail (a)", "S4 http c=8 long-tail (b)"}
    out = capsys.readouterr().out
    assert "rounds 20.0, 30.0, 40.0 req/s: median 30.0, worst/median 0.67 long-tail  [b]" in out


def test_infinity_is_checked_against_sentence_transformers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _bench(tmp_path)
    expected = run.sentence_transformers_embeddings(bench.texts)
    bodies: list[str] = []

    def answer(url: str, body: str, timeout: float = 60.0) -> dict[str, Any]:
        bodies.append(body)
        text = json.loads(body)["input"][0]
        row = expected[bench.texts.index(text)]
        return {"object": "list", "data": [{"object": "embedding", "embedding": row.tolist(), "index": 0}]}

    monkeypatch.setattr(systems, "post_json", answer)
    running = Running("Infinity", "engine torch", "http://127.0.0.1:9", processes=[])
    running.processes = [cast(subprocess.Popen[bytes], SimpleNamespace(poll=lambda: None))]
    run.infinity_check(bench, running, count=2)
    assert bodies == [loadgen.openai_body(t, "minilm") for t in bench.texts]

    monkeypatch.setattr(run, "sentence_transformers_embeddings", lambda texts: -expected[: len(texts)])
    with pytest.raises(systems.BenchError, match="wrong embedding"):
        run.infinity_check(bench, running, count=2)
