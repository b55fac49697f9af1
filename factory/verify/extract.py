"""Final-answer extraction from a generation.

Pure string work (no sympy), so the driver can run it on every row. The
order is documented in verifiers/README.md: the part after `</think>` only;
every `\\boxed{}` there (the last one, and all of them together when there
are several); else a final-answer phrase ("The answer is", "**Final
Answer:**", "Réponse :", "答案是", ...); else the last LaTeX or plain
expression of the last line. An unfinished generation yields nothing: a
box found mid-thought is a guess the model never committed to.
"""

from __future__ import annotations

import re
import unicodedata
from fractions import Fraction

from factory.think import THINK_CLOSE, THINK_OPEN

_BOX_CMDS = ("\\boxed", "\\fbox")
_UNITS_W = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
            "sixteen seventeen eighteen nineteen").split()
_TENS_W = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_NUM_W = "|".join([*_UNITS_W, *_TENS_W, "hundred", "thousand"])
# `nine`, `twenty-four`, `one hundred and five`: a number in English words
NUMBER_WORDS = rf"\b(?:{_NUM_W})(?:(?:[\s-]+|\s+and\s+)(?:{_NUM_W}))*\b"

# "final answer is X", "Answer: X", "la réponse est X", "答案是 X": the capture runs to the end of the sentence
_PHRASES = [
    r"final\s+answer(?:\s*(?:is|:|=)|\*\*|\s*\n)", r"(?:the\s+)?(?:correct\s+)?answer\s+(?:is|would\s+be|should\s+be)",
    r"answer\s*[:：=]", r"^\s*####", r"(?:correct|right)\s+(?:choice|option)\s+is", r"(?:choice|option)\s*[:：]",
    r"(?:la\s+)?r[ée]ponse\s+(?:finale\s+)?(?:est|:)", r"r[ée]ponse\s*[:：]",
    r"(?:la\s+)?respuesta\s+(?:final\s+)?(?:es|:)", r"respuesta\s*[:：]",
    r"(?:a\s+)?resposta\s+(?:final\s+)?(?:é|:)", r"(?:la\s+)?risposta\s+(?:è|:)",
    r"(?:die\s+)?antwort\s+(?:ist|lautet|:)", r"antwort\s*[:：]", r"ответ\s*(?:[:：]|—|-)?",
    r"答案(?:是|为|[:：])", r"答え(?:は|[:：])", r"정답(?:은|[:：])", r"الإجابة(?:\s+هي)?\s*[:：]?",
]
_PHRASE = re.compile(r"(?:\*\*|__)?(?:" + "|".join(_PHRASES) + r")(?:\*\*|__)?\s*[:：]?\s*(?:\*\*|__)?", re.IGNORECASE | re.M)
# the end of a captured answer: a line break, or a sentence end that is not a decimal point
_SENTENCE_END = re.compile(r"\n|(?<!\d)[.。!?！？](?!\d)|[.](?=\s|$)|。|$")
_TRAILERS = re.compile(r"\s*(?:I hope it is correct|<\|im_\w+\|>).*$", re.IGNORECASE | re.S)
_MATH_SPAN = re.compile(r"(?<!\\)\$\$(.+?)(?<!\\)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)|(?<!\\)\$(.+?)(?<!\\)\$", re.S)
_NUMBER = re.compile(r"(?<![A-Za-z\d.,:])(?:\d{1,2}:\d{2}(?::\d{2})?(?:\s*[AaPp]\.?\s?[Mm]\b\.?)?|(?:\d+\s*)?\\frac\{\d+\}\{\d+\}|\d*\\sqrt\{\d+\}|[-+]?\d+\s+\d+\s*/\s*\d+(?!\d)|[-+]?(?:\d{1,3}(?:[ ,]\d{3})+|\d+)(?:[.,]\d+(?:…|\.{3})?)?(?:[eE][+-]?\d+(?![\w]))?(?:\s+(?:thousand|million|billion|trillion)\b)?(?:\s*/\s*\d+)?\s*%?|[-+]?\.\d+)(?:\s*\\pi(?![a-zA-Z]))?(?:\s*°)?")


def word_number(text: str) -> int | None:
    """`forty-two` -> 42, `one hundred and five` -> 105 (English, below a million); None unless the
    text is number words only."""
    words = text.lower().replace("-", " ").replace(" and ", " ").split()
    if not words or any(w not in _UNITS_W and w not in _TENS_W and w not in ("hundred", "thousand") for w in words):
        return None
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
    return total + part


def mask_math(text: str) -> str:
    """Math spans blanked to `x`s, positions kept: a period inside `$...$` ends no sentence."""
    return _MATH_SPAN.sub(lambda m: "x" * len(m.group(0)), text)


def paragraphs(text: str) -> list[str]:
    """The non-blank paragraphs of `text` (split at blank lines)."""
    return [p for p in text.strip().split("\n\n") if p.strip()]


def is_reasoning_complete(text: str, finish_reason: str | None) -> bool:
    """The model stopped on its own and closed any thinking block it opened."""
    if finish_reason not in ("stop", "eos", None) and finish_reason != "stop_sequence":
        return False
    if THINK_OPEN in text and THINK_CLOSE not in text[text.rfind(THINK_OPEN):]:
        return False
    return True


def answer_region(text: str) -> str:
    """What the model says after it stops thinking (the whole text if it never thought aloud)."""
    region = text[text.rfind(THINK_CLOSE) + len(THINK_CLOSE):] if THINK_CLOSE in text else text
    return currency_dollars(region)


_DOLLAR = re.compile(r"(?<![\\$])\$(?!\$)")


def currency_dollars(text: str) -> str:
    """Dollar signs used as prices escaped (`\\$400`), so they open no math span:
    taken in pairs from the left as math delimiters, a pair whose closing `$`
    runs into a digit (`3 × $400 = $1,200.00`) is two prices."""
    marks = [m.start() for m in _DOLLAR.finditer(text)]
    prices = set()
    for k in range(0, len(marks) - 1, 2):
        close = marks[k + 1]
        if close + 1 < len(text) and text[close + 1].isdigit():
            prices.update((marks[k], close))
    for pos in sorted(prices, reverse=True):
        text = text[:pos] + "\\" + text[pos:]
    return text


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """Content of the balanced {...} group starting at `start` (which is '{')."""
    depth = 0
    for i in range(start, len(text)):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
            continue
        if c == "{" and (i == start or text[i - 1] != "\\"):
            depth += 1
        elif c == "}" and text[i - 1] != "\\":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
    return None


def all_boxed(text: str) -> list[str]:
    """Contents of every `\\boxed{...}` / `\\fbox{...}` in order; `\\boxed 7` (no braces) too."""
    return [s for _, s in _boxes(text)]


def _boxes(text: str) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for cmd in _BOX_CMDS:
        pos = text.find(cmd)
        while pos != -1:
            j = pos + len(cmd)
            if j < len(text) and (text[j].isalpha()):  # \boxedsomething: another command
                pos = text.find(cmd, j)
                continue
            while j < len(text) and text[j] == " ":
                j += 1
            if j < len(text) and text[j] == "{":
                got = _braced(text, j)
                if got is not None:
                    found.append((pos, got[0].strip()))
            elif j > pos + len(cmd):  # `\boxed 7`: one token
                m = re.match(r"[^\s$.,;]+", text[j:])
                if m:
                    found.append((pos, m.group(0)))
            pos = text.find(cmd, pos + len(cmd))
    return sorted(found)


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` with balanced braces."""
    boxes = all_boxed(text)
    return boxes[-1] if boxes else None


def _clean(ans: str) -> str:
    ans = _TRAILERS.sub("", ans).strip()
    ans = re.sub(r"^(?:\*\*|__)|(?:\*\*|__)$", "", ans).strip()
    if ans.count("$") >= 2 and ans.startswith("$"):  # "$5$" or "$5$ apples"
        inner = _MATH_SPAN.match(ans)
        if inner and not ans[inner.end():].strip(" .,;:"):
            ans = next(g for g in inner.groups() if g is not None)
    return ans.strip().strip("$").strip().rstrip(".,;:。").strip()


def final_phrase(region: str) -> str | None:
    """The answer after the last final-answer phrase, to the end of its sentence."""
    found = _final_phrase(region)
    return found[1] if found else None


_CLAUSE = re.compile(r"(?:,|;|:)\s+(?:and|since|because|as|so|which|but|where|checking|check|i\.e\.)\b|;\s", re.IGNORECASE)


_NOT_BUT = re.compile(r"^not\b.*?(?:[,;:]|\bbut\b)\s*(?:it\s+is|it's|but|rather|instead)?\s*(?:it\s+is|it's)?\s+(?=\S)", re.I | re.S)


_CJK_TAIL = re.compile(r"^\s*([-+]?\d[\d,]*(?:\.\d+)?)\s*[\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7af]+[。．.!！]?\s*$")


def phrase_readings(answer: str) -> list[str]:
    """A phrase's answer, and the part before a following clause (`n = 5, and checking: ...`).
    `not 5 (...); it is 7` reads 7; a bare `not 5` reads nothing."""
    if re.match(r"not\b", answer, re.I):
        m = _NOT_BUT.match(answer)
        return phrase_readings(_clean(answer[m.end():])) if m and answer[m.end():].strip() else []
    m = _CLAUSE.search(mask_math(answer))
    cut = _clean(answer[: m.start()]) if m else ""
    out = [answer, cut] if cut and cut != answer else [answer]
    if cjk := _CJK_TAIL.match(answer):  # `150 分です`: the number, its unit word and copula after it
        out.append(cjk.group(1))
    return out


def _final_phrase(region: str) -> tuple[int, str] | None:
    for m in reversed(list(_PHRASE.finditer(region))):
        rest = region[m.end():]
        # keep $...$ spans whole: a period inside math is not a sentence end
        masked = mask_math(rest)
        end = _SENTENCE_END.search(masked)
        ans = _clean(rest[: end.start() if end else len(rest)])
        if ans:
            return m.start(), ans
    return None


def dangling_phrase(region: str) -> bool:
    """"The final answer is" and then nothing: announced, never given."""
    tail = region.rstrip().rstrip("*_:：$ ")
    return bool(re.search(r"(?:final\s+answer|answer)(?:\s+(?:is|would\s+be))?$", tail, re.IGNORECASE))


def committed(region: str, answer: str) -> bool:
    """False when the answer's last mention goes on with a clause (`gives 7, and we
    check it against ...`): a step of the reasoning, not the final answer."""
    pos = region.rfind(answer)
    if pos < 0:
        return True
    tail = region[pos + len(answer):]
    end = _SENTENCE_END.search(mask_math(tail))
    tail = tail[: end.start() if end else len(tail)]
    return not re.search(r"[,;]\s*(?:\S+\s+){2,}\S+", tail)


_LIST_SEP = re.compile(r"^\s*(?:,\s*(?:and|or)?|and|or|et|ou|y|o|und|oder|e|и|или|和|或|与|、|,)\s*(?:[a-zA-Z]\s*=\s*)?$", re.IGNORECASE)
_UNICODE_MATH = [(re.compile(r"(?:√|(?<![\\a-zA-Z])sqrt)\s*\(([^()]*(?:\([^()]*\)[^()]*)*)\)"), r"\\sqrt{\1}"), (re.compile(r"√\s*(\d+|[a-zA-Z])"), r"\\sqrt{\1}"),
                 (re.compile("[⁰¹²³⁴⁵⁶⁷⁸⁹⁻]+"), lambda m: "^{" + m.group(0).translate(_SUPERSCRIPTS) + "}"),
                 (re.compile("[−–]"), "-"),
                 (re.compile("×"), "\\\\times "), (re.compile("·"), "\\\\cdot "), (re.compile("÷"), "\\\\div "),
                 (re.compile("∩"), "\\\\cap "), (re.compile("∪"), "\\\\cup "), (re.compile("∖"), "\\\\setminus "),
                 (re.compile("∅"), "\\\\emptyset "), (re.compile("≠"), "\\\\neq "), (re.compile("∈"), "\\\\in "),
                 (re.compile("[₀-₉]+"), lambda m: "_" + m.group(0).translate(_SUBSCRIPTS)),
                 (re.compile("([θαβγφω])"), lambda m: _GREEK[m.group(1)] + " "),
                 (re.compile("π"), "\\\\pi "), (re.compile("∞"), "\\\\infty "), (re.compile(r"\+/-|±"), r"\\pm "),
                 (re.compile("(\\d*)([½⅓⅔¼¾⅕⅖⅗⅘⅙⅚⅐⅛⅜⅝⅞⅑⅒])"), lambda m: _vulgar(m.group(1), m.group(2)))]


_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")
_SUBSCRIPTS = str.maketrans("₀₁₂₃₄₅₆₇₈₉", "0123456789")
_GREEK = {"θ": "\\theta", "α": "\\alpha", "β": "\\beta", "γ": "\\gamma", "φ": "\\varphi", "ω": "\\omega"}


def _vulgar(whole: str, char: str) -> str:
    """`¾` -> `\\frac{3}{4}`, `2½` -> `2\\frac{1}{2}` (a mixed number)."""
    f = Fraction(unicodedata.numeric(char)).limit_denominator(12)
    return f"{whole}\\frac{{{f.numerator}}}{{{f.denominator}}}"


def unicode_math(text: str) -> str:
    """`√((2−1)² + 1)` -> `\\sqrt{(2-1)^{2} + 1}`: what models type outside LaTeX."""
    for pat, repl in _UNICODE_MATH:
        text = pat.sub(repl, text)
    return text


def _listed(line: str, tokens: list[tuple[int, str]]) -> str | None:
    """`5 and -5`, `$x = 2$ or $x = -2$`: tokens that end a line joined only by
    commas, `and` or `or` -> `5, -5` (`... \\text{ or } ...` when joined by or)."""
    items = [tokens[-1]]
    seps = []
    for prev in reversed(tokens[:-1]):
        between = line[prev[0] + prev[2] if len(prev) > 2 else prev[0] + len(prev[1]): items[0][0]]
        if not _LIST_SEP.match(between):
            break
        seps.append(re.sub(r"[a-zA-Z]\s*=\s*$", "", between).strip().lower())
        items.insert(0, prev)
    if len(items) < 2:
        return None
    joiner = " \\text{ or } " if any(s in ("or", "ou", "o", "oder", "или", "或") for s in seps) else ", "
    return joiner.join(t[1] for t in items)


_WHERE = re.compile(r"^\s*,?\s*(?:which\s+(?:is\s+)?)?(?:attained|achieved|reached|obtained|taken|occurring|occurs|"
                    r"when|where|at|for|with)\b[^.;]*$", re.I)


# function names typed without a backslash: `cos(2π/3) = −½` is a formula, not prose
_FUNCTIONS = re.compile(r"\b(?:arc)?(?:sin|cos|tan|cot|sec|csc)h?(?=\s*\()|\b(?:log|ln|exp|sqrt|gcd|lcm)(?=\s*\()")


def _has_words(text: str) -> bool:
    return bool(re.search(r"[^\W\d_]{2,}", _FUNCTIONS.sub("", re.sub(r"\\[a-zA-Z]+", "", text))))


def _last_line(region: str) -> tuple[str, list, list] | str | None:
    """The last line that has an answer-like token: (line, its math spans, all tokens in
    order), or the whole line when it is one bare expression."""
    for line in reversed([ln for ln in region.strip().splitlines() if ln.strip()]):
        line = unicode_math(line)
        spans, tokens = answer_tokens(line)
        if not spans and not _has_words(line):
            return line.strip().rstrip(".。")  # the whole line is one expression: `\\frac{4}{23}`, `arctan(1) = π/4`
        label, colon, rest = line.rpartition(":")
        if colon and not spans and rest.strip() and not _has_words(rest) and _has_words(label) \
                and not re.search(r"\d\s*$", label):  # `Rationalizing: 4(√5 − 1)/4 = √5 − 1`, not a clock `3:45`
            return rest.strip(" *_").rstrip(".。")
        if tokens:
            return line, spans, tokens
    return None


_REL = r"\s*(?:≤|≥|<=|>=|<|>)\s*"
_PLAIN_NUM = r"[-+]?\d+(?:\.\d+)?(?:/\d+)?"
_WORD_PERCENT = re.compile(rf"\b((?:{_NUM_W})(?:[- ](?:and[- ])?(?:{_NUM_W}))*)(\s+and\s+a\s+half)?\s+per\s?cent\b",
                           re.I)  # `by four percent`, `twelve and a half percent`
# an inequality typed outside LaTeX: `x ≥ 2`, `-1 < x < 5`
# a set typed outside LaTeX: `x \\in {\\pm 1, \\pm 2}` (unicode already rewritten), `{3, 4}`; not `\\sqrt{2}`
_PLAIN_SET = re.compile(r"(?:(?<![A-Za-z\\])[a-zA-Z]\s*(?:\\in\b|=)\s*)?(?<![\\A-Za-z_^])\{[^{}\n]*\d[^{}\n]*,[^{}\n]*\}")
# scientific notation typed outside LaTeX (unicode rewritten): `1.5\\cdot 10^11`, `2.5 x 10^{-3}`
_PLAIN_SCI = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?\s*(?:\\times|\\cdot|[x*])\s*10\s*\^\s*(?:\{\s*[-+]?\d+\s*\}|[-+]?\d+)")
_PLAIN_INEQ = re.compile(rf"(?:(?<![\w.]){_PLAIN_NUM}{_REL})?(?<![A-Za-z\\])[a-z](?![A-Za-z]){_REL}{_PLAIN_NUM}(?!\d|\.\d)")


def answer_tokens(text: str) -> tuple[list, list]:
    """(math spans, all answer-like tokens in order) of `text` (unicode math already
    rewritten), each as (start, content, length in the text)."""
    spans = [(m.start(), next(g for g in m.groups() if g is not None).strip(), len(m.group(0)))
             for m in _MATH_SPAN.finditer(text)]
    spans = [t for t in spans if t[1]]
    plain = _MATH_SPAN.sub(lambda m: " " * len(m.group(0)), text)  # positions kept
    ineqs = [(m.start(), m.group(0).strip(), len(m.group(0))) for pat in (_PLAIN_INEQ, _PLAIN_SET, _PLAIN_SCI)
             for m in pat.finditer(plain)]
    ineqs += [(m.start(), f"{value}{'.5' if m.group(2) else ''}\\%", len(m.group(0)))
              for m in _WORD_PERCENT.finditer(plain) if (value := word_number(m.group(1))) is not None]
    numbers = [(m.start(), m.group(0).strip(), len(m.group(0))) for m in _NUMBER.finditer(plain)
               if not any(i <= m.start() < i + n for i, _, n in ineqs)]  # `2 ≤ x ≤ 5` is one answer, not 2 and 5
    return spans, sorted(spans + ineqs + numbers)


def _says_where(line: str, tokens: list) -> bool:
    return len(tokens) > 1 and bool(_WHERE.match(line[tokens[-2][0] + tokens[-2][2]: tokens[-1][0]]))


def where_clause(region: str) -> bool:
    """`is $-5$, attained at $x=-2$`: the last line ends by saying where, not what."""
    found = _last_line(region)
    return isinstance(found, tuple) and _says_where(found[0], found[2])


def line_values(region: str) -> str | None:
    """`Center $(2,-3)$, radius $5$.` -> `(2,-3), 5`: every value on the last
    line that has several, for a gold that is itself a list of values."""
    found = _last_line(region)
    if not isinstance(found, tuple) or len(found[2]) < 2:
        return None
    return ", ".join(t[1] for t in found[2])


def last_expression(region: str) -> str | None:
    """The last math span or plain number on the last line that has one
    (several, when the line ends by listing them)."""
    found = _last_line(region)
    if not isinstance(found, tuple):
        return found
    line, spans, tokens = found
    listed = _listed(line, tokens)
    if listed:
        return listed
    if _says_where(line, tokens):
        return tokens[-2][1]
    last = tokens[-1]
    return last[1] if last in spans or committed(line, last[1]) else None


def candidates(text: str, finish_reason: str | None = "stop", strict: bool = False) -> list[str] | None:
    """Answers to compare with the gold, best first; None if unfinished.

    Boxes win, unless a final-answer phrase comes after the last one ("...
    \\boxed{255} so the total is ... Final Answer: 10455"); several boxes
    are also tried together (one box per root). `strict`: boxes only.
    """
    if not is_reasoning_complete(text, finish_reason):
        return None
    region = answer_region(text)
    boxed = _boxes(region)
    if boxed and not any(b for _, b in boxed):  # only empty boxes: the prompt's template echoed
        return []
    boxed = [(p, b) for p, b in boxed if b]
    phrase = None if strict else _final_phrase(region)
    out = phrase_readings(phrase[1]) if phrase and (not boxed or phrase[0] > boxed[-1][0]) else []
    if boxed:
        out.append(boxed[-1][1])
        distinct = list(dict.fromkeys(b for _, b in boxed))
        if len(distinct) > 1:
            out.append(", ".join(distinct))
        return out
    if out or strict or dangling_phrase(region) or phrase:  # `The answer is not 9.`: said, and nothing else counts
        return out
    expr = last_expression(region)
    return [expr] if expr else []


def extract_answer(text: str, finish_reason: str | None = "stop", strict: bool = False) -> str | None:
    """The answer a generation commits to (see `candidates`), or None."""
    found = candidates(text, finish_reason, strict)
    return found[0] if found else None
