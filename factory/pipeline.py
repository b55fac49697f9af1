"""`factory run`: prepare -> render -> generate -> extract -> verify -> store.

One asyncio loop drives the engine with at most `engine.max_concurrency`
problems in flight (a semaphore taken before a problem is even read, so
memory stays flat however large the source). Math-Verify runs in a process
pool beside it. Finished rows go to the shard store, whose manifest is the
checkpoint: a re-run skips every uuid already in a shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from factory.config import JobConfig
from factory.engines import Engine, GenerationResult, build_engine
from factory.metrics import RunStats
from factory.prompts import PromptRenderer
from factory.prepare import ensure_prepared, iter_problems
from factory.store.shards import ShardStore, write_text_atomic
from factory.verify.cascade import Cascade, GenVerdict
from factory.verify.extract import is_reasoning_complete


class RunError(RuntimeError):
    """A run stopped for a reason the user can act on."""


@dataclass
class RunResult:
    stats: RunStats
    out_dir: Path
    stored_problems: int
    report: dict


def choose_message_trace(uuid: str, correct: list[bool], seed: int) -> int:
    """Index of the trace for `messages`: a seeded random correct one, else 0.

    OpenR1 found that picking among correct traces with a reward model was
    no better than random, so random with a fixed seed it is.
    """
    idx = [i for i, ok in enumerate(correct) if ok]
    if not idx:
        return 0
    return random.Random(f"{seed}:{uuid}").choice(idx)


def build_row(
    problem: dict[str, Any],
    prompt: str,
    result: GenerationResult,
    verdicts: list[GenVerdict],
    model: str,
    messages_seed: int = 0,
    judge_model: str | None = None,
    sampling_seed: int | None = None,
) -> dict[str, Any]:
    """One output row in OpenR1-Math-220k's layout plus our extras."""
    comps = result.completions
    gens = [c.text for c in comps]
    correct = [v.correct for v in verdicts]
    judged = judge_model is not None
    messages: list[dict[str, str]] = []
    if gens:
        pick = choose_message_trace(problem["uuid"], correct, messages_seed)
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": gens[pick]}]
    return {
        **{k: problem.get(k) for k in ("problem", "solution", "answer", "problem_type", "question_type", "source", "uuid")},
        "is_reasoning_complete": [is_reasoning_complete(c.text, c.finish_reason) for c in comps],
        "generations": gens,
        "correctness_math_verify": [v.rule_correct for v in verdicts],
        "correctness_llama": [v.judge_bool for v in verdicts] if judged else None,
        "finish_reasons": [c.finish_reason or "unknown" for c in comps],
        "correctness_count": sum(correct),
        "messages": messages,
        "extracted_answers": [v.extracted for v in verdicts],
        "verify_status": [v.status for v in verdicts],
        "correct": correct,
        "judge_verdicts": [v.judge for v in verdicts] if judged else None,
        "judge_model": judge_model,
        "completion_tokens": [c.completion_tokens for c in comps],
        "budget_forced": [c.budget_forced for c in comps],
        "prompt_tokens": result.prompt_tokens,
        "model": model,
        "sampling_seed": sampling_seed,
        "error": result.error,
        "generation_time_s": round(result.latency_s, 4),
    }


class ProblemWorker:
    """One problem from prompt to stored row: the unit both the local runner
    and each Ray replica repeat."""

    def __init__(self, job: JobConfig, engine: Engine, cascade: Cascade, renderer: PromptRenderer | None = None):
        self.job = job
        self.engine = engine
        self.cascade = cascade
        self.renderer = renderer or PromptRenderer(job.prompt)

    async def process(self, problem: dict[str, Any], stats: RunStats) -> dict[str, Any] | None:
        """The finished row, or None when the request failed for now (the
        problem is left for a re-run); counts go to `stats`."""
        msgs = self.renderer.messages(problem)
        result = await self.engine.generate(msgs)
        if result.transient:
            stats.problems_failed += 1
            stats.request_errors += 1
            return None
        comps = result.completions
        verdicts = await self.cascade.verify(problem["answer"], problem["problem"], [c.text for c in comps],
                                             [c.finish_reason for c in comps])
        row = build_row(problem, msgs[-1]["content"], result, verdicts, self.engine.model_name,
                        self.job.output.messages_seed, self.cascade.judge_model, self.job.engine.seed)
        stats.record(row, verdicts)
        return row


class Runner:
    def __init__(self, job: JobConfig, log: Callable[[str], None] = print, on_progress: Callable[[RunStats, int | None], None] | None = None):
        self.job = job
        self.out = job.output.dir
        self.log = log
        self.on_progress = on_progress or (lambda stats, total: None)
        self.stats = RunStats()
        self.report: dict = {}
        self.prepared = self.out / "prepared"
        self.store = ShardStore(self.out, job.output.shard_rows, job.output.flush_interval_s)
        self.renderer = PromptRenderer(job.prompt)
        self.total: int | None = None
        self._failure: BaseException | None = None
        self._worker: ProblemWorker | None = None
        self._in_flight = 0

    def _count_pending(self, done: set[str]) -> int:
        import pyarrow.parquet as pq

        uuids = pq.read_table(self.prepared / "problems.parquet", columns=["uuid"]).column("uuid").to_pylist()
        return sum(1 for u in uuids if u not in done)

    def pending_problems(self, done: set[str]):
        """Prepared problems not stored yet, in source order."""
        for item in iter_problems(self.prepared):
            if item["uuid"] in done:
                self.stats.problems_skipped_done += 1
                continue
            yield item

    async def _process(self, problem: dict[str, Any]) -> None:
        self._in_flight += 1
        try:
            row = await self._worker.process(problem, self.stats)
        finally:
            self._in_flight -= 1
        if row is not None:
            self.store.add(row)
        self.stats.tick()
        self.on_progress(self.stats, self.total)

    def _task_done(self, task: asyncio.Task, sem: asyncio.Semaphore) -> None:
        sem.release()
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()

    async def _drive(self, done: set[str]) -> None:
        sem = asyncio.Semaphore(self.job.engine.max_concurrency)
        tasks: set[asyncio.Task] = set()
        for item in self.pending_problems(done):
            await sem.acquire()
            if self._failure is not None:
                sem.release()
                break
            task = asyncio.create_task(self._process(item))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            task.add_done_callback(lambda t: self._task_done(t, sem))
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._failure is not None:
            raise self._failure

    async def run_async(self) -> RunResult:
        server = self._serve_metrics()
        try:
            done = await self._open()
            if self.total == 0:
                self.log("nothing to generate: every problem is already stored")
                return self._finish()
            await self._generate(done)
            return self._finish()
        finally:
            if server is not None:
                server.shutdown()
                server.server_close()

    def in_flight(self) -> int:
        """Problems sent to the engine and not finished."""
        return self._in_flight

    def _serve_metrics(self):
        cfg = self.job.metrics
        if cfg.port is None:
            return None
        from factory.metrics import StatsCollector, serve_metrics

        def pending() -> int:
            st = self.stats
            return max(0, (self.total or 0) - st.problems_done - st.problems_failed)

        collector = StatsCollector(self.job.name, lambda: self.stats, {
            "factory_problems_pending": ("Problems left to generate in this run", pending),
            "factory_in_flight": ("Work handed to engines and not back: problems (local) or chunks (Ray)", self.in_flight),
            "factory_tokens_per_second": ("Completion tokens per second since the engines came up",
                                          lambda: self.stats.tokens_per_s),
        })
        try:
            server = serve_metrics(collector, cfg.port, cfg.host)
        except OSError as exc:
            raise RunError(f"metrics.port: cannot serve on {cfg.host}:{cfg.port}: {exc}") from None
        self.log(f"metrics: http://{cfg.host}:{server.server_port}/metrics")
        return server

    async def _open(self) -> set[str]:
        """Recover the store, prepare the problems, count what is left."""
        self.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.out / "job.json", self.job.model_dump_json(indent=2))
        done = self._recover_store()
        if done:
            self.log(f"resuming: {len(done)} problems already in {self.out / 'data'}")
        self.report, reused = await asyncio.to_thread(ensure_prepared, self.job.source, self.prepared)
        self.log(f"prepared{' (reused)' if reused else ''}: {self.report['read']} rows read, "
                 f"{self.report['accepted']} problems, {self.report['rejected']} rejected "
                 f"{_reasons(self.report)}-> {self.prepared}")
        self.total = await asyncio.to_thread(self._count_pending, done)
        self.on_progress(self.stats, self.total)
        return done

    def _recover_store(self) -> set[str]:
        """Open the store (adopting and de-duplicating after a crash); the done uuids."""
        done = self.store.open()
        if self.store.adopted:
            self.log(f"recovered {self.store.adopted} shard(s) written just before an interruption")
        if self.store.dropped:
            self.log(f"dropped {self.store.dropped} duplicate row(s) left by workers of an earlier run")
        return done

    def _fresh_stats(self) -> None:
        """Throughput counts from the engines being ready."""
        self.stats = RunStats()
        self.stats.problems_read = self.report["read"]
        self.stats.problems_rejected = self.report["rejected"]

    async def _generate(self, done: set[str]) -> None:
        engine = build_engine(self.job.engine, self.job.sampling, run_dir=self.out, log=self.log)
        judge_cfg = self.job.verify.judge
        judge_engine = None
        if judge_cfg.enabled and judge_cfg.engine is not None:
            judge_dir = self.out / "judge"
            judge_engine = build_engine(judge_cfg.engine, self.job.sampling, run_dir=judge_dir, log=self.log)
        cascade = None
        try:
            async with contextlib.AsyncExitStack() as stack:
                await stack.enter_async_context(engine)
                if judge_engine is not None:
                    await stack.enter_async_context(judge_engine)
                cascade = Cascade(self.job.verify, judge_engine or (engine if judge_cfg.enabled else None))
                self._worker = ProblemWorker(self.job, engine, cascade, self.renderer)
                self._fresh_stats()
                await self._drive(done)
        finally:
            self.store.flush()  # finished rows are kept even on Ctrl-C or error
            if cascade is not None:
                cascade.close()
            self._write_metrics()

    def _write_metrics(self) -> None:
        # no tick here: elapsed_s stops at the last finished problem, so the
        # engine's shutdown (seconds for a server) does not dilute tokens/s
        data = {"stats": self.stats.to_json(), "prepare": self.report, "job": self.job.model_dump(mode="json")}
        write_text_atomic(self.out / "metrics.json", json.dumps(data, indent=2))

    def _finish(self) -> RunResult:
        from factory.store.export import finalize

        stored = len(self.store.done)
        push = self.job.output.push
        finalize(self.out, push.repo_id if push else f"your-org/{self.job.name}", self.job.output.license)
        if self.stats.problems_failed:
            self.log(f"{self.stats.problems_failed} problems failed (engine unreachable); re-run to generate them")
        return RunResult(self.stats, self.out, stored, self.report)


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


def run_job(job: JobConfig, log=print, on_progress=None) -> RunResult:
    if job.scale.mode == "ray":
        from factory.scale import RayRunner as runner_cls
    else:
        runner_cls = Runner
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with _event_loop_runner() as runner:
            return runner.run(runner_cls(job, log=log, on_progress=on_progress).run_async())
    finally:
        signal.signal(signal.SIGTERM, previous)
