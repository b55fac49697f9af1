"""Exports of a run folder for SFT, GRPO-style RL and DPO trainers,
recomputed from the shards in `data/`, deterministically."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from factory.store.schema import MESSAGE
from factory.store.shards import shard_paths, write_table_atomic


def _rows(out: Path, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    for shard in shard_paths(out / "data"):
        for batch in pq.ParquetFile(shard).iter_batches(columns=columns, batch_size=2048):
            yield from batch.to_pylist()


def _user_turn(row: dict[str, Any]) -> list[dict[str, str]]:
    msgs = row.get("messages") or []
    return [m for m in msgs if m["role"] != "assistant"] or [{"role": "user", "content": row["problem"]}]


def rule_reward(correct: bool, extracted: str | None, complete: bool) -> float:
    """The seeds' rule reward: +1 correct, -1 no final answer, else 0, plus a
    0.1 format bonus for a finished trace with a final answer."""
    if extracted is None:
        return -1.0
    return (1.0 if correct else 0.0) + (0.1 if complete else 0.0)


def sft_rows(out: Path) -> Iterator[dict[str, Any]]:
    for r in _rows(out):
        if r["correctness_count"] and r["messages"]:
            yield {"messages": r["messages"], "uuid": r["uuid"], "source": r["source"]}


def rl_rows(out: Path) -> Iterator[dict[str, Any]]:
    for r in _rows(out):
        rewards = [rule_reward(c, e, f) for c, e, f in zip(r["correct"], r["extracted_answers"], r["is_reasoning_complete"])]
        yield {"prompt": _user_turn(r), "answer": r["answer"], "solution": r["solution"], "uuid": r["uuid"],
               "source": r["source"], "generations": r["generations"], "rewards": rewards}


def dpo_rows(out: Path, seed: int = 0) -> Iterator[dict[str, Any]]:
    """One (prompt, chosen, rejected) pair per problem that has both a correct
    and a wrong generation; the wrong one must have committed to an answer."""
    for r in _rows(out):
        good = [g for g, c in zip(r["generations"], r["correct"]) if c]
        bad = [g for g, c, e in zip(r["generations"], r["correct"], r["extracted_answers"]) if not c and e is not None]
        bad = bad or [g for g, c in zip(r["generations"], r["correct"]) if not c]
        if good and bad:
            rng = random.Random(f"{seed}:{r['uuid']}")
            yield {"prompt": _user_turn(r), "chosen": [{"role": "assistant", "content": rng.choice(good)}],
                   "rejected": [{"role": "assistant", "content": rng.choice(bad)}], "uuid": r["uuid"]}


CONVO = pa.list_(MESSAGE)
EXPORTS: dict[str, tuple[Callable[[Path], Iterator[dict[str, Any]]], pa.Schema]] = {
    "sft": (sft_rows, pa.schema([("messages", CONVO), ("uuid", pa.string()), ("source", pa.string())])),
    "rl": (rl_rows, pa.schema([("prompt", CONVO), ("answer", pa.string()), ("solution", pa.string()),
                               ("uuid", pa.string()), ("source", pa.string()),
                               ("generations", pa.list_(pa.string())), ("rewards", pa.list_(pa.float64()))])),
    "dpo": (dpo_rows, pa.schema([("prompt", CONVO), ("chosen", CONVO), ("rejected", CONVO), ("uuid", pa.string())])),
}


def export(kind: str, out: Path, dest: Path) -> int:
    """Write `dest/train-00000.parquet` for a trainer; return the row count."""
    make, schema = EXPORTS[kind]
    rows = list(make(out))
    dest.mkdir(parents=True, exist_ok=True)
    write_table_atomic(pa.Table.from_pylist(rows, schema=schema), dest / "train-00000.parquet")
    return len(rows)
