"""Adaptive sampling: draw a problem's samples in rounds, verify each round,
and stop as soon as the job's goal is met.

A fixed n gives a problem every sample solves n correct traces where SFT
needs one, and one no sample solves n long wrong ones. Here the first round
draws `first` samples; later rounds of `batch` go only to problems whose
goal is not met yet, up to the per-problem cap (`max_samples`, else
`sampling.n`), and a run-wide budget of samples or tokens after the first
round is spent only where verification says more are needed.

A problem is stored once, when its sampling stops, with how many samples
it drew, in how many rounds and why it stopped: an interrupted run redoes
an unfinished problem from its first round. With `sampling.seed` each round
sends its own seed (from the problem and the round), so where the engine
honours seeds the redone rounds draw the same samples.
"""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass

from factory.config import AdaptiveConfig, SamplingConfig

STOP_FIXED = "fixed"  # no adaptive sampling: sampling.n in one request
STOP_GOAL = "goal"
STOP_SOLVED = "all_solved"  # every first-round sample was correct (skip_solved)
STOP_CAP = "cap"
STOP_BUDGET = "budget"
STOP_ERROR = "error"  # the engine rejected a request as bad (a 400): what was drawn is kept


def goal_met(goal: str, correct: int, drawn: int) -> bool:
    if goal == "one_correct":
        return correct > 0
    if goal == "correct_and_wrong":
        return 0 < correct < drawn
    return False  # fixed: the cap decides


def stop_reason(policy: AdaptiveConfig, cap: int, correct: int, drawn: int, rounds: int) -> str | None:
    """Why a problem's sampling stops after `rounds` rounds, or None to go on."""
    if goal_met(policy.goal, correct, drawn):
        return STOP_GOAL
    if policy.skip_solved and rounds == 1 and correct == drawn:
        return STOP_SOLVED
    if drawn >= cap:
        return STOP_CAP
    return None


def round_seed(seed: int | None, uuid: str, round_index: int) -> int | None:
    """A seed per problem and round (stable across runs), or None without `sampling.seed`."""
    if seed is None:
        return None
    return zlib.crc32(f"{seed}:{uuid}:{round_index}".encode()) & 0x7FFFFFFF


def round_sampling(base: SamplingConfig, n: int, uuid: str, round_index: int) -> SamplingConfig:
    return base.model_copy(update={"n": n, "seed": round_seed(base.seed, uuid, round_index)})


class SampleBudget:
    """The run-wide allowance of samples and tokens after the first round.
    Samples are granted before a round is sent, tokens counted after it
    came back; the last round may overdraw the token budget by one round."""

    def __init__(self, samples: int | None, tokens: int | None, spent_samples: int = 0, spent_tokens: int = 0):
        self.samples_left = None if samples is None else max(0, samples - spent_samples)
        self.tokens_left = None if tokens is None else max(0, tokens - spent_tokens)
        self._lock = asyncio.Lock()

    async def take(self, want: int) -> int:
        """Up to `want` samples for one more round; 0 when the budget is spent."""
        async with self._lock:
            if self.tokens_left is not None and self.tokens_left <= 0:
                return 0
            if self.samples_left is None:
                return want
            got = min(want, self.samples_left)
            self.samples_left -= got
            return got

    async def spend_tokens(self, tokens: int) -> None:
        async with self._lock:
            if self.tokens_left is not None:
                self.tokens_left -= tokens


@dataclass
class Extra:
    """What a stored row says of its own sampling after the first round: what the budget was spent on."""

    samples: int
    tokens: int


def spent_after_first(rows: list[dict], first: int) -> Extra:
    """Samples and tokens stored rows drew after their first round (a resumed run's spent budget)."""
    samples = tokens = 0
    for r in rows:
        drawn = r.get("samples_drawn") or 0
        if drawn > first:
            samples += drawn - first
            tokens += sum(t or 0 for t in (r.get("completion_tokens") or [])[first:])
    return Extra(samples, tokens)


def stored_extra(files: list, first: int) -> Extra:
    """What the rows already stored drew after their first round: the part
    of the run's budget a resumed run has spent."""
    import pyarrow.parquet as pq

    rows: list[dict] = []
    for path in files:
        names = pq.read_schema(path).names
        if "samples_drawn" in names:
            rows += pq.read_table(path, columns=["samples_drawn", "completion_tokens"]).to_pylist()
    return spent_after_first(rows, first)


def run_budget(sampling: SamplingConfig, files: list) -> SampleBudget | None:
    """The run's budget, less what stored rows spent (None without one)."""
    policy = sampling.adaptive
    if policy is None or (policy.budget_samples is None and policy.budget_tokens is None):
        return None
    spent = stored_extra(files, policy.first)
    return SampleBudget(policy.budget_samples, policy.budget_tokens, spent.samples, spent.tokens)


class BudgetActor:
    """The run's budget on a Ray cluster, shared by every replica."""

    def __init__(self, samples: int | None, tokens: int | None):
        self.budget = SampleBudget(samples, tokens)

    async def take(self, want: int) -> int:
        return await self.budget.take(want)

    async def spend_tokens(self, tokens: int) -> None:
        await self.budget.spend_tokens(tokens)


class RayBudget:
    """A replica's face of the BudgetActor: the same two calls as SampleBudget."""

    def __init__(self, actor):
        self.actor = actor

    async def take(self, want: int) -> int:
        return await self.actor.take.remote(want)

    async def spend_tokens(self, tokens: int) -> None:
        await self.actor.spend_tokens.remote(tokens)
