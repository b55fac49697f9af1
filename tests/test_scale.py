"""Scale-out: the chunk coordinator on a simulated cluster (fast), the
resource plan, shard-number leases, and `factory run` on a local Ray cluster
with fake-engine replicas, one of them killed, and the driver killed."""

import asyncio
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import FACTORY, ROOT, needs_ray, ray_head, read_uuids, run_factory, wait_for, SAMPLE_PROBLEMS
from factory.config import JobConfig
from factory.pipeline import RunError
from factory.scale import Chunk, Coordinator, SeqLease, make_chunks, plan
from factory.bench.sim_cluster import SimBackend
from test_run_fake import fake_job


def problems(n):
    return [{"uuid": f"p{i}"} for i in range(n)]


def coordinate(backend, replicas=3, total=40, size=3, inflight=2, **kw):
    seq = itertools.count()
    results = []
    coord = Coordinator(backend, replicas, make_chunks(problems(total), size, lambda: next(seq)),
                        lambda chunk, summary: results.append((chunk.seq, summary["uuids"])), inflight, **kw)
    asyncio.run(coord.run())
    return coord, results


def stored(results):
    return sorted(u for _, uuids in results for u in uuids)


def test_every_chunk_once_with_back_pressure():
    backend = SimBackend(rate=400, spread=0.5)
    coord, results = coordinate(backend, replicas=3, total=40, size=3, inflight=2)
    assert stored(results) == sorted(f"p{i}" for i in range(40))
    assert sorted(s for s, _ in results) == list(range(14))  # 40 problems in chunks of 3
    assert all(r.max_inflight <= 2 for r in backend.replicas.values())
    assert max(r.max_inflight for r in backend.replicas.values()) == 2  # the queue was kept full
    assert coord.restarts == coord.resent == 0


def test_dead_replica_is_replaced_and_its_chunks_resent():
    backend = SimBackend(rate=400)
    backend.die_after = {1: 2}
    coord, results = coordinate(backend, replicas=3, total=60, size=2, inflight=2)
    assert stored(results) == sorted(f"p{i}" for i in range(60)), "a problem was lost or stored twice"
    assert coord.restarts == 1 and backend.killed == 1
    assert coord.resent >= 1  # the dead one's in-flight chunks went elsewhere
    assert len({s for s, _ in results}) == len(results)


def test_failing_start_is_retried_then_gives_up():
    backend = SimBackend(rate=400)
    backend.start_failures = {0: 1}
    backend.die_after = {2: 0}
    coord, results = coordinate(backend, replicas=3, total=12, size=2)
    assert len(stored(results)) == 12 and coord.restarts >= 1
    # no replica ever came up: the first error is the answer, at once
    backend = SimBackend(rate=400)
    backend.start_failures = {0: 5}
    with pytest.raises(RunError, match="replica 0 could not start: RuntimeError: engine of replica 0 failed to load"):
        coordinate(backend, replicas=1, total=4)


def test_restart_budget_and_chunk_attempts_are_bounded():
    backend = SimBackend(rate=400)
    backend.die_after = {0: 0}
    with pytest.raises(RunError, match=r"replacements are used up \(scale.max_replica_restarts\)"):
        coordinate(backend, replicas=1, total=4, max_restarts=0)

    class AlwaysDies(SimBackend):
        async def process(self, rep, chunk):
            raise RuntimeError("CUDA error: an illegal memory access")

    with pytest.raises(RunError, match=r"chunk train-00000.parquet \(first problem p0\) failed 2 times.*illegal memory"):
        coordinate(AlwaysDies(), replicas=2, total=4, size=4, max_attempts=2)


def test_a_failed_chunk_keeps_its_finished_part_and_resends_the_rest():
    """Each attempt finishes half the chunk before the replica dies: the rest
    goes out under a new shard number, and attempts that made progress do
    not count towards scale.max_chunk_attempts."""
    kept: dict[int, list[str]] = {}

    class DiesHalfway(SimBackend):
        async def process(self, rep, chunk):
            if len(chunk.problems) == 1:
                return await super().process(rep, chunk)
            kept[chunk.seq] = [p["uuid"] for p in chunk.problems[: len(chunk.problems) // 2]]
            raise RuntimeError("ActorDiedError: the replica died")

    seq = itertools.count()
    results, sent = [], []

    def on_failure(chunk):
        results.append((chunk.seq, kept.pop(chunk.seq)))
        left = [p for p in chunk.problems if p["uuid"] not in results[-1][1]]
        sent.append(len(left))
        return Chunk(next(seq), left, chunk.attempts, chunk.errors)

    coord = Coordinator(DiesHalfway(rate=400), 2, make_chunks(problems(16), 8, lambda: next(seq)),
                        lambda chunk, summary: results.append((chunk.seq, summary["uuids"])), 1,
                        max_restarts=20, max_attempts=2, on_failure=on_failure)
    asyncio.run(coord.run())
    assert stored(results) == sorted(f"p{i}" for i in range(16)), "a problem was lost or stored twice"
    assert sorted(sent) == [1, 1, 2, 2, 4, 4]  # each resend carried only the unfinished half
    assert len({s for s, _ in results}) == len(results) and coord.resent == 6


def job_with(**scale):
    return JobConfig.model_validate({"source": {"path": "x.jsonl"}, "scale": {"mode": "ray", **scale},
                                     "engine": {"tensor_parallel_size": 8}})


def test_plan_from_cluster_resources():
    p = plan(job_with(), {"CPU": 512, "GPU": 64})
    assert (p.replicas, p.gpus_per_replica, p.verifiers) == (8, 8, 8)  # TP8: one replica per 8xH100 node
    assert plan(job_with(), {"CPU": 2}).replicas == 1  # CPU box: one engine
    cpu = plan(job_with(), {"CPU": 64}, nodes=4)
    assert (cpu.replicas, cpu.replicas_per_node) == (4, 1)  # CPU cluster: one engine per node
    assert plan(job_with(replicas=4), {"CPU": 4}, nodes=1).replicas_per_node == 4
    with pytest.raises(RunError, match=r"scale.replicas: 9 replicas x 8 GPU\(s\) need 72 GPUs; the cluster has 64"):
        plan(job_with(replicas=9), {"CPU": 512, "GPU": 64})
    with pytest.raises(RunError, match="a replica needs 8 GPU"):
        plan(job_with(), {"CPU": 64, "GPU": 4})
    with pytest.raises(RunError, match=r"need 4.4 CPUs; the cluster has 2 \(lower scale.replica_cpus"):
        plan(job_with(replicas=4, replica_cpus=1), {"CPU": 2})
    sg = JobConfig.model_validate({"source": {"path": "x"}, "scale": {"mode": "ray"}, "engine": {"backend": "sglang-server"}})
    with pytest.raises(RunError, match="SGLang replicas need GPUs"):
        plan(sg, {"CPU": 8})


def test_seq_lease_survives_the_driver(tmp_path):
    path = tmp_path / "ray" / "seq.json"
    first = SeqLease(path, 0)
    assert [first() for _ in range(3)] == [0, 1, 2]
    # a new driver never hands out a number the old one leased
    second = SeqLease(path, 3)
    assert second() == 64
    assert SeqLease(path, 500)() == 500


# ---------------------------------------------------------------- on Ray



def ray_job(tmp_path, url, out, engine=None, **scale):
    return fake_job(tmp_path, url, out, engine={"max_concurrency": 2, **(engine or {})},
                    scale={"mode": "ray", "replicas": 4, "chunk_size": 2, "replica_cpus": 0.2, "verifier_cpus": 0.1,
                           **scale})


def run_output(out):
    return {r["uuid"]: r["generations"] for r in pq.read_table(out / "data").to_pylist()}


@needs_ray
def test_ray_run_matches_local_and_survives_a_killed_replica(tmp_path, fake_server):
    ref = tmp_path / "ref"
    run_factory("run", fake_job(tmp_path, fake_server(), ref), check=True)
    out = tmp_path / "out"
    job = ray_job(tmp_path, fake_server(latency=0.2), out)
    proc = subprocess.Popen([*FACTORY, "run", str(job)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    pids, lines = {}, []
    for line in proc.stdout:
        lines.append(line)
        if m := re.search(r"replica (\d) ready on .*?\(pid (\d+)", line):
            pids[int(m.group(1))] = int(m.group(2))
        if len(pids) == 4:
            break
    wait_for(lambda: len(read_uuids(out)) >= 8, 120, "some chunks stored")
    os.kill(pids[1], signal.SIGKILL)
    lines += proc.stdout.readlines()
    assert proc.wait(timeout=300) == 0, "".join(lines)
    log = " ".join("".join(lines).split())  # the console wraps long lines
    assert "replica 1 failed (ActorDiedError" in log and "replacing it (1/8)" in log
    uuids = read_uuids(out)
    assert len(uuids) == len(set(uuids)) == SAMPLE_PROBLEMS, "a problem was lost or stored twice"
    assert run_output(out) == run_output(ref)  # same rows as the local runner
    stats = json.loads((out / "metrics.json").read_text())["stats"]
    assert stats["replica_restarts"] == 1 and stats["chunks_resent"] >= 1
    assert run_factory("status", out, "--check").returncode == 0


@needs_ray
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_ray_driver_killed_then_rerun_resumes_exactly(tmp_path, fake_server, sig):
    out = tmp_path / "out"
    job = ray_job(tmp_path, fake_server(latency=0.3), out, replicas=2)
    log = tmp_path / "driver.log"
    with open(log, "w") as fh:  # a file, not a pipe nobody reads while we wait
        proc = subprocess.Popen([*FACTORY, "run", str(job)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=fh)
    wait_for(lambda: len(read_uuids(out)) >= 6, 120, "some chunks stored")
    proc.send_signal(sig)
    proc.wait(timeout=120)
    err = log.read_text()
    if sig == signal.SIGTERM:  # a clean stop, not Ray's stack dump
        assert proc.returncode == 130 and "run the same command to resume" in err, err[-2000:]
    partial = set(read_uuids(out))
    assert 0 < len(partial) < SAMPLE_PROBLEMS
    time.sleep(2)  # workers of the dead driver may still write: the re-run must cope
    run_factory("run", job, check=True)
    uuids = read_uuids(out)
    assert len(uuids) == len(set(uuids)) == SAMPLE_PROBLEMS
    assert partial <= set(uuids)
    assert run_factory("status", out, "--check").returncode == 0


@needs_ray
def test_unreachable_ray_address_is_one_clear_line(tmp_path, fake_server):
    job = ray_job(tmp_path, fake_server(), tmp_path / "out")  # the endpoint passes preflight; Ray is what fails
    from factory.engines.managed import free_port

    proc = run_factory("run", job, "--ray", f"127.0.0.1:{free_port()}", timeout=300)
    assert proc.returncode == 1
    assert "error: scale.address: cannot join Ray at 127.0.0.1:" in proc.stderr
    assert "Traceback" not in proc.stderr


@needs_ray
def test_gpu_replicas_get_placement_groups_on_one_node(tmp_path, fake_server):
    """A head that declares 4 GPUs (no real ones: Ray only counts them): with
    2 GPUs per replica, 2 replicas, each placed through its own placement
    group and seeing its own pair of devices."""
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    with ray_head(env, "--num-cpus=2", "--num-gpus=4", "--include-dashboard=false") as port:
        out = tmp_path / "out"
        job = fake_job(tmp_path, fake_server(), out, scale={"mode": "ray", "gpus_per_replica": 2, "chunk_size": 4})
        proc = run_factory("run", job, "--ray", f"127.0.0.1:{port}", env=env, check=True)
    log = " ".join((proc.stdout + proc.stderr).split())
    assert "scale: 2 replica(s) x 2 GPU(s)" in log
    devices = sorted(re.findall(r"replica \d ready on .*?\(pid \d+, GPUs ([\d,]+)\)", log))
    assert len(devices) == 2 and sorted(d for pair in devices for d in pair.split(",")) == ["0", "1", "2", "3"]
    assert len(set(read_uuids(out))) == len(read_uuids(out)) == SAMPLE_PROBLEMS


def test_chunks_shrink_so_every_replica_gets_work():
    from factory.scale import chunk_size_for

    assert chunk_size_for(48, 2, 256, 2) == 12
    assert chunk_size_for(1_000_000, 64, 256, 2) == 256
    assert chunk_size_for(3, 8, 256, 2) == 1
    assert chunk_size_for(0, 2, 256, 2) == 1


def test_plan_for_replicas_spanning_nodes():
    """R1 in FP8 on H100s: TP16 over two 8-GPU nodes per replica."""
    r1 = JobConfig.model_validate({"source": {"path": "x"}, "scale": {"mode": "ray"},
                                   "engine": {"backend": "sglang-server", "tensor_parallel_size": 16}})
    p = plan(r1, {"CPU": 1024, "GPU": 64}, nodes=8, node_gpus=8)
    assert (p.replicas, p.gpus_per_replica, p.nodes_per_replica, p.gpus_per_bundle) == (4, 16, 2, 8)
    assert plan(r1, {"CPU": 1024, "GPU": 64}, nodes=4, node_gpus=16).nodes_per_replica == 1  # bigger nodes: one each
    r1.scale.gpus_per_node = 4
    assert plan(r1, {"CPU": 1024, "GPU": 64}, nodes=8, node_gpus=8).nodes_per_replica == 4  # the job's word wins
    r1.scale.gpus_per_node = 6
    with pytest.raises(RunError, match="a replica of 16 GPUs cannot be split evenly over nodes of 6"):
        plan(r1, {"CPU": 1024, "GPU": 64}, nodes=8)
    offline = JobConfig.model_validate({"source": {"path": "x"}, "scale": {"mode": "ray"},
                                        "engine": {"backend": "vllm-offline", "tensor_parallel_size": 16}})
    with pytest.raises(RunError, match="engine.backend 'vllm-offline' cannot: use vllm-server or sglang-server"):
        plan(offline, {"CPU": 1024, "GPU": 64}, nodes=8, node_gpus=8)


@pytest.mark.parametrize("backend, meet_flags", [
    ("vllm-server", ["--nnodes", "2", "--node-rank", "1", "--master-addr", "10.0.0.1", "--master-port", "29500",
                     "--distributed-executor-backend", "mp"]),
    ("sglang-server", ["--nnodes", "2", "--node-rank", "1", "--dist-init-addr", "10.0.0.1:29500"]),
])
def test_engine_command_for_a_rank_of_an_engine_spanning_nodes(backend, meet_flags):
    from factory.config import EngineConfig, SamplingConfig
    from factory.engines import BACKENDS

    cfg = EngineConfig(backend=backend, tensor_parallel_size=16, nnodes=2, node_rank=1, dist_init_addr="10.0.0.1:29500",
                       host="10.0.0.2", launcher=["taskset", "-c", "0-7"])
    cmd = BACKENDS[backend](cfg, SamplingConfig()).full_command("/models/r1", 8000)
    assert cmd[:3] == ["taskset", "-c", "0-7"] and cmd[-len(meet_flags):] == meet_flags
    assert cmd[cmd.index("--host") + 1] == "10.0.0.2"
    if backend == "vllm-server":  # ranks above 0 run vLLM headless (no API server)
        assert cmd[cmd.index("-m") + 1] == "factory.engines.vllm_headless"
        assert "uni" not in cmd
        cfg.node_rank = 0
        rank0 = BACKENDS[backend](cfg, SamplingConfig()).full_command("/models/r1", 8000)
        assert rank0[rank0.index("-m") + 1] == "vllm.entrypoints.openai.api_server"
    with pytest.raises(ValueError, match="needs engine.dist_init_addr"):
        EngineConfig(backend=backend, nnodes=2)


@needs_ray
def test_replica_spans_two_ray_nodes_with_ranks_and_meeting_address(tmp_path):
    """A two-node Ray cluster on this machine (one declared GPU per node): a
    replica needing 2 GPUs is placed STRICT_SPREAD, one engine process per
    node; the stand-in engine checks the ranks and the meeting address and
    does the handshake, then rank 0 serves the run."""
    import cluster
    from factory.engines.managed import free_port

    shims = cluster.install_shims(tmp_path / "shims")
    import shutil
    import tempfile

    nodes = Path(tempfile.mkdtemp(prefix="rf-", dir="/tmp"))  # Ray's socket paths must stay under 108 bytes
    env = cluster.slurm_env(shims, nodes, 2, free_port() // 1000 * 1000 % 40000 + 10000)
    port = free_port()
    records = tmp_path / "records"
    try:
        head = cluster.srun(env, "node0", "ray", "start", "--head", f"--port={port}", "--num-gpus=1",
                            "--include-dashboard=false", "--disable-usage-stats")
        assert head.returncode == 0, head.stderr
        worker = cluster.srun(env, "node1", "ray", "start", f"--address=127.0.0.1:{port}", "--num-gpus=1",
                              "--disable-usage-stats")
        assert worker.returncode == 0, worker.stderr
        out = tmp_path / "out"
        job = fake_job(tmp_path, "http://unused", out, rows=None,
                       engine={"backend": "vllm-server", "model": "smollm2-135m", "tensor_parallel_size": 2,
                               "launcher": [str(cluster.BIN / "python"), str(ROOT / "tests" / "doubles" / "standin_engine.py")],
                               "env": {"STANDIN_RECORD_DIR": str(records)}, "startup_timeout_s": 180},
                       scale={"mode": "ray", "chunk_size": 10, "replica_cpus": 0.2, "verifiers": 1})
        proc = run_factory("run", job, "--ray", f"127.0.0.1:{port}", env=env, timeout=600)
    finally:
        cluster.ray_stop(env)
        shutil.rmtree(nodes, ignore_errors=True)
    log = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 0, log[-3000:]
    assert "scale: 1 replica(s) x 2 GPU(s) (2 nodes of 1 each)" in log
    spans = re.findall(r"spanning nodes (\w+), (\w+)", log)
    assert len(spans) == 1 and spans[0][0] != spans[0][1]  # two Ray nodes
    got = sorted((json.loads(f.read_text()) for f in records.glob("rank-*.json")), key=lambda r: r["rank"])
    assert [r["rank"] for r in got] == [0, 1] and all(r["nnodes"] == 2 for r in got)
    assert got[0]["meet"] == got[1]["meet"] and got[0]["heard_ranks"] == [1]
    assert got[0]["serve"].split(":")[0] == got[0]["meet"].split(":")[0]  # rank 0 serves on its node's address
    assert got[0]["module"] == "vllm.entrypoints.openai.api_server" and got[1]["module"] == "factory.engines.vllm_headless"
    assert all(r["cuda_visible_devices"] for r in got)  # each rank holds its node's GPU
    assert len(set(read_uuids(out))) == len(read_uuids(out)) == SAMPLE_PROBLEMS


@needs_ray
def test_engine_metrics_of_ray_replicas_come_through_the_driver(tmp_path):
    """Each replica's managed engine (the stand-in, with a vLLM-like /metrics)
    is read through its actor: the driver's endpoint labels it per replica."""
    import urllib.request

    from factory.engines.managed import free_port

    port = free_port()
    out = tmp_path / "out"
    job = fake_job(tmp_path, "http://unused", out,
                   engine={"backend": "vllm-server", "model": "smollm2-135m", "max_concurrency": 2,
                           "launcher": [sys.executable, str(ROOT / "tests" / "doubles" / "standin_engine.py")],
                           "env": {"STANDIN_RECORD_DIR": str(tmp_path / "records"), "STANDIN_LATENCY_S": "0.2"}},
                   scale={"mode": "ray", "replicas": 2, "chunk_size": 5, "replica_cpus": 0.2, "verifier_cpus": 0.1},
                   metrics={"port": port})
    run = subprocess.Popen([*FACTORY, "run", str(job)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    replicas: set = set()

    def scrape():
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        except OSError:
            return False
        replicas.update(re.findall(r'vllm:num_requests_running\{[^}]*replica="(\d+)"', text))
        return len(replicas) == 2

    try:
        wait_for(scrape, 240, "both replicas' engine metrics through the driver", interval=1.0)
    finally:
        _, err = run.communicate(timeout=600)
    assert run.returncode == 0, err[-3000:]
    assert replicas == {"0", "1"}
