"""Where a run's problems are generated: in this process, or on a Ray cluster.

The run loop (`pipeline.Runner`) prepares the problems, opens the store and
writes what a run leaves behind; it knows nothing of where generation
happens. A driver takes the pending problems and turns them into stored rows
through the small `Run` face below. `pipeline.make_driver` is the one place
that picks the driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterator, Protocol

from factory.metrics import fetch_text
from factory.sampling import run_budget
from factory.worker import ProblemWorker, open_worker

if TYPE_CHECKING:
    from factory.config import JobConfig
    from factory.metrics import RunStats
    from factory.store.shards import ShardStore


log = logging.getLogger(__name__)


class RunError(RuntimeError):
    """A run stopped for a reason the user can act on."""


class Run(Protocol):
    """What a driver may use of the run it serves."""

    job: JobConfig
    out: Path
    store: ShardStore
    stats: RunStats
    total: int | None

    def start_stats(self) -> None:
        """Engines are up: throughput counts from now."""

    def progress(self) -> None:
        """A problem or chunk finished: tick the clock and tell the progress bar."""

    def recover_store(self) -> set[str]:
        """Re-open the store (adopt late shards, drop repeats); the done uuids."""


class Driver(ABC):
    @abstractmethod
    async def generate(self, run: Run, problems: Iterator[dict[str, Any]]) -> None:
        """Generate, verify and store every problem of `problems` (or stop on
        the first error that is not one problem's own)."""

    def in_flight(self) -> int:
        """Work handed out and not back: problems (local) or chunks (Ray)."""
        return 0

    def engine_metrics(self) -> list[tuple[str, str]]:
        """(replica, its engine's /metrics text) for each engine up; called
        from the metrics server's thread at scrape time."""
        return []


class LocalDriver(Driver):
    """One engine in this process, at most `engine.max_concurrency` problems
    in flight: a semaphore taken before a problem is even read, so memory
    stays flat however large the source. Problems whose request failed for
    now are sent again at the end (`engine.retry_failed` passes)."""

    def __init__(self) -> None:
        self._in_flight = 0
        self._failure: BaseException | None = None
        self.failed: list[dict[str, Any]] = []  # transient failures of the pass in progress
        self.worker: ProblemWorker | None = None

    def in_flight(self) -> int:
        return self._in_flight

    def engine_metrics(self) -> list[tuple[str, str]]:
        url = self.worker.engine.metrics_url if self.worker is not None else None
        text = fetch_text(url) if url else None
        return [("0", text)] if text else []

    async def generate(self, run: Run, problems: Iterator[dict[str, Any]]) -> None:
        async with contextlib.AsyncExitStack() as stack:
            worker = self.worker = await open_worker(run.job, stack, run.out)
            worker.budget = run_budget(run.job.sampling, stored_files(run))
            run.start_stats()
            await self._drive(run, worker, problems)
            async for items in retry_passes(run, self):
                await self._drive(run, worker, iter(items))

    async def _process(self, run: Run, worker: ProblemWorker, problem: dict[str, Any]) -> None:
        self._in_flight += 1
        try:
            row = await worker.process(problem, run.stats)
        finally:
            self._in_flight -= 1
        if row is not None:
            run.store.add(row)
        else:
            self.failed.append(problem)
        run.progress()

    def _task_done(self, task: asyncio.Task, sem: asyncio.Semaphore) -> None:
        sem.release()
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()

    async def _drive(self, run: Run, worker: ProblemWorker, problems: Iterator[dict[str, Any]]) -> None:
        sem = asyncio.Semaphore(run.job.engine.max_concurrency)
        tasks: set[asyncio.Task] = set()
        for item in problems:
            await sem.acquire()
            if self._failure is not None:
                sem.release()
                break
            task = asyncio.create_task(self._process(run, worker, item))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            task.add_done_callback(lambda t: self._task_done(t, sem))
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._failure is not None:
            raise self._failure


async def retry_passes(run: Run, holder: Any) -> AsyncIterator[list[dict[str, Any]]]:
    """The problems of `holder.failed` to send again, pass by pass, after
    `engine.retry_pause_s` each; they leave the failed count while they are
    tried (a request that fails again counts again)."""
    e = run.job.engine
    for n in range(1, e.retry_failed + 1):
        items, holder.failed = holder.failed, []
        if not items:
            return
        log.info(f"{len(items)} problem(s) failed for now; sending them again in {e.retry_pause_s:g} s "
                 f"(pass {n}/{e.retry_failed}, engine.retry_failed)")
        await asyncio.sleep(e.retry_pause_s)
        run.stats.problems_failed -= len(items)
        yield items


def stored_files(run: Run) -> list[Path]:
    """The shards the manifest lists (what is stored)."""
    return [run.out / f for f in sorted(run.store.manifest.files()) if (run.out / f).exists()]
