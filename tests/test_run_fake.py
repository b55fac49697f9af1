"""End-to-end runs against the fake OpenAI server: fast checks of the whole
pipeline, resume after SIGKILL / SIGINT, and the run summary."""

import collections
import os
import signal
import subprocess

import datasets
import pytest

from conftest import FACTORY, ROOT, manifest_shards, read_uuids, run_factory, sample_rows, wait_for, write_job, write_jsonl, SAMPLE_PROBLEMS


def fake_job(tmp_path, url, out, rows=None, **sections):
    src = write_jsonl(tmp_path / "problems.jsonl", rows if rows is not None else sample_rows())
    engine = {"backend": "openai", "base_url": url, "max_concurrency": 4, "model": "fake"}
    engine.update(sections.pop("engine", {}))
    return write_job(tmp_path / f"{out.name}.yaml", src, out, engine=engine, **sections)


def test_full_run_writes_openr1_dataset(tmp_path, fake_server):
    url = fake_server()
    out = tmp_path / "out"
    proc = run_factory("run", fake_job(tmp_path, url, out), check=True)
    assert "run summary" in proc.stdout and "problems generated (this run)" in proc.stdout
    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert len(ds) == SAMPLE_PROBLEMS and len(set(ds["uuid"])) == SAMPLE_PROBLEMS  # none shares more than boilerplate with a benchmark
    assert all(len(g) == 2 for g in ds["generations"])
    # the fake server answers right about half the time: both verdicts occur
    counts = collections.Counter(c for row in ds["correctness_math_verify"] for c in row)
    assert counts[True] > 0 and counts[False] > 0
    assert all(s == ["ok", "ok"] for s in ds["verify_status"])
    assert sum(ds["correctness_count"]) == counts[True]
    # a second run generates nothing
    proc = run_factory("run", out.with_suffix(".yaml"), check=True)
    assert "nothing to generate" in proc.stderr
    assert sorted(read_uuids(out)) == sorted(ds["uuid"])


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_run_resumes_exactly(tmp_path, fake_server, sig):
    url_fast = fake_server()
    ref = tmp_path / "ref"
    run_factory("run", fake_job(tmp_path, url_fast, ref), check=True)

    url_slow = fake_server(latency=0.3)
    out = tmp_path / "out"
    job = fake_job(tmp_path, url_slow, out)
    # Ctrl-C as in a terminal, even when the tests themselves run in the
    # background (which makes children inherit an ignored SIGINT)
    proc = subprocess.Popen([*FACTORY, "run", str(job)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for(lambda: manifest_shards(out) >= 3, 60, "three shards")
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "run the same command to resume" in err
    partial = read_uuids(out)
    assert 0 < len(partial) < SAMPLE_PROBLEMS

    run_factory("run", job, check=True)
    resumed = read_uuids(out)
    assert len(resumed) == len(set(resumed)) == SAMPLE_PROBLEMS, "a problem was generated twice or lost"
    assert set(resumed) == set(read_uuids(ref))
    assert set(partial) <= set(resumed)


def test_bad_request_is_recorded_not_retried(tmp_path, fake_server):
    """A 4xx answer is stored on the row with its error; the run finishes."""
    url = fake_server()
    out = tmp_path / "out"
    # the fake server rejects a body it cannot parse: send an unknown 'n' type
    job = fake_job(tmp_path, url, out, rows=sample_rows(3), engine={"extra_body": {"n": "not-a-number"}})
    run_factory("run", job, check=True)
    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert len(ds) == 3
    assert all(e.startswith("HTTP 400: ") and "bad request" in e for e in ds["error"])
    assert all(g == [] for g in ds["generations"])


def test_run_with_judge_on_rule_rejects(tmp_path, fake_server):
    """The judge (here the generation engine itself) sees only rule rejects;
    its verdicts land in correctness_llama, null where not judged."""
    url = fake_server()
    out = tmp_path / "out"
    run_factory("run", fake_job(tmp_path, url, out, verify={"judge": {"enabled": True}}), check=True)
    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert set(ds["judge_model"]) == {"fake"}
    seen = collections.Counter()
    for row in ds:
        for rule, judge, verdict, correct in zip(row["correctness_math_verify"], row["correctness_llama"],
                                                 row["judge_verdicts"], row["correct"]):
            if rule:
                assert judge is None and verdict is None and correct
            else:
                assert verdict in ("correct", "incorrect", "undecided")
                assert correct == (verdict == "correct") and judge == {"correct": True, "incorrect": False}.get(verdict)
                seen[verdict] += 1
        assert row["correctness_count"] == sum(row["correct"])
    assert seen["correct"] and seen["incorrect"] and seen["undecided"]


def test_summary_of_a_resumed_run_tells_what_is_stored_and_rejected(tmp_path, fake_server):
    """Re-running a finished job generates nothing and says why: every
    prepared problem is already stored, and preparation's rejects stay counted."""
    import re

    rows = sample_rows(10) + [{"problem": "No answer here.", "answer": ""}, {"problem": "", "answer": "3"}]
    job = fake_job(tmp_path, fake_server(), tmp_path / "out", rows=rows)
    first = " ".join(run_factory("run", job, check=True).stdout.split())
    again = run_factory("run", job, check=True)
    text = " ".join(again.stdout.split())
    for summary, skipped in ((first, 0), (text, 10)):
        assert re.search(rf"problems skipped \(already stored\)\W+{skipped}\b", summary), summary
        assert re.search(r"problems rejected by preparation\W+2\b", summary), summary
    assert "nothing to generate" in again.stderr


def test_status_watch_on_a_running_job_shows_pending_rate_eta(tmp_path, fake_server):
    """`status --watch` on a run in progress refreshes, and ends by itself with the run."""
    import re

    from conftest import run_in_background

    out = tmp_path / "out"
    job = fake_job(tmp_path, fake_server(latency=0.2), out, engine={"max_concurrency": 2},
                   output={"shard_rows": 2, "flush_interval_s": 0.2})
    with run_in_background(job, out) as run:
        watch = subprocess.run([*FACTORY, "status", str(out), "--watch", "--interval", "0.5", "--window", "1"], cwd=ROOT,
                               capture_output=True, text=True, timeout=300)
    text = watch.stdout
    assert watch.returncode == 0 and text.count("problems stored in") >= 2, text + watch.stderr
    assert f"running (pid {run.pid}" in text and text.rsplit("problems stored in", 1)[1].split("\n")[0].endswith("not running")
    rate = re.search(r"rate \(last 1 min\): ([\d.]+) problems/min", text)
    assert rate and float(rate.group(1)) > 0, text
    assert re.search(r"ETA: \d+ min \d\d s", text), text
    pending = [int(x) for x in re.findall(r"pending \(prepared, not stored yet\): (\d+)", text)]
    assert pending[0] > 0 and pending[-1] == 0 and pending == sorted(pending, reverse=True), pending
    assert "pending (prepared, not stored yet): 0" in run_factory("status", out, check=True).stdout


def test_status_counts_stored_errors_by_kind(tmp_path, fake_server):
    out = tmp_path / "out"
    job = fake_job(tmp_path, fake_server(), out, rows=sample_rows(3), engine={"extra_body": {"n": "not-a-number"}})
    run_factory("run", job, check=True)
    text = run_factory("status", out, check=True).stdout
    assert "stored with an error (the request itself was rejected, e.g. a prompt over the context length): 3 (HTTP 400: 3)" in text
