"""Output columns: OpenR1-Math-220k's, then our extras."""

from __future__ import annotations

import pyarrow as pa

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

OPENR1_FIELDS = [
    pa.field("problem", pa.string()),
    pa.field("solution", pa.string()),
    pa.field("answer", pa.string()),
    pa.field("problem_type", pa.string()),
    pa.field("question_type", pa.string()),
    pa.field("source", pa.string()),
    pa.field("uuid", pa.string()),
    pa.field("is_reasoning_complete", pa.list_(pa.bool_())),
    pa.field("generations", pa.list_(pa.string())),
    pa.field("correctness_math_verify", pa.list_(pa.bool_())),
    pa.field("correctness_llama", pa.list_(pa.bool_())),
    pa.field("finish_reasons", pa.list_(pa.string())),
    pa.field("correctness_count", pa.int64()),
    pa.field("messages", pa.list_(MESSAGE)),
]

EXTRA_FIELDS = [
    pa.field("extracted_answers", pa.list_(pa.string())),
    pa.field("verify_status", pa.list_(pa.string())),
    pa.field("correct", pa.list_(pa.bool_())),
    pa.field("judge_verdicts", pa.list_(pa.string())),
    pa.field("judge_model", pa.string()),
    pa.field("completion_tokens", pa.list_(pa.int64())),
    pa.field("budget_forced", pa.list_(pa.bool_())),
    pa.field("prompt_tokens", pa.int64()),
    pa.field("model", pa.string()),
    pa.field("sampling_seed", pa.int64()),
    pa.field("error", pa.string()),
    pa.field("generation_time_s", pa.float64()),
    pa.field("samples_drawn", pa.int64()),  # adaptive sampling (factory/sampling.py): per problem
    pa.field("sampling_rounds", pa.int64()),
    pa.field("sampling_stop", pa.string()),  # fixed, goal, all_solved, cap, budget, error
]

SCHEMA = pa.schema(OPENR1_FIELDS + EXTRA_FIELDS)
OPENR1_COLUMNS = [f.name for f in OPENR1_FIELDS]
