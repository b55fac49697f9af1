"""Budget forcing (s1): cap the thinking at N tokens, then force the answer.

Phase 1 asks for at most `max_thinking_tokens`, stopping at `</think>`.
A sample that closed its thinking continues after `</think>` for its answer;
one that ran out of budget gets the cue (end-of-think and an answer prompt)
appended and continues from there. Each completion records whether it was
forced. Works with any backend that can continue a partial assistant turn.
Only requests whose sampling asks for it are forced: the judge, which may
share the generation engine, sends its own sampling and passes through.
"""

from __future__ import annotations

import asyncio

from factory.config import BudgetForcingConfig, SamplingConfig
from factory.engines.base import Completion, Engine, EngineWrapper, GenerationResult
from factory.think import THINK_CLOSE


class BudgetForcingEngine(EngineWrapper):
    def __init__(self, inner: Engine, cfg: BudgetForcingConfig):
        super().__init__(inner)
        self.budget = cfg

    async def _finish(self, messages, c: Completion, sampling: SamplingConfig, used: int) -> Completion:
        if c.finish_reason == "length":
            partial, forced, room = c.text + self.budget.cue, True, self.budget.answer_max_tokens
        elif c.stop_reason == THINK_CLOSE:  # thought within budget: now the answer
            partial, forced, room = c.text + THINK_CLOSE, False, max(sampling.max_tokens - used, 1)
        else:
            return c  # finished without a thinking block: nothing to add
        more = await self.inner.continue_generation(
            messages, partial, sampling.model_copy(update={"n": 1, "max_tokens": room, "budget_forcing": None}))
        if more.error or not more.completions:
            return Completion(partial, "length", c.completion_tokens, forced)
        tail = more.completions[0]
        tokens = None if c.completion_tokens is None or tail.completion_tokens is None else c.completion_tokens + tail.completion_tokens
        return Completion(partial + tail.text, tail.finish_reason, tokens, forced)

    async def generate(self, messages, sampling: SamplingConfig | None = None) -> GenerationResult:
        s = sampling or self.sampling
        if s.budget_forcing is None:  # a request of its own (the judge's): not a generation to force
            return await self.inner.generate(messages, s)
        budget = min(self.budget.max_thinking_tokens, s.max_tokens)
        first = s.model_copy(update={"max_tokens": budget, "stop": [*(s.stop or []), THINK_CLOSE], "budget_forcing": None})
        result = await self.inner.generate(messages, first)
        if result.error or result.transient:
            return result
        done = await asyncio.gather(*(self._finish(messages, c, s, c.completion_tokens or budget) for c in result.completions))
        result.completions = list(done)
        return result
