"""Answer comparison: our normalizers around Math-Verify.

Math-Verify is good at LaTeX and sympy but misses answers that people write
differently (multiple-choice letters, units, percentages, thousands
separators, `x = 5`, Yes/No, intervals vs inequalities) and accepts a few
wrong ones (`\\pm 2021` vs 2021, 5 m vs 5 cm, 0.142857 vs 1/7, two different
lines with equal right-hand sides). The rules users may edit live in
`verifiers/normalizers.yaml` and `verifiers/presets.yaml`; the logic that
uses them is here. Everything in this module runs inside a killable worker
process (see rules.py): nothing here needs its own timeout.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from factory import assets
from factory.verify.extract import (all_boxed, answer_region, candidates, committed, dangling_phrase, final_phrase,
                                    line_values, paragraphs, unicode_math, where_clause, word_number)
from factory.verify.question import asked_readings, asked_unit


@dataclass(frozen=True)
class Options:
    """One cascade preset's switches for the rule stage."""

    normalizers: bool = True
    allow_set_relation_comp: bool = True
    strict_numbers: bool = True
    strict_format: bool = False  # boxed answers only, no Math-Verify fallback
    mv_fallback: bool = True  # Math-Verify's own extraction where ours finds no match


@dataclass
class Rules:
    rewrites: list[tuple[str, re.Pattern, str]] = field(default_factory=list)
    thousands: re.Pattern = re.compile(r"^-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?$")
    text_answers: dict[str, str] = field(default_factory=dict)  # variant -> canonical
    units: dict[str, str] = field(default_factory=dict)  # variant -> canonical
    scales: dict[str, tuple[str, str]] = field(default_factory=dict)  # canonical unit -> (quantity, factor)
    antonyms: list[tuple[str, ...]] = field(default_factory=list)  # words that answer a yes/no question


class RulesError(ValueError):
    pass


def load_rules(path: str | Path | None = None) -> Rules:
    path = Path(path) if path else assets.root() / "verifiers" / "normalizers.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RulesError(f"{path}: cannot read rules: {exc}") from None
    rules = Rules()
    for i, r in enumerate(data.get("rewrite", [])):
        try:
            rules.rewrites.append((r.get("name", f"rule{i}"), re.compile(r["pattern"]), r.get("replace", "")))
        except (KeyError, TypeError, re.error) as exc:
            raise RulesError(f"{path}: rewrite rule {i + 1}: {exc}") from None
    if data.get("thousands_pattern"):
        rules.thousands = re.compile(data["thousands_pattern"])
    for canon, variants in (data.get("text_answers") or {}).items():
        for v in [canon, *variants]:
            rules.text_answers[_plain(str(v))] = str(canon)
    for group in data.get("units") or []:
        canon = str(group[0]).lower()
        for v in group:
            rules.units[str(v).lower()] = canon
    rules.antonyms = [tuple(str(w).lower() for w in pair) for pair in data.get("antonyms") or []]
    for quantity, factors in (data.get("unit_scales") or {}).items():
        for unit, factor in (factors or {}).items():
            if not re.fullmatch(r"\d+(?:/\d+)?", str(factor)):
                raise RulesError(f"{path}: unit_scales.{quantity}.{unit}: expected a number or a fraction, got {factor!r}")
            rules.scales[str(unit).lower()] = (str(quantity), str(factor))
    return rules


def load_preset(name: str = "default", path: str | Path | None = None) -> Options:
    path = Path(path) if path else assets.root() / "verifiers" / "presets.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if name not in data:
        raise RulesError(f"verify preset '{name}' not found in {path} (have: {', '.join(data)})")
    fields = {k: v for k, v in data[name].items() if k in Options.__dataclass_fields__}
    return Options(**fields)


# ---------------------------------------------------------------- helpers

_TEXT_WRAP = re.compile(r"\\(?:text|mathrm|mbox|textrm|operatorname|textit|mathit)\s*\{([^{}]*)\}")
_PM = re.compile(r"\\pm|±|\\mp|∓")
_LETTER = re.compile(r"^\s*\(?\s*([A-Ea-e])\s*\)?\s*(?:[).:]\s*.*)?$", re.S)
# an option marker: `(A)`, `\\textbf{(A)}`, or `A:` / `A.` / `A)` after a space or line start
_MARK = r"(?:\(\s*([A-E])\s*\)|(?<![^\s$*{])([A-E])\s*[:.)](?=\s))"
_OPTION = re.compile(rf"{_MARK}\s*(.*?)(?=\s*{_MARK}|\n|$)", re.S)
_PERCENT = re.compile(r"^(.*?)\s*\\?%$")
_LETTER_AND_TEXT = re.compile(r"^\(?([A-E])\)?[.:)]?\s+([^\s=<>+\-*/^].*)$", re.S)
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})\s*(?:\\text\s*\{\s*)?([AaPp])\.?\s*[Mm]\.?\s*\}?$")
# a name that an answer may be assigned to: `x`, `a_1`, `f(x)`, `f^{-1}(x)`, `\\theta`, `A \\cap B`
_FN_NAME = r"[a-zA-Z](?:\^\s*\{?\s*-1\s*\}?)?\s*\(\s*[a-zA-Z]\s*\)"
# `A \\cup B`, `A'`, `\\mathcal{P}(\\{1,2\\})`: a set named by what it is made from
_SET_NAME = (r"[A-Z](?:\s*(?:\\cap|\\cup|\\setminus|\\times|\\triangle)\s*[A-Z])+|[A-Z]'|\\overline\{[A-Z]\}"
             r"|\\math(?:cal|scr|frak|bb)\{[A-Z]\}(?:\s*\([^=]*\))?")
_ASSIGN_LHS = re.compile(rf"^\s*(?:[a-zA-Z](?:_\{{?\w+\}}?)?|{_FN_NAME}|{_SET_NAME}|\\[a-zA-Z]+)\s*$")
_FLOAT_REPR = re.compile(r"^\s*-?\d*\.\d{15,}\s*$|^\s*-?\d\.\d{14,}\d*\s*$")  # 15+ digits: a float's repr
_DECIMAL = re.compile(r"^\s*-?\d+\.\d+\s*$")
_UNIT_TEXT = re.compile(r"^(.*?\S)\s*\\(?:text|mathrm|mbox)\s*\{\s*([^{}]+?)\s*\}\s*$")
_UNIT_BARE = re.compile(r"^(.*?[\d}).])\s*([a-zA-Z][a-zA-Z/^23²³ ]*?)\s*$")


def _plain(s: str) -> str:
    s = _TEXT_WRAP.sub(r"\1", s)
    s = re.sub(r"[{}\s.!]+", " ", s)
    return " ".join(s.lower().split())


def rewrite(s: str, rules: Rules) -> str:
    s = unicode_math(s).strip()
    for _name, pat, repl in rules.rewrites:
        s = pat.sub(repl, s)
    s = s.strip()
    if rules.thousands.match(s):
        s = s.replace(",", "")
    return expand_pm_items(parts_as_list(s))


_PART = re.compile(r"(?:^|(?<=[;,\s]))\(\s*(?:\d|[ivx]{1,3}|[a-h])\s*\)\s*")


def parts_as_list(s: str) -> str:
    """`(1) 6; (2) 12` -> `6, 12`: the answers of a problem in parts, in order
    (matched by one box per part)."""
    labels = _PART.findall(s)
    if len(labels) < 2 or not _PART.match(s):
        return s
    parts = [p for p in (x.strip().rstrip(";,").strip() for x in _PART.split(s)) if p]
    return ", ".join(parts) if len(parts) == len(labels) else s


_PM_ITEM = re.compile(r"(^|[,{(]\s*)(?:\\pm|±)\s*([^,{}()]+?)(?=\s*(?:,|\\\}|\}|\)|$))")


def expand_pm_items(s: str) -> str:
    """`\\{0, \\pm 1, \\pm 2\\}` -> `\\{0, 1, -1, 2, -2\\}`: a ± item in a list is two items.
    A lone `\\pm 2` (no list) is left alone: the ± check compares it."""
    if "," not in s or not _PM.search(s):
        return s
    return _PM_ITEM.sub(lambda m: f"{m.group(1)}{m.group(2).strip()}, -{m.group(2).strip()}", s)


_SCALE_W = {"thousand": 3, "million": 6, "billion": 9, "trillion": 12}
# `2.75 million`, `12.04 \\times 10^{23}`: a number and a power of ten
_SCALED = re.compile(rf"([+-]?\d+(?:\.\d+)?)\s*(?:({'|'.join(_SCALE_W)})|(?:\\times|\\cdot|\*)\s*10\s*\^\s*\{{?\s*([+-]?\d+)\s*\}}?)")


def number_words(s: str) -> str:
    """`\\text{forty-two}` -> `42`; `one hundred and five` -> `105` (English, below a million);
    `2.75 million` -> `2750000`; scientific notation -> the exact decimal, so that
    `12.04 \\times 10^{23}` equals `1.204 \\times 10^{24}` (floats of the two differ)."""
    scaled = re.sub(r",(?=\d{3})", "", _TEXT_WRAP.sub(r"\1", s)).replace(",", ".")  # `1,500 million`, `1,2 million`
    if m := _SCALED.fullmatch(" ".join(scaled.lower().split())):
        power = _SCALE_W[m.group(2)] if m.group(2) else int(m.group(3))
        return format(Decimal(m.group(1)).scaleb(power).normalize(), "f")
    value = word_number(_plain(s))
    return s if value is None else str(value)


def text_answer(s: str, rules: Rules) -> str | None:
    return rules.text_answers.get(_plain(s))


def split_unit(s: str, rules: Rules) -> tuple[str, str | None]:
    """`5\\text{ cm}` -> ("5", "cm"); a known unit only, else unchanged."""
    if _CLOCK.match(s):  # `10:15 p.m` is a time, not metres
        return s, None
    for pat in (_UNIT_TEXT, _UNIT_BARE):
        m = pat.match(s)
        if m:
            unit = rules.units.get(" ".join(m.group(2).lower().split()))
            if unit:
                return m.group(1).strip(), unit
    return s, None


def mcq_letter(s: str) -> str | None:
    s = _TEXT_WRAP.sub(r"\1", s).strip()
    if _hedged(s, _letters(s)):
        return None
    m = _LETTER.match(s)
    return m.group(1).upper() if m else None


def mcq_options(problem: str | None) -> dict[str, str]:
    if not problem:
        return {}
    found = {(m.group(1) or m.group(2)): _option_text(m.group(3)) for m in _OPTION.finditer(problem)}
    found = {k: v for k, v in found.items() if v}
    return found if {"A", "B"} <= found.keys() else {}  # a lone `A.` is prose, not a list of options


def _option_text(s: str) -> str:
    """`}\\ 12 \\qquad \\textbf{` (between two `\\textbf{(X)}` markers) -> `12`."""
    s = re.sub(r"^\s*\}|\\(?:textbf|mathrm|text)\s*\{\s*$|\\q?quad|\\ ", " ", s)
    return s.strip().strip("$").strip().rstrip(",;").strip()


def split_equation(s: str) -> tuple[str, str] | None:
    """`lhs = rhs` with exactly one plain '=' (not <=, >=, \\leq ...)."""
    if s.count("=") != 1 or re.search(r"[<>!]=|=[<>]|\\(?:leq?|geq?|neq?)", s):
        return None
    lhs, rhs = s.split("=")
    return (lhs.strip(), rhs.strip()) if lhs.strip() and rhs.strip() else None


_OR = re.compile(r"\\text\s*\{\s*or\s*\}|\\(?:lor|vee)\b|\bor\b")
_LESS = {"<": ")", "\\lt": ")", "\\le": "]", "\\leq": "]", "\\leqslant": "]", "≤": "]", "<=": "]"}
_MORE = {">": "(", "\\gt": "(", "\\ge": "[", "\\geq": "[", "\\geqslant": "[", "≥": "[", ">=": "["}
_REL_ALT = "|".join(re.escape(k) for k in sorted({**_LESS, **_MORE}, key=len, reverse=True))
_ONE_SIDED = re.compile(rf"^\s*[a-zA-Z]\s*({_REL_ALT})\s*(.+?)\s*$")


def _interval(piece: str) -> str | None:
    """`x < -1` -> `(-\\infty,-1)`, `x \\geq 2` -> `[2,\\infty)`."""
    m = _ONE_SIDED.match(piece)
    if not m:
        return None
    op, bound = m.groups()
    if op in _LESS:
        return f"(-\\infty,{bound}{_LESS[op]}"
    return f"{_MORE[op]}{bound},\\infty)"


_SET_BUILDER = re.compile(r"^\\\{\s*([a-zA-Z])\s*(?:\\in\s*\\mathbb\s*\{?\s*R\s*\}?\s*)?(?:\\mid|\\vert|\||:|\\colon)\s*(.+?)\s*\\\}$")


def set_builder(s: str) -> str:
    """`\\{x \\mid x \\ge 1\\}` -> `x \\ge 1`: the condition, which reads as an interval."""
    m = _SET_BUILDER.match(s.strip())
    return m.group(2) if m and re.search(rf"(?<![a-zA-Z\\]){m.group(1)}(?![a-zA-Z])", m.group(2)) else s


def as_interval(s: str) -> str | None:
    """An inequality, a chain or a set-builder set as its interval(s), so that
    the brackets are compared (`x \\le 3` is not `(-\\infty,3)`); None if not one."""
    cond = set_builder(s)
    return disjunction_as_union(cond) or chained_interval(cond) or _interval(cond)


def disjunction_as_union(s: str) -> str | None:
    """`x<-1 \\text{ or } x>2` -> `(-\\infty,-1)\\cup(2,\\infty)`; None if not of that form."""
    parts = _OR.split(s)
    if len(parts) < 2:
        return None
    intervals = [_interval(p) for p in parts]
    return "\\cup".join(intervals) if all(intervals) else None


_REPEATING = re.compile(r"^(-?)(\d*)\.(\d*)\\overline\{(\d+)\}$")


_TRAILING_DOTS = re.compile(r"^(-?\d*)\.(\d*?)(\d{1,3}?)\3+\d?\s*(?:…|\.{3}|\\[lc]?dots)\s*$")


def repeating_decimal(s: str) -> str:
    """`0.\\overline{142857}` -> `\\frac{1}{7}` (exact), else unchanged; `0.1666…` (a digit
    group repeated, then dots) is read as its repeating decimal."""
    if m := _TRAILING_DOTS.match(s.strip()):
        s = f"{m.group(1)}.{m.group(2)}\\overline{{{m.group(3)}}}"
    m = _REPEATING.match(s.strip())
    if not m:
        return s
    from fractions import Fraction

    sign, whole, fixed, rep = m.groups()
    value = Fraction(int(whole or 0)) + (Fraction(int(fixed), 10 ** len(fixed)) if fixed else 0)
    value += Fraction(int(rep), (10 ** len(rep) - 1) * 10 ** len(fixed))
    value = -value if sign else value
    return f"\\frac{{{value.numerator}}}{{{value.denominator}}}"


def percent_forms(s: str) -> list[str]:
    m = _PERCENT.match(s)
    if not m or not m.group(1).strip():
        return [s]
    v = m.group(1).strip()
    return [v, f"\\frac{{{v}}}{{100}}"]


# ---------------------------------------------------------- math-verify


@functools.lru_cache(maxsize=4096)
def _parse(s: str, as_answer: bool) -> tuple:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    if as_answer:
        got = parse(f"\\boxed{{{s}}}", extraction_config=[LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()],
                    parsing_timeout=None)
    else:
        got = parse(f"${s}$", extraction_config=[LatexExtractionConfig()], parsing_timeout=None)
        if not got:
            got = parse(s, extraction_config=[ExprExtractionConfig()], parsing_timeout=None)
    return tuple(got)


def _first_expr(parsed: tuple):
    import sympy

    for p in parsed:
        if isinstance(p, (sympy.Basic, sympy.MatrixBase)):
            return p
    return None


def _exact_numbers_differ(g_str: str, a_str: str, g, a) -> bool:
    """True when both sides are plain numbers that are not exactly equal.

    Math-Verify compares numbers after rounding, so 1/2004! equals 1/2006!
    and 0.142857 equals 1/7. A decimal is taken at its written value.
    """
    import sympy

    # a float's repr (3.3333333333333335) stands for its value to double precision; an answer
    # so written, only against a decimal gold (0.49999999999999994 for 0.5, not for 1/2)
    if _FLOAT_REPR.match(g_str) or (_FLOAT_REPR.match(a_str) and re.fullmatch(r"\s*-?\d+(?:\.\d+)?\s*", g_str)):
        try:
            gv, av = complex(sympy.N(g, 30)), complex(sympy.N(a, 30))
        except (TypeError, ValueError):
            return False
        return abs(gv - av) > 1e-12 * max(1.0, abs(gv))

    def exact(s, e):
        if _DECIMAL.match(s):
            return sympy.Rational(s.strip())
        if isinstance(e, sympy.Expr) and not e.free_symbols and e.is_rational:
            return e.doit()
        return None

    ge, ae = exact(g_str, g), exact(a_str, a)
    if (ge is None) != (ae is None) and _DECIMAL.match(g_str if ge is not None else a_str):
        other = a if ge is not None else g  # a decimal against \\sqrt{2}, e, \\pi/4: only ever close
        return isinstance(other, sympy.Expr) and not other.free_symbols and other.is_rational is False
    if ge is None or ae is None:
        return False
    if not _DECIMAL.match(g_str) and not _DECIMAL.match(a_str) and ge.is_Integer and ae.is_Integer:
        return ge != ae
    return sympy.simplify(ge - ae) != 0


def mv_equal(gold: str, answer: str, opts: Options) -> bool:
    from math_verify import verify

    g, a = _parse(gold, False), _parse(answer, True)
    if not g or not a:
        return False
    ok = bool(verify(list(g), list(a), allow_set_relation_comp=opts.allow_set_relation_comp, timeout_seconds=None))
    ge, ae = _first_expr(g), _first_expr(a)
    if ok and opts.strict_numbers and ge is not None and ae is not None:
        return not _exact_numbers_differ(gold, answer, ge, ae)
    if not ok and ge is not None and ae is not None:
        return _equal_for_positive_symbols(ge, ae) or _equal_as_complex(ge, ae)
    return ok


def _equal_as_complex(g, a) -> bool:
    """`i(2-i)` vs `1+2i`, `1/i` vs `-i`: Math-Verify reads `i` as a variable;
    equal when `i` is the imaginary unit and both sides are then constants."""
    import sympy

    if not isinstance(g, sympy.Expr) or not isinstance(a, sympy.Expr):
        return False
    unit = {s: sympy.I for s in (g.free_symbols | a.free_symbols) if s.name == "i"}
    unit.update({s: sympy.E for s in (g.free_symbols | a.free_symbols) if s.name == "e"})
    if not any(s.name == "i" for s in unit):
        return False
    g, a = g.subs(unit), a.subs(unit)
    if g.free_symbols or a.free_symbols:
        return False
    try:
        return sympy.simplify(sympy.expand_complex(g - a)) == 0
    except Exception:  # noqa: BLE001 - sympy raises many kinds
        return False


def _equal_for_positive_symbols(g, a) -> bool:
    """`\\sqrt{1/n}` vs `1/\\sqrt{n}`: equal when the variables are positive,
    as answers with radicals tacitly assume. Only tried when both sides have
    the same variables and a radical, so |x| vs x is not affected."""
    import sympy

    if not isinstance(g, sympy.Expr) or not isinstance(a, sympy.Expr):
        return False
    syms = g.free_symbols
    if not syms or syms != a.free_symbols:
        return False
    if not any(isinstance(e, sympy.Pow) and not e.exp.is_integer for e in (g.atoms(sympy.Pow) | a.atoms(sympy.Pow))):
        return False
    pos = {s: sympy.Symbol(s.name, positive=True) for s in syms}
    try:
        g, a = (sympy.nsimplify(e, rational=True) if e.atoms(sympy.Float) else e for e in (g, a))  # x^{0.5}
        return sympy.simplify(g.subs(pos) - a.subs(pos)) == 0
    except Exception:  # noqa: BLE001 - sympy raises many kinds
        return False


def _relations_equal(g: tuple[str, str], a: tuple[str, str]) -> bool:
    """Two equations are the same when lhs-rhs differ by a nonzero constant factor."""
    import sympy

    parts = [_first_expr(_parse(x, False)) for x in (*g, *a)]
    if any(p is None or not isinstance(p, sympy.Expr) for p in parts):
        return False
    e1, e2 = parts[0] - parts[1], parts[2] - parts[3]
    if e2 == 0 or e1 == 0:
        return e1 == e2
    ratio = sympy.simplify(e1 / e2)
    return not ratio.free_symbols and ratio != 0


# -------------------------------------------------------------- compare

_MIXED = re.compile(r"^([+-]?)(\d+)\s*(?:\s(\d+)\s*/\s*(\d+)|\\frac\s*\{(\d+)\}\s*\{(\d+)\})(\s*\\?%)?$")
_DECIMAL_COMMA = re.compile(r"^([+-]?\d+),(\d+)(\s*\\?%)?$")
_MEMBER = re.compile(r"^\s*[a-zA-Z]\s*\\in\s*(.+)$")
_LE = r"(?:<=|\\leq?|\\leqslant|≤)"
_LT = r"(?:<|\\lt)"
_CHAIN = re.compile(rf"^\s*(.+?)\s*({_LE}|{_LT})\s*[a-zA-Z]\s*({_LE}|{_LT})\s*(.+?)\s*$")


def mixed_number(s: str) -> str:
    """`1 1/2`, `+11 5/6`, `4\\frac{4}{9}\\%` -> an improper fraction (percent kept)."""
    m = _MIXED.match(s.strip())
    if not m:
        return s
    sign, whole, n1, d1, n2, d2, pct = m.groups()
    num, den = int(n1 or n2), int(d1 or d2)
    if den == 0 or num >= den:
        return s
    frac = f"\\frac{{{int(whole) * den + num}}}{{{den}}}"
    return f"{'-' if sign == '-' else ''}{frac}{pct or ''}"


def clock_24h(s: str) -> str:
    """`08:34 \\text{P.M.}`, `\\text{8:34 PM}` -> `20:34`."""
    m = _CLOCK.match(_TEXT_WRAP.sub(r"\1", s).strip())
    if not m:
        return s
    hour = int(m.group(1)) % 12 + (12 if m.group(3).lower() == "p" else 0)
    return f"{hour:02d}:{m.group(2)}"


_BARE_CLOCK = re.compile(r"^\s*([1-9]|1[0-2]):(\d{2})\s*$")  # `04:30` is a 24-hour time: not bare


def same_clock(g: str, a: str) -> bool:
    """Clock times, one at least with AM/PM. A side that gives none (`3:45`
    against `3:45 PM`) is read on a 12-hour dial: it does not say which half
    (`04:30` with its zero is a 24-hour time, so it does)."""
    g24, a24 = clock_24h(g), clock_24h(a)
    for bare, other in ((g, a24), (a, g24)):
        m = _BARE_CLOCK.match(bare)
        if m and clock_24h(bare) == bare:
            h, mins = other.split(":")[:2] if ":" in other else ("", "")
            return h.isdigit() and int(m.group(1)) % 12 == int(h) % 12 and m.group(2) == mins.strip()
    return g24.lstrip("0") == a24.lstrip("0")


def _forms(s: str) -> list[str]:
    """The ways one written answer may be read: as is, and with a decimal comma (`2,5`, `x = 2,5`)."""
    out = [s]
    lhs, value = re.match(r"((?:[a-zA-Z]\s*=\s*)?)(.*)$", s, re.S).groups()
    m = _DECIMAL_COMMA.match(value)
    if m and not re.fullmatch(r"[+-]?[1-9]\d{0,2}", m.group(1)) or (m and len(m.group(2)) != 3):
        out.append(f"{lhs}{m.group(1)}.{m.group(2)}{m.group(3) or ''}")
    if re.fullmatch(r"[+-]?[1-9]\d{0,2}(?:\.\d{3})+", value):  # `1.000` in Spanish or German is a thousand
        out.append(lhs + value.replace(".", ""))
    return out


def chained_interval(s: str) -> str | None:
    """`-2 \\le x \\le 7` -> `[-2,7]`."""
    m = _CHAIN.match(s)
    if not m or "," in m.group(1) or "," in m.group(4):
        return None
    lo, op1, op2, hi = m.groups()
    left = "[" if re.fullmatch(_LE, op1) else "("
    right = "]" if re.fullmatch(_LE, op2) else ")"
    return f"{left}{lo},{hi}{right}"


def _percent_pairs(g: str, a: str) -> list[tuple[str, str]]:
    """A `%` on one side may mean the number or the fraction; on both sides, the numbers."""
    gm, am = _PERCENT.match(g), _PERCENT.match(a)
    gv = gm.group(1).strip() if gm and gm.group(1).strip() else None
    av = am.group(1).strip() if am and am.group(1).strip() else None
    if gv is not None and av is not None:
        return [(gv, av)]
    if gv is not None:
        return [(gv, a), (f"\\frac{{{gv}}}{{100}}", a)]
    if av is not None:  # 12.5% for a gold 0.125; 50% for a gold 50, but 0.125% is not 0.125
        plain_ok = not re.fullmatch(r"[+-]?0?\.\d+|[+-]?0", g.strip())
        return ([(g, av)] if plain_ok else []) + [(g, f"\\frac{{{av}}}{{100}}")]
    return [(g, a)]


_BASE_NUM = re.compile(r"^(?:\\(?:text|mathrm)\s*\{\s*)?([0-9A-Za-z]+)\s*\}?\s*(?:_\s*\{?\s*(\d+)\s*\}?)?$")
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def base_digits(g: str, a: str) -> bool | None:
    """`\\text{FF}_{16}` vs `FF`, `1011_2` vs `1011`: a numeral in a base is its digits.
    None when neither side names a base, or the digits do not fit it."""
    gm, am = _BASE_NUM.match(g.strip()), _BASE_NUM.match(a.strip())
    if not gm or not am or not (gm.group(2) or am.group(2)):
        return None
    bases = [int(x.group(2) or gm.group(2) or am.group(2)) for x in (gm, am)]
    digits = [x.group(1).lower() for x in (gm, am)]
    if not all(2 <= b <= 36 and all(c in _DIGITS[:b] for c in d) for b, d in zip(bases, digits)):
        return None
    if bases[0] != bases[1]:  # `FF_{16}` vs `11111111_2`: one number
        return int(digits[0], bases[0]) == int(digits[1], bases[1])
    return digits[0].lstrip("0") == digits[1].lstrip("0")


_LETTER_SET = re.compile(r"^\(?[A-E]\)?(?:\s*(?:,|and|&|\s)\s*\(?[A-E]\)?)+$")


def letter_set(g: str, a: str, problem: str | None) -> bool | None:
    """`BD` vs `B, D`: a multi-select answer is a set of letters (only when the problem lists options)."""
    g, a = (_TEXT_WRAP.sub(r"\1", x).strip() for x in (g, a))
    if not (_LETTER_SET.match(g) or re.fullmatch(r"[A-E]{2,5}", g)) or not mcq_options(problem):
        return None
    if not (_LETTER_SET.match(a) or re.fullmatch(r"[A-E]{2,5}", a)):
        return None
    return set(re.findall(r"[A-E]", g)) == set(re.findall(r"[A-E]", a))


def compound_quantity(s: str, rules: Rules) -> str:
    """`2 hours 30 minutes` -> `150\\text{ min}`: one quantity in two units of one scale."""
    plain = _TEXT_WRAP.sub(r"\1", s).replace("\\,", " ").strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\.?\s*(?:,|and)?\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\.?", plain)
    if not m:
        return s
    u1, u2 = (rules.units.get(m.group(i).lower()) for i in (2, 4))
    (q1, f1), (q2, f2) = rules.scales.get(u1 or "", (None, "")), rules.scales.get(u2 or "", (None, ""))
    if q1 is None or q1 != q2 or u1 == u2:
        return s
    from fractions import Fraction

    total = Fraction(m.group(1)) * Fraction(f1) / Fraction(f2) + Fraction(m.group(3))
    value = str(total.numerator) if total.denominator == 1 else f"\\frac{{{total.numerator}}}{{{total.denominator}}}"
    return f"{value}\\text{{ {u2}}}"


_NAMED_ITEM = re.compile(r"^\s*(?:\\text\s*\{\s*([a-zA-Z]{2,}(?: [a-zA-Z]+)*)\s*[:=]?\s*\}|([a-zA-Z]{2,}(?: [a-zA-Z]+)*))"
                         r"\s*[:=]?\s*([^a-zA-Z\s].*?)\s*$")


def named_items(s: str, order: list[str] | None = None) -> tuple[str, list[str]]:
    """`\\text{quotient } 9, \\text{ remainder } 2` -> `(9, 2)`: a list whose items are
    named is the tuple of its values, in the other side's `order` when both name them;
    against named values (`order`), a bare list `9, 2` is a tuple too. Returns the names."""
    items = [m for m in (_NAMED_ITEM.match(p) for p in s.split(",")) if m]
    if len(items) < 2 or len(items) != s.count(",") + 1:
        return (f"({s})" if order and "," in s and not re.match(r"\s*[(\[{]", s) else s), []
    named = {(m.group(1) or m.group(2)).lower(): m.group(3) for m in items}
    if order and set(order) == set(named):
        return "(" + ", ".join(named[n] for n in order) + ")", order
    return "(" + ", ".join(m.group(3) for m in items) + ")", list(named)


_NEG_PREFIX = ("non-", "non", "ir", "un", "in", "im", "il", "not ")


def _question_words(problem: str | None) -> set[str]:
    questions = re.findall(r"[^.?!\n]*\?", problem or "")
    return {w for q in questions for w in re.findall(r"[a-z]{3,}", _TEXT_WRAP.sub(r"\1", q).lower())}


def polar_word(a: str, problem: str | None, rules: Rules) -> str | None:
    """`\\text{irrational}` answers "Is ... rational?" with no; `rational` with yes."""
    word = _plain(a)
    if not re.fullmatch(r"(?:not )?[a-z-]{3,}", word):
        return None
    asked = {_stem(w) for w in _question_words(problem)}
    if _stem(word) in asked:
        return "yes"
    for pair in rules.antonyms:
        if _stem(word) in {_stem(w) for w in pair} and any(_stem(w) in asked for w in pair):
            return "yes" if _stem(word) in asked else "no"
    for pre in _NEG_PREFIX:
        if (word.startswith(pre) and _stem(word[len(pre):]) in asked) or _stem(pre + word) in asked:
            return "no"
    return None


def _stem(word: str) -> str:
    """converges, converged -> converge: enough to match a question's verb."""
    return re.sub(r"(?<=[a-z]{3})(?:es|s|ed|d|e)$", "", word)


def text_phrase(g: str, a: str, problem: str | None) -> bool | None:
    """`\\text{Right triangle}` for a gold `\\text{right}`: the gold's words, plus words the
    problem itself uses (what the answer is about), and no negation."""
    gw, aw = _plain(g).split(), _plain(a).split()
    if not gw or not all(re.fullmatch(r"[a-z]{2,}", w) for w in gw + aw) or len(aw) < len(gw):
        return None
    if aw == gw:
        return True
    if _NEGATION.search(" ".join(aw)) and not _NEGATION.search(" ".join(gw)):
        return False
    words = set(re.findall(r"[a-z]+", (problem or "").lower()))
    extra = list(aw)
    for w in gw:
        if w not in extra:
            return False
        extra.remove(w)
    return all(w in words or w.rstrip("s") in words for w in extra)


_IDENTITY = re.compile(r"^\s*(-?\s*(?:\\frac\s*(?:\{\d+\}|\d)\s*(?:\{\d+\}|\d)|\d+(?:\.\d+)?)?)\s*(?:\\cdot\s*)?"
                       r"(?:\\mathbf\{I\}|\\mathrm\{I\}|I)(?:_\{?(\d)\}?)?\s*$")


def identity_matrix(s: str, other: str) -> str:
    """`I_2` (or `I`, `\\frac{1}{2} I` against a square matrix) -> the matrix written out."""
    m = _IDENTITY.match(s)
    if not m or "matrix}" not in other:
        return s
    rows = re.search(r"\\begin\{[pbv]?matrix\}(.*?)\\end", other, re.S)
    size = int(m.group(2)) if m.group(2) else (len([r for r in rows.group(1).split("\\\\") if r.strip()]) if rows else 0)
    if not size:
        return s
    coef = m.group(1).replace(" ", "")  # `\\frac12 I`: a multiple of I
    one = {"": "1", "-": "-1"}.get(coef, coef)
    body = " \\\\ ".join(" & ".join(one if i == j else "0" for j in range(size)) for i in range(size))
    return f"\\begin{{pmatrix}} {body} \\end{{pmatrix}}"


def _percent_for_a_unit(g: str, a: str, problem: str | None, rules: Rules) -> bool:
    """`50\\%` for "By how many dollars ...": a percentage where the question asks for a unit."""
    return bool(_PERCENT.match(a)) and not _PERCENT.match(g) and asked_unit(problem, rules) is not None


def _gold_unit(gold: str, gu: str | None, au: str | None, problem: str | None, rules: Rules) -> str | None:
    """A bare gold against an answer with a unit (`2.5` for "How many hours ...", `\\$12.75`)
    is in the unit the question asks for."""
    if gu or not au:
        return gu
    return "dollar" if re.match(r"\s*\\?\$", gold) and "dollar" in rules.scales else asked_unit(problem, rules)


def _decided_by_form(g: str, a: str, problem: str | None, rules: Rules) -> bool | None:
    """The answers whose form decides them before any maths: text answers (and the
    words that answer a yes/no question), text phrases, numerals in a base, letter sets."""
    gt, at = text_answer(g, rules), text_answer(a, rules)
    if gt is not None and at is None and (ae := split_equation(a)) and _ASSIGN_LHS.match(ae[0]):
        at = text_answer(ae[1], rules)  # `A \cap B = \emptyset`: its right-hand side answers
    if gt in ("yes", "no") and (polar := polar_word(a, problem, rules)):  # `possible` for "Is it impossible?"
        return polar == gt
    if gt is not None or at is not None:
        return gt == at
    if (same := text_phrase(g, a, problem)) is not None:
        return same
    g, a = number_words(g), number_words(a)
    return next((d for d in (base_digits(g, a), letter_set(g, a, problem)) if d is not None), None)


def compare(gold: str, answer: str, problem: str | None, opts: Options, rules: Rules) -> bool:
    """Is `answer` (already extracted) the same answer as `gold`?"""
    if not opts.normalizers:
        return mv_equal(gold, answer, opts)
    answer = _degrees_as_radians(answer, gold)  # an answer that states its unit is read in it
    g, a = rewrite(gold, rules), rewrite(answer, rules)
    if not g or not a:
        return False
    if bool(_PM.search(g)) != bool(_PM.search(a)):
        if not (_pm_matches_set(g, a, opts) if _PM.search(a) else _pm_matches_set(a, g, opts)):
            return False
    elif _PM.search(g) and g != a:  # `1 \\pm \\sqrt{3}` vs `\\frac{2\\pm\\sqrt{12}}{2}`: each sign on its own
        return all(compare(_PM.sub(sign, g), _PM.sub(sign, a), problem, opts, rules) for sign in ("+", "-"))
    if (decided := _decided_by_form(g, a, problem, rules)) is not None:
        return decided
    g, a = identity_matrix(g, a), identity_matrix(a, g)
    g, a = number_words(g), number_words(a)
    g, a = compound_quantity(g, rules), compound_quantity(a, rules)
    g, names = named_items(g)
    a, _ = named_items(a, names)
    if _PERCENT.match(g):  # `16 percent` for a gold `16\\%`
        a = _PERCENT_WORD.sub(r"\\%", a)
    if re.fullmatch(r"\(?[A-E]\)?", _TEXT_WRAP.sub(r"\1", g).strip()):  # `\\mathrm{(E)}`
        g = _TEXT_WRAP.sub(r"\1", g).strip()
    if m := _LETTER_AND_TEXT.match(g):  # gold `(D) Alina`: the letter, or the option's text
        letter = mcq_letter(a)
        return letter == m.group(1) if letter is not None else compare(m.group(2), a, None, opts, rules)
    if re.fullmatch(r"\(?[A-E]\)?", g.strip()):
        letter = mcq_letter(a)
        options = mcq_options(problem)
        if letter is not None and (letter in options or not options or len(a.strip()) <= 3):
            return letter == g.strip("() ")
        target = options.get(g.strip("() "))
        return bool(target) and compare(target, a, None, opts, rules)
    if (letter := mcq_letter(a)) is not None and len(a.strip()) <= 3 and (options := mcq_options(problem)):
        return letter in options and compare(g, options[letter], None, opts, rules)  # gold 12, answer `B` = (B) 12
    gv, gu = split_unit(g, rules)
    av, au = split_unit(a, rules)
    gu = _gold_unit(gold, gu, au, problem, rules)
    if _percent_for_a_unit(gv, av, problem, rules):
        return False
    if gu and au and gu != au:
        return _converted_equal(gv, gu, av, au, opts, rules)
    if clock_24h(gv) != gv or clock_24h(av) != av:
        return same_clock(gv, av)
    if not split_equation(gv):
        av = _chain_value(av) or av  # `1234 \\cdot 25 = 30.850`: the last member, read in every form
    return any(_compare_values(gf, af, opts) for gf in _forms(mixed_number(gv)) for af in _forms(mixed_number(av)))


def _compare_values(g: str, a: str, opts: Options) -> bool:
    g, a = assignments_as_tuple(g), assignments_as_tuple(a)
    if g.lstrip().startswith("(") != a.lstrip().startswith("("):  # a vector against a tuple
        g, a = vector_as_tuple(g), vector_as_tuple(a)
    if not split_equation(g) and (last := _chain_value(a)) is not None:
        a = last
    ge, ae = split_equation(g), split_equation(a)
    if ge and ae:
        if _same_function(ge[0], ae[0]) and mv_equal(ge[1], ae[1], opts):  # `f(x) = 2x + 3` vs `y = 2x + 3`
            return True
        return _relations_equal(ge, ae) or mv_equal(g, a, opts)
    g, a = repeating_decimal(g), repeating_decimal(a)
    if m := _MEMBER.match(g):
        g = m.group(1)
    if m := _MEMBER.match(a):
        a = m.group(1)
    g, a = as_interval(g) or g, as_interval(a) or a
    if ae and not ge and _ASSIGN_LHS.match(ae[0]):
        a = ae[1]
    elif ge and not ae and _ASSIGN_LHS.match(ge[0]):
        g = ge[1]
    return any(mv_equal(gc, ac, opts) for gc, ac in _percent_pairs(g, a))


def _is_constant(s: str) -> bool:
    import sympy

    e = _first_expr(_parse(_PM.sub("+", s), False))
    return isinstance(e, sympy.Expr) and all(sym.name in ("i", "e") for sym in e.free_symbols)


def _chain_value(s: str) -> str | None:
    """`1+i = \\sqrt{2}\\operatorname{cis}\\frac{\\pi}{4}`, `2 + 3 = 5`: a chain of equal
    constants stands for its last member."""
    parts = [repeating_decimal(p.strip()) for p in s.split("=")]  # `1/3 = 0.333…`
    if len(parts) < 2 or re.search(r"[<>!]=|=[<>]|\\(?:leq?|geq?|neq?)", s) or not all(parts):
        return None
    return parts[-1] if all(_is_constant(p) for p in parts) else None


_ASSIGNMENTS = re.compile(r"^\s*[a-zA-Z]\s*=\s*[^,=]+(?:\s*,\s*[a-zA-Z]\s*=\s*[^,=]+)+\s*$")


def assignments_as_tuple(s: str) -> str:
    """`x=-1, y=2` -> `(-1, 2)`: a solution written variable by variable."""
    if not _ASSIGNMENTS.match(s):
        return s
    pairs = [p.split("=") for p in s.split(",")]
    names = [n.strip() for n, _ in pairs]
    return "(" + ", ".join(v.strip() for _, v in pairs) + ")" if len(set(names)) == len(names) else s


_DEGREE_MARK = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*(?:\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|°|\\degree)\s*$")


def _degrees_as_radians(s: str, other: str) -> str:
    """`30^\\circ` against an answer in radians (`\\frac{\\pi}{6}`) -> `\\frac{30\\pi}{180}`
    (`\\theta = 30^\\circ` too: the value is what is assigned)."""
    if (eq := split_equation(s)) and _ASSIGN_LHS.match(eq[0]):
        return f"{eq[0]} = {_degrees_as_radians(eq[1], other)}"
    m = _DEGREE_MARK.match(s)
    if not m or "\\pi" not in other or _DEGREE_MARK.match(other):
        return s
    return f"\\frac{{{m.group(1)}\\pi}}{{180}}"


def _converted_equal(gv: str, gu: str, av: str, au: str, opts: Options, rules: Rules) -> bool:
    """`3.5 h` vs `210 min`: one quantity in two units, compared in its base unit."""
    (gq, gf), (aq, af) = rules.scales.get(gu, (None, "")), rules.scales.get(au, (None, ""))
    if gq is None or gq != aq:
        return False

    def scaled(value: str, factor: str) -> str:
        num, _, den = factor.partition("/")
        return f"\\frac{{{num}}}{{{den or 1}}}\\cdot({value})"

    return mv_equal(scaled(gv, gf), scaled(av, af), opts)


_VECTOR = re.compile(r"^\\begin\{([pbv]?matrix)\}(.*)\\end\{\1\}$", re.S)


def vector_as_tuple(s: str) -> str:
    """A one-column or one-row matrix `\\begin{pmatrix} 3 \\\\ -1 \\end{pmatrix}` -> `(3, -1)`."""
    m = _VECTOR.match(s.strip())
    if not m:
        return s
    rows = [r.strip() for r in m.group(2).split("\\\\") if r.strip()]
    cells = [c.strip() for c in rows[0].split("&")] if len(rows) == 1 else rows
    if len(cells) < 2 or (len(rows) > 1 and any("&" in r for r in rows)):
        return s
    return "(" + ", ".join(cells) + ")"


def _same_function(lhs1: str, lhs2: str) -> bool:
    """Two names for one function: `y` and `f(x)` (or the same name twice)."""
    a, b = (re.sub(r"\s+", "", x) for x in (lhs1, lhs2))
    if a == b:
        return bool(_ASSIGN_LHS.match(a))
    return {a, b} & {"y"} != set() and any(re.fullmatch(_FN_NAME, x) for x in (a, b))


def _pm_matches_set(g: str, a: str, opts: Options) -> bool:
    """`a` with a ±, `g` with both signs spelt out: `x = \\pm 2` vs `\\{-2, 2\\}` or `2, -2`."""
    a = a.split("=")[-1].strip() if a.count("=") == 1 else a
    m = re.fullmatch(r"(.*?)(?:\\pm|±)(.+)", a)
    if not m:
        return False
    base, rest = m.group(1).strip(), m.group(2).strip()
    spelt = f"{base}+{rest}, {base}-{rest}" if base else f"{rest}, -{rest}"
    inner = re.sub(r"^\\\{|\\\}$", "", _MEMBER.sub(r"\1", g.strip()))
    inner = re.sub(r"\b[a-zA-Z]\s*=\s*", "", inner.replace("\\text{ or }", ",").replace(" or ", ","))
    return mv_equal(f"\\{{{inner}\\}}", f"\\{{{spelt}\\}}", opts)


# ------------------------------------------------- a whole generation


# the word, then a stop or a clause (`No, ...`, `No it is not`), not a noun phrase (`No small prime divides it`)
_LEADING_YES_NO = re.compile(r"\W*(?:the answer is\s+)?(yes|no|true|false)\b(?=\s*(?:[,.;:!()—–-]|\*|$)|\s+(?:it|this|that|they|"
                             r"there|we|he|she|because|since|as|so|the\s+answer)\b)", re.IGNORECASE)


def leading_text_answer(text: str, rules: Rules) -> str | None:
    """`No, it is not possible ...` -> `no`: a Yes/No that opens a sentence."""
    m = _LEADING_YES_NO.match(text.strip())
    return rules.text_answers.get(m.group(1).lower()) if m else None


_RULED_OUT = re.compile(r"\b(?:not|no|never|cannot|can't|isn't|non|pas|nicht|kein|nein|não|nao|не|нет)\b|n't\b|不是|不|ではない|아니", re.I)


def _hedged(text: str, letters: list[str]) -> bool:
    """`(B) or possibly (E)`: two letters offered, neither ruled out (`D, it can't be A` is one)."""
    if len(set(letters)) < 2:
        return False
    first, second = (re.search(rf"(?<![A-Za-z\\]){x}(?![A-Za-z])", text) for x in letters[:2])
    return not _RULED_OUT.search(text[first.end(): second.start()]) if first and second else False


def _letters(text: str) -> list[str]:
    return re.findall(r"(?<![A-Za-z\\])([A-E])(?![A-Za-z])", text)


def _lists_values(s: str) -> bool:
    """`(2,-3), 5`: a comma outside every bracket."""
    prev = None
    while prev != s:
        prev, s = s, re.sub(r"\\\{[^{}]*?\\\}|[(\[][^()\[\]]*[)\]]|\{[^{}]*\}", "", s)
    return "," in s


def grade(gold: str, generation: str, finish_reason: str | None, problem: str | None, opts: Options,
          rules: Rules) -> tuple[bool, str | None]:
    """(correct, the answer that decided it) for one generation, extraction included.

    Our candidates first (see extract.py); then, unless the preset is strict,
    Math-Verify's own extraction on the same text, so that nothing raw
    Math-Verify accepts is lost, except its known false positives (`vetoed`).
    """
    found = candidates(generation, finish_reason, strict=opts.strict_format)
    if found is None:
        return False, None
    region = answer_region(generation)
    if not found and dangling_phrase(region):
        return False, None
    # a box or a final-answer phrase: the model said its answer outright, not only in prose
    outright = bool(all_boxed(region)) or final_phrase(region) is not None
    # in prose, the value given for what the question asks beats the line's last number
    asked = [] if outright or opts.strict_format else asked_readings(problem, region, rules)
    found = asked or found
    tries = list(found)
    g = rewrite(gold, rules)
    if not opts.strict_format and _lists_values(g) and (values := line_values(region)) \
            and not re.search(r"[a-zA-Z]{2,}", re.sub(r"\\[a-zA-Z]+", "", g)):  # `gcd 6, lcm 36`: names decide, not order
        tries.append(values)
    if text_answer(g, rules) is not None and not opts.strict_format:
        leads = [c for c in tries if leading_text_answer(c, rules)]
        paras = paragraphs(region)
        tries += [leading_text_answer(c, rules) for c in leads] + \
                 [t for t in (leading_text_answer(p, rules) for p in paras[:1] + paras[-1:] + region.strip().splitlines()[-1:]) if t]
    if not opts.strict_format:
        unit_reads = _with_units(found, region, rules)
        if outright and (asked := asked_unit(problem, rules)):  # `\\boxed{12600}` for "how many minutes" is in minutes
            unit_reads = [u for u in unit_reads if split_unit(rewrite(u, rules), rules)[1] == asked]
        tries += unit_reads + _quantities_in(found)
        if not all_boxed(region):  # said in prose, or in a sentence after `**Answer:**`
            tries += _said_in_prose(g, region, rules)
        tries += _decrease_readings(g, found, region)
    if re.fullmatch(r"\(?[A-E]\)?", _TEXT_WRAP.sub(r"\1", g).strip()) and not opts.strict_format:
        for c in found:  # prose such as `for sure D, it can't be A or B`, not `\\mathrm{E}*2`
            prose = re.search(r"[a-zA-Z]{2,}", re.sub(r"\\[a-zA-Z]+", "", c))
            if prose and mcq_letter(c) is None and (letters := _letters(c)) and not _hedged(c, letters):
                tries.append(letters[0])
        paras = paragraphs(region)
        for p in paras[-1:] + paras[:1]:  # `D. it can't be A or B`, `B。 不是 A`
            if m := re.match(r"\W*\(?([A-E])\)?(?![A-Za-z])", p):
                tries.append(m.group(1))
        sentences = [s for s in re.split(r"(?<=[.!?])\s+|\n", region.strip()) if s.strip()]
        if not found and sentences and (letters := _letters(sentences[-1])):
            tries.append(letters[-1])
    for cand in dict.fromkeys(tries):
        if compare(gold, cand, problem, opts, rules):
            return True, cand
    if opts.strict_format or not opts.mv_fallback or asked or (found and not outright and where_clause(region)):
        return False, (found[0] if found else None)
    ok, mv_answer = mv_in_text(gold, region)
    # the veto also hears our own committed reading: `\\boxed{5\\text{ cm}}` that Math-Verify reads as 5
    ours = found[:1] if outright else []
    if ok and not any(vetoed(gold, x, problem, opts, rules) for x in (mv_answer, *ours)) \
            and (found or committed(region, mv_answer)) and not _last_mention_negated(region, mv_answer):
        return True, mv_answer
    return False, (found[0] if found else mv_answer)


_NEGATION = re.compile(r"\b(?:not|no|never|neither|nor|whether|if|cannot|can't|doesn't|isn't|aren't)\b|n't\b", re.I)


# saying that nothing solves the problem, in words; not when the paragraph also gives a value (`x = 3`)
_NONE_EXISTS = re.compile(r"\bno\s+(?:[a-z]+\s+){0,2}?(?:satisf\w*|exists?|works?|solves?)\b|\bimpossible\b|"
                          r"\b(?:there\s+(?:is|are|exists?)\s+no\s+(?:[a-z]+\s+){0,2}?(?:solutions?|such|values?|integers?|numbers?))\b",
                          re.I)
_VALUE_GIVEN = re.compile(r"(?<![\w\\])[a-zA-Z]\s*=\s*-?\d")


_DECREASE = re.compile(r"\b(?:decreas\w*|declin\w*|drop\w*|fall\w*|fell|los[st]\w*|reduc\w*|down)\b"
                       r"(?:\s+\w+){0,2}?\s+(?:by\s+|of\s+)?\W*$", re.I)


def _decrease_readings(g: str, found: list[str], region: str) -> list[str]:
    """`The population decreases by 4%.` for a gold of `-4\\%`: a change said in words."""
    paras = paragraphs(region)
    if not g.lstrip().startswith("-") or not paras:
        return []
    last = paras[-1]
    return [f"-{c}" for c in found if not c.startswith("-") and (i := last.rfind(c)) > 0 and _DECREASE.search(last[:i])]


def _said_in_prose(g: str, region: str, rules: Rules) -> list[str]:
    """A text gold the last paragraph affirms in words: `\\text{even}` in "The
    function is even, since ...", `no solution` in "There is no solution, because
    ...". Not when a negation or `whether` comes just before it."""
    # phrases, and long single words (`impossible`); not `no`, `true`, `none`: too common in prose
    variants = {v for v, canon in rules.text_answers.items()
                if canon == text_answer(g, rules) and (" " in v or len(v) >= 8)}
    word = _plain(g)
    if re.fullmatch(r"[a-z]{3,}(?: [a-z]+){0,3}", word) and text_answer(g, rules) is None:
        variants.add(word)
    paras = paragraphs(region)
    last = _plain(paras[-1]) if paras else ""
    out = []
    if text_answer(g, rules) == "no solution" and paras and _NONE_EXISTS.search(paras[-1]) \
            and not _VALUE_GIVEN.search(paras[-1]):  # `impossible: no integer satisfies $2x = 7$`
        out.append("no solution")
    for v in variants:
        for m in re.finditer(rf"\b{re.escape(v)}\b", last):
            before = " ".join(last[: m.start()].split()[-3:])
            if not _NEGATION.search(before) and not re.match(r"\s*or\b", last[m.end():]):
                out.append(v)
                break
    return out


def _with_units(found: list[str], region: str, rules: Rules) -> list[str]:
    """`So the trip takes 2 hours.`: a plain-number reading with the unit written after it."""
    out = []
    for c in found:
        if re.fullmatch(r"[-+]?\d+(?:[.,]\d+)?", c):
            for m in re.finditer(rf"(?<![\d.]){re.escape(c)}\s*([a-zA-Z][a-zA-Z/^23²³]*(?:\s+per\s+[a-z]+)?)", region):
                if split_unit(f"{c} {m.group(1)}", rules)[1]:
                    out.append(f"{c}\\text{{ {m.group(1)}}}")
            # `1 hour and 15 minutes`: the number read last is the second part of one quantity
            for m in re.finditer(rf"(?<![\d.])\d+(?:\.\d+)?\s*[a-zA-Z]+\.?\s*(?:,|and)?\s*{re.escape(c)}\s*[a-zA-Z]+", region):
                if (whole := compound_quantity(m.group(0), rules)) != m.group(0):
                    out.append(whole)
    return out


_PERCENT_WORD = re.compile(r"(?<=\d)\s*(?:\\text\s*\{\s*)?(?:percent|per cent)\b\s*\}?", re.I)
_QUANTITY = re.compile(r"(?<![\d.,])(\d+(?:\.\d+)?)\s*(\\?%|\\?\$|€|£|percent\b|per cent\b)")


def _quantities_in(found: list[str]) -> list[str]:
    """`40 is 16 percent of 250`, `Janeth aura encore 220 $ à payer d'ici 12 mois`: a
    sentence read as its answer names one amount with a % or currency sign."""
    out = []
    for c in found:
        if not re.search(r"[a-zA-Z]{3,}", _TEXT_WRAP.sub("", c)):
            continue
        hits = {(v, "%" in u or "per" in u) for v, u in _QUANTITY.findall(c)}
        if len(hits) == 1:
            value, percent = hits.pop()
            out.append(f"{value}\\%" if percent else value)
    return out


def _last_mention_negated(region: str, answer: str | None) -> bool:
    """`tempting to say 7, but the answer is not 7; it is 6`: the reading's last mention rules it out."""
    if not answer:
        return False
    hits = list(re.finditer(rf"(?<![\w.]){re.escape(answer)}(?!\w|\.\d)", region))
    if not hits:
        return False
    before = " ".join(region[: hits[-1].start()].split()[-2:])
    return bool(re.search(r"\b(?:not|isn't|is\s+n't|never|rather\s+than|instead\s+of)$", before, re.I))


def mv_in_text(gold: str, text: str) -> tuple[bool, str | None]:
    """Math-Verify with its default extraction on `text`: (equal, what it extracted)."""
    from math_verify import parse, verify

    a = parse(text, parsing_timeout=None)
    if not a:
        return False, None
    extracted = str(a[-1]) if isinstance(a[-1], str) else str(a[0])
    for g in (_parse(gold, False), tuple(parse(gold, parsing_timeout=None))):
        if g and verify(list(g), a, timeout_seconds=None):
            return True, extracted
    return False, extracted


def _letters_lost(g: str, a: str, rules: Rules) -> bool:
    """`8x` answered by `8`, `2e^{i\\pi/3}` by `2` (Math-Verify accepts both): the gold
    has a variable or the imaginary unit, the answer is a bare number."""
    gv, gu = split_unit(g, rules)
    if gu:
        return False
    if (eq := split_equation(gv)) and _ASSIGN_LHS.match(eq[0]):
        gv = eq[1]
    plain = [re.sub(r"\\[a-zA-Z]+", "", _TEXT_WRAP.sub("", re.sub(r"\\(?:begin|end)\{\w+\*?\}", "", s)))
             for s in (gv, a)]
    return bool(re.search(r"[a-zA-Z]", plain[0])) and not re.search(r"[a-zA-Z]", plain[1])


def vetoed(gold: str, answer: str | None, problem: str | None, opts: Options, rules: Rules) -> bool:
    """Math-Verify's known false positives: a sign or unit, a different text
    answer or letter, numbers that only agree after rounding, equations that
    agree on one side, percentages taken as fractions on one side only."""
    if answer is None:
        return True
    g, a = rewrite(gold, rules), rewrite(answer, rules)
    a = _chain_value(a) or a  # `15 + 10 = 25` is 25
    if bool(_PM.search(g)) != bool(_PM.search(a)):
        return True
    if _letters_lost(g, a, rules):
        return True
    if re.search(r"\beither\b|\bor\b", a) and not re.search(r",|\bor\b|\\cup|\\pm|\\\{", g):
        return True  # `either 8 or 23`: two answers for a gold that has one
    if _decided_by_form(g, a, problem, rules) is False:
        return True
    if re.fullmatch(r"\(?[A-E]\)?", g.strip()) and mcq_letter(a) not in (None, g.strip("() ")):
        return True
    gv, gu = split_unit(g, rules)
    av, au = split_unit(a, rules)
    gu = _gold_unit(gold, gu, au, problem, rules)
    if (gu and au and gu != au) or _percent_for_a_unit(gv, av, problem, rules):
        return True
    ge, ae = split_equation(gv), split_equation(av)
    if ge and ae and not _relations_equal(ge, ae):
        return True
    if ge and not ae and not _ASSIGN_LHS.match(ge[0]):  # `2x + z = 1` is not answered by `1`
        return True
    if ae and not ge and _ASSIGN_LHS.match(ae[0]):  # `A \\cap B = \\{3, 4\\}` is its right-hand side
        av = ae[1]
    listed = re.search(r",|or|and|\\cup|;", av) and not re.match(r"\s*(?:\\\{|\(|\[)", av)  # `W(x)=1orW(x)=-1` lists two
    if not listed and _set_size(gv, False) != _set_size(av, True):  # {-2, 2} is not answered by x = 2
        return True
    gi, ai = as_interval(gv), as_interval(av)
    if (gi or ai) and not mv_equal(gi or gv, ai or av, opts):  # Math-Verify overlooks the brackets
        return True
    gm, am = _PERCENT.match(gv), _PERCENT.match(av)
    if gm and am and gm.group(1).strip() and am.group(1).strip():
        gv, av = gm.group(1).strip(), am.group(1).strip()
    if not opts.strict_numbers:
        return False
    gp, ap = _first_expr(_parse(gv, False)), _first_expr(_parse(av, True))
    return gp is not None and ap is not None and (_exact_numbers_differ(gv, av, gp, ap) or _constants_differ(gp, ap))


def _set_size(s: str, as_answer: bool) -> int:
    import sympy

    e = _first_expr(_parse(s, as_answer))
    return len(e) if isinstance(e, sympy.FiniteSet) and len(e) > 1 else 1


def _constants_differ(g, a) -> bool:
    """Two constant expressions whose values differ (`4\\sqrt{2}` vs 4)."""
    import sympy

    if not all(isinstance(e, sympy.Expr) and not e.free_symbols for e in (g, a)):
        return False
    try:
        gv, av = complex(sympy.N(g, 30)), complex(sympy.N(a, 30))
    except (TypeError, ValueError):
        return False
    return abs(gv - av) > 1e-12 * max(1.0, abs(gv))


def raw_compare(gold: str, generation: str) -> bool:
    """Math-Verify as shipped on the whole generation: the baseline we report.

    Its default extraction on both sides; the gold is also tried wrapped in
    `$...$` (how most graders feed a bare LaTeX answer), and either reading
    counts, so the baseline is the most lenient plain use of the library.
    """
    from math_verify import parse, verify

    a = parse(generation, parsing_timeout=None)
    if not a:
        return False
    golds = (_parse(gold, False), tuple(parse(gold, parsing_timeout=None)))
    return any(g and verify(list(g), a, timeout_seconds=None) for g in golds)


def options_dict(opts: Options) -> dict[str, Any]:
    return {k: getattr(opts, k) for k in Options.__dataclass_fields__}
