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
    replica_restarts: int = 0  # Ray: dead replicas replaced
    chunks_resent: int = 0  # Ray: chunks sent again after a replica failed
    verify_status: Counter = field(default_factory=Counter)
    judge_verdicts: Counter = field(default_factory=Counter)
    elapsed_s: float = 0.0

    COUNTERS = ("problems_done", "problems_failed", "problems_with_correct", "generations", "generations_correct",
                "generations_rule_correct", "generations_complete", "prompt_tokens", "completion_tokens",
                "request_errors")

    def record(self, row: dict, verdicts: list) -> None:
        """Count one stored problem (`row` as built by pipeline.build_row)."""
        self.problems_done += 1
        self.generations += len(row["generations"])
        self.generations_rule_correct += sum(v.rule_correct for v in verdicts)
        self.judge_verdicts.update(v.judge for v in verdicts if v.judge)
        self.generations_correct += row["correctness_count"]
        self.problems_with_correct += row["correctness_count"] > 0
        self.generations_complete += sum(row["is_reasoning_complete"])
        self.prompt_tokens += row["prompt_tokens"] or 0
        self.completion_tokens += sum(t or 0 for t in row["completion_tokens"])
        self.verify_status.update(v.status for v in verdicts)
        if row["error"]:
            self.request_errors += 1

    def counts(self) -> dict:
        """The additive part, to ship from a Ray replica to the driver."""
        d = {k: getattr(self, k) for k in self.COUNTERS}
        d["verify_status"] = dict(self.verify_status)
        d["judge_verdicts"] = dict(self.judge_verdicts)
        return d

    def merge(self, counts: dict) -> None:
        for k in self.COUNTERS:
            setattr(self, k, getattr(self, k) + counts.get(k, 0))
        self.verify_status.update(counts.get("verify_status", {}))
        self.judge_verdicts.update(counts.get("judge_verdicts", {}))

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
