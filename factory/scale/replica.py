"""The Ray actors: an engine replica (generate -> verify -> shard) and the
Math-Verify workers it verifies through."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import time
from typing import Any

from factory.config import EngineConfig, JobConfig, VerifyConfig
from factory.engines.managed import free_port, kill_group
from factory.logs import log_to_stdout
from factory.metrics import RunStats, fetch_text
from factory.sampling import RayBudget
from factory.store.shards import part_name, write_shard
from factory.verify.pool import RuleVerifier, check_generation
from factory.worker import open_worker

log = logging.getLogger(__name__)


class VerifierActor:
    """Math-Verify in a killable worker process, behind a single-threaded actor."""

    def __init__(self, verify_cfg: dict[str, Any]):
        cfg = VerifyConfig.model_validate(verify_cfg)
        self.rules = RuleVerifier(1, cfg.timeout_s, cfg.memory_mb, cfg.preset, cfg.rules)

    def run(self, fn, *args):
        return self.rules.wait(self.rules.submit(fn, *args))


class RayRules:
    """RuleVerifier's async face for the cascade, served by VerifierActors."""

    def __init__(self, actors: list, preset: str):
        self.actors = actors
        self.preset = preset
        self._turn = itertools.count()

    async def aschedule(self, fn, *args):
        actor = self.actors[next(self._turn) % len(self.actors)]
        return await actor.run.remote(fn, *args)

    async def agrade(self, gold: str, generation: str, finish_reason: str | None, problem: str | None = None):
        return await self.aschedule(check_generation, gold, generation, finish_reason, problem)

    def close(self) -> None:
        pass


class EngineReplica:
    """One engine with the generate -> verify -> row loop around it."""

    def __init__(self, job_json: str, index: int, verifiers: list, per_node: int = 1, budget=None):
        self.job = JobConfig.model_validate_json(job_json)
        self.index = index
        log_to_stdout(f"[replica {index}] ")  # Ray forwards a worker's stdout to the driver
        self.per_node = per_node
        self.verifiers = verifiers
        self.budget = budget
        self.out = self.job.output.dir
        self._stack = None
        self.worker = None
        self.node: str | None = None
        self.sem: asyncio.Semaphore | None = None

    def head_address(self) -> tuple[str, str]:
        """Where the ranks of an engine spanning nodes meet (this node, a free
        port), and this node's Ray id."""
        import ray

        ip = ray.util.get_node_ip_address()
        return f"{ip}:{free_port(ip)}", ray.get_runtime_context().get_node_id()

    async def start(self, spans: dict[str, Any] | None = None) -> dict[str, Any]:
        """`spans`: this replica's engine spans nodes; this actor runs rank 0
        (serving, on this node's address) after the other ranks were started."""
        import ray

        if spans:
            # rank 0 alone cannot rejoin the others: a failure replaces the whole replica (max_restarts 0)
            self.job.engine = node_engine(self.job.engine, spans["nnodes"], 0, spans["dist_init_addr"],
                                          spans["dist_init_addr"].rpartition(":")[0], max_restarts=0)
        self._pin_cpu_engine()
        run_dir = self.out / "ray" / f"replica-{self.index}"
        run_dir.mkdir(parents=True, exist_ok=True)
        self._stack = contextlib.AsyncExitStack()
        rules = RayRules(self.verifiers, self.job.verify.preset)
        self.worker = await open_worker(self.job, self._stack, run_dir, rules=rules)
        self.worker.budget = RayBudget(self.budget) if self.budget is not None else None
        self.sem = asyncio.Semaphore(self.job.engine.max_concurrency)
        self.node = ray.get_runtime_context().get_node_id()
        return {"node": socket.gethostname(), "node_id": self.node, "pid": os.getpid(),
                "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", "")}

    def _pin_cpu_engine(self) -> None:
        """vLLM's CPU build binds its threads to every core it sees: two
        replicas on one box would spin on the same cores. Give each its share."""
        eng = self.job.engine
        on_gpu = bool(os.environ.get("CUDA_VISIBLE_DEVICES"))
        if (not eng.backend.startswith("vllm") or on_gpu or eng.tensor_parallel_size > 1
                or "VLLM_CPU_OMP_THREADS_BIND" in eng.env):
            return
        cores = sorted(os.sched_getaffinity(0))
        parts = min(self.per_node, len(cores))
        if parts <= 1:
            return
        mine = cores[self.index % parts::parts]
        eng.env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, mine))
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = eng.env["VLLM_CPU_OMP_THREADS_BIND"]  # vllm-offline
        log.info(f"vLLM CPU threads bound to cores {eng.env['VLLM_CPU_OMP_THREADS_BIND']}")

    async def engine_metrics(self) -> str | None:
        """This replica's engine's /metrics page (its server listens on this node only)."""
        url = self.worker.engine.metrics_url if self.worker is not None else None
        return await asyncio.to_thread(fetch_text, url) if url else None

    async def process_chunk(self, shard: str, problems: list[dict[str, Any]]) -> dict[str, Any]:
        """Generate, verify and write one chunk as `data/<shard>`.

        Finished problems go to disk as part shards every
        `scale.flush_problems` problems or `scale.flush_interval_s`, so if
        this replica dies the driver adopts them and re-sends only the rest.
        At the end the parts are folded into the one shard of the chunk.
        """
        sc, data = self.job.scale, self.out / "data"
        data.mkdir(parents=True, exist_ok=True)
        stats = RunStats()

        async def one(problem):
            async with self.sem:
                return await self.worker.process(problem, stats)

        rows: list[dict[str, Any]] = []
        parts: list[str] = []
        unflushed, last = 0, time.monotonic()
        tasks = [asyncio.ensure_future(one(p)) for p in problems]
        try:
            for done in asyncio.as_completed(tasks):
                row = await done
                if row is None:
                    continue
                rows.append(row)
                unflushed += 1
                if unflushed >= sc.flush_problems or time.monotonic() - last >= sc.flush_interval_s:
                    parts.append(part_name(shard, len(parts)))
                    await asyncio.to_thread(write_shard, data, parts[-1], rows[-unflushed:])
                    unflushed, last = 0, time.monotonic()
        finally:  # the engine failing: stop the rest, the parts stay for the driver
            for t in tasks:
                t.cancel()
        if rows:
            order = {p["uuid"]: i for i, p in enumerate(problems)}
            rows.sort(key=lambda r: order[r["uuid"]])  # the chunk's order, however they finished
            await asyncio.to_thread(write_shard, data, shard, rows)
        for part in parts:  # the shard holds them all now; a part left by a crash here is dropped as a repeat
            (data / part).unlink(missing_ok=True)
        return {"file": f"data/{shard}" if rows else None, "uuids": [r["uuid"] for r in rows],
                "stats": stats.counts(), "replica": self.index, "node": self.node}

    async def stop(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None


def node_engine(eng: EngineConfig, nnodes: int, rank: int, addr: str, host: str, **more) -> EngineConfig:
    """The engine settings of one rank of an engine spanning nodes, checked as a whole."""
    return EngineConfig.model_validate({**eng.model_dump(), "nnodes": nnodes, "node_rank": rank,
                                        "dist_init_addr": addr, "host": host, **more})


class EngineNode:
    """Rank k > 0 of a replica whose engine spans nodes: the engine's process
    on this node (its share of the model, no API), until the replica is
    killed. Its log is `ray/replica-I/node-K.log` in the output folder."""

    def __init__(self, job_json: str, index: int, rank: int):
        self.job = JobConfig.model_validate_json(job_json)
        self.index, self.rank = index, rank
        self.proc = None

    def start(self, nnodes: int, dist_init_addr: str) -> str:
        import ray

        from factory.engines import BACKENDS

        eng = node_engine(self.job.engine, nnodes, self.rank, dist_init_addr, ray.util.get_node_ip_address())
        engine = BACKENDS[eng.backend](eng, self.job.sampling)
        log = self.job.output.dir / "ray" / f"replica-{self.index}" / f"node-{self.rank}.log"
        self.proc = engine.launch_node(log)
        return ray.get_runtime_context().get_node_id()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc.pid, 10.0, self.proc)
            self.proc = None
