"""Store integrity (kill -9 at random moments, status --check), the dataset
card and configs, and trainer exports."""

import collections
import json
import os
import shutil
import urllib.request

import datasets
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import ROOT, SAMPLE_PROBLEMS, kill_at_random, read_uuids, run_factory, stored_rows
from test_run_fake import fake_job


@pytest.fixture
def finished_run(tmp_path, fake_server):
    out = tmp_path / "out"
    run_factory("run", fake_job(tmp_path, fake_server(), out), check=True)
    return out


@pytest.mark.reliability
def test_kill9_at_random_points_then_resume_is_exact(tmp_path, fake_server):
    ref = tmp_path / "ref"
    run_factory("run", fake_job(tmp_path, fake_server(), ref), check=True)
    out = tmp_path / "out"
    # ~30 s of generation at one request in flight: far longer than the twenty
    # short lives below, so every kill lands mid-run whatever the box's speed
    url = fake_server(latency=0.6)
    job = fake_job(tmp_path, url, out, engine={"max_concurrency": 1},
                   output={"shard_rows": 2, "flush_interval_s": 0.2})
    kills = kill_at_random(job, out, 20, SAMPLE_PROBLEMS)
    assert kills >= 20, f"only {kills} kills landed mid-run"
    run_factory("run", job, check=True)
    uuids = read_uuids(out)
    assert len(uuids) == len(set(uuids)) == SAMPLE_PROBLEMS
    assert set(uuids) == set(read_uuids(ref))
    cols = ["generations", "correctness_math_verify", "correct", "messages", "error"]
    assert stored_rows(out, cols) == stored_rows(ref, cols)  # the store an uninterrupted run writes, row for row
    # work lost: a kill costs the request in flight and at most one finished,
    # not yet flushed row (shards of 2 rows, flushed every 0.2 s)
    redone = json.loads(urllib.request.urlopen(f"{url}/stats", timeout=5).read())["requests"] - SAMPLE_PROBLEMS
    assert 0 <= redone <= 2 * kills, f"{redone} requests generated again over {kills} kills"
    proc = run_factory("status", out, "--check", check=True)
    assert "ok" in proc.stdout


def test_status_check_reports_damage(finished_run):
    out = finished_run
    assert run_factory("status", out, "--check").returncode == 0
    shards = sorted((out / "data").glob("*.parquet"))
    shards[0].write_bytes(shards[0].read_bytes()[:100])
    shards[1].unlink()
    (out / "data" / "train-99999.parquet").write_bytes(shards[2].read_bytes())
    proc = run_factory("status", out, "--check")
    assert proc.returncode == 1
    assert f"{shards[0].name}: unreadable" in proc.stderr
    assert f"{shards[1].name}: listed in the manifest but missing" in proc.stderr
    assert "train-99999.parquet: not in the manifest" in proc.stderr
    assert "stored more than once" in proc.stderr


def test_card_and_configs(finished_run):
    out = finished_run
    text = (out / "README.md").read_text()
    front = yaml.safe_load(text.split("---")[1])
    assert {c["config_name"] for c in front["configs"]} == {"default", "all"}
    assert front["size_categories"] == ["n<1K"] and "text-generation" in front["task_categories"]
    all_ds = datasets.load_dataset(str(out), "all", split="train")
    default = datasets.load_dataset(str(out), "default", split="train")
    assert len(all_ds) == SAMPLE_PROBLEMS
    assert len(default) == sum(c > 0 for c in all_ds["correctness_count"]) > 0
    assert all(c > 0 for c in default["correctness_count"])
    assert f"| `default` | {len(default)} |" in text and f"| `all` | {SAMPLE_PROBLEMS} |" in text
    assert "Please reason step by step" in text and "### By source" in text
    assert "token" not in json.dumps(front).lower()
    assert str(ROOT) not in text and str(out) not in text  # no local path goes to the Hub
    assert "Prompt template (`r1-math.jinja`)" in text


def test_exports_for_trainers(finished_run, tmp_path):
    out = finished_run
    rows = datasets.load_dataset(str(out), "all", split="train").to_list()
    by_uuid = {r["uuid"]: r for r in rows}
    for kind in ("sft", "rl", "dpo"):
        run_factory("export", kind, out, "-o", tmp_path / kind, check=True)
    sft = pq.read_table(tmp_path / "sft").to_pylist()
    assert len(sft) == sum(r["correctness_count"] > 0 for r in rows)
    for r in sft:
        src = by_uuid[r["uuid"]]
        assert r["messages"][1]["content"] in [g for g, c in zip(src["generations"], src["correct"]) if c]
    rl = pq.read_table(tmp_path / "rl").to_pylist()
    assert len(rl) == SAMPLE_PROBLEMS
    for r in rl:
        src = by_uuid[r["uuid"]]
        assert r["answer"] == src["answer"] and r["prompt"][0]["role"] == "user"
        expected = [-1.0 if e is None else (1.0 if c else 0.0) + (0.1 if f else 0.0)
                    for c, e, f in zip(src["correct"], src["extracted_answers"], src["is_reasoning_complete"])]
        assert r["rewards"] == pytest.approx(expected)
    dpo = pq.read_table(tmp_path / "dpo").to_pylist()
    mixed = [r for r in rows if 0 < r["correctness_count"] < len(r["generations"])]
    assert len(dpo) == len(mixed) > 0
    for r in dpo:
        src = by_uuid[r["uuid"]]
        right = {g for g, c in zip(src["generations"], src["correct"]) if c}
        assert r["chosen"][0]["content"] in right and r["rejected"][0]["content"] not in right
    proc = run_factory("export", "bogus", out, "-o", tmp_path / "x")
    assert proc.returncode == 2 and "unknown export 'bogus'" in proc.stderr


def test_finalize_reads_each_shard_once_and_keeps_the_jobs_license(finished_run, monkeypatch):
    from factory.store.finalize import finalize

    out = finished_run
    job = json.loads((out / "job.json").read_text())
    job["output"]["license"] = "cc-by-4.0"
    (out / "job.json").write_text(json.dumps(job))
    reads = collections.Counter()
    real_read_table, real_file = pq.read_table, pq.ParquetFile

    def opened(source) -> None:  # data/train-00000.parquet, default/train-00000.parquet
        reads["/".join(str(source).split(os.sep)[-2:])] += 1

    def read_table(source, *a, **k):
        opened(source)
        return real_read_table(source, *a, **k)

    def parquet_file(source, *a, **k):
        opened(source)
        return real_file(source, *a, **k)

    monkeypatch.setattr(pq, "read_table", read_table)
    monkeypatch.setattr(pq, "ParquetFile", parquet_file)
    shutil.rmtree(out / "default")
    finalize(out)
    shards = sorted(f"data/{p.name}" for p in (out / "data").glob("train-*.parquet"))
    assert len(shards) > 1 and {s: reads[s] for s in shards} == {s: 1 for s in shards}
    front = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert front["license"] == "cc-by-4.0"
    assert sorted(p.name for p in (out / "default").glob("*.parquet"))  # the configs were written
