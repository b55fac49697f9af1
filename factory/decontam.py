"""Decontamination: drop problems that share a word n-gram with an evaluation
benchmark (open-r1 used 8-grams against AIME, MATH-500, GPQA, LiveCodeBench).

The benchmark texts ship in factory/data/benchmarks (sources and licences in
SOURCES.md there); AIME files carry a second published wording in
`problem_alt`, matched too.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import xxhash

BENCH_DIR = Path(__file__).resolve().parent / "data" / "benchmarks"
_WORD = re.compile(r"\w+")
SHIPPED = {"math500": "math500.jsonl", "aime2024": "aime2024.jsonl", "aime2025": "aime2025.jsonl",
           "amc2023": "amc2023.jsonl", "gsm8k": "gsm8k_test.jsonl"}


class DecontamError(ValueError):
    pass


def words(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def _ngrams(tokens: list[str], n: int):
    if len(tokens) < n:
        return [" ".join(tokens)] if tokens else []
    return [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


class Decontaminator:
    def __init__(self, benchmarks: list[str], n: int = 8):
        self.n = n
        self.index: dict[int, str] = {}  # n-gram hash -> "benchmark:item id"
        self.short: dict[int, str] = {}  # whole text of items shorter than n words
        for name in benchmarks:
            path = BENCH_DIR / SHIPPED[name] if name in SHIPPED else Path(name)
            if not path.is_file():
                raise DecontamError(f"source.decontaminate.benchmarks: unknown benchmark {name!r} "
                                    f"(shipped: {', '.join(SHIPPED)}; or a jsonl path)")
            label = name if name in SHIPPED else path.stem
            for line in path.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                for key in ("problem", "problem_alt"):
                    if item.get(key):
                        self._add(item[key], f"{label}:{item.get('id', '?')}")

    def _add(self, text: str, label: str) -> None:
        toks = words(text)
        target = self.short if len(toks) < self.n else self.index
        for g in _ngrams(toks, self.n):
            target.setdefault(xxhash.xxh64_intdigest(g.encode()), label)

    def match(self, text: str) -> str | None:
        """The benchmark item this problem overlaps, or None."""
        toks = words(text)
        for g in _ngrams(toks, self.n):
            hit = self.index.get(xxhash.xxh64_intdigest(g.encode()))
            if hit:
                return hit
        if len(toks) < self.n:
            return self.short.get(xxhash.xxh64_intdigest(" ".join(toks).encode()))
        return None
