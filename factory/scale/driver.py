"""`scale: ray`: the driver that fans a run's problems out to replicas."""

from __future__ import annotations

import logging
from typing import Any, Iterator

from factory.driver import Driver, Run, stored_files
from factory.sampling import BudgetActor, run_budget
from factory.scale.cluster import RayBackend, connect, plan
from factory.scale.replica import VerifierActor
from factory.scale.scheduler import Chunk, Coordinator, SeqLease, chunk_size_for, make_chunks
from factory.store.shards import chunk_files

log = logging.getLogger(__name__)


class RayDriver(Driver):
    """Same preparation, store and output as a local run; generation fans out
    to replicas, and the driver's only write is the manifest line of each
    shard a replica wrote."""

    def __init__(self) -> None:
        self._coord: Coordinator | None = None

    def in_flight(self) -> int:
        """Chunks handed to replicas and not back."""
        return self._coord.chunks_out if self._coord is not None else 0

    def engine_metrics(self) -> list[tuple[str, str]]:
        """Each live replica's engine page, through its actor (the engines
        listen on their own nodes); a replica that does not answer in 3 s is
        left out of this scrape."""
        import ray

        coord = self._coord
        if coord is None:
            return []
        live = [(s.index, s.handle.actor) for s in coord.slots if s.ready and s.handle is not None]
        refs = [actor.engine_metrics.remote() for _, actor in live]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=3.0) if refs else ([], [])
        pages = []
        for (index, _), ref in zip(live, refs):
            if ref in ready:
                try:
                    text = ray.get(ref)
                except Exception:  # noqa: BLE001 - a replica dying mid-scrape: left out
                    text = None
                if text:
                    pages.append((str(index), text))
        return pages

    async def generate(self, run: Run, problems: Iterator[dict[str, Any]]) -> None:
        import ray

        job, sc = run.job, run.job.scale
        owned = connect(sc.address)  # main thread: Ray installs signal handlers
        coord = None
        try:
            alive = [n for n in ray.nodes() if n["Alive"]]
            node_gpus = max((int(n["Resources"].get("GPU", 0)) for n in alive), default=0) or None
            p = plan(job, ray.cluster_resources(), len(alive), node_gpus)
            size = chunk_size_for(run.total or 0, p.replicas, sc.chunk_size, sc.inflight_chunks)
            spans = f" ({p.nodes_per_replica} nodes of {p.gpus_per_bundle} each)" if p.nodes_per_replica > 1 else ""
            log.info(f"scale: {p.replicas} replica(s) x {p.gpus_per_replica} GPU(s){spans}, {p.verifiers} verifier(s), "
                    f"chunks of {size} problems, {sc.inflight_chunks} in flight per replica")
            verifier_cls = ray.remote(VerifierActor).options(num_cpus=p.verifier_cpus, max_restarts=-1,
                                                             max_task_retries=3)
            verifiers = [verifier_cls.remote(job.verify.model_dump(mode="json")) for _ in range(p.verifiers)]
            budget = run_budget(job.sampling, stored_files(run))
            if budget is not None:  # one allowance for every replica
                budget = ray.remote(BudgetActor).options(num_cpus=0).remote(budget.samples_left, budget.tokens_left)
            lease = SeqLease(run.out / "ray" / "seq.json", run.store.next_seq)
            chunks = make_chunks(problems, size, lease)
            run.start_stats()

            passes: dict[str, int] = {}

            def on_chunk(chunk: Chunk, summary: dict[str, Any]) -> None:
                if summary["file"]:
                    run.store.commit(summary["file"], summary["uuids"], replica=summary.get("replica"),
                                     node=summary.get("node"))
                run.stats.merge(summary["stats"])
                stored = set(summary["uuids"])
                again = [p for p in chunk.problems if p["uuid"] not in stored
                         and passes.get(p["uuid"], 0) < job.engine.retry_failed]
                if again:  # requests that failed for now: once more after the rest, as a local run does
                    for p in again:
                        passes[p["uuid"]] = passes.get(p["uuid"], 0) + 1
                    run.stats.problems_failed -= len(again)
                    log.info(f"{len(again)} problem(s) of chunk {chunk.shard} failed for now; sending them again "
                             f"after the others (engine.retry_failed)")
                    coord.requeue(Chunk(lease(), again, delay_s=job.engine.retry_pause_s))
                run.progress()

            def on_failure(chunk: Chunk) -> Chunk | None:
                return keep_finished(run, chunk, lease)

            coord = self._coord = Coordinator(RayBackend(job, p, verifiers, budget=budget), p.replicas, chunks,
                                              on_chunk, sc.inflight_chunks, sc.max_replica_restarts,
                                              sc.max_chunk_attempts, on_first_ready=run.stats.start_clock,
                                              on_failure=on_failure)
            await coord.run()
        finally:
            if coord is not None:
                run.stats.replica_restarts = coord.restarts
                run.stats.chunks_resent = coord.resent
            if owned:
                ray.shutdown()
        run.recover_store()  # a worker of an earlier driver may have stored rows late: drop repeats


def keep_finished(run: Run, chunk: Chunk, lease: SeqLease) -> Chunk | None:
    """A replica failed with `chunk` in hand: commit the part shards it had
    written, count their rows, and return a chunk of the problems still
    to do (None if none). The rest goes out under a new shard number, so
    it cannot collide with a part the dead replica was still writing."""
    kept = 0
    for path in chunk_files(run.out / "data", chunk.shard):
        table = run.store.adopt(path)
        if table is not None:
            for row in table.to_pylist():
                run.stats.record(row)
            kept += table.num_rows
    left = [p for p in chunk.problems if p["uuid"] not in run.store.done]
    if kept:
        log.info(f"kept {kept} finished problem(s) of chunk {chunk.shard} from the failed replica; "
                 f"{len(left)} sent again")
        run.progress()
    if not left:
        return None
    return Chunk(lease(), left, chunk.attempts, chunk.errors)
