"""Atomic Parquet shards and the append-only manifest that makes resume exact.

A shard is written to a temporary name in the same folder, fsynced and
renamed into place, so a reader never sees half a file. Then one line naming
the shard and its uuids is appended to `manifest.jsonl`. A crash between the
two leaves a complete shard the manifest does not know yet: `open()` adopts
it. A torn last manifest line is dropped. So after any crash the set of done
problems is exactly the set of uuids in readable shards.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from factory.store.schema import SCHEMA

SHARD_RE = re.compile(r"^train-(\d{5,})(?:-p\d+)?\.parquet$")


def shard_paths(folder: Path) -> list[Path]:
    """The shards in `folder` (`data/` or a config folder), in order."""
    return sorted(folder.glob("train-*.parquet"))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_table_atomic(table: pa.Table, path: Path, compression_level: int = 3) -> None:
    # a unique temporary name: a replica declared dead may still be writing
    # the same shard as the one that replaced it
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    with open(tmp, "wb") as fh:
        pq.write_table(table, fh, compression="zstd", compression_level=compression_level)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def shard_name(seq: int) -> str:
    return f"train-{seq:05d}.parquet"


def part_name(shard: str, k: int) -> str:
    """Part `k` of a Ray chunk's shard, written while the chunk is in
    progress so that a replica dying mid-chunk loses only what came after."""
    return shard.replace(".parquet", f"-p{k:03d}.parquet")


def chunk_files(data_dir: Path, shard: str) -> list[Path]:
    """The parts of `shard` on disk, then the shard itself if written."""
    return sorted(data_dir.glob(shard.replace(".parquet", "-p*.parquet"))) + [
        p for p in [data_dir / shard] if p.exists()]


def write_shard(data_dir: Path, name: str, rows: list[dict[str, Any]]) -> None:
    """Rows in the output schema, as one atomic zstd Parquet shard."""
    write_table_atomic(pa.Table.from_pylist(rows, schema=SCHEMA), data_dir / name)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Manifest:
    """`manifest.jsonl`: one line per committed shard: file, rows, uuids."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: list[dict[str, Any]] = []

    def load(self, repair: bool = True) -> int:
        """Read committed entries; return how many trailing lines were torn."""
        self.entries = []
        if not self.path.exists():
            return 0
        lines = self.path.read_text(encoding="utf-8").splitlines()
        good = []
        for line in lines:
            try:
                entry = json.loads(line)
                if isinstance(entry, dict) and "file" in entry and "uuids" in entry:
                    good.append(entry)
                    continue
            except json.JSONDecodeError:
                pass
            break  # a torn line can only be the last; stop there
        self.entries = good
        if repair and len(good) != len(lines):
            write_text_atomic(self.path, "".join(json.dumps(e) + "\n" for e in good))
        return len(lines) - len(good)

    def append(self, entry: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.entries.append(entry)

    def files(self) -> set[str]:
        return {e["file"] for e in self.entries}


class ShardStore:
    """Buffers finished rows and commits them as shards of `shard_rows` problems."""

    def __init__(self, root: Path, shard_rows: int = 1000, flush_interval_s: float = 60.0):
        self.root = Path(root)
        self.data_dir = self.root / "data"
        self.shard_rows = shard_rows
        self.flush_interval_s = flush_interval_s
        self.manifest = Manifest(self.root / "manifest.jsonl")
        self._buffer: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._next_seq = 0
        self.done: set[str] = set()
        self.adopted = 0
        self.dropped = 0

    def open(self) -> set[str]:
        """Recover from any crash and return the uuids already stored.

        A readable shard the manifest does not list was written just before
        a crash: it is adopted. Rows in it that are already stored (written
        by a Ray worker of an earlier driver that outlived it) are dropped,
        so each problem stays stored once.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.adopted = self.dropped = 0
        for tmp in self.data_dir.glob(".*.tmp"):
            tmp.unlink()
        self.manifest.load()
        self.done = set()
        for e in self.manifest.entries:
            if (self.root / e["file"]).exists():
                self.done.update(e["uuids"])
        known = self.manifest.files()
        for shard in shard_paths(self.data_dir):
            if f"data/{shard.name}" not in known and self.adopt(shard) is not None:
                self.adopted += 1
        seqs = [int(m.group(1)) for e in self.manifest.entries if (m := SHARD_RE.match(Path(e["file"]).name))]
        self._next_seq = max(seqs, default=-1) + 1
        return set(self.done)

    def adopt(self, shard: Path, **extra: Any) -> pa.Table | None:
        """Commit a readable shard in `data/` the manifest does not list, less
        the rows already stored (a file with nothing new is deleted); the
        rows it added, or None for a torn or redundant file."""
        try:
            table = pq.read_table(shard)
        except Exception:  # noqa: BLE001 - a torn foreign file: status --check names it
            return None
        uuids = table.column("uuid").to_pylist()
        keep = [i for i, u in enumerate(uuids) if u not in self.done]
        if len(keep) < len(uuids):
            self.dropped += len(uuids) - len(keep)
            if not keep:
                shard.unlink()
                return None
            table = table.take(keep)
            write_table_atomic(table, shard)
            uuids = [uuids[i] for i in keep]
        self.commit(f"data/{shard.name}", uuids, adopted=True, **extra)
        return table

    def commit(self, rel: str, uuids: list[str], **extra: Any) -> None:
        """List a shard already written in place (by us or a Ray worker);
        `extra` (adopted, replica) is kept on its manifest line."""
        self.manifest.append({"file": rel, "rows": len(uuids), "uuids": uuids, "time": round(time.time(), 3), **extra})
        self.done.update(uuids)

    def add(self, row: dict[str, Any]) -> bool:
        """Buffer a row; return True if that committed a shard."""
        self._buffer.append(row)
        if len(self._buffer) >= self.shard_rows or (
            time.monotonic() - self._last_flush >= self.flush_interval_s
        ):
            self.flush()
            return True
        return False

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        rows, self._buffer = self._buffer, []
        name = shard_name(self._next_seq)
        self._next_seq += 1
        write_shard(self.data_dir, name, rows)
        self.commit(f"data/{name}", [r["uuid"] for r in rows])

    @property
    def next_seq(self) -> int:
        """The number the next shard would get (after open())."""
        return self._next_seq

    @property
    def pending(self) -> int:
        return len(self._buffer)
