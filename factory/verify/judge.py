"""Stage 2 of the cascade: an LLM judge on what the rules rejected.

OpenR1 re-checked only Math-Verify's rejects with Llama-3.3-70B and
recovered ~25k correct answers. The judge talks to any engine backend; its
reply is parsed for an explicit verdict, and anything that is not clearly
YES or NO is `undecided`, which never counts as correct.
"""

from __future__ import annotations

import re
from pathlib import Path

import jinja2

from factory import assets
from factory.config import JudgeConfig, SamplingConfig
from factory.engines.base import Engine
from factory.think import THINK_CLOSE

JUDGE_CORRECT = "correct"
JUDGE_INCORRECT = "incorrect"
JUDGE_UNDECIDED = "undecided"

_VERDICT = re.compile(
    r"verdict\s*[:：]?\s*[*_`\"']*\s*(not\s+equivalent|equivalent|incorrect|correct|yes|no)\b", re.IGNORECASE
)
_YES = {"yes", "correct", "equivalent", "true"}
_NO = {"no", "incorrect", "not equivalent", "false"}


def parse_verdict(reply: str | None) -> str:
    """YES/NO from a judge reply; `undecided` unless the reply commits."""
    if not reply:
        return JUDGE_UNDECIDED
    text = reply.split(THINK_CLOSE)[-1] if THINK_CLOSE in reply else reply
    found = _VERDICT.findall(text)
    if found:
        word = " ".join(found[-1].lower().split())
    else:
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        if not lines:
            return JUDGE_UNDECIDED
        word = re.sub(r"[^a-z ]", "", lines[-1].lower()).strip()
        boxed = re.findall(r"\\boxed\{\s*(?:\\text\{)?\s*(yes|no)\s*\}?\s*\}", text, re.IGNORECASE)
        if word not in _YES | _NO and boxed:
            word = boxed[-1].lower()
    if word in _YES:
        return JUDGE_CORRECT
    if word in _NO:
        return JUDGE_INCORRECT
    return JUDGE_UNDECIDED


def response_tail(generation: str, chars: int) -> str:
    """What the judge reads: the answer after the thinking, its last `chars`."""
    part = generation.split(THINK_CLOSE)[-1] if THINK_CLOSE in generation else generation
    part = part.strip()
    return part if len(part) <= chars else "..." + part[-chars:]


class LLMJudge:
    def __init__(self, cfg: JudgeConfig, engine: Engine):
        self.cfg = cfg
        self.engine = engine
        path = assets.template_path(cfg.template, "verifiers")
        if path is None:
            raise FileNotFoundError(f"verify.judge.template: template not found: {cfg.template}")
        self.template = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(path.read_text(encoding="utf-8"))
        self.sampling = SamplingConfig(n=1, max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=1.0)

    @property
    def model_name(self) -> str:
        return self.engine.model_name

    def prompt(self, problem: str, gold: str, answer: str | None, generation: str) -> str:
        return self.template.render(problem=problem, gold=gold, answer=answer or "",
                                    response=response_tail(generation, self.cfg.response_chars)).strip()

    async def judge(self, problem: str, gold: str, answer: str | None, generation: str) -> str:
        msgs = [{"role": "user", "content": self.prompt(problem, gold, answer, generation)}]
        result = await self.engine.generate(msgs, sampling=self.sampling)
        if result.error or not result.completions:
            return JUDGE_UNDECIDED
        return parse_verdict(result.completions[0].text)


def judge_template_exists(name: str, base: Path | None = None) -> bool:
    return assets.template_path(name, "verifiers", base) is not None
