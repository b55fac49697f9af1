"""The preparation stage: every row read is either a clean problem or a
reject with one reason, and the counts add up (`read = accepted + rejected`).

Pass 1 streams the source: validate, normalize, filter, decontaminate, and
write survivors to a temporary Parquet file while their dedup keys and
MinHash signatures are appended to files. Duplicates are then found by
sorting keys (dedup.py), and pass 2 streams the survivors again into
`problems.parquet`, dropping exact and near duplicates and rows left out of a
`sample`. Nothing that grows with the source is held in memory except the
duplicates found.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from factory.config import SourceConfig
from factory.sources.decontaminate import Decontaminator, check_benchmarks
from factory.sources.dedup import DedupIndex
from factory.sources.read import Reject, iter_raw, normalize_row, source_files
from factory.store.shards import write_text_atomic

PROBLEM_SCHEMA = pa.schema([
    ("problem", pa.string()), ("solution", pa.string()), ("answer", pa.string()),
    ("problem_type", pa.string()), ("question_type", pa.string()), ("source", pa.string()),
    ("uuid", pa.string()), ("source_row", pa.int64()),
])
BATCH = 4096


@dataclass
class PrepareReport:
    read: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def count_reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def to_json(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "accepted": self.accepted,
            "rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(sorted(self.rejected.items())),
        }


def check_source(cfg: SourceConfig) -> None:
    """What only this stage knows about the source settings: fail before any row is read."""
    check_benchmarks(cfg.decontaminate.benchmarks)


def source_fingerprint(cfg: SourceConfig) -> str:
    """Changes when the source settings or the source files change."""
    h = hashlib.sha256(cfg.model_dump_json().encode())
    if cfg.path is not None:
        for f in source_files(cfg.path):
            st = f.stat()
            h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


class _RowWriter:
    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.writer = pq.ParquetWriter(self.tmp, PROBLEM_SCHEMA, compression="zstd")
        self.buf: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        self.buf.append(row)
        if len(self.buf) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.writer.write_table(pa.Table.from_pylist(self.buf, schema=PROBLEM_SCHEMA))
            self.buf = []

    def close(self) -> None:
        self.flush()
        self.writer.close()
        os.replace(self.tmp, self.path)


def prepare_to_dir(cfg: SourceConfig, out: Path, on_progress: Callable[[PrepareReport], None] | None = None) -> PrepareReport:
    """Write `problems.parquet`, `rejects.jsonl` and `report.json` under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    report = PrepareReport()
    tick = on_progress or (lambda r: None)
    deco = (Decontaminator(cfg.decontaminate.benchmarks, cfg.decontaminate.ngram, cfg.decontaminate.rule)
            if cfg.decontaminate.enabled else None)
    d = cfg.dedup
    index = DedupIndex(out / ".work", d.exact, d.near, d.num_perm, d.bands, d.threshold, d.shingle_words)
    stage1 = _RowWriter(out / ".work" / "stage1.parquet")
    rejects_tmp = out / ".rejects.jsonl.tmp"
    with open(rejects_tmp, "w", encoding="utf-8") as rejects:
        def reject(r: Reject) -> None:
            report.count_reject(r.reason)
            rejects.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")

        for row_no, obj in iter_raw(cfg):
            report.read += 1
            item = obj if isinstance(obj, Reject) else normalize_row(row_no, obj, cfg)
            if not isinstance(item, Reject) and deco is not None:
                hit = deco.check(item["problem"])
                if hit:
                    item = Reject(row_no, "contaminated", hit.detail(), item["uuid"])
            if isinstance(item, Reject):
                reject(item)
            else:
                item["source_row"] = row_no
                stage1.add(item)
                index.add(int(item["uuid"].replace("-", "")[:16], 16), item["problem"])
            if report.read % 10_000 == 0:
                tick(report)
        stage1.close()
        exact, near = index.duplicates()
        survivors = index.n - len(exact) - len(near)
        keep_sample = None
        if cfg.sample is not None and cfg.sample < survivors:
            chosen = np.random.default_rng(cfg.seed).choice(survivors, size=cfg.sample, replace=False)
            keep_sample = np.zeros(survivors, dtype=bool)
            keep_sample[chosen] = True
        final = _RowWriter(out / "problems.parquet")
        row_of: dict[int, int] = {}
        wanted = set(exact.values()) | set(near.values())
        idx = ordinal = 0
        for batch in pq.ParquetFile(stage1.path).iter_batches(batch_size=BATCH):
            for row in batch.to_pylist():
                if idx in wanted:
                    row_of[idx] = row["source_row"]
                if idx in exact:
                    reject(Reject(row["source_row"], "duplicate_exact",
                                  f"same normalized problem as row {row_of.get(exact[idx])}", row["uuid"]))
                elif idx in near:
                    reject(Reject(row["source_row"], "duplicate_near",
                                  f"near duplicate (Jaccard >= {d.threshold}) of row {row_of.get(near[idx])}", row["uuid"]))
                elif keep_sample is not None and not keep_sample[ordinal]:
                    ordinal += 1
                    reject(Reject(row["source_row"], "not_sampled", f"outside the sample of {cfg.sample} (seed {cfg.seed})", row["uuid"]))
                else:
                    ordinal += 1
                    final.add(row)
                    report.accepted += 1
                idx += 1
        final.close()
    os.replace(rejects_tmp, out / "rejects.jsonl")
    index.close()
    stage1.path.unlink(missing_ok=True)
    try:
        (out / ".work").rmdir()
    except OSError:
        pass
    data = report.to_json() | {"fingerprint": source_fingerprint(cfg)}
    assert data["read"] == data["accepted"] + data["rejected"], data
    write_text_atomic(out / "report.json", json.dumps(data, indent=2))
    tick(report)
    return report


def load_report(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        return None


def ensure_prepared(cfg: SourceConfig, out: Path, on_progress=None) -> tuple[dict[str, Any], bool]:
    """Reuse `out` when it was prepared from the same source and settings."""
    rep = load_report(out)
    if rep is not None and rep.get("fingerprint") == source_fingerprint(cfg) and (out / "problems.parquet").is_file():
        return rep, True
    prepare_to_dir(cfg, out, on_progress)
    return load_report(out), False


def iter_problems(out: Path):
    for batch in pq.ParquetFile(out / "problems.parquet").iter_batches(batch_size=BATCH):
        yield from batch.to_pylist()
