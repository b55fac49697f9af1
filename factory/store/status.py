"""`factory status OUT`: where a run stands, read from its folder alone (so
it works on a run in progress, from any machine that sees the folder):
stored and pending problems, the rate over a recent window from the
manifest's commit times, an ETA, and errors by kind."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from factory.store.lock import holder
from factory.store.shards import Manifest, shard_paths


@dataclass
class RunStatus:
    stored: int
    shards: int
    pending: int | None  # prepared, not stored yet (None before preparation)
    running: dict | None  # the run holding the folder's lock, if any
    window_s: float
    rate_per_s: float | None  # problems stored per second over the window (None: too few commits)
    errors: Counter = field(default_factory=Counter)  # stored rows' errors by kind
    failed_last_run: int = 0  # not stored, tried again on the next run
    last_run: dict | None = None

    @property
    def eta_s(self) -> float | None:
        if not self.pending:
            return 0.0 if self.pending == 0 else None
        return self.pending / self.rate_per_s if self.rate_per_s else None


def error_kind(error: str) -> str:
    """`HTTP 400: {...context length...}` -> `HTTP 400`; the head of anything else."""
    m = re.match(r"(HTTP \d{3})", error)
    if m:
        return m.group(1)
    return error.split(":", 1)[0][:60]


def window_rate(entries: list[dict], window_s: float, now: float) -> float | None:
    """Problems per second committed in the `window_s` before the last
    commit (or before now, while the run goes on): at least two commits."""
    timed = sorted((e["time"], e["rows"]) for e in entries if "time" in e)
    if len(timed) < 2:
        return None
    end = max(now, timed[-1][0]) if now else timed[-1][0]
    recent = [(t, r) for t, r in timed if t >= end - window_s]
    if len(recent) < 2:
        recent = timed[-2:]
    span = max(end - recent[0][0], 1e-6)
    return sum(r for _, r in recent[1:]) / span


def run_status(run_dir: Path, window_s: float = 600.0) -> RunStatus:
    import pyarrow.parquet as pq

    manifest = Manifest(run_dir / "manifest.jsonl")
    manifest.load(repair=False)
    stored = sum(e["rows"] for e in manifest.entries)
    running = holder(run_dir)
    report = run_dir / "prepared" / "report.json"
    pending = max(0, json.loads(report.read_text())["accepted"] - stored) if report.is_file() else None
    errors: Counter = Counter()
    for f in shard_paths(run_dir / "data"):
        for e in pq.read_table(f, columns=["error"]).column("error").to_pylist():
            if e:
                errors[error_kind(e)] += 1
    status = RunStatus(stored, len(manifest.entries), pending, running, window_s,
                       window_rate(manifest.entries, window_s, time.time() if running else 0.0), errors)
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        status.last_run = json.loads(metrics.read_text())["stats"]
        status.failed_last_run = status.last_run.get("problems_failed", 0)
    return status
