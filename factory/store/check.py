"""`factory status OUT --check`: the manifest against the shards on disk."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from factory.store.shards import Manifest, shard_paths


@dataclass
class StoreCheck:
    shards: int = 0
    rows: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_store(root: Path) -> StoreCheck:
    """Every listed shard readable with the rows and uuids the manifest says,
    no shard unlisted, no uuid twice. Reads; never repairs (a run does)."""
    res = StoreCheck()
    manifest = Manifest(root / "manifest.jsonl")
    if manifest.load(repair=False):
        res.problems.append(f"manifest.jsonl: line {len(manifest.entries) + 1} is torn or invalid")
    seen: Counter = Counter()
    for e in manifest.entries:
        path = root / e["file"]
        if not path.is_file():
            res.problems.append(f"{e['file']}: listed in the manifest but missing")
            continue
        try:
            uuids = pq.read_table(path, columns=["uuid"]).column("uuid").to_pylist()
        except Exception as exc:  # noqa: BLE001 - any unreadable file is damage to report
            res.problems.append(f"{e['file']}: unreadable ({type(exc).__name__}: {exc})")
            continue
        res.shards += 1
        res.rows += len(uuids)
        if len(uuids) != e["rows"]:
            res.problems.append(f"{e['file']}: {len(uuids)} rows, the manifest says {e['rows']}")
        if sorted(uuids) != sorted(e["uuids"]):
            res.problems.append(f"{e['file']}: uuids differ from the manifest")
        seen.update(uuids)
    listed = {e["file"] for e in manifest.entries}
    for shard in shard_paths(root / "data"):
        if f"data/{shard.name}" not in listed:
            res.problems.append(f"data/{shard.name}: not in the manifest (a re-run adopts it)")
            try:
                seen.update(pq.read_table(shard, columns=["uuid"]).column("uuid").to_pylist())
            except Exception as exc:  # noqa: BLE001
                res.problems.append(f"data/{shard.name}: unreadable ({type(exc).__name__}: {exc})")
    dups = [u for u, n in seen.items() if n > 1]
    if dups:
        res.problems.append(f"{len(dups)} uuid(s) stored more than once, e.g. {dups[0]}")
    return res
