"""Nothing stored wrong, nothing lost (issue 14): one writer per output
folder, hostile text that never stops a run, preflight of the endpoint, and
a circuit breaker when the engine keeps failing. Real processes throughout."""

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request

import datasets
import pytest

from conftest import FACTORY, ROOT, SAMPLE_PROBLEMS, needs_ray, read_uuids, run_factory, sample_rows, stored_rows, wait_for
from factory.engines.base import Completion, Engine, GenerationResult
from test_run_fake import fake_job

pytestmark = pytest.mark.reliability


def test_a_second_run_on_the_same_folder_is_refused_and_the_first_finishes(tmp_path, fake_server):
    out = tmp_path / "out"
    job = fake_job(tmp_path, fake_server(latency=0.5), out)
    first = subprocess.Popen([*FACTORY, "run", str(job)], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (out / "run.lock").is_file() and (out / "run.lock").read_text(), 60, "the first run's lock")
        second = run_factory("run", job)
        assert second.returncode == 1, second.stderr
        assert "is being written by another factory run" in second.stderr
        assert f"pid {first.pid} on {socket.gethostname()}" in second.stderr and "Traceback" not in second.stderr
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert sorted(read_uuids(out)) == sorted(set(read_uuids(out))) and len(read_uuids(out)) == SAMPLE_PROBLEMS


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path, fake_server):
    out = tmp_path / "out"
    job = fake_job(tmp_path, fake_server(latency=0.2), out)
    proc = subprocess.Popen([*FACTORY, "run", str(job)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: len(read_uuids(out)) >= 4, 120, "some problems stored")
    proc.kill()
    proc.wait()
    assert json.loads((out / "run.lock").read_text())["pid"] == proc.pid  # left behind, not held
    run_factory("run", job, check=True)
    uuids = read_uuids(out)
    assert len(uuids) == len(set(uuids)) == SAMPLE_PROBLEMS


HOSTILE = ["x\ud800y", "nul\x00byte", "\udfff", "ok " * 200_000]  # lone surrogates, NUL, a 600 kB string


def test_hostile_text_in_a_verify_file_is_replaced_and_flagged(tmp_path):
    rows = [{"id": i, "answer": "4", "generation": f"{h} The answer is $\\boxed{{4}}$."} for i, h in enumerate(HOSTILE)]
    rows.append({"id": 99, "answer": "4\ud800", "generation": "\\boxed{4}"})
    rows.append({"id": 100, "answer": "5", "generation": "The answer is $\\boxed{5}$.", "note": "fine \udc80"})
    src = tmp_path / "in.jsonl"
    # json.dumps escapes lone surrogates as \ud800, which is how such text arrives
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "verified.jsonl"
    proc = run_factory("verify", src, "-o", out)
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in got] == [r["id"] for r in rows]  # every row went through
    flagged = {r["id"] for r in got if r.get("text_repaired")}
    assert flagged == {0, 1, 2, 99, 100}
    assert all("\ufffd" in r["generation"] for r in got if r["id"] in (0, 1, 2))
    assert got[3]["correct_math_verify"] is True and got[-1]["correct_math_verify"] is True


def test_hostile_text_in_a_source_and_from_the_engine_never_stops_a_run(tmp_path, fake_server):
    rows = sample_rows(6)
    rows[1]["problem"] = "Compute \ud800 the sum of 2 and 2."
    rows[2]["solution"] = "It is \udfff four."
    rows[3]["problem"] = "What is " + "very " * 30_000 + "big?"
    src_rows = rows + ["not an object", {"problem": None}]
    out = tmp_path / "out"
    job = fake_job(tmp_path, fake_server(), out, rows=src_rows)
    proc = run_factory("run", job, "--set", "source.max_problem_chars=500000")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "prepared" / "report.json").read_text())
    assert report["read"] == 8 and report["accepted"] + report["rejected"] == 8
    assert report["rejected_by_reason"].get("bad_encoding") == 1  # the problem with a lone surrogate
    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert len(ds) == report["accepted"]
    assert any("\ufffd" in (s or "") for s in ds["solution"])  # replaced, stored


@pytest.mark.parametrize("case", ["wrong_model", "bad_key", "unreachable"])
def test_preflight_names_the_setting_and_writes_nothing(tmp_path, fake_server, case):
    out = tmp_path / "out"
    env = {"OPENAI_API_KEY": "wrong"}
    if case == "wrong_model":
        url = fake_server(0.0, "--models", "served-a,served-b")
    elif case == "bad_key":
        url = fake_server(0.0, "--api-key", "s3cret")
    else:
        from factory.engines.managed import free_port

        url = f"http://127.0.0.1:{free_port()}"
    proc = run_factory("run", fake_job(tmp_path, url, out), env=env)
    assert proc.returncode == 2, proc.stderr
    expected = {"wrong_model": "engine.model: 'fake' is not served at", "bad_key": "engine.api_key_env:",
                "unreachable": "engine.base_url: cannot reach"}[case]
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    assert "wrong" not in proc.stderr.replace("wrong_model", "")  # the key itself is never printed
    assert not out.exists()  # nothing written
    if case == "wrong_model":  # preflight off: the same mistake now costs requests, yet nothing is stored
        job = fake_job(tmp_path, url, out, engine={"preflight": False, "breaker_consecutive": 10})
        skipped = run_factory("run", job, env=env)
        assert skipped.returncode == 1 and "is not served" not in skipped.stderr
        assert "the engine keeps failing" in skipped.stderr and "HTTP 404" in skipped.stderr, skipped.stderr
        assert read_uuids(out) == []


def test_a_failing_endpoint_trips_the_breaker_and_stores_no_error_rows(tmp_path, fake_server):
    """The endpoint answers 500 to everything: no problem is stored as an
    error, the run stops early with the last error, and once the endpoint is
    healthy again the same command finishes exactly."""
    out = tmp_path / "out"
    bad = fake_server(0.0, "--faults", "500=1.0")
    job = fake_job(tmp_path, bad, out, engine={"max_retries": 0, "breaker_consecutive": 8})
    proc = run_factory("run", job)
    assert proc.returncode == 1 and "the engine keeps failing: 8 failed requests in a row" in proc.stderr, proc.stderr
    assert "last error: gave up after 1 attempt: HTTP 500" in proc.stderr and "Traceback" not in proc.stderr
    assert read_uuids(out) == []  # nothing stored as done
    stats = json.loads((out / "metrics.json").read_text())["stats"]
    assert 8 <= stats["problems_failed"] < SAMPLE_PROBLEMS  # stopped early, not burnt through
    status = run_factory("status", out, check=True).stdout
    assert f"failed in the last run (not stored, tried again on the next run): {stats['problems_failed']}" in status
    assert f"pending (prepared, not stored yet): {SAMPLE_PROBLEMS}" in status
    assert "stored with an error (the request itself was rejected, e.g. a prompt over the context length): 0" in status
    good = fake_server()
    run_factory("run", job, "--set", f"engine.base_url={good}", check=True)
    uuids = read_uuids(out)
    assert len(uuids) == len(set(uuids)) == SAMPLE_PROBLEMS
    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert set(ds["error"]) == {None}


@pytest.mark.parametrize("status", [400, 401, 404])
def test_endpoint_setting_errors_are_transient_and_bad_requests_are_final(fake_server, monkeypatch, status):
    """401/403/404 say the endpoint is set wrong (the problem is left for a
    re-run); a 400 says this request is bad (stored with its reason)."""
    from factory.config import EngineConfig, SamplingConfig
    from factory.engines.openai_http import OpenAIEngine

    url = fake_server(0.0, "--api-key", "s3cret", "--models", "m")
    monkeypatch.setenv("OPENAI_API_KEY", "wrong" if status == 401 else "s3cret")
    eng = OpenAIEngine(EngineConfig(backend="openai", base_url=url, model="m" if status != 404 else "gone",
                                    max_retries=0), SamplingConfig(n=1))
    messages = [] if status == 400 else [{"role": "user", "content": "1+1?"}]

    async def ask():
        async with eng:
            return await eng.generate(messages)

    result = asyncio.run(ask())
    assert result.error.startswith(f"HTTP {status}")
    assert result.transient == (status != 400)


def test_hostile_text_from_an_engine_is_replaced_counted_and_stored(tmp_path):

    import pyarrow.parquet as pq

    from factory.config import EngineConfig, JobConfig, SamplingConfig
    from factory.engines import Completion, Engine, GenerationResult
    from factory.metrics import RunStats
    from factory.store.shards import write_shard
    from factory.verify.cascade import Cascade
    from factory.worker import ProblemWorker

    class Hostile(Engine):
        async def generate(self, messages, sampling=None):
            return GenerationResult([Completion("<think>\ud800\x00</think> $\\boxed{4}$", "stop", 3),
                                     Completion("fine $\\boxed{4}$", "stop", 2)])

    job = JobConfig.model_validate({"name": "t", "source": {"path": str(tmp_path)}, "output": {"dir": str(tmp_path)},
                                    "verify": {"workers": 1}})
    cascade = Cascade(job.verify)
    try:
        worker = ProblemWorker(job, Hostile(EngineConfig(), SamplingConfig()), cascade)
        stats = RunStats()
        problem = {"uuid": "u1", "problem": "2+2?", "answer": "4", "solution": None, "problem_type": None,
                   "question_type": None, "source": "t"}
        row = asyncio.run(worker.process(problem, stats))
    finally:
        cascade.close()
    assert row["generations"][0] == "<think>\ufffd\ufffd</think> $\\boxed{4}$" and stats.texts_repaired == 1
    assert row["correctness_math_verify"] == [True, True]
    write_shard(tmp_path, "train-00000.parquet", [row])
    assert pq.read_table(tmp_path / "train-00000.parquet").column("generations").to_pylist()[0][0].startswith("<think>\ufffd")


def test_a_dead_offline_engine_leaves_its_problems_for_a_re_run():
    """vLLM's EngineDeadError fails every queued request as transient (not
    stored, counted by the breaker); any other exception is the request's own."""

    from factory.config import EngineConfig, SamplingConfig
    from factory.engines.vllm_offline import VLLMOfflineEngine, _Request

    class EngineDeadError(RuntimeError):
        pass

    async def outcomes(exc):
        eng = VLLMOfflineEngine(EngineConfig(backend="vllm-offline"), SamplingConfig())
        calls = []

        def chat(batch):
            calls.append(len(batch))
            raise exc

        eng._chat = chat
        loop = asyncio.get_running_loop()
        batch = [_Request([{"role": "user", "content": str(i)}], SamplingConfig(), False, loop.create_future())
                 for i in range(3)]
        await eng._run(batch)
        return [r.future.result() for r in batch], calls

    dead, calls = asyncio.run(outcomes(EngineDeadError("EngineCore died")))
    assert all(r.transient and r.error.startswith("EngineDeadError") for r in dead) and calls == [3]
    bad, calls = asyncio.run(outcomes(ValueError("prompt too long")))
    assert not any(r.transient for r in bad) and calls == [3, 1, 1, 1]  # isolated one by one, stored


def test_secrets_never_reach_a_file_or_the_log(tmp_path, fake_server):
    out = tmp_path / "out"
    secrets = {"OPENAI_API_KEY": "sk-SECRET-openai-123", "HF_TOKEN": "hf_SECRETtoken456"}
    job = fake_job(tmp_path, fake_server(0.0, "--api-key", secrets["OPENAI_API_KEY"]), out,
                   verify={"judge": {"enabled": True}})
    proc = run_factory("run", job, env=secrets, check=True)
    written = [p for p in out.rglob("*") if p.is_file()]
    assert len(written) > 5
    for value in secrets.values():
        assert value not in proc.stdout + proc.stderr
        for p in written:
            assert value.encode() not in p.read_bytes(), p


def test_a_full_disk_is_one_clear_line_and_the_resume_is_exact(tmp_path, fake_server):
    """RLIMIT_FSIZE makes every write past a size fail as a full disk would
    (EFBIG; Python ignores SIGXFSZ): the run stops with one line, the store
    checks clean, and once writes succeed again the same command completes."""
    import resource

    out = tmp_path / "out"
    job = fake_job(tmp_path, fake_server(), out, output={"shard_rows": 20})
    limit = 12_000  # bytes: the prepared problems fit, a shard of 20 problems does not

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([*FACTORY, "run", str(job)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          preexec_fn=small_files)
    assert proc.returncode == 1, proc.stderr
    assert "cannot write" in proc.stderr and "run the same command to resume" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert run_factory("status", out, "--check").returncode == 0  # nothing damaged
    run_factory("run", job, check=True)
    uuids = read_uuids(out)
    assert len(uuids) == len(set(uuids)) == SAMPLE_PROBLEMS
    assert run_factory("status", out, "--check").returncode == 0


def test_a_hung_managed_server_is_restarted_and_its_requests_re_sent(tmp_path, monkeypatch):
    """A server that stays alive but stops answering (here after 8 requests)
    fails its health check; the watchdog restarts it, and what was in flight
    on it is re-sent: every request gets its answer."""
    import sys

    from factory.config import EngineConfig, SamplingConfig
    from factory.engines import managed

    monkeypatch.setattr(managed, "ensure_model", lambda name: name)

    class HangingServer(managed.ManagedServerEngine):
        server_name = "fake server"

        def command(self, model_path, port):
            return [sys.executable, str(ROOT / "tests" / "doubles" / "fake_openai.py"), "--port", str(port),
                    "--hang-after", "8"]

    cfg = EngineConfig(backend="vllm-server", model="fake", max_concurrency=4, hang_timeout_s=1.0,
                       health_interval_s=0.3, max_restarts=10, max_retries=8, request_timeout_s=120)
    eng = HangingServer(cfg, SamplingConfig(n=1), run_dir=tmp_path)

    async def ask_all():
        async with eng:
            return await asyncio.gather(*(eng.generate([{"role": "user", "content": f"What is {i} + 1?"}])
                                          for i in range(14)))

    results = asyncio.run(ask_all())
    assert [r.error for r in results] == [None] * 14 and all(r.completions for r in results)
    assert eng.restarts == 1  # the hung one, once; the new one answers the rest


@pytest.mark.parametrize("outage_s", [8, pytest.param(30, marks=pytest.mark.slow)])
def test_an_engine_outage_mid_run_loses_nothing_and_stores_no_error(tmp_path, fake_server, outage_s):
    """The endpoint dies mid-run and comes back on the same port later:
    requests in the gap exhaust their retries and are left, not stored; the
    run (or, if the breaker stopped it, the same command again) ends with
    exactly the store of an uninterrupted run and no error row."""
    ref = tmp_path / "ref"
    run_factory("run", fake_job(tmp_path, fake_server(), ref), check=True)
    url = fake_server(0.3)
    port = int(url.rsplit(":", 1)[1])
    out = tmp_path / "out"
    job = fake_job(tmp_path, url, out, engine={"max_retries": 2, "max_concurrency": 2})
    proc = subprocess.Popen([*FACTORY, "run", str(job)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    wait_for(lambda: len(read_uuids(out)) >= 6, 120, "some problems stored")
    server = fake_server.procs[-1]
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()
    time.sleep(outage_s)
    fake_server(0.3, port=port)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode in (0, 1), err
    if proc.returncode == 1:  # the breaker stopped it during the outage
        assert "the engine keeps failing" in err and "Traceback" not in err
    run_factory("run", job, check=True)
    got = stored_rows(out, ["generations", "correct", "error"])
    assert len(read_uuids(out)) == len(got) == SAMPLE_PROBLEMS
    assert got == stored_rows(ref, ["generations", "correct", "error"]) and {r["error"] for r in got.values()} == {None}


@needs_ray
def test_a_replica_killed_mid_chunk_loses_only_its_unflushed_problems(tmp_path, fake_server):
    """One replica, one chunk at a time, a part shard every 3 problems: the
    replica is SIGKILLed once its first chunk has 2 parts on disk. The driver
    keeps those parts and re-sends only the rest, so the requests spent twice
    are at most the unflushed problems plus those in flight."""
    from test_scale import ray_job

    ref = tmp_path / "ref"
    run_factory("run", fake_job(tmp_path, fake_server(), ref), check=True)
    url = fake_server(0.3)
    out = tmp_path / "out"
    flush, concurrency = 3, 2
    job = ray_job(tmp_path, url, out, replicas=1, inflight_chunks=1, chunk_size=25, flush_problems=flush)
    proc = subprocess.Popen([*FACTORY, "run", str(job)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if m := re.search(r"replica 0 ready on .*?\(pid (\d+)", line):
            pid = int(m.group(1))
            break
    wait_for(lambda: (out / "data" / "train-00000-p001.parquet").exists(), 120, "two parts of the first chunk")
    os.kill(pid, signal.SIGKILL)
    lines += proc.stdout.readlines()
    assert proc.wait(timeout=300) == 0, "".join(lines)
    log = " ".join("".join(lines).split())
    kept = int(re.search(r"kept (\d+) finished problem\(s\) of chunk train-00000", log).group(1))
    assert kept >= 2 * flush and f"{25 - kept} sent again" in log
    requests = json.loads(urllib.request.urlopen(f"{url}/stats", timeout=5).read())["requests"]
    lost = requests - SAMPLE_PROBLEMS  # problems generated twice: finished but not yet in a part, or in flight
    assert 0 <= lost <= (flush - 1) + concurrency, f"{lost} requests re-sent"
    assert stored_rows(out, ["generations", "correct"]) == stored_rows(ref, ["generations", "correct"])
    uuids = read_uuids(out)
    assert len(uuids) == len(set(uuids)) == SAMPLE_PROBLEMS
    assert json.loads((out / "metrics.json").read_text())["stats"]["problems_done"] == SAMPLE_PROBLEMS
    assert run_factory("status", out, "--check").returncode == 0


class DyingEngine(Engine):
    """An in-process engine whose k-th instance dies after `lives[k]`
    requests and then fails everything as vLLM's EngineDeadError does."""

    in_process = True
    lives: list[int] = []
    built: list["DyingEngine"] = []

    def __init__(self, cfg, sampling):
        super().__init__(cfg, sampling)
        k = len(DyingEngine.built)
        self.left = DyingEngine.lives[k] if k < len(DyingEngine.lives) else 10**9
        self.stopped = False
        DyingEngine.built.append(self)

    async def generate(self, messages, sampling=None):
        await asyncio.sleep(0.01)
        if self.left <= 0:
            return GenerationResult(error="EngineDeadError: EngineCore died", transient=True, dead=True)
        self.left -= 1
        n = (sampling or self.sampling).n
        return GenerationResult([Completion("<think>\nok\n</think>\n\\boxed{1}", "stop", 5)] * n, prompt_tokens=3)

    async def stop(self):
        self.stopped = True


def dying_job(tmp_path, out, lives, max_restarts):
    from factory.config import load_job

    DyingEngine.lives, DyingEngine.built = lives, []
    job = fake_job(tmp_path, "http://unused", out, engine={"backend": "vllm-offline", "max_restarts": max_restarts})
    return load_job(job)


def test_a_dead_in_process_engine_is_rebuilt_and_its_requests_re_sent(tmp_path, monkeypatch):
    """The engine dies after 7 requests with 4 in flight: it is built again
    once, every failed request is sent again, and the run stores all 50
    problems with no error, as if nothing had happened."""
    from factory import engines
    from factory.pipeline import run_job

    monkeypatch.setitem(engines.BACKENDS, "vllm-offline", DyingEngine)
    out = tmp_path / "out"
    result = run_job(dying_job(tmp_path, out, [7], max_restarts=2))
    assert len(DyingEngine.built) == 2 and DyingEngine.built[0].stopped
    got = stored_rows(out, ["generations", "error"])
    assert len(got) == len(read_uuids(out)) == SAMPLE_PROBLEMS and {r["error"] for r in got.values()} == {None}
    assert result.stats.problems_failed == 0


def test_an_engine_that_keeps_dying_stops_the_run_resumably(tmp_path, monkeypatch):
    """Past engine.max_restarts rebuilds the run stops with one line (exit 1
    from the CLI); what finished is stored, and the same job resumes."""
    from factory import engines
    from factory.engines.base import EngineDeadError
    from factory.pipeline import run_job

    monkeypatch.setitem(engines.BACKENDS, "vllm-offline", DyingEngine)
    out = tmp_path / "out"
    with pytest.raises(EngineDeadError, match=r"the vllm-offline engine died 2 times \(engine.max_restarts: 1\); "
                                              r"last error: EngineDeadError: EngineCore died"):
        run_job(dying_job(tmp_path, out, [10, 5], max_restarts=1))
    partial = stored_rows(out, ["error"])
    assert 10 <= len(partial) <= 15 and {r["error"] for r in partial.values()} == {None}  # nothing stored as an error
    run_job(dying_job(tmp_path, out, [], max_restarts=1))
    assert len(read_uuids(out)) == len(set(read_uuids(out))) == SAMPLE_PROBLEMS


@pytest.mark.parametrize("scale", ["local", pytest.param("ray", marks=needs_ray)])
def test_problems_that_failed_for_now_are_sent_again_later_in_the_run(tmp_path, fake_server, scale):
    """40% of first requests get a 500 and no retries are allowed: those
    problems are left out of their pass, sent again once the others are done,
    and the one run ends with the store of a run that never failed."""
    from test_scale import ray_job

    ref = tmp_path / "ref"
    run_factory("run", fake_job(tmp_path, fake_server(), ref), check=True)
    url = fake_server(0.0, "--faults", "500=0.4", "--fault-limit", "1")
    out = tmp_path / "out"
    engine = {"max_retries": 0, "retry_pause_s": 0.2}
    job = (ray_job(tmp_path, url, out, replicas=2, engine=engine) if scale == "ray"
           else fake_job(tmp_path, url, out, engine=engine))
    proc = run_factory("run", job, check=True)
    log = " ".join((proc.stdout + proc.stderr).split())
    assert "failed for now; sending them again" in log, log[-3000:]
    stats = json.loads((out / "metrics.json").read_text())["stats"]
    assert stats["problems_failed"] == 0 and stats["problems_done"] == SAMPLE_PROBLEMS
    assert stored_rows(out, ["generations", "correct", "error"]) == stored_rows(ref, ["generations", "correct", "error"])
    assert len(read_uuids(out)) == SAMPLE_PROBLEMS
