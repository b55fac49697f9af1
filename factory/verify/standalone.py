"""`factory verify`: the cascade on a file of (gold, generation) rows, and
`--calibrate`: accuracy on the labelled set in verifiers/calibration.jsonl."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from factory import assets
from factory.config import VerifyConfig
from factory.engines.base import Engine
from factory.sources.read import Reject, iter_jsonl, iter_parquet
from factory.text import clean_value
from factory.verify.cascade import Cascade, GenVerdict

BATCH_ROWS = 256


class VerifyInputError(ValueError):
    pass


def read_rows(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """(row number, row or None, error) from jsonl or parquet, streamed."""
    parquet = path.suffix == ".parquet" or path.is_dir()
    for n, obj in (iter_parquet(path, BATCH_ROWS) if parquet else iter_jsonl(path)):
        if isinstance(obj, Reject):
            yield n, None, f"{obj.reason}: {obj.detail}"
        elif not isinstance(obj, dict):
            yield n, None, f"not_an_object: got {type(obj).__name__}"
        else:
            obj, bad = clean_value(obj)
            if bad:
                obj["text_repaired"] = True  # lone surrogates / NUL bytes replaced by U+FFFD
            yield n, obj, None


def _as_list(value: Any) -> tuple[list, bool]:
    if isinstance(value, (list, tuple)):
        return [("" if v is None else str(v)) for v in value], True
    return [("" if value is None else str(value))], False


@dataclass
class VerifyCounts:
    rows: int = 0
    generations: int = 0
    rejected: int = 0
    status: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    correct: int = 0
    judged: int = 0


async def _verify_row(cascade: Cascade, row: dict, gold_col: str, gen_col: str) -> dict:
    gens, is_list = _as_list(row.get(gen_col))
    reasons = row.get("finish_reasons") if is_list else [row.get("finish_reason")]
    if not isinstance(reasons, list) or len(reasons) != len(gens):
        reasons = ["stop"] * len(gens)
    gold = row.get(gold_col)
    if gold is None or not str(gold).strip():
        verdicts = [GenVerdict(None, "error", False) for _ in gens]
    else:
        verdicts = await cascade.verify(str(gold), row.get("problem"), gens, reasons)
    cols = {
        "extracted_answer": [v.extracted for v in verdicts],
        "verify_status": [v.status for v in verdicts],
        "correct_math_verify": [v.rule_correct for v in verdicts],
        "correct_judge": [v.judge_bool for v in verdicts],
        "correct": [v.correct for v in verdicts],
    }
    if not is_list:
        cols = {k: v[0] for k, v in cols.items()}
    return {**row, **cols}


class _Writer:
    """jsonl or parquet by suffix; written to a temp name, renamed when done."""

    def __init__(self, out: Path):
        self.out = out
        self.tmp = out.with_name(f".{out.name}.tmp")
        self.parquet = out.suffix == ".parquet"
        self._pq: pq.ParquetWriter | None = None
        self._fh = None if self.parquet else open(self.tmp, "w", encoding="utf-8")

    def write(self, rows: list[dict]) -> None:
        if not rows:
            return
        if not self.parquet:
            for r in rows:
                self._fh.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
            return
        if self._pq is None:
            table = pa.Table.from_pylist(rows)
            self._pq = pq.ParquetWriter(self.tmp, table.schema, compression="zstd")
        else:
            try:
                table = pa.Table.from_pylist(rows, schema=self._pq.schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise VerifyInputError(f"rows do not fit one Parquet schema ({exc}); write .jsonl instead") from None
        self._pq.write_table(table)

    def close(self, ok: bool) -> None:
        if self._pq is not None:
            self._pq.close()
        if self._fh is not None:
            self._fh.close()
        if ok and os.path.exists(self.tmp):
            os.replace(self.tmp, self.out)
        elif os.path.exists(self.tmp):
            os.unlink(self.tmp)


async def verify_file(
    src: Path, out: Path, cfg: VerifyConfig, judge_engine: Engine | None = None,
    gold_col: str = "answer", gen_col: str = "generation",
    on_progress: Callable[[VerifyCounts], None] | None = None,
) -> VerifyCounts:
    counts = VerifyCounts()
    first = next(read_rows(src), None)
    if first is not None and first[1] is not None:
        missing = [c for c in (gold_col, gen_col) if c not in first[1]]
        if missing:
            raise VerifyInputError(
                f"{src}: column '{missing[0]}' not found (have: {', '.join(first[1])}); "
                f"use --gold-column / --generation-column"
            )
    rejects_path = out.with_name(out.name + ".rejects.jsonl")
    writer = _Writer(out)
    cascade = Cascade(cfg, judge_engine)
    ok = False
    try:
        with open(rejects_path, "w", encoding="utf-8") as rejects:
            batch: list[dict] = []

            async def flush():
                done = await asyncio.gather(*(_verify_row(cascade, r, gold_col, gen_col) for r in batch))
                writer.write(list(done))
                for r in done:
                    statuses = r["verify_status"] if isinstance(r["verify_status"], list) else [r["verify_status"]]
                    corrects = r["correct"] if isinstance(r["correct"], list) else [r["correct"]]
                    judged = r["correct_judge"] if isinstance(r["correct_judge"], list) else [r["correct_judge"]]
                    counts.rows += 1
                    counts.generations += len(statuses)
                    counts.correct += sum(corrects)
                    counts.judged += sum(j is not None for j in judged)
                    for s in statuses:
                        counts.status[s] += 1
                batch.clear()
                if on_progress:
                    on_progress(counts)

            for n, row, err in read_rows(src):
                if err:
                    counts.rejected += 1
                    reason, _, detail = err.partition(": ")
                    rejects.write(json.dumps({"row": n, "reason": reason, "detail": detail}) + "\n")
                    continue
                batch.append(row)
                if len(batch) >= BATCH_ROWS:
                    await flush()
            await flush()
        ok = True
    finally:
        writer.close(ok)
        cascade.close()
    if counts.rejected == 0:
        rejects_path.unlink(missing_ok=True)
    return counts


# ------------------------------------------------------------ calibration


# The labelled sets, in the order they were written: each was scored once, blind,
# then its misses were studied and fixed; the last one is still untouched.
LABELLED_SETS = ("calibration.jsonl", "dev.jsonl", "heldout.jsonl", "blind.jsonl", "blind2.jsonl", "blind3.jsonl",
                 "blind4.jsonl", "blind5.jsonl", "blind6.jsonl", "blind7.jsonl", "blind8.jsonl",
                 "blind9.jsonl", "blind10.jsonl")


def calibration_paths() -> list[Path]:
    """The labelled sets: what the rules were tuned on, then the held-out one (last)."""
    folder = assets.root() / "verifiers"
    return [folder / name for name in LABELLED_SETS if (folder / name).is_file()]


@dataclass
class CategoryScore:
    n: int = 0
    raw_right: int = 0
    ours_right: int = 0
    raw_fp: int = 0
    raw_fn: int = 0
    fp: int = 0
    fn: int = 0
    lost: int = 0  # raw Math-Verify right, the cascade wrong


@dataclass
class Calibration:
    """One labelled file scored: per category, and every case where the cascade and raw disagree."""

    path: Path
    scores: dict[str, CategoryScore]
    mistakes: list[dict]
    disagreements: list[dict]


def read_cases(path: Path) -> list[dict]:
    cases = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            case = json.loads(line)
            missing = [k for k in ("id", "category", "gold", "generation", "label") if k not in case]
        except json.JSONDecodeError as exc:
            raise VerifyInputError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
        if missing:
            raise VerifyInputError(f"{path}:{n}: a labelled case needs '{missing[0]}'")
        cases.append(case)
    return cases


async def calibrate(cfg: VerifyConfig, judge_engine: Engine | None = None, paths: list[Path] | None = None,
                    on_progress: Callable[[int, int], None] | None = None) -> list[Calibration]:
    """Score raw Math-Verify and our cascade against the labels, file by file."""
    files = [(p, read_cases(p)) for p in (paths or calibration_paths())]
    total = sum(len(c) for _, c in files)
    ours = Cascade(cfg, judge_engine)
    raw = Cascade(cfg.model_copy(update={"preset": "raw", "judge": cfg.judge.model_copy(update={"enabled": False})}))
    done = 0

    async def one(case):
        nonlocal done
        reason = case.get("finish_reason", "stop")
        (o,), (r,) = await asyncio.gather(
            ours.verify(str(case["gold"]), case.get("problem"), [case["generation"]], [reason]),
            raw.verify(str(case["gold"]), case.get("problem"), [case["generation"]], [reason]),
        )
        done += 1
        if on_progress:
            on_progress(done, total)
        return case, o, r

    results = []
    try:
        for path, cases in files:
            scores: dict[str, CategoryScore] = defaultdict(CategoryScore)
            mistakes, disagreements = [], []
            for case, o, r in await asyncio.gather(*(one(c) for c in cases)):
                label = bool(case["label"])
                for s in (scores[case["category"]], scores["ALL"]):
                    s.n += 1
                    s.ours_right += o.correct == label
                    s.raw_right += r.correct == label
                    s.fp += o.correct and not label
                    s.fn += label and not o.correct
                    s.raw_fp += r.correct and not label
                    s.raw_fn += label and not r.correct
                    s.lost += r.correct == label != o.correct
                entry = {"id": case["id"], "category": case["category"], "gold": case["gold"], "extracted": o.extracted,
                         "status": o.status, "judge": o.judge, "label": label, "cascade": o.correct, "raw": r.correct}
                if o.correct != label:
                    mistakes.append(entry)
                if o.correct != r.correct:
                    disagreements.append(entry)
            results.append(Calibration(path, dict(scores), mistakes, disagreements))
    finally:
        ours.close()
        raw.close()
    return results


@contextlib.asynccontextmanager
async def maybe_engine(engine: Engine | None):
    if engine is None:
        yield None
        return
    async with engine:
        yield engine
