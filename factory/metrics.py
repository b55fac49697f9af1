"""Run statistics: what the progress bar, the summary and `status` report."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field


@dataclass
class RunStats:
    started_at: float = field(default_factory=time.time)
    problems_read: int = 0
    problems_skipped_done: int = 0
    problems_rejected: int = 0
    problems_done: int = 0
    problems_failed: int = 0
    problems_with_correct: int = 0
    generations: int = 0
    generations_correct: int = 0
    generations_rule_correct: int = 0
    generations_complete: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    request_errors: int = 0
    verify_status: Counter = field(default_factory=Counter)
    judge_verdicts: Counter = field(default_factory=Counter)
    elapsed_s: float = 0.0

    def tick(self) -> None:
        self.elapsed_s = time.time() - self.started_at

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def generations_per_s(self) -> float:
        return self.generations / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def correct_share(self) -> float:
        return self.generations_correct / self.generations if self.generations else 0.0

    def to_json(self) -> dict:
        d = asdict(self)
        d["verify_status"] = dict(self.verify_status)
        d["judge_verdicts"] = dict(self.judge_verdicts)
        d.update(
            tokens_per_s=round(self.tokens_per_s, 2),
            generations_per_s=round(self.generations_per_s, 2),
            correct_share=round(self.correct_share, 4),
        )
        return d
