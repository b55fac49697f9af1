"""Decontamination: copies and light rewordings of benchmark problems are caught,
clean problems that share only boilerplate and formula fragments are kept."""

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from factory.config import DecontamConfig, SourceConfig
from factory.sources.decontaminate import BENCH_DIR, LABELLED, SHIPPED, Decontaminator, DecontamError
from factory.sources.prepare import prepare_to_dir
from numina_like import _benchmark_copies

DEFAULT = ["math500", "aime2024", "aime2025", "amc2023"]

# clean problems whose only overlap with a benchmark item is instruction boilerplate, generic phrasing
# or a formula fragment; the plain 8-gram rule rejects every one of them
BOILERPLATE_ONLY = [
    "What is $\\frac{7}{3} - \\frac{1}{4}$? Express your answer as a common fraction.",
    "A cylindrical tank holds $72\\pi$ cubic meters of water and is 6 meters tall. What is the radius of the tank, "
    "in meters? Express your answer in simplest radical form.",
    "Two fair six-sided dice are rolled. What is the probability that the sum of the numbers shown is $7$?",
    "What is the sum of the digits of $2^{10}$?",
    "A spinner has 8 equal sections numbered 1 to 8. It is spun twice. The probability that the two numbers differ "
    "by 3 is $\\frac{m}{n}$, where $m$ and $n$ are relatively prime positive integers. Find $m+n$.",
    "Let $x,$ $y,$ and $z$ be positive real numbers such that $x + 2y + 3z = 6.$ Find the maximum value of $xyz.$",
]


def labelled():
    return [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def ours():
    return Decontaminator(list(SHIPPED))


@pytest.fixture(scope="module")
def plain():
    return Decontaminator(list(SHIPPED), rule="ngram")


def score(deco, split):
    flagged, rows, right = Counter(), Counter(), Counter()
    for r in labelled():
        if r["split"] != split:
            continue
        rows[r["kind"]] += 1
        hit = deco.check(r["problem"])
        flagged[r["kind"]] += bool(hit)
        right[r["kind"]] += bool(hit) and hit.label == r.get("benchmark_id")
    return rows, flagged, right


def test_labelled_set_shape():
    rows = labelled()
    kinds = Counter((r["split"], r["kind"]) for r in rows)
    assert sum(v for (s, k), v in kinds.items() if k == "copied") >= 40
    assert sum(v for (s, k), v in kinds.items() if k == "reworded") >= 40
    assert sum(v for (s, k), v in kinds.items() if k == "clean_similar") >= 80
    assert all(kinds[("heldout", k)] >= 10 for k in ("copied", "reworded", "clean_similar"))
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        if r["kind"] != "clean_similar":
            name, _, item = r["benchmark_id"].partition(":")
            assert name in SHIPPED and item


@pytest.mark.parametrize("split", ["dev", "heldout"])
def test_labelled_recall_and_false_flags(ours, plain, split):
    rows, flagged, right = score(ours, split)
    _, plain_flagged, _ = score(plain, split)
    assert flagged["copied"] == right["copied"] == rows["copied"]      # every copy, named right
    assert flagged["reworded"] >= 0.85 * rows["reworded"]
    assert right["reworded"] == flagged["reworded"]
    assert flagged["clean_similar"] <= 1
    assert plain_flagged["clean_similar"] >= 4                          # the set is hard for the plain rule
    assert flagged["clean_similar"] < plain_flagged["clean_similar"]


@pytest.mark.parametrize("problem", BOILERPLATE_ONLY)
def test_boilerplate_only_problems_are_kept(ours, plain, problem):
    assert plain.match(problem) is not None
    assert ours.check(problem) is None and ours.match(problem) is None


def test_gsm8k_generic_phrasing_kept():
    both = ["math500", "gsm8k"]
    problem = ("Rosa buys 4 pens at $3 each and a ruler for $2. She pays with a $20 bill. "
               "How many dollars does she have left?")
    assert Decontaminator(both).check(problem) is None
    copy = json.loads((BENCH_DIR / "gsm8k_test.jsonl").read_text().splitlines()[7])["problem"]
    assert Decontaminator(both).match(copy) == "gsm8k:gsm8k-test-7"


def test_aime_alternate_wordings_caught(ours):
    for name in ("aime2024", "aime2025"):
        for line in (BENCH_DIR / SHIPPED[name]).read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            for key in ("problem", "problem_alt"):
                assert ours.match(item[key]) == f"{name}:{item['id']}", (key, item["id"])


def test_every_benchmark_item_caught_verbatim():
    deco = Decontaminator(DEFAULT)
    missed = []
    for name in DEFAULT:
        for line in (BENCH_DIR / SHIPPED[name]).read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            if deco.match(item["problem"]) is None:
                missed.append(item["id"])
    assert missed == []


def test_numina_like_copies_caught():
    deco = Decontaminator(DEFAULT)
    for row in _benchmark_copies():
        assert deco.match(row["problem"]) is not None


def test_short_items_and_light_edits(ours):
    assert ours.match("Simplify $\\sqrt{242}$.") == "math500:test/prealgebra/1302.json"  # a 3-word item, whole
    assert ours.match("  simplify   $\\sqrt{242}$ . ") == "math500:test/prealgebra/1302.json"
    assert ours.match("Problem 7. Express $555_{10}$ in base $5$.") == "math500:test/number_theory/847.json"
    item = "What power of 4 is equal to 8? Express your answer as a common fraction."
    assert ours.match(item.replace("Express your answer as a common fraction.", "Give a reduced fraction.")) \
        == "math500:test/algebra/1265.json"


def test_detail_quotes_the_shared_text(ours):
    problem = ("Every morning Aya goes for a $9$-kilometer-long walk and stops at a coffee shop afterwards. "
               "How long is her walk, in minutes, if she walks at 3 kilometers per hour?")
    hit = ours.check(problem)
    assert hit.label == "aime2024:aime2024-I-1"
    assert hit.detail().startswith('shares "Every morning Aya goes for a $9$-kilometer-long walk and stops at a coffee shop')
    assert hit.detail().endswith(" with aime2024:aime2024-I-1")
    assert Decontaminator(DEFAULT, rule="ngram").check(problem).detail().startswith('shares "every morning aya')


def test_prepare_rejects_name_item_and_shared_text(tmp_path):
    math500 = json.loads((BENCH_DIR / "math500.jsonl").read_text().splitlines()[0])
    rows = [{"problem": math500["problem"], "answer": math500["answer"]},
            {"problem": BOILERPLATE_ONLY[0], "answer": "25/12"},
            {"problem": BOILERPLATE_ONLY[2], "answer": "1/6"}]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    prepare_to_dir(SourceConfig(path=src), out)
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rejects] == ["contaminated"]
    detail = rejects[0]["detail"]
    assert detail.startswith('shares "Convert the point $(0,3)$ in rectangular coordinates to polar coordinates"')
    assert detail.endswith(f"with math500:{math500['id']}")
    assert len(pq.read_table(out / "problems.parquet")) == 2
    # the plain rule is still there: it rejects all three
    out2 = tmp_path / "out2"
    prepare_to_dir(SourceConfig(path=src, decontaminate={"rule": "ngram"}), out2)
    assert json.loads((out2 / "report.json").read_text())["rejected_by_reason"] == {"contaminated": 3}


def test_rule_is_checked():
    with pytest.raises(DecontamError):
        Decontaminator(DEFAULT, rule="fuzzy")
    with pytest.raises(ValueError):
        DecontamConfig(rule="fuzzy")
