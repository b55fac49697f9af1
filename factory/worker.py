"""One problem from prompt to stored row, and the engines and cascade it
needs: the unit the local driver and each Ray replica repeat."""

from __future__ import annotations

import contextlib
import random
from collections import deque
from pathlib import Path
from typing import Any

from factory.config import AdaptiveConfig, JobConfig
from factory.engines import Engine, GenerationResult, build_engine
from factory.metrics import RunStats
from factory.prompts import PromptRenderer
from factory.sampling import STOP_BUDGET, STOP_ERROR, STOP_FIXED, SampleBudget, round_sampling, stop_reason
from factory.text import clean
from factory.think import restore_think
from factory.verify.cascade import Cascade, GenVerdict
from factory.verify.extract import is_reasoning_complete


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
    rounds: int = 1,
    stop: str = "fixed",
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
        "samples_drawn": len(comps),
        "sampling_rounds": rounds,
        "sampling_stop": stop,
    }


class EngineFailing(RuntimeError):
    """The engine keeps failing: the run stops, resumable, rather than burn through the problems."""


class Breaker:
    """Trips on `consecutive` failed problems in a row, or on a failure rate
    over `failure_rate` across the last `window` problems."""

    def __init__(self, consecutive: int, window: int, failure_rate: float):
        self.consecutive, self.failure_rate = consecutive, failure_rate
        self.recent: deque[bool] = deque(maxlen=window)
        self.in_a_row = 0

    def record(self, failed: bool, error: str | None) -> None:
        self.recent.append(failed)
        self.in_a_row = self.in_a_row + 1 if failed else 0
        share = sum(self.recent) / len(self.recent)
        if self.in_a_row >= self.consecutive or (len(self.recent) == self.recent.maxlen and share >= self.failure_rate):
            why = (f"{self.in_a_row} failed requests in a row (engine.breaker_consecutive)" if self.in_a_row >= self.consecutive
                   else f"{share:.0%} of the last {len(self.recent)} requests failed (engine.breaker_failure_rate)")
            raise EngineFailing(f"the engine keeps failing: {why}; last error: {error}. Finished problems are "
                                "stored; fix the engine and run the same command to resume")


# no adaptive sampling: one round of sampling.n, which is the cap
ONE_ROUND = AdaptiveConfig(goal="fixed", skip_solved=False)


class ProblemWorker:
    """One problem from prompt to stored row: the unit both the local runner
    and each Ray replica repeat."""

    def __init__(self, job: JobConfig, engine: Engine, cascade: Cascade, renderer: PromptRenderer | None = None):
        self.job = job
        self.engine = engine
        self.cascade = cascade
        self.renderer = renderer or PromptRenderer(job.prompt)
        e = job.engine
        self.breaker = Breaker(e.breaker_consecutive, e.breaker_window, e.breaker_failure_rate)
        self.budget: SampleBudget | None = None  # adaptive sampling's run-wide allowance (set by the driver)

    async def _round(self, problem: dict[str, Any], msgs, sampling, stats: RunStats):
        """One request of `sampling.n` samples, cleaned and verified; None
        when it failed for now (the breaker counts it)."""
        result = await self.engine.generate(msgs, sampling)
        if result.transient:  # the whole problem is left for later (counted before the breaker may stop the run)
            stats.problems_failed += 1
            stats.request_errors += 1
            self.breaker.record(True, result.error)
            return None
        self.breaker.record(False, None)
        prefilled = self.engine.prefills_think
        for c in result.completions:
            c.text, bad = clean(restore_think(c.text or "", prefilled))
            stats.texts_repaired += bool(bad)
        comps = result.completions
        verdicts = await self.cascade.verify(problem["answer"], problem["problem"], [c.text for c in comps],
                                             [c.finish_reason for c in comps])
        return result, verdicts

    async def process(self, problem: dict[str, Any], stats: RunStats) -> dict[str, Any] | None:
        """The finished row, or None when a request failed for now (the
        problem is left for a re-run); counts go to `stats`. With
        `sampling.adaptive` the samples are drawn in rounds (sampling.py)."""
        msgs = self.renderer.messages(problem)
        base = self.job.sampling
        drawn = await self._rounds(problem, msgs, base, base.adaptive or ONE_ROUND, stats)
        if drawn is None:
            return None
        result, verdicts, rounds, stop = drawn
        if base.adaptive is None:
            stop = STOP_FIXED
        row = build_row(problem, msgs[-1]["content"], result, verdicts, self.engine.model_name,
                        self.job.output.messages_seed, self.cascade.judge_model, self.job.engine.seed,
                        rounds=rounds, stop=stop)
        stats.record(row)
        return row

    async def _rounds(self, problem, msgs, base, policy, stats):
        cap, uuid = base.cap, problem["uuid"]
        result, verdicts, rounds, want = None, [], 0, (policy.first if base.adaptive else base.n)
        while True:
            got = await self._round(problem, msgs, round_sampling(base, want, uuid, rounds), stats)
            if got is None:
                return None  # the whole problem again later: its rounds are redone alike
            part, part_verdicts = got
            if rounds and self.budget is not None:
                await self.budget.spend_tokens(sum(c.completion_tokens or 0 for c in part.completions))
            if result is None:
                result = part
            else:
                result.completions += part.completions
                result.latency_s += part.latency_s
                result.error = result.error or part.error
            verdicts += part_verdicts
            rounds += 1
            if part.error:
                return result, verdicts, rounds, STOP_ERROR
            drawn = len(result.completions)
            stop = stop_reason(policy, cap, sum(v.correct for v in verdicts), drawn, rounds)
            if stop is not None:
                return result, verdicts, rounds, stop
            want = min(policy.batch, cap - drawn)
            if self.budget is not None:
                want = await self.budget.take(want)
                if want == 0:
                    return result, verdicts, rounds, STOP_BUDGET


def build_engines(job: JobConfig, run_dir: Path | None) -> tuple[Engine, Engine | None]:
    """The generation engine and the judge's (None with the judge off; the
    generation engine itself when verify.judge.engine is unset). Budget
    forcing is a generation setting: a judge engine of its own never has it."""
    engine = build_engine(job.engine, job.sampling, run_dir=run_dir)
    judge = job.verify.judge
    if not judge.enabled:
        return engine, None
    if judge.engine is None:
        return engine, engine
    plain = job.sampling.model_copy(update={"budget_forcing": None})
    return engine, build_engine(judge.engine, plain, run_dir=run_dir / "judge" if run_dir else None)


async def open_worker(job: JobConfig, stack: contextlib.AsyncExitStack, run_dir: Path | None, rules=None) -> ProblemWorker:
    """Start the engines on `stack` and build the cascade around them; the
    stack stops it all, the cascade first."""
    engine, judge = build_engines(job, run_dir)
    await stack.enter_async_context(engine)
    if judge is not None and judge is not engine:
        await stack.enter_async_context(judge)
    cascade = Cascade(job.verify, judge, rules=rules)
    stack.callback(cascade.close)
    return ProblemWorker(job, engine, cascade)
