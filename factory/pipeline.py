"""`factory run`: prepare -> render -> generate -> extract -> verify -> store.

The runner prepares the problems, opens the shard store (whose manifest is
the checkpoint: a re-run skips every uuid already in a shard) and hands the
pending problems to a driver, which generates, verifies and stores them in
this process or on a Ray cluster (`factory.driver`, `factory.scale`). At the
end it writes metrics.json, the Hub configs and the card.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow.parquet as pq

from factory.config import JobConfig
from factory.driver import Driver, LocalDriver, RunError
from factory.engines.openai_http import preflight
from factory.metrics import RunStats, StatsCollector, serve_metrics
from factory.sources.prepare import check_source, ensure_prepared, iter_problems
from factory.store.finalize import finalize
from factory.store.lock import LockedError, RunLock
from factory.store.shards import ShardStore, write_text_atomic
from factory.verify.cascade import check_verify

log = logging.getLogger(__name__)

__all__ = ["RunError", "RunResult", "Runner", "make_driver", "run_job"]


@dataclass
class RunResult:
    stats: RunStats
    out_dir: Path
    stored_problems: int
    report: dict


def make_driver(job: JobConfig) -> Driver:
    """The one place that decides where generation runs."""
    if job.scale.mode == "ray":
        from factory.scale import RayDriver  # Ray is an extra: imported only when asked for

        return RayDriver()
    return LocalDriver()


class Runner:
    def __init__(self, job: JobConfig, driver: Driver | None = None,
                 on_progress: Callable[[RunStats, int | None], None] | None = None):
        check_source(job.source)  # what only the stages know, before anything is written
        check_verify(job.verify)
        self.job = job
        self.driver = driver or make_driver(job)
        self.out = job.output.dir
        self.on_progress = on_progress or (lambda stats, total: None)
        self.stats = RunStats()
        self.report: dict = {}
        self.prepared = self.out / "prepared"
        self.store = ShardStore(self.out, job.output.shard_rows, job.output.flush_interval_s)
        self.total: int | None = None
        self.skipped = 0

    def _count_pending(self, done: set[str]) -> int:
        uuids = pq.read_table(self.prepared / "problems.parquet", columns=["uuid"]).column("uuid").to_pylist()
        return sum(1 for u in uuids if u not in done)

    def pending_problems(self, done: set[str]) -> Iterator[dict[str, Any]]:
        """Prepared problems not stored yet, in source order."""
        for item in iter_problems(self.prepared):
            if item["uuid"] not in done:
                yield item

    def progress(self) -> None:
        self.stats.tick()
        self.on_progress(self.stats, self.total)

    def start_stats(self) -> None:
        """Throughput counts from the engines being ready."""
        self.stats = RunStats()
        self._base_counts()

    def _base_counts(self) -> None:
        """What preparation and the store say, also on a run with nothing left to generate."""
        self.stats.problems_read = self.report["read"]
        self.stats.problems_rejected = self.report["rejected"]
        self.stats.problems_skipped_done = self.skipped

    def recover_store(self) -> set[str]:
        """Open the store (adopting and de-duplicating after a crash); the done uuids."""
        done = self.store.open()
        if self.store.adopted:
            log.info(f"recovered {self.store.adopted} shard(s) written just before an interruption")
        if self.store.dropped:
            log.info(f"dropped {self.store.dropped} duplicate row(s) left by workers of an earlier run")
        return done

    async def preflight(self) -> None:
        """Every endpoint the run will call, asked before anything is written."""
        judge = self.job.verify.judge
        for cfg, setting in ((self.job.engine, "engine"), (judge.engine if judge.enabled else None, "verify.judge.engine")):
            if cfg is not None and cfg.backend == "openai" and cfg.preflight:
                if note := await preflight(cfg, setting):
                    log.info(note)

    async def run_async(self) -> RunResult:
        await self.preflight()
        lock = RunLock(self.out)
        try:
            lock.acquire()
        except LockedError as exc:
            raise RunError(str(exc)) from None
        try:
            return await self._run_locked()
        finally:
            lock.release()

    async def _run_locked(self) -> RunResult:
        server = self._serve_metrics()
        try:
            done = await self._open()
            if self.total == 0:
                log.info("nothing to generate: every problem is already stored")
                return self._finish()
            try:
                await self.driver.generate(self, self.pending_problems(done))
            finally:
                self.store.flush()  # finished rows are kept even on Ctrl-C or error
                self._write_metrics()
            return self._finish()
        finally:
            if server is not None:
                server.shutdown()
                server.server_close()

    def _serve_metrics(self):
        cfg = self.job.metrics
        if cfg.port is None:
            return None

        def pending() -> int:
            st = self.stats
            return max(0, (self.total or 0) - st.problems_done - st.problems_failed)

        collector = StatsCollector(self.job.name, lambda: self.stats, {
            "factory_problems_pending": ("Problems left to generate in this run", pending),
            "factory_in_flight": ("Work handed to engines and not back: problems (local) or chunks (Ray)",
                                  self.driver.in_flight),
            "factory_tokens_per_second": ("Completion tokens per second over the last minute",
                                          lambda: self.stats.window_rates()[0]),
        }, engines=self.driver.engine_metrics)
        try:
            server = serve_metrics(collector, cfg.port, cfg.host)
        except OSError as exc:
            raise RunError(f"metrics.port: cannot serve on {cfg.host}:{cfg.port}: {exc}") from None
        log.info(f"metrics: http://{cfg.host}:{server.server_port}/metrics")
        return server

    async def _open(self) -> set[str]:
        """Recover the store, prepare the problems, count what is left."""
        self.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.out / "job.json", self.job.model_dump_json(indent=2))
        done = self.recover_store()
        if done:
            log.info(f"resuming: {len(done)} problems already in {self.out / 'data'}")
        self.report, reused = await asyncio.to_thread(ensure_prepared, self.job.source, self.prepared)
        log.info(f"prepared{' (reused)' if reused else ''}: {self.report['read']} rows read, "
                 f"{self.report['accepted']} problems, {self.report['rejected']} rejected "
                 f"{_reasons(self.report)}-> {self.prepared}")
        self.total = await asyncio.to_thread(self._count_pending, done)
        self.skipped = self.report["accepted"] - self.total  # prepared problems already stored
        self._base_counts()
        self.on_progress(self.stats, self.total)
        return done

    def _write_metrics(self) -> None:
        # no tick here: elapsed_s stops at the last finished problem, so the
        # engine's shutdown (seconds for a server) does not dilute tokens/s
        data = {"stats": self.stats.to_json(), "prepare": self.report, "job": self.job.model_dump(mode="json")}
        write_text_atomic(self.out / "metrics.json", json.dumps(data, indent=2))

    def _finish(self) -> RunResult:
        finalize(self.out)
        if self.stats.problems_failed:
            log.info(f"{self.stats.problems_failed} problems failed (engine unreachable); re-run to generate them")
        return RunResult(self.stats, self.out, len(self.store.done), self.report)


def _reasons(report: dict) -> str:
    by = report.get("rejected_by_reason") or {}
    return "(" + ", ".join(f"{k}={v}" for k, v in by.items()) + ") " if by else ""


def _raise_interrupt(signum, frame):  # SIGTERM behaves like Ctrl-C: clean stop
    raise KeyboardInterrupt


def _event_loop_runner() -> asyncio.Runner:
    """uvloop where installed (it ships with vLLM): a faster loop for the client."""
    try:
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        return asyncio.Runner()


def run_job(job: JobConfig, on_progress=None) -> RunResult:
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with _event_loop_runner() as runner:
            return runner.run(Runner(job, on_progress=on_progress).run_async())
    finally:
        signal.signal(signal.SIGTERM, previous)
