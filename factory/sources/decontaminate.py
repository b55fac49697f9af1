"""Decontamination: drop problems copied or lightly reworded from an evaluation
benchmark (MATH-500, AIME 2024/2025, AMC 2023, GSM8K).

Two rules:

- `ngram` (open-r1's): any shared word n-gram (8 by default) rejects the
  problem. Instruction boilerplate plus a number is enough to match
  ("3 express your answer as a common fraction"), so it throws away clean
  MATH-style problems.
- `evidence` (the default): the same n-grams, but
  1. answer-format instructions ("Express your answer as a common fraction.",
     "Enter all the solutions, separated by commas.", "in simplest radical
     form", "to the nearest tenth", ...) are cut from both sides first;
  2. n-grams found in 3 or more distinct benchmark items ("where m and n are
     relatively prime positive integers") are boilerplate: they match nothing
     and the words under them weigh nothing;
  3. a problem is flagged only when the words it shares with ONE benchmark item
     carry enough weight: each shared word counts its IDF over the benchmark
     items (LaTeX command names count 0, so formula fragments such as
     "$x^2 + y^2$" weigh little), and the shared weight must reach
     `MIN_WEIGHT`, or cover `MIN_SHARE` of both the item's and the problem's
     weight, or `WHOLE_SHARE` of the item's; an item shorter than n words
     must be reproduced whole.

`check()` returns a `Hit` naming the item and quoting the shared text;
`match()` keeps the old contract (the "benchmark:id" label or None).
Figures: `factory bench decontam` on factory/data/decontam/labelled.jsonl.

The benchmark texts ship in factory/data/benchmarks (sources and licences in
SOURCES.md there); AIME files carry a second published wording in
`problem_alt`, matched too.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from factory.config import ConfigError

BENCH_DIR = Path(__file__).resolve().parents[1] / "data" / "benchmarks"
LABELLED = Path(__file__).resolve().parents[1] / "data" / "decontam" / "labelled.jsonl"
_WORD = re.compile(r"\w+")
SHIPPED = {"math500": "math500.jsonl", "aime2024": "aime2024.jsonl", "aime2025": "aime2025.jsonl",
           "amc2023": "amc2023.jsonl", "gsm8k": "gsm8k_test.jsonl"}
RULES = ("evidence", "ngram")
BOILERPLATE = -1  # index value of an n-gram shared by MAX_DF or more benchmark items

# evidence rule settings (tuned on the dev split of the labelled set)
MAX_DF = 3          # an n-gram in this many distinct benchmark items is boilerplate
MIN_WEIGHT = 40.0   # shared IDF weight that flags a problem on its own (~10 informative words)
MIN_SHARE = 0.5     # ... or this share of both the item's and the problem's weight
MIN_SHARE_WEIGHT = 8.0  # (with at least this much weight)
WHOLE_SHARE = 0.9   # ... or this share of the item alone (the item reproduced inside a longer problem)
WHOLE_WEIGHT = 15.0  # (with at least this much weight)

# letters-only or digits-only runs: "x_1", "17_b", "2x" split the same way however the LaTeX is spaced
_TOKEN = re.compile(r"[a-z]+|\d+|[^\W\d_]+")  # ASCII first: faster
_ASY = re.compile(r"[\[<]asy[\]>].*?(?:[\[<]/asy[\]>]|$)", re.DOTALL | re.IGNORECASE)
# a leading label: "Problem 7.", "Example 2:", "3. ", "(2)", "(2024 AIME I, Problem 13)"
_LABEL = re.compile(
    r"\s*(?:(?:problem|question|example|exercise|task)\s*\d+\s*[.:)]?|\d{1,3}[.)](?=\s)|\(\s*\d{1,3}\s*\)"
    r"|[(\[][^()\[\]\n]{0,60}(?:problem|aime|amc|olympiad|contest|\d{4})[^()\[\]\n]{0,30}[)\]])\s*")
# one scan of the lower-cased text finds both kinds of answer-format instruction:
#  v: a sentence after the first one that starts "Express your answer ...", "Enter all the solutions ...", ...
#  c: a clause anywhere: "as a common fraction", "in simplest radical form", "to the nearest tenth", ...
_CUE = re.compile(
    r"\b(?:(?P<v>(?:please\s+)?(?:express|enter|give|write|round|simplify|leave|present|state|put|list|type|report|"
    r"provide|separate|(?:your|the)\s+(?:final\s+)?answers?\s+(?:should|must|is|will|can))\b)"
    r"|(?P<c>(?:expressed\s+)?as\s+an?\s+(?:common\s+|improper\s+|reduced\s+|simplified\s+)?"
    r"(?:fraction|decimal|mixed\s+number|percent(?:age)?)\b(?:\s+in\s+(?:simplest|lowest)\s+(?:radical\s+)?(?:form|terms))?"
    r"|in\s+(?:simplest|lowest)\s+(?:radical\s+|fractional\s+)?(?:form|terms)"
    r"|to\s+the\s+nearest\s+(?:whole\s+number|integer|tenth|hundredth|thousandth|percent|cent|dollar|degree|unit)s?"
    r"|in\s+terms\s+of\s+\$?\\pi\$?|in\s+interval\s+notation|separated\s+by\s+commas))")
# every instruction above (and [asy] code) contains one of these words: without them, nothing to cut
_TRIGGERS = frozenset("express enter give write round simplify leave present state put list type report provide "
                      "separate answer answers fraction decimal simplest lowest nearest terms interval percent "
                      "percentage mixed separated asy".split())
_SENT_END = re.compile(r"[.?!][$)\]\"'’”]*(?=\s|$)")
_CLOSERS = "$)]\"'’”"
# an instruction sentence must say what the answer looks like
_INSTR_KEY = re.compile(
    r"answer|result|fraction|decimal|radical|nearest|simplest|lowest|\bform\b|terms\s+of|separated|comma|"
    r"percent|notation|ordered|\bbase\b|integer|letter|residue|radians|degrees|exact|mixed\s+number|equation")


class DecontamError(ConfigError, ValueError):
    pass


def words(text: str) -> list[str]:
    """The plain rule's tokens (open-r1 style): lower-cased `\\w+` runs."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def _ngrams(tokens: list[str], n: int):
    if len(tokens) < n:
        return [" ".join(tokens)] if tokens else []
    return [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _h(s: str) -> int:
    return xxhash.xxh64_intdigest(s.encode())


def strip_instructions(low: str) -> str:
    """Lower-cased `low` with answer-format instructions and [asy] figure code blanked out
    (same length, so offsets still point into the text)."""
    if "asy" in low:
        low = _ASY.sub(lambda m: " " * len(m.group(0)), low)
    cuts = []
    for m in _CUE.finditer(low):
        a = m.start()
        if m.lastgroup == "c":
            cuts.append((a, m.end()))
            continue
        if cuts and a < cuts[-1][1]:
            continue
        # a sentence start, after a first sentence: ". Express", "?\n\nEnter", "$. (Express", "\\]Enter"
        k = a - 1
        newline = False
        while k >= 0 and low[k].isspace():
            newline |= low[k] == "\n"
            k -= 1
        if k >= 0 and low[k] == "(":
            k -= 1
            while k >= 0 and low[k].isspace():
                newline |= low[k] == "\n"
                k -= 1
        if k < 0 or len(_WORD.findall(low, 0, k)) < 3:  # the problem itself, or after a "Problem 7." label
            continue
        c = low[k]
        if not (newline or c in ".?!:" or (c in _CLOSERS and k > 0 and low[k - 1] in ".?!:\\")):
            continue
        e = _SENT_END.search(low, m.end())
        end = e.end() if e else len(low)
        if end < len(low) and low[end - 1] != ")" and low[end] == ")" and "(" in low[k : a]:
            end += 1
        if _INSTR_KEY.search(low, a, end):
            cuts.append((a, end))
    if not cuts:
        return low
    parts, last = [], 0
    for a, b in cuts:
        if a < last:
            a = last
        if b > a:
            parts.append(low[last:a])
            parts.append(" " * (b - a))
            last = b
    parts.append(low[last:])
    return "".join(parts)


def _unlabel(low: str) -> str:
    """Blank a leading "Problem 7." / "(2024 AIME I, Problem 13)" label."""
    m = _LABEL.match(low)
    return " " * m.end() + low[m.end():] if m else low


def tokens(text: str) -> list[str]:
    """The evidence rule's tokens: NFKC, lower-cased, label and instructions cut, letter/digit runs."""
    low = _unlabel(unicodedata.normalize("NFKC", text).lower())
    toks = _TOKEN.findall(low)
    if _TRIGGERS.isdisjoint(toks):  # the common case: no instruction to cut, and cheap to tell
        return toks
    return _TOKEN.findall(strip_instructions(low))


def _spans(text: str) -> tuple[list[tuple[str, int, int]], str]:
    """(token, start, end) over the NFKC text, as `tokens` sees it, and that text."""
    norm = unicodedata.normalize("NFKC", text)
    low = norm.lower()
    if len(low) != len(norm):  # a rare letter whose lower case is longer: quote the lower-cased text
        norm = low
    return [(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(strip_instructions(_unlabel(low)))], norm


@dataclass
class Hit:
    label: str                      # "benchmark:item id"
    shared: list[str] = field(default_factory=list)  # the shared passages, longest first, as they read in the problem
    weight: float = 0.0             # shared IDF weight (evidence rule)
    share: float = 1.0              # ... as a share of the item's weight
    problem_share: float = 1.0      # ... as a share of the problem's weight

    def detail(self, max_chars: int = 160) -> str:
        quote = self.shared[0] if self.shared else ""
        if len(quote) > max_chars:
            quote = quote[: max_chars - 1].rstrip() + "…"
        more = f" (+{len(self.shared) - 1} more passage{'s' if len(self.shared) > 2 else ''})" if len(self.shared) > 1 else ""
        return f'shares "{quote}"{more} with {self.label}'


def check_benchmarks(names: list[str]) -> list[tuple[str, Path]]:
    """Each benchmark name with its file; the job file only names them."""
    found = []
    for name in names:
        path = BENCH_DIR / SHIPPED[name] if name in SHIPPED else Path(name)
        if not path.is_file():
            raise DecontamError(f"source.decontaminate.benchmarks: unknown benchmark {name!r} "
                                f"(shipped: {', '.join(SHIPPED)}; or a jsonl path)")
        found.append((name, path))
    return found


class Decontaminator:
    def __init__(self, benchmarks: list[str], n: int = 8, rule: str = "evidence"):
        if rule not in RULES:
            raise DecontamError(f"source.decontaminate.rule: {rule!r} is not one of {', '.join(RULES)}")
        self.n, self.rule = n, rule
        self.labels: list[str] = []      # item number -> "benchmark:id"
        self.item_weight: list[float] = []
        self.index: dict[int, int | tuple[int, ...]] = {}  # n-gram hash -> item number(s)
        self.short: dict[int, int] = {}  # whole text of items shorter than n words -> item number
        wanted = [(name if name in SHIPPED else path.stem, path) for name, path in check_benchmarks(benchmarks)]
        if rule == "ngram":
            for label, path in wanted:
                for item in _read(path):
                    self.labels.append(f"{label}:{item.get('id', '?')}")
                    for text in _wordings(item):
                        self._add_plain(words(text), len(self.labels) - 1)
            return
        # IDF weights and n-gram document frequencies over all shipped benchmarks (+ any extra files),
        # so the weights do not depend on which benchmarks a job picks
        have = {path.resolve() for _, path in wanted}
        corpus = [(label, path, True) for label, path in wanted]
        corpus += [(name, BENCH_DIR / f, False) for name, f in SHIPPED.items() if (BENCH_DIR / f).resolve() not in have]
        df_tok: dict[str, int] = {}
        df_gram: dict[int, int] = {}
        docs = 0
        keep: list[tuple[str, list[list[str]]]] = []
        for label, path, indexed in corpus:
            for item in _read(path):
                toks = [tokens(t) for t in _wordings(item)]
                docs += 1
                for t in set().union(*map(set, toks)):
                    df_tok[t] = df_tok.get(t, 0) + 1
                for g in {_h(g) for tk in toks if len(tk) >= n for g in _ngrams(tk, n)}:
                    df_gram[g] = df_gram.get(g, 0) + 1
                if indexed:
                    keep.append((f"{label}:{item.get('id', '?')}", toks))
        self.weight = {t: (0.0 if t in _LATEX_NAMES else math.log(docs / c)) for t, c in df_tok.items()}
        self.unseen = math.log(docs)  # a word no benchmark item uses
        for g, c in df_gram.items():
            if c >= MAX_DF:
                self.index[g] = BOILERPLATE
        for label, toks in keep:
            i = len(self.labels)
            self.labels.append(label)
            weights = []
            for tk in toks:
                if len(tk) < n:
                    if tk:
                        self.short.setdefault(_h(" ".join(tk)), i)
                    weights.append(sum(self.weight[t] for t in tk))
                    continue
                grams = [_h(g) for g in _ngrams(tk, n)]
                boiler = _cover([j for j, g in enumerate(grams) if df_gram[g] >= MAX_DF], n)
                weights.append(sum(self.weight[t] for j, t in enumerate(tk) if j not in boiler))
                for g in set(grams):
                    old = self.index.get(g)
                    if old is None:
                        self.index[g] = i
                    elif old == BOILERPLATE:
                        continue
                    elif isinstance(old, int):
                        if old != i:
                            self.index[g] = (old, i)
                    elif i not in old:
                        self.index[g] = old + (i,)
            self.item_weight.append(min(weights, default=0.0))

    def _add_plain(self, toks: list[str], i: int) -> None:
        target = self.short if len(toks) < self.n else self.index
        for g in _ngrams(toks, self.n):
            target.setdefault(_h(g), i)

    # ------------------------------------------------------------ matching
    def match(self, text: str) -> str | None:
        """The benchmark item this problem overlaps, or None."""
        hit = self.check(text)
        return hit.label if hit else None

    def check(self, text: str) -> Hit | None:
        """A `Hit` (item, shared passages) when the problem is contaminated, else None."""
        return self._check_plain(text) if self.rule == "ngram" else self._check_evidence(text)

    def _check_plain(self, text: str) -> Hit | None:
        toks = words(text)
        n = self.n
        if len(toks) < n:
            i = self.short.get(_h(" ".join(toks))) if toks else None
            return Hit(self.labels[i], [" ".join(toks)]) if i is not None else None
        for g in _ngrams(toks, n):
            i = self.index.get(_h(g))
            if i is not None:
                return Hit(self.labels[i], [g])
        return None

    def _check_evidence(self, text: str) -> Hit | None:
        toks = tokens(text)
        n = self.n
        if len(toks) < n:
            i = self.short.get(_h(" ".join(toks))) if toks else None
            return self._hit(text, i, None) if i is not None else None
        get, xx = self.index.get, xxhash.xxh64_intdigest
        vals = [get(xx(" ".join(toks[j : j + n]).encode())) for j in range(len(toks) - n + 1)]
        if vals.count(None) == len(vals):  # the common case: nothing shared
            return None
        found: dict[int, list[int]] = {}  # item -> start positions of shared n-grams
        boiler: list[int] = []  # start positions of boilerplate n-grams
        for j, v in enumerate(vals):
            if v is None:
                continue
            if v == BOILERPLATE:
                boiler.append(j)
                continue
            for i in (v,) if isinstance(v, int) else v:
                found.setdefault(i, []).append(j)
        if not found:
            return None
        skip = _cover(boiler, n)
        weight = self.weight
        own = sum(weight.get(t, self.unseen) for j, t in enumerate(toks) if j not in skip)
        best = None
        for i, starts in found.items():
            w = sum(weight.get(toks[p], 0.0) for p in _cover(starts, n) - skip)
            share = min(1.0, w / self.item_weight[i]) if self.item_weight[i] else 0.0
            cshare = min(1.0, w / own) if own else 0.0
            if self.flag(w, share, cshare) and (best is None or w > best[1]):
                best = (i, w, share, starts, cshare)
        if best is None:
            return None
        hit = self._hit(text, best[0], best[3], best[1], best[2])
        hit.problem_share = round(best[4], 2)
        return hit

    @staticmethod
    def flag(weight: float, share: float, problem_share: float) -> bool:
        """Enough evidence? `weight`: shared IDF weight; `share`: of the item's weight; `problem_share`: of the problem's."""
        return (weight >= MIN_WEIGHT or (min(share, problem_share) >= MIN_SHARE and weight >= MIN_SHARE_WEIGHT)
                or (share >= WHOLE_SHARE and weight >= WHOLE_WEIGHT))

    def _hit(self, text: str, i: int, starts: list[int] | None, weight: float = 0.0, share: float = 1.0) -> Hit:
        """Quote the shared passages from the problem as written (whitespace collapsed)."""
        spans, norm = _spans(text)
        if starts is None:  # a short item, reproduced whole
            runs = [(0, len(spans) - 1)] if spans else []
        else:
            runs = []
            for s in sorted(starts):
                e = s + self.n - 1
                if runs and s <= runs[-1][1] + 1:
                    runs[-1] = (runs[-1][0], max(runs[-1][1], e))
                else:
                    runs.append((s, e))
        runs.sort(key=lambda r: r[0] - r[1])
        quotes = []
        for a, b in runs:
            if b < len(spans):
                quotes.append(" ".join(norm[spans[a][1] : spans[b][2]].split()))
        return Hit(self.labels[i], quotes, round(weight, 1), round(share, 2))


def _cover(starts: list[int], n: int) -> set[int]:
    out: set[int] = set()
    for s in starts:
        out.update(range(s, s + n))
    return out


def _read(path: Path):
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            yield json.loads(line)


def _wordings(item: dict) -> list[str]:
    out = []
    for key in ("problem", "problem_alt"):
        if item.get(key) and item[key] not in out:
            out.append(item[key])
    return out


# LaTeX command names (formula syntax, not evidence): weight 0
_LATEX_NAMES = frozenset("""
frac dfrac tfrac cfrac sqrt cdot cdots ldots dots dotsb dotsm dotsc vdots ddots left right big bigg begin end
pmatrix bmatrix vmatrix matrix array align aligned cases text textbf textit mathbf mathrm mathcal mathbb
operatorname displaystyle le leq ge geq neq ne lt gt approx circ infty times div pm mp pmod bmod equiv
overline underline overrightarrow widehat hat vec hline quad qquad emph binom dbinom tbinom boxed lfloor
rfloor lceil rceil mid nmid cup cap subset subseteq in notin setminus emptyset angle triangle alpha beta
gamma delta epsilon varepsilon theta lambda mu sigma omega phi varphi rho tau pi prime
""".split())
