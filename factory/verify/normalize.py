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
from pathlib import Path
from typing import Any

import yaml

from factory import assets


@dataclass(frozen=True)
class Options:
    """One cascade preset's switches for the rule stage."""

    normalizers: bool = True
    allow_set_relation_comp: bool = True
    strict_numbers: bool = True


@dataclass
class Rules:
    rewrites: list[tuple[str, re.Pattern, str]] = field(default_factory=list)
    thousands: re.Pattern = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
    text_answers: dict[str, str] = field(default_factory=dict)  # variant -> canonical
    units: dict[str, str] = field(default_factory=dict)  # variant -> canonical


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
_OPTION = re.compile(r"\(\s*([A-E])\s*\)\s*(.*?)(?=\s*\(\s*[A-E]\s*\)|\n|$)", re.S)
_PERCENT = re.compile(r"^(.*?)\s*\\?%$")
_ASSIGN_LHS = re.compile(r"^\s*(?:[a-zA-Z](?:_\{?\w+\}?)?|[a-zA-Z]\s*\(\s*[a-zA-Z]\s*\)|\\[a-zA-Z]+)\s*$")
_DECIMAL = re.compile(r"^\s*-?\d+\.\d+\s*$")
_UNIT_TEXT = re.compile(r"^(.*?\S)\s*\\(?:text|mathrm|mbox)\s*\{\s*([^{}]+?)\s*\}\s*$")
_UNIT_BARE = re.compile(r"^(.*?[\d}).])\s*([a-zA-Z][a-zA-Z/^23²³ ]*?)\s*$")


def _plain(s: str) -> str:
    s = _TEXT_WRAP.sub(r"\1", s)
    s = re.sub(r"[{}\s.!]+", " ", s)
    return " ".join(s.lower().split())


def rewrite(s: str, rules: Rules) -> str:
    s = s.strip()
    for _name, pat, repl in rules.rewrites:
        s = pat.sub(repl, s)
    s = s.strip()
    if rules.thousands.match(s):
        s = s.replace(",", "")
    return s


def text_answer(s: str, rules: Rules) -> str | None:
    return rules.text_answers.get(_plain(s))


def split_unit(s: str, rules: Rules) -> tuple[str, str | None]:
    """`5\\text{ cm}` -> ("5", "cm"); a known unit only, else unchanged."""
    for pat in (_UNIT_TEXT, _UNIT_BARE):
        m = pat.match(s)
        if m:
            unit = rules.units.get(" ".join(m.group(2).lower().split()))
            if unit:
                return m.group(1).strip(), unit
    return s, None


def mcq_letter(s: str) -> str | None:
    s = _TEXT_WRAP.sub(r"\1", s).strip()
    m = _LETTER.match(s)
    return m.group(1).upper() if m else None


def mcq_options(problem: str | None) -> dict[str, str]:
    if not problem:
        return {}
    return {m.group(1): m.group(2).strip().rstrip(",;") for m in _OPTION.finditer(problem) if m.group(2).strip()}


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


def disjunction_as_union(s: str) -> str | None:
    """`x<-1 \\text{ or } x>2` -> `(-\\infty,-1)\\cup(2,\\infty)`; None if not of that form."""
    parts = _OR.split(s)
    if len(parts) < 2:
        return None
    intervals = [_interval(p) for p in parts]
    return "\\cup".join(intervals) if all(intervals) else None


_REPEATING = re.compile(r"^(-?)(\d*)\.(\d*)\\overline\{(\d+)\}$")


def repeating_decimal(s: str) -> str:
    """`0.\\overline{142857}` -> `\\frac{1}{7}` (exact), else unchanged."""
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

    def exact(s, e):
        if _DECIMAL.match(s):
            return sympy.Rational(s.strip())
        if isinstance(e, sympy.Expr) and not e.free_symbols and e.is_rational:
            return e.doit()
        return None

    ge, ae = exact(g_str, g), exact(a_str, a)
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
        return _equal_for_positive_symbols(ge, ae)
    return ok


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


def compare(gold: str, answer: str, problem: str | None, opts: Options, rules: Rules) -> bool:
    """Is `answer` (already extracted) the same answer as `gold`?"""
    if not opts.normalizers:
        return mv_equal(gold, answer, opts)
    g, a = rewrite(gold, rules), rewrite(answer, rules)
    if not g or not a:
        return False
    if bool(_PM.search(g)) != bool(_PM.search(a)):
        return False
    gt, at = text_answer(g, rules), text_answer(a, rules)
    if gt is not None or at is not None:
        return gt == at
    if re.fullmatch(r"\(?[A-E]\)?", g.strip()):
        letter = mcq_letter(a)
        options = mcq_options(problem)
        if letter is not None and (letter in options or not options or len(a.strip()) <= 3):
            return letter == g.strip("() ")
        target = options.get(g.strip("() "))
        return bool(target) and compare(target, a, None, opts, rules)
    gv, gu = split_unit(g, rules)
    av, au = split_unit(a, rules)
    if gu and au and gu != au:
        return False
    g, a = gv, av
    ge, ae = split_equation(g), split_equation(a)
    if ge and ae:
        return _relations_equal(ge, ae) or mv_equal(g, a, opts)
    g, a = repeating_decimal(g), repeating_decimal(a)
    a = disjunction_as_union(a) or a
    if ae and not ge and _ASSIGN_LHS.match(ae[0]):
        a = ae[1]
    elif ge and not ae and _ASSIGN_LHS.match(ge[0]):
        g = ge[1]
    return any(mv_equal(gc, ac, opts) for gc in percent_forms(g) for ac in percent_forms(a))


def raw_compare(gold: str, generation: str) -> bool:
    """Math-Verify as shipped on the whole generation: the baseline we report."""
    from math_verify import LatexExtractionConfig, parse, verify

    g = parse(f"${gold}$", extraction_config=[LatexExtractionConfig()], parsing_timeout=None)
    a = parse(generation, parsing_timeout=None)
    return bool(g) and bool(a) and bool(verify(g, a, timeout_seconds=None))


def options_dict(opts: Options) -> dict[str, Any]:
    return {k: getattr(opts, k) for k in Options.__dataclass_fields__}
