import json

import pyarrow.parquet as pq
import pytest

from factory.engines.base import Completion, GenerationResult
from factory.worker import build_row, choose_message_trace
from factory.store.schema import OPENR1_COLUMNS, SCHEMA
from factory.store.shards import ShardStore
from factory.verify.cascade import GenVerdict


def make_row(i: int, n: int = 2) -> dict:
    problem = {"problem": f"p{i}", "solution": "s", "answer": "1", "problem_type": "Algebra",
               "question_type": "math-word-problem", "source": "x", "uuid": f"u{i}"}
    result = GenerationResult([Completion(f"\\boxed{{{k}}}", "stop", 3) for k in range(n)], prompt_tokens=5, latency_s=0.1)
    verdicts = [GenVerdict(str(k), "ok", k == 1) for k in range(n)]
    return build_row(problem, f"prompt {i}", result, verdicts, "m")


def test_row_layout_matches_openr1():
    row = make_row(0)
    assert list(row)[: len(OPENR1_COLUMNS)] == OPENR1_COLUMNS
    assert row["correctness_count"] == 1 and row["correctness_math_verify"] == [False, True]
    assert row["correctness_llama"] is None
    assert row["messages"] == [{"role": "user", "content": "prompt 0"}, {"role": "assistant", "content": "\\boxed{1}"}]


def test_message_trace_is_a_seeded_random_correct_one():
    picks = {choose_message_trace(f"u{i}", [True, False, True, True], 0) for i in range(50)}
    assert picks == {0, 2, 3}
    assert choose_message_trace("u", [False, False], 0) == 0
    assert choose_message_trace("u7", [True] * 4, 1) == choose_message_trace("u7", [True] * 4, 1)


def test_shards_are_written_atomically_with_schema(tmp_path):
    store = ShardStore(tmp_path, shard_rows=3)
    assert store.open() == set()
    for i in range(7):
        store.add(make_row(i))
    store.flush()
    shards = sorted((tmp_path / "data").glob("*"))
    assert [p.name for p in shards] == ["train-00000.parquet", "train-00001.parquet", "train-00002.parquet"]
    table = pq.read_table(tmp_path / "data")
    assert table.schema.equals(SCHEMA) and table.num_rows == 7
    assert pq.ParquetFile(shards[0]).metadata.row_group(0).column(0).compression == "ZSTD"
    entries = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [e["rows"] for e in entries] == [3, 3, 1]
    assert ShardStore(tmp_path).open() == {f"u{i}" for i in range(7)}


def test_recovery_drops_torn_manifest_line_and_adopts_orphans(tmp_path):
    store = ShardStore(tmp_path, shard_rows=2)
    store.open()
    for i in range(4):
        store.add(make_row(i))
    # simulate a crash after the shard rename but before/during the manifest append
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    (tmp_path / "manifest.jsonl").write_text(lines[0] + "\n" + lines[1][:20])
    (tmp_path / "data" / ".train-00002.parquet.tmp").write_bytes(b"half a file")
    again = ShardStore(tmp_path, shard_rows=2)
    assert again.open() == {"u0", "u1", "u2", "u3"}
    assert again.adopted == 1
    assert not list((tmp_path / "data").glob(".*.tmp"))
    again.add(make_row(4))
    again.flush()
    assert (tmp_path / "data" / "train-00002.parquet").exists()
    assert ShardStore(tmp_path).open() == {f"u{i}" for i in range(5)}


def test_shard_listed_but_missing_is_not_counted_done(tmp_path):
    store = ShardStore(tmp_path, shard_rows=1)
    store.open()
    store.add(make_row(0))
    store.add(make_row(1))
    (tmp_path / "data" / "train-00000.parquet").unlink()
    assert ShardStore(tmp_path).open() == {"u1"}


@pytest.mark.parametrize("n", [1, 4])
def test_list_lengths_follow_n(tmp_path, n):
    row = make_row(0, n)
    for col in ("generations", "finish_reasons", "is_reasoning_complete", "correctness_math_verify", "extracted_answers", "verify_status"):
        assert len(row[col]) == n
