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
    strict_format: bool = False  # boxed answers only, no Math-Verify fallback
    mv_fallback: bool = True  # Math-Verify's own extraction where ours finds no match


@dataclass
class Rules:
    rewrites: list[tuple[str, re.Pattern, str]] = field(default_factory=list)
    thousands: re.Pattern = re.compile(r"^-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?$")
    text_answers: dict[str, str] = field(default_factory=dict)  # variant -> canonical
    units: dict[str, str] = field(default_factory=dict)  # variant -> canonical
    scales: dict[str, tuple[str, str]] = field(default_factory=dict)  # canonical unit -> (quantity, factor)


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
_OPTION = re.compile(r"\(\s*([A-E])\s*\)\s*(.*?)(?=\s*\(\s*[A-E]\s*\)|\n|$)", re.S)
_PERCENT = re.compile(r"^(.*?)\s*\\?%$")
_LETTER_AND_TEXT = re.compile(r"^\(?([A-E])\)?[.:)]?\s+([^\s=<>+\-*/^].*)$", re.S)
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})\s*(?:\\text\s*\{\s*)?([AaPp])\.?\s*[Mm]\.?\s*\}?$")
_ASSIGN_LHS = re.compile(r"^\s*(?:[a-zA-Z](?:_\{?\w+\}?)?|[a-zA-Z]\s*\(\s*[a-zA-Z]\s*\)|\\[a-zA-Z]+)\s*$")
_FLOAT_REPR = re.compile(r"^\s*-?\d*\.\d{15,}\s*$|^\s*-?\d\.\d{14,}\d*\s*$")  # 15+ digits: a float's repr
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
    return expand_pm_items(s)


_PM_ITEM = re.compile(r"(^|[,{(]\s*)(?:\\pm|±)\s*([^,{}()]+?)(?=\s*(?:,|\\\}|\}|\)|$))")


def expand_pm_items(s: str) -> str:
    """`\\{0, \\pm 1, \\pm 2\\}` -> `\\{0, 1, -1, 2, -2\\}`: a ± item in a list is two items.
    A lone `\\pm 2` (no list) is left alone: the ± check compares it."""
    if "," not in s or not _PM.search(s):
        return s
    return _PM_ITEM.sub(lambda m: f"{m.group(1)}{m.group(2).strip()}, -{m.group(2).strip()}", s)


_UNITS_W = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
            "sixteen seventeen eighteen nineteen").split()
_TENS_W = "twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(s: str) -> str:
    """`\\text{forty-two}` -> `42`; `one hundred and five` -> `105` (English, below a million)."""
    words = _plain(s).replace("-", " ").replace(" and ", " ").split()
    if not words or any(w not in _UNITS_W and w not in _TENS_W and w not in ("hundred", "thousand") for w in words):
        return s
    total = part = 0
    for w in words:
        if w in _UNITS_W:
            part += _UNITS_W.index(w)
        elif w in _TENS_W:
            part += 20 + 10 * _TENS_W.index(w)
        elif w == "hundred":
            part = max(part, 1) * 100
        else:
            total, part = total + max(part, 1) * 1000, 0
    return str(total + part)


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

    if _FLOAT_REPR.match(g_str):  # a gold stored as a float (3.3333333333333335); an answer so written is a decimal
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
    """`08:34 \\text{P.M.}` -> `20:34`."""
    m = _CLOCK.match(s.strip())
    if not m:
        return s
    hour = int(m.group(1)) % 12 + (12 if m.group(3).lower() == "p" else 0)
    return f"{hour:02d}:{m.group(2)}"


def _forms(s: str) -> list[str]:
    """The ways one written answer may be read: as is, and with a decimal comma (`2,5`)."""
    out = [s]
    m = _DECIMAL_COMMA.match(s)
    if m and not re.fullmatch(r"[+-]?[1-9]\d{0,2}", m.group(1)) or (m and len(m.group(2)) != 3):
        out.append(f"{m.group(1)}.{m.group(2)}{m.group(3) or ''}")
    if re.fullmatch(r"[+-]?[1-9]\d{0,2}(?:\.\d{3})+", s):  # `1.000` in Spanish or German is a thousand
        out.append(s.replace(".", ""))
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
    gt, at = text_answer(g, rules), text_answer(a, rules)
    if gt is not None or at is not None:
        return gt == at
    g, a = number_words(g), number_words(a)
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
    if gu and au and gu != au:
        return _converted_equal(gv, gu, av, au, opts, rules)
    if clock_24h(gv) != gv or clock_24h(av) != av:
        return clock_24h(gv).lstrip("0") == clock_24h(av).lstrip("0")
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
    a = disjunction_as_union(a) or chained_interval(a) or a
    g = chained_interval(g) or g
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
    parts = [p.strip() for p in s.split("=")]
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
    """`30^\\circ` against an answer in radians (`\\frac{\\pi}{6}`) -> `\\frac{30\\pi}{180}`."""
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
    fn = re.compile(r"^[a-zA-Z]\([a-zA-Z]\)$")
    return {a, b} & {"y"} != set() and any(fn.match(x) for x in (a, b))


def _pm_matches_set(g: str, a: str, opts: Options) -> bool:
    """`a` with a ±, `g` with both signs spelt out: `x = \\pm 2` vs `\\{-2, 2\\}` or `2, -2`."""
    a = a.split("=")[-1].strip() if a.count("=") == 1 else a
    m = re.fullmatch(r"(.*?)(?:\\pm|±)(.+)", a)
    if not m:
        return False
    base, rest = m.group(1).strip(), m.group(2).strip()
    spelt = f"{base}+{rest}, {base}-{rest}" if base else f"{rest}, -{rest}"
    inner = re.sub(r"^\\\{|\\\}$", "", g.strip())
    inner = re.sub(r"\b[a-zA-Z]\s*=\s*", "", inner.replace("\\text{ or }", ",").replace(" or ", ","))
    return mv_equal(f"\\{{{inner}\\}}", f"\\{{{spelt}\\}}", opts)


# ------------------------------------------------- a whole generation


def leading_text_answer(text: str, rules: Rules) -> str | None:
    """`No, it is not possible ...` -> `no`: a Yes/No that opens a sentence."""
    m = re.match(r"\W*(?:the answer is\s+)?(yes|no|true|false)\b", text.strip(), re.IGNORECASE)
    return rules.text_answers.get(m.group(1).lower()) if m else None


def _letters(text: str) -> list[str]:
    return re.findall(r"(?<![A-Za-z\\])([A-E])(?![A-Za-z])", text)


def grade(gold: str, generation: str, finish_reason: str | None, problem: str | None, opts: Options,
          rules: Rules) -> tuple[bool, str | None]:
    """(correct, the answer that decided it) for one generation, extraction included.

    Our candidates first (see extract.py); then, unless the preset is strict,
    Math-Verify's own extraction on the same text, so that nothing raw
    Math-Verify accepts is lost, except its known false positives (`vetoed`).
    """
    from factory.verify.extract import all_boxed, answer_region, candidates, committed, dangling_phrase, final_phrase

    found = candidates(generation, finish_reason, strict=opts.strict_format)
    if found is None:
        return False, None
    region = answer_region(generation)
    if not found and dangling_phrase(region):
        return False, None
    tries = list(found)
    g = rewrite(gold, rules)
    if text_answer(g, rules) is not None and not opts.strict_format:
        leads = [c for c in tries if leading_text_answer(c, rules)]
        paragraphs = [p for p in region.strip().split("\n\n") if p.strip()]
        tries += [leading_text_answer(c, rules) for c in leads] + \
                 [t for t in (leading_text_answer(p, rules) for p in paragraphs[:1] + paragraphs[-1:]) if t]
    # a box or a final-answer phrase: the model said its answer outright, not only in prose
    outright = bool(all_boxed(region)) or final_phrase(region) is not None
    if not opts.strict_format:
        tries += _with_units(found, region, rules)
        if not outright:  # the answer is only said in prose
            tries += _said_in_prose(g, region, rules)
    if re.fullmatch(r"\(?[A-E]\)?", _TEXT_WRAP.sub(r"\1", g).strip()) and not opts.strict_format:
        for c in found:  # prose such as `for sure D, it can't be A or B`, not `\\mathrm{E}*2`
            prose = re.search(r"[a-zA-Z]{2,}", re.sub(r"\\[a-zA-Z]+", "", c))
            if prose and mcq_letter(c) is None and (letters := _letters(c)):
                tries.append(letters[0])
        paragraphs = [p for p in region.strip().split("\n\n") if p.strip()]
        for p in paragraphs[-1:] + paragraphs[:1]:  # `D. it can't be A or B`, `B。 不是 A`
            if m := re.match(r"\W*\(?([A-E])\)?(?![A-Za-z])", p):
                tries.append(m.group(1))
        sentences = [s for s in re.split(r"(?<=[.!?])\s+|\n", region.strip()) if s.strip()]
        if not found and sentences and (letters := _letters(sentences[-1])):
            tries.append(letters[-1])
    for cand in dict.fromkeys(tries):
        if compare(gold, cand, problem, opts, rules):
            return True, cand
    if opts.strict_format or not opts.mv_fallback:
        return False, (found[0] if found else None)
    ok, mv_answer = mv_in_text(gold, region)
    # the veto also hears our own committed reading: `\\boxed{5\\text{ cm}}` that Math-Verify reads as 5
    ours = found[:1] if outright else []
    if ok and not any(vetoed(gold, x, problem, opts, rules) for x in (mv_answer, *ours)) \
            and (found or committed(region, mv_answer)):
        return True, mv_answer
    return False, (found[0] if found else mv_answer)


_NEGATION = re.compile(r"\b(?:not|no|never|neither|nor|whether|if|cannot|can't|doesn't|isn't|aren't)\b|n't\b", re.I)


def _said_in_prose(g: str, region: str, rules: Rules) -> list[str]:
    """A text gold the last paragraph affirms in words: `\\text{even}` in "The
    function is even, since ...", `no solution` in "There is no solution, because
    ...". Not when a negation or `whether` comes just before it."""
    variants = {v for v, canon in rules.text_answers.items() if canon == text_answer(g, rules) and " " in v}
    word = _plain(g)
    if re.fullmatch(r"[a-z]{3,}", word) and text_answer(g, rules) is None:
        variants.add(word)
    paragraphs = [p for p in region.strip().split("\n\n") if p.strip()]
    last = _plain(paragraphs[-1]) if paragraphs else ""
    out = []
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
    return out


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


def vetoed(gold: str, answer: str | None, problem: str | None, opts: Options, rules: Rules) -> bool:
    """Math-Verify's known false positives: a sign or unit, a different text
    answer or letter, numbers that only agree after rounding, equations that
    agree on one side, percentages taken as fractions on one side only."""
    if answer is None:
        return True
    g, a = rewrite(gold, rules), rewrite(answer, rules)
    if bool(_PM.search(g)) != bool(_PM.search(a)):
        return True
    if re.search(r"\beither\b|\bor\b", a) and not re.search(r",|\bor\b|\\cup|\\pm|\\\{", g):
        return True  # `either 8 or 23`: two answers for a gold that has one
    gt, at = text_answer(g, rules), text_answer(a, rules)
    if (gt is not None or at is not None) and gt != at:
        return True
    if re.fullmatch(r"\(?[A-E]\)?", g.strip()) and mcq_letter(a) not in (None, g.strip("() ")):
        return True
    gv, gu = split_unit(g, rules)
    av, au = split_unit(a, rules)
    if gu and au and gu != au:
        return True
    ge, ae = split_equation(gv), split_equation(av)
    if ge and ae and not _relations_equal(ge, ae):
        return True
    if ge and not ae and not _ASSIGN_LHS.match(ge[0]):  # `2x + z = 1` is not answered by `1`
        return True
    listed = re.search(r",|or|and|\\cup|;", av)  # `W(x)=1orW(x)=-1` lists two
    if not listed and _set_size(gv, False) != _set_size(av, True):  # {-2, 2} is not answered by x = 2
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
