"""The verification cascade: extract -> rules (Math-Verify + normalizers) ->
LLM judge on the rejects only. Used by `factory run` and `factory verify`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from factory.config import ConfigError, VerifyConfig
from factory.engines.base import Engine
from factory.verify.extract import extract_answer, is_reasoning_complete
from factory.verify.judge import JUDGE_CORRECT, LLMJudge
from factory.verify.normalize import RulesError, load_preset
from factory.verify.pool import STATUS_NO_ANSWER, STATUS_OK, RuleVerifier, Verdict, check_raw


@dataclass
class GenVerdict:
    extracted: str | None
    status: str  # ok | no_answer | timeout | error | skipped
    rule_correct: bool
    judge: str | None = None  # correct | incorrect | undecided | None (not judged)

    @property
    def correct(self) -> bool:
        return self.rule_correct or self.judge == JUDGE_CORRECT

    @property
    def judge_bool(self) -> bool | None:
        """OpenR1's `correctness_llama`: the judge's verdict, null where none."""
        if self.judge is None or self.judge not in ("correct", "incorrect"):
            return None
        return self.judge == JUDGE_CORRECT


def check_verify(cfg: VerifyConfig) -> None:
    """The rule preset is known only here: fail before any engine starts."""
    try:
        load_preset(cfg.preset)
    except RulesError as exc:
        raise ConfigError(f"verify.preset: {exc}") from None


class Cascade:
    def __init__(self, cfg: VerifyConfig, judge_engine: Engine | None = None, rules=None):
        """`rules`: anything with RuleVerifier's async face (Ray passes actors);
        unset, a local pool of `cfg.workers` processes."""
        self.cfg = cfg
        if not cfg.enabled:
            rules = None
        elif rules is None:
            rules = RuleVerifier(cfg.workers, cfg.timeout_s, cfg.memory_mb, cfg.preset, cfg.rules)
        self.rules = rules
        self.judge = LLMJudge(cfg.judge, judge_engine) if (cfg.judge.enabled and judge_engine is not None) else None
        self._judge_sem = asyncio.Semaphore(cfg.judge.max_concurrency)
        self.raw = self.rules is not None and self.rules.preset == "raw"

    @property
    def judge_model(self) -> str | None:
        return self.judge.model_name if self.judge else None

    async def _rule(self, gold: str, problem: str | None, generation: str, finish_reason: str | None) -> GenVerdict:
        if self.rules is None:
            return GenVerdict(None, "skipped", False)
        if self.raw:  # baseline preset: the library on the whole text
            v = await self.rules.aschedule(check_raw, gold, generation)
            return GenVerdict(extract_answer(generation, finish_reason), v.status, v.correct)
        if not is_reasoning_complete(generation, finish_reason):  # nothing it says counts: no worker needed
            return GenVerdict(None, STATUS_NO_ANSWER, False)
        v: Verdict = await self.rules.agrade(gold, generation, finish_reason, problem)
        return GenVerdict(v.extracted, v.status, v.correct)

    async def _judge(self, v: GenVerdict, gold: str, problem: str, generation: str, finish_reason: str | None) -> None:
        if self.judge is None or v.rule_correct or not is_reasoning_complete(generation, finish_reason):
            return
        if v.status == STATUS_NO_ANSWER and not generation.strip():
            return
        async with self._judge_sem:
            v.judge = await self.judge.judge(problem, gold, v.extracted, generation)

    async def verify(self, gold: str, problem: str | None, generations: list[str],
                     finish_reasons: list[str | None] | None = None) -> list[GenVerdict]:
        reasons = finish_reasons or ["stop"] * len(generations)
        if self.rules is None and self.judge is None:  # verification off: no tasks to schedule
            return [GenVerdict(None, "skipped", False) for _ in generations]
        verdicts = list(await asyncio.gather(*(self._rule(gold, problem, g, r) for g, r in zip(generations, reasons))))
        if self.judge is not None:
            await asyncio.gather(*(self._judge(v, gold, problem or "", g, r)
                                   for v, g, r in zip(verdicts, generations, reasons)))
        return verdicts

    def close(self) -> None:
        if self.rules is not None:
            self.rules.close()


__all__ = ["Cascade", "GenVerdict", "STATUS_OK"]
