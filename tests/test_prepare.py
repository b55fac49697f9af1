"""The preparation stage: every row accounted for, each reason counted."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from conftest import run_factory
from factory.config import ConfigError, SourceConfig, load_source
from factory.sources.prepare import check_source, prepare_to_dir

LONG = ("A farmer has a rectangular field whose length is three times its width and whose perimeter is "
        "{p} metres; he plants trees along the whole boundary, one tree every two metres, starting at a corner. "
        "How many trees does he plant in total?")
MATH500 = json.loads(open(__import__("factory.sources.decontaminate", fromlist=["BENCH_DIR"]).BENCH_DIR / "math500.jsonl").readline())


def good(i, **kw):
    row = {"problem": f"Compute ${i} + {i}$ exactly, showing each step.", "answer": str(2 * i), "solution": "",
           "problem_type": "Algebra", "question_type": "math-word-problem", "source": "olympiads"}
    row.update(kw)
    return row


def messy_lines() -> list[bytes]:
    lines = [json.dumps(good(i)).encode() for i in range(5)]                           # rows 1-5 fine
    lines += [
        b"{not json",                                                                # 6 invalid_json
        b"[1, 2, 3]",                                                                # 7 not_an_object
        json.dumps(good(6, problem="   ")).encode(),                                 # 8 empty_problem
        json.dumps({"answer": "1"}).encode(),                                        # 9 empty_problem (missing)
        json.dumps(good(7, answer="")).encode(),                                     # 10 missing_answer
        json.dumps(good(8, answer="proof")).encode(),                                # 11 missing_answer
        json.dumps(good(9, problem="x" * 30_000)).encode(),                          # 12 too_long
        json.dumps(good(10, source={"nested": 1})).encode(),                         # 13 bad_field
        json.dumps(good(1, problem="Compute  $1 + 1$   exactly,\tshowing each step.")).encode(),  # 14 duplicate_exact
        json.dumps(good(11, problem=LONG.format(p=80))).encode(),                    # 15 kept
        json.dumps(good(12, problem=LONG.format(p=80).replace("in total", "altogether"))).encode(),  # 16 duplicate_near
        json.dumps(good(13, problem=MATH500["problem"], answer=MATH500["answer"])).encode(),  # 17 contaminated
        b"\xff\xfe bad bytes",                                                       # 18 bad_encoding
        json.dumps(good(14, problem=12345)).encode(),                                # 19 kept: a number becomes text
        b"",                                                                         # blank: not a row
        json.dumps(good(15, source="cn_k12")).encode(),                              # 20 filtered_source
    ]
    return lines


EXPECTED = {"invalid_json": 1, "not_an_object": 1, "empty_problem": 2, "missing_answer": 2, "too_long": 1,
            "bad_field": 1, "duplicate_exact": 1, "duplicate_near": 1, "contaminated": 1, "bad_encoding": 1,
            "filtered_source": 1}


def write_messy(path, opener=open):
    data = b"\xef\xbb\xbf" + b"\r\n".join(messy_lines()) + b"\r\n"
    with opener(path, "wb") as fh:
        fh.write(data)
    return path


def check_report(out, read=20):
    report = json.loads((out / "report.json").read_text())
    assert report["read"] == read
    assert report["rejected_by_reason"] == EXPECTED
    assert report["read"] == report["accepted"] + report["rejected"]
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == report["rejected"]
    by_row = {r["row"]: r["reason"] for r in rejects}
    assert by_row[6] == "invalid_json" and by_row[7] == "not_an_object" and by_row[14] == "duplicate_exact"
    assert by_row[16] == "duplicate_near" and by_row[17] == "contaminated" and by_row[18] == "bad_encoding"
    contaminated = next(r for r in rejects if r["reason"] == "contaminated")
    assert MATH500["id"] in contaminated["detail"]
    near = next(r for r in rejects if r["reason"] == "duplicate_near")
    problems = pq.read_table(out / "problems.parquet").to_pylist()
    assert near["detail"].endswith("of row 15")
    assert next(r for r in rejects if r["reason"] == "duplicate_exact")["detail"].endswith("as row 2")
    assert len(problems) == report["accepted"] == 7
    assert len({p["uuid"] for p in problems}) == 7
    assert any(p["problem"] == "12345" for p in problems)
    return problems


def cfg(path, **kw) -> SourceConfig:
    return SourceConfig(path=path, include_sources=["olympiads"], **kw)


@pytest.mark.parametrize("suffix, opener", [(".jsonl", open), (".jsonl.gz", gzip.open),
                                            (".jsonl.zst", lambda p, m: zstandard.open(p, m))])
def test_messy_jsonl_every_row_accounted(tmp_path, suffix, opener):
    src = write_messy(tmp_path / f"messy{suffix}", opener)
    prepare_to_dir(cfg(src), tmp_path / "out")
    check_report(tmp_path / "out")


def test_parquet_folder_glob_and_dataset_name(tmp_path):
    rows = [good(i) for i in range(10)] + [good(3)]
    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:6]), folder / "a.parquet")
    pq.write_table(pa.Table.from_pylist(rows[6:]), folder / "b.parquet")
    for source in (SourceConfig(path=folder), SourceConfig(path=folder / "*.parquet"),
                   SourceConfig(dataset=str(folder))):  # datasets' streaming loader, as for a Hub name
        out = tmp_path / f"out{hash(str(source))}"
        report = prepare_to_dir(source, out)
        assert (report.read, report.accepted, report.rejected) == (11, 10, {"duplicate_exact": 1})


def test_sample_is_seeded_and_counted(tmp_path):
    src = tmp_path / "s.jsonl"
    src.write_text("".join(json.dumps(good(i)) + "\n" for i in range(40)))
    picks = []
    for seed in (1, 1, 2):
        out = tmp_path / f"o{len(picks)}"
        r = prepare_to_dir(SourceConfig(path=src, sample=10, seed=seed), out)
        assert (r.read, r.accepted, r.rejected) == (40, 10, {"not_sampled": 30})
        picks.append([p["uuid"] for p in pq.read_table(out / "problems.parquet").to_pylist()])
    assert picks[0] == picks[1] != picks[2]


def test_filters_and_lengths(tmp_path):
    src = tmp_path / "f.jsonl"
    rows = [good(1, problem_type="Geometry"), good(2, question_type="MCQ"), good(3), good(4, problem="Tiny?")]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = prepare_to_dir(SourceConfig(path=src, include_problem_types=["Algebra"], include_question_types=["math-word-problem"],
                                    min_problem_chars=10), tmp_path / "o")
    assert r.accepted == 1 and r.rejected == {"filtered_problem_type": 1, "filtered_question_type": 1, "too_short": 1}


def test_load_source_errors():
    with pytest.raises(ConfigError, match="dedup.threshold"):
        load_source(".", ["dedup.threshold=2"])
    cfg = load_source(".", ["decontaminate.benchmarks=[nope]"])  # config only names benchmarks
    with pytest.raises(ConfigError, match="unknown benchmark 'nope'"):
        check_source(cfg)  # the stage knows which exist
    proc = run_factory("prepare", ".", "-o", "/nonexistent/out", "--set", "decontaminate.benchmarks=[nope]")
    assert proc.returncode == 2 and "unknown benchmark 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_prepare_cli_prints_the_table(tmp_path):
    src = write_messy(tmp_path / "m.jsonl")
    proc = run_factory("prepare", src, "-o", tmp_path / "out", "--set", "include_sources=[olympiads]", check=True)
    assert "rows read" in proc.stdout and "duplicate_near" in proc.stdout and "contaminated" in proc.stdout
    check_report(tmp_path / "out")
    proc = run_factory("prepare", src, "-o", tmp_path / "o2", "--set", "dedup.bogus=1")
    assert proc.returncode == 2 and "dedup.bogus: unknown key" in proc.stderr


def test_run_on_a_messy_file_reports_rejects(tmp_path, fake_server):
    from test_run_fake import fake_job

    url = fake_server()
    src = write_messy(tmp_path / "m.jsonl")
    out = tmp_path / "run"
    job = fake_job(tmp_path, url, out, rows=[])
    job.write_text(job.read_text().replace(str(tmp_path / "problems.jsonl"), str(src)))
    proc = run_factory("run", job, "--set", "source.include_sources=[olympiads]", check=True)
    assert "20 rows read, 7 problems, 13 rejected" in proc.stderr
    assert "problems rejected by preparation" in proc.stdout
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert len(ds) == 7
    check_report(out / "prepared")
