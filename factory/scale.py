"""`scale: ray`: the same job on a Ray cluster, from one box to many nodes.

The driver (where `factory run` runs) prepares the problems, cuts the ones
not stored yet into chunks and hands them to engine replicas, at most
`scale.inflight_chunks` per replica: back-pressure, so the driver never
reads ahead of what the cluster can take. Each replica is a Ray actor that
owns one engine (a managed server or an offline engine) with the GPUs it
needs, reserved through a placement group on one node. It generates,
verifies through Math-Verify actors (single-threaded: Math-Verify needs a
main thread) and writes its chunk as one shard straight into the output
folder, so no row passes through the driver. The driver is the only writer
of the manifest: a chunk counts as done when its shard is listed there.

A replica that dies (or whose engine gives up) is killed, replaced, and its
in-flight chunks are sent again under the same shard names, so a late write
by the dead one can only replace a shard with another copy of the same
problems. Shard numbers are leased in blocks recorded in `ray/seq.json`, so
after the driver itself dies a re-run never reuses a number an orphaned
worker may still write; any rows such a worker stores late are dropped at
the next open (see ShardStore.open).

`Coordinator` is the scheduling loop alone, with replicas behind a small
backend class: `RayBackend` here, a simulated cluster in `factory bench scale`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Iterator

from factory.config import JobConfig, VerifyConfig
from factory.metrics import RunStats
from factory.pipeline import RunError, Runner
from factory.store.shards import shard_name, write_shard, write_text_atomic

NAMESPACE = "reasoning-factory"
SEQ_BLOCK = 64


# --------------------------------------------------------------- the loop


@dataclass
class Chunk:
    seq: int
    problems: list[dict[str, Any]]
    attempts: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def shard(self) -> str:
        return shard_name(self.seq)


@dataclass(eq=False)
class _Slot:
    index: int
    handle: Any = None
    epoch: int = 0  # bumped at each replacement: late news from the old one is ignored
    ready: bool = False
    inflight: int = 0


class ReplicaBackend(ABC):
    """How replicas are made, fed and killed."""

    @abstractmethod
    async def start(self, index: int) -> Any:
        """Start replica `index`; return its handle once it can take chunks."""

    @abstractmethod
    async def process(self, handle: Any, chunk: Chunk) -> dict[str, Any]:
        """Have the replica generate, verify and write `chunk`; its summary."""

    @abstractmethod
    async def kill(self, handle: Any) -> None:
        """Stop a replica at once (it may already be dead)."""

    async def close(self, handles: list[Any]) -> None:
        """Stop the replicas still running at the end of the run."""
        for h in handles:
            await self.kill(h)

    def is_replica_failure(self, exc: BaseException) -> bool:
        """True when `exc` means the replica (not the driver) failed."""
        return not isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, RunError))


class Coordinator:
    """Hands chunks to replicas with back-pressure; replaces dead replicas."""

    def __init__(self, backend: ReplicaBackend, replicas: int, chunks: Iterator[Chunk],
                 on_result: Callable[[Chunk, dict[str, Any]], None], inflight: int = 2,
                 max_restarts: int = 8, max_attempts: int = 3, log: Callable[[str], None] = print,
                 on_first_ready: Callable[[], None] = lambda: None):
        self.backend = backend
        self.slots = [_Slot(i) for i in range(replicas)]
        self.chunks = chunks
        self.on_result = on_result
        self.inflight = inflight
        self.max_restarts = max_restarts
        self.max_attempts = max_attempts
        self.log = log
        self.on_first_ready = on_first_ready
        self.restarts = 0
        self.resent = 0
        self._retry: deque[Chunk] = deque()
        self._tasks: dict[asyncio.Future, tuple[_Slot, int, Chunk | None]] = {}
        self._finished: asyncio.Queue | None = None  # tasks land here when done: O(1) per event
        self._idle: dict[_Slot, None] = {}  # ready slots with room, in arrival order
        self._source_done = False
        self._chunks_out = 0  # chunks handed out and not yet back
        self._any_ready = False
        self._failed_starts = 0

    def _next_chunk(self) -> Chunk | None:
        if self._retry:
            return self._retry.popleft()
        if self._source_done:
            return None
        chunk = next(self.chunks, None)
        if chunk is None:
            self._source_done = True
        return chunk

    def _spawn(self, coro: Awaitable, slot: _Slot, chunk: Chunk | None) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks[task] = (slot, slot.epoch, chunk)
        task.add_done_callback(self._finished.put_nowait)

    def _start(self, slot: _Slot) -> None:
        slot.ready = False
        slot.inflight = 0
        self._idle.pop(slot, None)
        self._spawn(self.backend.start(slot.index), slot, None)

    def _fill(self) -> None:
        while self._idle and (self._retry or not self._source_done):
            slot = next(iter(self._idle))
            chunk = self._next_chunk()
            if chunk is None:
                return
            slot.inflight += 1
            self._chunks_out += 1
            del self._idle[slot]
            if slot.inflight < self.inflight:
                self._idle[slot] = None  # to the back: the next chunk goes to the next replica with room
            self._spawn(self.backend.process(slot.handle, chunk), slot, chunk)

    async def _replace(self, slot: _Slot, exc: BaseException, starting: bool) -> None:
        what = "could not start" if starting else "failed"
        reason = describe(exc)
        if starting and not self._any_ready:
            self._failed_starts += 1
            if self._failed_starts >= len(self.slots):  # each one failed before any came up: not bad luck
                raise RunError(f"replica {slot.index} {what}: {reason}")
        self.restarts += 1
        if self.restarts > self.max_restarts:
            raise RunError(f"replica {slot.index} {what} and {self.max_restarts} replacements are used up "
                           f"(scale.max_replica_restarts): {reason}")
        self.log(f"replica {slot.index} {what} ({reason.splitlines()[0][:300]}); replacing it "
                 f"({self.restarts}/{self.max_restarts})")
        old, slot.handle = slot.handle, None
        slot.epoch += 1
        if old is not None:
            await self.backend.kill(old)
        self._start(slot)

    async def _handle(self, task: asyncio.Task) -> None:
        slot, epoch, chunk = self._tasks.pop(task)
        exc = task.exception()
        if exc is not None and not self.backend.is_replica_failure(exc):
            raise exc
        if chunk is None:  # a start finished
            if exc is None:
                if not self._any_ready:
                    self.on_first_ready()
                slot.handle, slot.ready, self._any_ready = task.result(), True, True
                self._idle[slot] = None
            elif epoch == slot.epoch:
                await self._replace(slot, exc, starting=True)
            return
        self._chunks_out -= 1
        if epoch == slot.epoch:
            slot.inflight -= 1
            self._idle[slot] = None
        if exc is None:
            self.on_result(chunk, task.result())
            return
        chunk.attempts += 1
        chunk.errors.append(describe(exc)[:500])
        if chunk.attempts >= self.max_attempts:
            first = chunk.problems[0].get("uuid") if chunk.problems else "?"
            raise RunError(f"chunk {chunk.shard} (first problem {first}) failed {chunk.attempts} times "
                           f"(scale.max_chunk_attempts); last error: {chunk.errors[-1]}")
        self.resent += 1
        self._retry.appendleft(chunk)
        if epoch == slot.epoch:
            await self._replace(slot, exc, starting=False)

    async def run(self) -> None:
        self._finished = asyncio.Queue()
        for slot in self.slots:
            self._start(slot)
        try:
            while True:
                self._fill()
                if self._source_done and not self._retry and not self._chunks_out:
                    break
                if not self._tasks:
                    raise RunError("no replica is running")
                await self._handle(await self._finished.get())
                while not self._finished.empty():  # everything else already done, in one pass
                    await self._handle(self._finished.get_nowait())
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.backend.close([s.handle for s in self.slots if s.handle is not None])


def describe(exc: BaseException) -> str:
    """`Type: message` of the error a replica raised, without Ray's wrapping."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and cause is not exc:
        exc = cause
    return f"{type(exc).__name__}: {exc}".strip()[:2000]


def chunk_size_for(pending: int, replicas: int, chunk_size: int, inflight: int) -> int:
    """`chunk_size`, or smaller when the work left would not reach every
    replica's queue (48 problems on 2 replicas: chunks of 12, not one of 256)."""
    return max(1, min(chunk_size, -(-pending // (replicas * inflight))))


def make_chunks(problems: Iterable[dict[str, Any]], size: int, next_seq: Callable[[], int]) -> Iterator[Chunk]:
    """Chunks of `size` problems, read lazily: the source is never held whole."""
    it = iter(problems)
    while batch := list(itertools.islice(it, size)):
        yield Chunk(next_seq(), batch)


class SeqLease:
    """Shard numbers for chunks, leased in blocks recorded in `ray/seq.json`,
    so that no later driver hands out a number an orphaned worker may write."""

    def __init__(self, path: Path, start: int):
        self.path = path
        try:
            leased = int(json.loads(path.read_text())["leased_until"])
        except (OSError, ValueError, KeyError, TypeError):
            leased = 0
        self.next = max(start, leased)
        self.leased_until = self.next

    def __call__(self) -> int:
        if self.next >= self.leased_until:
            self.leased_until = self.next + SEQ_BLOCK
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.path, json.dumps({"leased_until": self.leased_until}))
        seq, self.next = self.next, self.next + 1
        return seq


# --------------------------------------------------------------- Ray actors


class VerifierActor:
    """Math-Verify in a killable worker process, behind a single-threaded actor."""

    def __init__(self, verify_cfg: dict[str, Any]):
        from factory.verify.rules import RuleVerifier

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
        from factory.verify.rules import check_generation

        return await self.aschedule(check_generation, gold, generation, finish_reason, problem)

    def close(self) -> None:
        pass


class EngineReplica:
    """One engine with the generate -> verify -> row loop around it."""

    def __init__(self, job_json: str, index: int, verifiers: list, per_node: int = 1):
        self.job = JobConfig.model_validate_json(job_json)
        self.index = index
        self.per_node = per_node
        self.verifiers = verifiers
        self.out = self.job.output.dir
        self._stack = None
        self.worker = None
        self.node: str | None = None
        self.sem: asyncio.Semaphore | None = None

    def _log(self, msg: str) -> None:
        print(f"[replica {self.index}] {msg}", flush=True)

    async def start(self) -> dict[str, Any]:
        import socket

        from factory.engines import build_engine
        from factory.pipeline import ProblemWorker
        from factory.verify.cascade import Cascade

        job = self.job
        self._pin_cpu_engine()
        run_dir = self.out / "ray" / f"replica-{self.index}"
        run_dir.mkdir(parents=True, exist_ok=True)
        self._stack = contextlib.AsyncExitStack()
        engine = await self._stack.enter_async_context(
            build_engine(job.engine, job.sampling, run_dir=run_dir, log=self._log))
        judge = job.verify.judge
        judge_engine = None
        if judge.enabled:
            judge_engine = engine
            if judge.engine is not None:  # an endpoint (checked at load time)
                judge_engine = await self._stack.enter_async_context(build_engine(judge.engine, job.sampling))
        cascade = Cascade(job.verify, judge_engine, rules=RayRules(self.verifiers, job.verify.preset))
        self.worker = ProblemWorker(job, engine, cascade)
        self.sem = asyncio.Semaphore(job.engine.max_concurrency)
        import ray

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
        self._log(f"vLLM CPU threads bound to cores {eng.env['VLLM_CPU_OMP_THREADS_BIND']}")

    async def process_chunk(self, shard: str, problems: list[dict[str, Any]]) -> dict[str, Any]:
        stats = RunStats()

        async def one(problem):
            async with self.sem:
                return await self.worker.process(problem, stats)

        rows = [r for r in await asyncio.gather(*(one(p) for p in problems)) if r is not None]
        if rows:
            data = self.out / "data"
            data.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(write_shard, data, shard, rows)
        return {"file": f"data/{shard}" if rows else None, "uuids": [r["uuid"] for r in rows],
                "stats": stats.counts(), "replica": self.index, "node": self.node}

    async def stop(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None


# --------------------------------------------------------------- on Ray


def connect(address: str | None, log: Callable[[str], None] = print) -> bool:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a local
    one; True when this call started Ray (and so must shut it down)."""
    try:
        import ray
    except ImportError:
        raise RunError("scale.mode 'ray' needs Ray: pip install 'reasoning-factory[ray]'") from None

    if ray.is_initialized():
        return False
    import signal

    # ray.init installs its own SIGTERM handler (a stack dump, then exit):
    # keep ours, so SIGTERM stops the run as cleanly as Ctrl-C does
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _init(address, log)
    finally:
        for sig, handler in handlers.items():
            if handler is not None:
                with contextlib.suppress(ValueError):  # not the main thread: nothing was ours
                    signal.signal(sig, handler)
    return True


def _init(address: str | None, log: Callable[[str], None]) -> None:
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if address in (None, "", "local"):
        # a private single-node cluster: token auth has nothing to protect
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(namespace=NAMESPACE, include_dashboard=False, log_to_driver=True, configure_logging=False)
        log(f"started a local Ray cluster ({int(ray.cluster_resources().get('CPU', 0))} CPUs)")
    else:
        _probe(address)
        try:
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=True, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RunError(f"scale.address: cannot join Ray at {address}: {exc}") from None
        res = ray.cluster_resources()
        log(f"joined Ray at {address}: {len(ray.nodes())} node(s), {int(res.get('CPU', 0))} CPUs, "
            f"{int(res.get('GPU', 0))} GPUs")


def _probe(address: str) -> None:
    """Fail fast on a GCS address nobody listens on (ray.init would retry for minutes)."""
    if "://" in address or address == "auto":
        return
    import socket

    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise RunError(f"scale.address: cannot join Ray at {address}: {exc}") from None


@dataclass
class Plan:
    replicas: int
    gpus_per_replica: int
    replica_cpus: float
    verifiers: int
    verifier_cpus: float
    nodes: int = 1

    @property
    def replicas_per_node(self) -> int:
        """CPU replicas are spread over nodes; those sharing one split its cores."""
        return -(-self.replicas // max(1, self.nodes))


def plan(job: JobConfig, resources: dict[str, float], nodes: int = 1) -> Plan:
    """Replica count and resources from the job and the cluster; a clear
    error where they cannot fit (Ray would otherwise wait forever)."""
    sc, eng = job.scale, job.engine
    cluster_gpus, cluster_cpus = int(resources.get("GPU", 0)), float(resources.get("CPU", 0))
    gpus = sc.gpus_per_replica
    if gpus is None:
        endpoint = eng.backend == "openai"
        gpus = 0 if endpoint or cluster_gpus == 0 else eng.tensor_parallel_size * eng.data_parallel_size
    if eng.backend.startswith("sglang") and gpus == 0:
        raise RunError("scale: SGLang replicas need GPUs, and this Ray cluster has none "
                       "(set scale.gpus_per_replica on a GPU cluster)")
    replicas = sc.replicas
    if replicas is None:
        replicas = cluster_gpus // gpus if gpus else max(1, nodes)  # CPU: one engine per node
        if replicas == 0:
            raise RunError(f"scale: a replica needs {gpus} GPU(s) (engine.tensor_parallel_size x "
                           f"data_parallel_size) and the cluster has {cluster_gpus}")
    elif gpus * replicas > cluster_gpus:
        raise RunError(f"scale.replicas: {replicas} replicas x {gpus} GPU(s) need {gpus * replicas} GPUs; "
                       f"the cluster has {cluster_gpus}")
    verifiers = sc.verifiers or replicas
    need = replicas * sc.replica_cpus + verifiers * sc.verifier_cpus
    if need > cluster_cpus + 1e-9:
        raise RunError(f"scale: {replicas} replicas x {sc.replica_cpus} CPU + {verifiers} verifiers x "
                       f"{sc.verifier_cpus} CPU need {need:g} CPUs; the cluster has {cluster_cpus:g} "
                       f"(lower scale.replica_cpus / scale.verifier_cpus)")
    return Plan(replicas, gpus, sc.replica_cpus, verifiers, sc.verifier_cpus, max(1, nodes))


@dataclass
class _RayHandle:
    actor: Any
    pg: Any = None


class RayBackend(ReplicaBackend):
    def __init__(self, job: JobConfig, p: Plan, verifiers: list, actor_cls: type | None = None,
                 log: Callable[[str], None] = print):
        self.actor_cls = actor_cls or EngineReplica
        self.log = log
        self.job_json = job.model_dump_json()
        self.plan = p
        self.verifiers = verifiers
        self.timeout_s = job.scale.start_timeout_s
        self.max_calls = job.scale.inflight_chunks + 2

    async def start(self, index: int) -> _RayHandle:
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        p = self.plan
        opts: dict[str, Any] = {"num_cpus": p.replica_cpus, "num_gpus": p.gpus_per_replica,
                                "max_concurrency": self.max_calls}
        handle = _RayHandle(None)
        if not p.gpus_per_replica:
            opts["scheduling_strategy"] = "SPREAD"  # CPU engines: one per node before doubling up
        if p.gpus_per_replica:
            # one bundle: all of a replica's GPUs on one node, for tensor parallelism
            handle.pg = placement_group([{"GPU": p.gpus_per_replica, "CPU": p.replica_cpus}], strategy="STRICT_PACK")
            try:
                await asyncio.wait_for(handle.pg.ready(), self.timeout_s)
            except asyncio.TimeoutError:
                ray.util.remove_placement_group(handle.pg)
                raise RunError(f"replica {index}: no node could give {p.gpus_per_replica} GPU(s) within "
                               f"{self.timeout_s:g} s (scale.start_timeout_s)") from None
            opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(handle.pg, placement_group_bundle_index=0)
        handle.actor = ray.remote(self.actor_cls).options(**opts).remote(self.job_json, index, self.verifiers, self.plan.replicas_per_node)
        try:
            info = await asyncio.wait_for(handle.actor.start.remote(), self.timeout_s)
        except BaseException:
            await self.kill(handle)
            raise
        node = f", Ray node {info['node_id'][:12]}" if info.get("node_id") else ""
        self.log(f"replica {index} ready on {info['node']}{node} (pid {info['pid']}"
                 f"{', GPUs ' + info['gpus'] if info['gpus'] else ''})")
        return handle

    async def process(self, handle: _RayHandle, chunk: Chunk) -> dict[str, Any]:
        return await handle.actor.process_chunk.remote(chunk.shard, chunk.problems)

    async def kill(self, handle: _RayHandle) -> None:
        import ray

        if handle.actor is not None:
            ray.kill(handle.actor, no_restart=True)
        if handle.pg is not None:
            ray.util.remove_placement_group(handle.pg)

    async def close(self, handles: list[_RayHandle]) -> None:
        # a clean stop lets managed servers shut down their process groups
        stops = [h.actor.stop.remote() for h in handles if h.actor is not None]
        if stops:
            await asyncio.wait([asyncio.ensure_future(_await(s)) for s in stops], timeout=60)
        await super().close(handles)


async def _await(ref):
    return await ref


class RayRunner(Runner):
    """`factory run` with `scale.mode: ray`: same preparation, store and
    output as the local runner; generation fans out to replicas."""

    _coord: Coordinator | None = None

    async def _generate(self, done: set[str]) -> None:
        import ray

        sc = self.job.scale
        owned = connect(sc.address, self.log)  # main thread: Ray installs signal handlers
        coord = None
        try:
            p = plan(self.job, ray.cluster_resources(), sum(n["Alive"] for n in ray.nodes()))
            size = chunk_size_for(self.total or 0, p.replicas, sc.chunk_size, sc.inflight_chunks)
            self.log(f"scale: {p.replicas} replica(s) x {p.gpus_per_replica} GPU(s), {p.verifiers} verifier(s), "
                     f"chunks of {size} problems, {sc.inflight_chunks} in flight per replica")
            verifier_cls = ray.remote(VerifierActor).options(num_cpus=p.verifier_cpus, max_restarts=-1,
                                                             max_task_retries=3)
            verifiers = [verifier_cls.remote(self.job.verify.model_dump(mode="json")) for _ in range(p.verifiers)]
            lease = SeqLease(self.out / "ray" / "seq.json", self.store.next_seq)
            chunks = make_chunks(self.pending_problems(done), size, lease)
            self._fresh_stats()
            coord = self._coord = Coordinator(RayBackend(self.job, p, verifiers, log=self.log), p.replicas, chunks,
                                              self._on_chunk, sc.inflight_chunks, sc.max_replica_restarts,
                                              sc.max_chunk_attempts, self.log, on_first_ready=self.stats.start_clock)
            await coord.run()
        finally:
            if coord is not None:
                self.stats.replica_restarts = coord.restarts
                self.stats.chunks_resent = coord.resent
            self._write_metrics()
            if owned:
                ray.shutdown()
        self._recover_store()  # a worker of an earlier driver may have stored rows late: drop repeats

    def in_flight(self) -> int:
        """Chunks handed to replicas and not back."""
        return self._coord._chunks_out if self._coord is not None else 0

    def _on_chunk(self, chunk: Chunk, summary: dict[str, Any]) -> None:
        if summary["file"]:
            self.store.commit(summary["file"], summary["uuids"], replica=summary.get("replica"),
                              node=summary.get("node"))
        self.stats.merge(summary["stats"])
        self.stats.tick()
        self.on_progress(self.stats, self.total)
