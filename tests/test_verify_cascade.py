"""The verification cascade: normalizers, judge parsing, hostile input,
standalone `factory verify`, calibration."""

import asyncio
import json
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_factory
from factory.config import JudgeConfig, VerifyConfig
from factory.verify.cascade import Cascade
from factory.verify.judge import parse_verdict
from factory.verify.normalize import compare, load_preset, load_rules

RULES = load_rules()
DEFAULT = load_preset("default")
MCQ = "Which is largest? (A) 10 (B) 12 (C) 14 (D) 9 (E) 11"


@pytest.mark.parametrize(
    "gold, answer, expected",
    [
        ("6", "6", True), ("6", "7", False),
        ("5\\text{ cm}", "5\\text{ m}", False), ("5", "5 cm", True), ("5\\text{ cm}", "5 centimeters", True),
        ("B", "(B)", True), ("B", "12", True), ("B", "14", False), ("B", "C", False), ("B", "\\text{(B) } 12", True),
        ("30^\\circ", "30", True), ("30^{\\circ}", "30°", True),
        ("25\\%", "0.25", True), ("25", "25\\%", True), ("25\\%", "0.3", False),
        ("1000000", "1\\,000\\,000", True), ("1000000", "1,000,000", True), ("1000000", "1,000", False),
        ("5", "x = 5", True), ("5", "x = 4", False),
        ("3x-y+13=0", "3x+4y+14=0", False), ("y=2x+1", "2x - y + 1 = 0", True),
        ("Yes", "\\text{yes}", True), ("Yes", "No", False), ("No", "\\textbf{No}", True),
        ("[-2,\\infty)", "x \\geq -2", True), ("(0,1)", "0<x<1", True), ("[0,1]", "(0,1)", False),
        ("(2,3)", "(3,2)", False), ("\\{1,2\\}", "\\{2,1\\}", True),
        ("\\frac{1}{7}", "0.142857", False), ("\\frac{1}{2004!}", "\\frac{1}{2006!}", False), ("\\frac{3}{4}", "0.75", True),
        ("2021", "\\pm 2021", False), ("\\frac{1}{\\sqrt{n}}", "\\sqrt{1/n}", True), ("73", "**73**", True),
        ("1-\\frac{1}{e}", "1+\\frac{1}{e}", False), ("2\\sqrt{3}", "\\sqrt{12}", True), ("\\frac{1}{2}", "\\dfrac{1}{2}", True),
    ],
)
def test_rule_stage_comparisons(gold, answer, expected):
    assert compare(gold, answer, MCQ, DEFAULT, RULES) is expected


@pytest.mark.parametrize(
    "reply, verdict",
    [
        ("Both are 5.\nVERDICT: YES", "correct"), ("verdict: no", "incorrect"), ("**Verdict:** Yes", "correct"),
        ("VERDICT: NOT EQUIVALENT", "incorrect"), ("Yes", "correct"), ("No.", "incorrect"),
        ("<think>VERDICT: YES</think>\nVERDICT: NO", "incorrect"), ("I think maybe", "undecided"),
        ("", "undecided"), (None, "undecided"), ("yes or no, hard to say", "undecided"),
    ],
)
def test_judge_verdict_parsing(reply, verdict):
    assert parse_verdict(reply) == verdict


HOSTILE = [
    ("5", "The answer is \\boxed{10^{10^{10}}}"),
    ("1", "\\boxed{9^{9^{9^9}}}"),
    ("2", "\\boxed{10000000!}"),
    ("3", "\\boxed{" + "7" * 5000 + "}"),
    ("\\frac{1}{2}", "\\boxed{" + "\\frac{1}{" * 200 + "2" + "}" * 200 + "}"),
    ("4", "\\boxed{\\frac{1}{2"),
    ("4", "ans \x00\x00 \\boxed{4\x00}"),
    ("7", "x" * 1_000_000 + " \\boxed{7}"),
    ("7", "(" * 5000 + "\\boxed{7}"),
]


def test_hostile_inputs_get_a_verdict_in_bounded_time():
    cascade = Cascade(VerifyConfig(workers=2, timeout_s=2, memory_mb=1024))
    try:
        async def one(gold, gen):
            t = time.monotonic()
            (v,) = await cascade.verify(gold, None, [gen])
            return v, time.monotonic() - t

        async def go():
            return await asyncio.gather(*(one(g, x) for g, x in HOSTILE))

        started = time.monotonic()
        results = asyncio.run(go())
        for (gold, gen), (v, took) in zip(HOSTILE, results):
            assert v.status in ("ok", "no_answer", "timeout", "error"), (gold, v)
            assert isinstance(v.correct, bool)
        # nine rows on two workers: each bounded by its own timeout, not a queue of them
        assert time.monotonic() - started < 2 * (2 + 2) + 6
        statuses = [v.status for v, _ in results]
        assert "timeout" in statuses or "error" in statuses
        assert results[-2][0].correct is True, "the 1 MB generation still verifies"
        (after,) = asyncio.run(cascade.verify("6", None, ["\\boxed{6}"]))
        assert after.status == "ok" and after.correct, "the pool works after hostile input"
    finally:
        cascade.close()


def test_single_hung_row_returns_within_timeout_plus_two():
    cascade = Cascade(VerifyConfig(workers=2, timeout_s=1))
    try:
        t = time.monotonic()
        (v,) = asyncio.run(cascade.verify("5", None, ["\\boxed{10^{10^{10}}}"]))
        assert v.status == "timeout" and not v.correct
        assert time.monotonic() - t < 1 + 2
    finally:
        cascade.close()


def test_unfinished_generation_never_counts():
    cascade = Cascade(VerifyConfig(workers=1))
    try:
        v = asyncio.run(cascade.verify("6", None, ["so \\boxed{6}", "<think>\\boxed{6}"], ["length", "stop"]))
        assert [x.status for x in v] == ["no_answer", "no_answer"] and not any(x.correct for x in v)
    finally:
        cascade.close()


def test_factory_verify_jsonl_lists_and_scalars(tmp_path):
    src = tmp_path / "in.jsonl"
    rows = [
        {"id": 1, "answer": "6", "generation": ["\\boxed{6}", "\\boxed{7}", "no answer"]},
        {"id": 2, "answer": "\\frac{1}{2}", "generation": ["\\boxed{0.5}"]},
    ]
    src.write_text("\ufeff" + "".join(json.dumps(r) + "\n" for r in rows) + "not json\n[1]\n")
    out = tmp_path / "out.jsonl"
    proc = run_factory("verify", src, "-o", out, check=True)
    assert "2 rows, 4 generations: 2 correct" in proc.stdout
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in got] == [1, 2]
    assert got[0]["verify_status"] == ["ok", "ok", "no_answer"]
    assert got[0]["correct_math_verify"] == [True, False, False] and got[0]["correct"] == [True, False, False]
    assert got[0]["extracted_answer"] == ["6", "7", None] and got[0]["correct_judge"] == [None] * 3
    rejects = [json.loads(line) for line in (tmp_path / "out.jsonl.rejects.jsonl").read_text().splitlines()]
    assert [(r["row"], r["reason"]) for r in rejects] == [(3, "invalid_json"), (4, "not_an_object")]

    scalar = tmp_path / "s.parquet"
    pq.write_table(pa.Table.from_pylist([{"gold": "42", "text": "so \\boxed{42}", "extra": 1.5}]), scalar)
    out2 = tmp_path / "s_out.parquet"
    run_factory("verify", scalar, "-o", out2, "--gold-column", "gold", "--generation-column", "text", check=True)
    row = pq.read_table(out2).to_pylist()[0]
    assert row["extra"] == 1.5 and row["correct"] is True and row["verify_status"] == "ok"


def test_factory_verify_names_a_missing_column(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"answer": "1", "gen": "x"}) + "\n")
    proc = run_factory("verify", src, "-o", tmp_path / "o.jsonl")
    assert proc.returncode == 2 and "column 'generation' not found" in proc.stderr and "Traceback" not in proc.stderr


def test_judge_sees_only_rule_rejects(tmp_path, fake_server):
    url = fake_server()
    src = tmp_path / "in.jsonl"
    rows = [{"problem": f"Compute {i}.", "answer": str(i), "generation": [f"\\boxed{{{i}}}", f"I think {i + 1}", f"\\boxed{{{i + 1}}}"]}
            for i in range(12)]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o.jsonl"
    run_factory("verify", src, "-o", out, "--judge-base-url", url, "--judge-model", "fake-judge", check=True)
    got = [json.loads(line) for line in out.read_text().splitlines()]
    verdicts = [j for r in got for j in r["correct_judge"][1:]]
    for r in got:
        assert r["correct_math_verify"][0] is True and r["correct_judge"][0] is None  # rule-correct: not judged
        for k in (1, 2):
            assert r["correct"][k] == (r["correct_judge"][k] is True)  # undecided (None) never counts
    assert True in verdicts and False in verdicts and None in verdicts


# The last labelled set at its first score: no rule was ever changed for it.
# `blind10.jsonl` (200 traces written blind by two writers who never saw the
# rules) first scored 98.5% (197 of 200), no false positive, none lost to raw
# Math-Verify (raw: 87.0%, 5 false positives). Its three misses are left
# unread, so this stays a measure of cases the rules were not written for.
HELD_OUT = {"accuracy": 0.985, "fp": 0, "lost": 0}


def test_cascade_is_a_superset_of_raw_math_verify_on_every_labelled_set():
    """Nothing raw Math-Verify gets right is lost on the sets the rules were
    tuned on, with at most 0.5% false positives and 99% accuracy; the set
    never tuned on (the last) holds the level measured when it was added."""
    from factory.verify.standalone import LABELLED_SETS, calibrate

    results = {r.path.name: r for r in asyncio.run(calibrate(VerifyConfig(workers=2, judge=JudgeConfig())))}
    assert set(results) == set(LABELLED_SETS)
    for name, res in results.items():
        total, held_out = res.scores["ALL"], name == LABELLED_SETS[-1]
        assert total.n >= 150, name
        assert total.ours_right > total.raw_right, name
        assert all(d["cascade"] != d["raw"] for d in res.disagreements)
        lost = [d for d in res.disagreements if d["raw"] == d["label"]]
        assert len(lost) <= (HELD_OUT["lost"] if held_out else 0), (name, lost)
        assert total.fp <= (HELD_OUT["fp"] if held_out else 0.005 * total.n), (name, res.mistakes)
        assert total.ours_right / total.n >= (HELD_OUT["accuracy"] if held_out else 0.99), (name, res.mistakes)


def test_calibrate_cli_prints_both_side_by_side_and_the_disagreements(tmp_path):
    cases = tmp_path / "cases.jsonl"
    rows = [{"id": "a", "category": "text", "gold": "No", "generation": "No, it cannot be done.", "label": True},
            {"id": "b", "category": "pm", "gold": "2", "generation": "\\boxed{\\pm 2}", "label": False},
            {"id": "c", "category": "pm", "gold": "3", "generation": "\\boxed{3}", "label": True}]
    cases.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run_factory("verify", "--calibrate", "--cases", cases, check=True, env={"COLUMNS": "200"})
    assert "raw acc" in proc.stdout and "ours acc" in proc.stdout and "raw right, ours wrong" in proc.stdout
    assert "1 case(s) where the cascade and raw Math-Verify disagree" in proc.stdout  # the text answer
    assert "│ a  │ text" in proc.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "gold": "1"}\n')
    proc = run_factory("verify", "--calibrate", "--cases", bad)
    assert proc.returncode == 2 and "bad.jsonl:1: a labelled case needs 'category'" in proc.stderr
