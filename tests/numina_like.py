"""A NuminaMath-1.5-layout problem set for the cluster rehearsal.

A few hundred rows with the columns of AI-MO/NuminaMath-1.5 and the mess a
real pull of it has: proofs, `notfound` answers, multiple-choice rows,
exact and near duplicates, empty problems and a few problems copied from
the benchmarks the factory decontaminates against. The word problems are
easy on purpose: the stand-in model is a 135M one. Everything is generated
here, deterministically (answers computed, not typed), so nothing is taken
from a real dataset.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

COLUMNS = ["problem", "solution", "answer", "problem_type", "question_type", "problem_is_valid",
           "solution_is_valid", "source", "synthetic"]
SOURCES = ["orca_math", "synthetic_math", "cn_k12", "olympiads", "aops_forum", "amc_aime", "cn_contest"]
NAMES = ["Tom", "Ana", "Lee", "Mia", "Omar", "Ivy", "Raj", "Zoe", "Ben", "Lia", "Sam", "Eva"]
THINGS = ["apples", "marbles", "stickers", "pencils", "coins", "books", "shells", "cards"]
BENCH_DIR = Path(__file__).resolve().parent.parent / "factory" / "data" / "benchmarks"

# (problem_type, text with {a} {b} {name} {thing}, answer from a and b)
WORD = [
    ("Algebra", "{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?", lambda a, b: a + b),
    ("Algebra", "What is {a} plus {b}?", lambda a, b: a + b),
    ("Algebra", "Compute {a} times {b}.", lambda a, b: a * b),
    ("Algebra", "{name} had {c} {thing} and gave away {b} of them. How many are left?", lambda a, b: a),
    ("Algebra", "If x + {b} = {c}, what is x?", lambda a, b: a),
    ("Algebra", "Solve for y: y - {b} = {a}.", lambda a, b: a + b),
    ("Number Theory", "What is the remainder when {c} is divided by {b}?", lambda a, b: (a + b) % b),
    ("Geometry", "A rectangle is {a} cm long and {b} cm wide. What is its area in square centimeters?", lambda a, b: a * b),
    ("Geometry", "A square has side length {a}. What is its perimeter?", lambda a, b: 4 * a),
    ("Algebra", "A box holds {a} eggs. How many eggs are in {b} boxes?", lambda a, b: a * b),
    ("Algebra", "Each ticket costs {a} dollars. How many dollars do {b} tickets cost?", lambda a, b: a * b),
    ("Algebra", "A car drives {a} km every hour. How many km does it drive in {b} hours?", lambda a, b: a * b),
    ("Number Theory", "What is the sum of {a} and {b}, minus {b}?", lambda a, b: a),
    ("Algebra", "Double the number {a}, then add {b}. What do you get?", lambda a, b: 2 * a + b),
    ("Logic and Puzzles", "There are {a} birds on a tree and {b} more land on it. How many birds are on the tree?", lambda a, b: a + b),
    ("Combinatorics", "In how many ways can {name} pick one shirt out of {a} shirts and one hat out of {b} hats?", lambda a, b: a * b),
    ("Algebra", "{name} reads {a} pages a day. How many pages does {name} read in {b} days?", lambda a, b: a * b),
    ("Number Theory", "What is {c} minus {a}?", lambda a, b: b),
    ("Algebra", "A class has {a} girls and {b} boys. How many children are in the class?", lambda a, b: a + b),
    ("Geometry", "A triangle has sides {a}, {b} and {a}. What is its perimeter?", lambda a, b: 2 * a + b),
    ("Algebra", "{name} saves {a} dollars each week for {b} weeks. How many dollars is that?", lambda a, b: a * b),
    ("Algebra", "A bus has {c} seats and {b} are taken. How many seats are free?", lambda a, b: a),
    ("Number Theory", "What is {a} squared?", lambda a, b: a * a),
    ("Algebra", "Three friends share {t} {thing} equally. How many does each get?", lambda a, b: a),
    ("Algebra", "What is half of {d}?", lambda a, b: a),
]
PROOFS = [
    "Prove that the sum of two even integers is even.",
    "Show that for every positive integer n, n^3 - n is divisible by 6.",
    "Prove that the product of any {b} consecutive integers is divisible by {b}.",
    "Prove that the square root of {p} is irrational.",
    "Let a, b be positive reals with a + b = {a}. Prove that ab <= {q}.",
]
MCQ = "{name} has {a} {thing} and buys {b} more. How many {thing} now?\n(A) {o0} (B) {o1} (C) {o2} (D) {o3}"


def _word_rows(rng: random.Random, per_template: int) -> list[dict]:
    rows = []
    for k, (ptype, text, answer) in enumerate(WORD):
        for _ in range(per_template):
            a, b = rng.randint(2, 19), rng.randint(2, 9)
            fill = dict(a=a, b=b, c=a + b, d=2 * a, t=3 * a, name=rng.choice(NAMES), thing=rng.choice(THINGS))
            ans = answer(a, b)
            problem = text.format(**fill)
            rows.append(_row(problem, f"Working it out gives {ans}. The answer is $\\boxed{{{ans}}}$.", str(ans),
                             ptype, "math-word-problem", SOURCES[k % len(SOURCES)]))
    return rows


def _row(problem: str, solution: str, answer: str, ptype: str, qtype: str, source: str, synthetic: bool = True) -> dict:
    return {"problem": problem, "solution": solution, "answer": answer, "problem_type": ptype,
            "question_type": qtype, "problem_is_valid": "Yes", "solution_is_valid": "Yes",
            "source": source, "synthetic": synthetic}


def _benchmark_copies() -> list[dict]:
    """Verbatim and lightly reworded problems from benchmarks: decontamination must drop them."""
    def first(name: str, idx: int) -> dict:
        lines = (BENCH_DIR / name).read_text(encoding="utf-8").splitlines()
        return json.loads(lines[idx])

    m1, m2 = first("math500.jsonl", 3), first("math500.jsonl", 10)
    aime, amc = first("aime2024.jsonl", 0), first("amc2023.jsonl", 0)
    return [
        _row(m1["problem"], m1.get("solution", ""), m1["answer"], "Algebra", "math-word-problem", "synthetic_math"),
        _row("  " + m2["problem"].replace("  ", " ") + "\n", m2.get("solution", ""), m2["answer"], "Algebra",
             "math-word-problem", "cn_k12"),
        _row(aime.get("problem_alt") or aime["problem"], "", aime["answer"], "Algebra", "math-word-problem", "amc_aime"),
        _row(amc["problem"], "", amc["answer"], "Algebra", "math-word-problem", "amc_aime"),
    ]


def rows(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    word = _word_rows(rng, 8)  # 200 clean word problems
    out = list(word)
    for i, tpl in enumerate(PROOFS * 5):  # 25 proofs
        a, b = rng.randint(3, 30), rng.choice([2, 3, 4])
        text = tpl.format(a=a, b=b, p=rng.choice([2, 3, 5, 7, 11, 13]), q=a * a / 4) + ("" if i < 5 else f" (Variant {i}.)")
        out.append(_row(text, "Proof. ...", "proof", "Number Theory", "proof", "olympiads", synthetic=False))
    for i in range(12):  # answers nobody recorded
        a = rng.randint(5, 50)
        out.append(_row(f"Find all functions f such that f(x + {a}) = f(x) + {i + 1} for every real x.", "",
                        "notfound", "Algebra", "math-word-problem", "olympiads_ref", synthetic=False))
    for i in range(20):  # multiple choice
        a, b = rng.randint(2, 20), rng.randint(2, 9)
        opts = [a + b, a + b + 1, a * b, a + b - 1]
        rng.shuffle(opts)
        letter = "ABCD"[opts.index(a + b)]
        text = MCQ.format(name=NAMES[i % len(NAMES)], thing=THINGS[i % len(THINGS)], a=a, b=b,
                          **{f"o{j}": o for j, o in enumerate(opts)})
        out.append(_row(text, f"{a} + {b} = {a + b}, option {letter}.", letter, "Algebra", "MCQ", "amc_aime"))
    out += [dict(r) for r in rng.sample(word, 15)]  # exact duplicates
    for r in rng.sample(word, 8):  # near duplicates: one word changed
        near = dict(r)
        near["problem"] = r["problem"].replace("What", "Tell me what", 1) if "What" in r["problem"] else r["problem"] + " Explain."
        out.append(near)
    out += _benchmark_copies()
    out += [_row("", "", "3", "Algebra", "math-word-problem", "cn_k12"),
            _row("   ", "", "4", "Algebra", "math-word-problem", "cn_k12")]
    rng.shuffle(out)
    return out


def write_parquet(path: Path, seed: int = 0) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = rows(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(data), path)
    return len(data)
