"""What the question asks for, and where the last paragraph says it.

A trace that answers in prose need not end with its answer: "A cube has 12
edges, meeting at 8 vertices.", "The remainder is $5$; the quotient is $34$.",
"15 is 30% of 50.". The question says which of the values it is: the noun
after "How many", the noun after "What is the", the expression after
"Compute", a percentage. A reading counts only when the last paragraph names
exactly one such value, so two competing statements decide nothing here.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from factory.verify.extract import NUMBER_WORDS, answer_tokens, mask_math, paragraphs, unicode_math, word_number

if TYPE_CHECKING:
    from factory.verify.normalize import Rules

_STOP = r"(?:does|do|did|is|are|was|were|can|could|will|would|should|has|have|had|of|in|there|must|might|may|than|that|with|for|to|from)"
_HOW_MANY = re.compile(rf"\bhow\s+many\s+((?:(?!{_STOP}\b)[a-z]+\s+){{0,2}}(?!{_STOP}\b)[a-z]+)\b", re.I)
_THE = re.compile(r"\b(?:what\s+(?:is|are|was|were)|find|compute|determine|calculate|evaluate|give)\s+(?:the|its|his|her|their)\s+"
                  r"((?:[a-z]+\s+){0,2}?[a-z]{3,})(?=\s+(?:of|when|if|in|that|for|such|between|on|at|from|to|which|after|by|"
                  r"does|do|is|are)\b|\s*[?.,:$])", re.I)
_OBJECT = re.compile(r"\b(?:compute|find|evaluate|simplify|calculate|determine|what\s+is|what\s+are)\s+\$([^$]{1,40})\$", re.I)
_PERCENT_ASKED = re.compile(r"\bwhat\s+(?:percent|percentage)\b", re.I)
_SAYS = r"(?:is|are|was|were|equals|be|comes\s+to|=|:)"


def _stem(word: str) -> str:
    return re.sub(r"(?:ies|es|s)$", "", word.lower()) or word.lower()


def _one(values: list[str]) -> list[str]:
    distinct = list(dict.fromkeys(values))
    return distinct if len(distinct) == 1 else []


def _compact(s: str) -> str:
    return re.sub(r"\s+|\\[,;!: ]", "", s)


_MAIN_CLAUSE_END = re.compile(r"[:;]\s|,?\s+(?:since|because|as)\s|\s+[—–]\s")


def asked_readings(problem: str | None, region: str, rules: Rules) -> list[str]:
    """The value the last sentence gives for what the question asks (see the module doc)."""
    if not problem:
        return []
    last = last_sentence(unicode_math(region))
    if not last:
        return []
    spans, tokens = answer_tokens(last)
    tokens = [t for t in tokens if not re.fullmatch(r"[a-zA-Z]", t[1])]  # `The smallest such $n$ is 7`: a name, not a value
    ends = [0] + [t[0] + t[2] for t in tokens]
    out: list[str] = []
    if (m := list(_HOW_MANY.finditer(problem))) and not asked_unit(problem, rules):  # units: see compare
        words = m[-1].group(1).split()  # "How many even primes greater than 2": the plural names the things
        head = _stem(next((w for w in reversed(words) if w.endswith("s")), words[-1]))
        named = [t[1] for t in tokens
                 if re.match(rf"\s*(?:[a-z]+\s+){{0,2}}?{re.escape(head)}", last[t[0] + t[2]:], re.I)]
        # `The polygon has nine sides.`: a number word names the count too (not `one of the sides`)
        named += [str(word_number(w.group(1))) for w in re.finditer(
            rf"({NUMBER_WORDS})\s+(?:(?!of\b)[a-z]+\s+){{0,2}}?{re.escape(head)}", last, re.I)]
        if re.search(rf"\bno\s+(?:[a-z]+\s+){{0,2}}?{re.escape(head)}", last, re.I):  # `There are no real solutions.`
            named.append("0")
        if len(set(named)) > 1 and (cut := _MAIN_CLAUSE_END.search(mask_math(last))):
            # `A cube has 12 edges: each of its 6 faces has 4 edges, ...`: said first, then explained
            named = [t[1] for t in tokens if t[0] < cut.start() and t[1] in named] or named
        out += _one(named)
    if m := list(_THE.finditer(problem)):
        words = [_stem(w) for w in m[-1].group(1).split()]
        said = rf"\b(?:{'|'.join(map(re.escape, words))})\w*\b[^.;,\d]{{0,30}}?\b{_SAYS}\s*$"
        out += _one([_chain_end(last, tokens, i) for i, (t, start) in enumerate(zip(tokens, ends))
                     if re.search(said, last[start: t[0]], re.I)])
    if m := list(_OBJECT.finditer(problem)):
        obj = _compact(m[-1].group(1))
        out += _one([parts[-1].strip() for _, span, _ in spans
                     if len(parts := span.split("=")) > 1 and _compact(parts[0]) == obj and parts[-1].strip()])
    if _PERCENT_ASKED.search(problem):
        out += _one([t[1] for t in tokens if t[1].endswith("%")]
                    + [f"{t[1]}\\%" for t in tokens if re.match(r"\s*(?:percent|per\s+cent)\b", last[t[0] + t[2]:], re.I)])
    return [_whole_quantity(last, v, rules) for v in dict.fromkeys(out)]


def _chain_end(sentence: str, tokens: list, i: int) -> str:
    """`is 3 × $400 = $1,200.00`: the value said is where the computation ends."""
    j = i
    while j + 1 < len(tokens) and re.fullmatch(r"[\s×*·+\-/=\\$()]+|\s*\\(?:times|cdot)\s*\\?\$?\s*",
                                               sentence[tokens[j][0] + tokens[j][2]: tokens[j + 1][0]]):
        j += 1
    return tokens[j][1] if "=" in sentence[tokens[i][0]: tokens[j][0]] else tokens[i][1]


def _whole_quantity(sentence: str, value: str, rules: Rules) -> str:
    """`7` in "The total is 7 dollars and 35 cents." -> `7 dollars and 35 cents`."""
    m = re.search(rf"(?<![\d.]){re.escape(value)}\s*([a-zA-Z]+)\.?\s*(?:,|and)?\s*\d+(?:\.\d+)?\s*([a-zA-Z]+)", sentence)
    return m.group(0) if m and all(u.lower() in rules.units for u in m.groups()) else value


def last_sentence(text: str) -> str:
    """The last sentence of the last paragraph (a period inside `$...$` or a decimal does not end one)."""
    found = paragraphs(text)
    if not found:
        return ""
    last = found[-1].strip()
    masked = mask_math(last)
    ends = [m.end() for m in re.finditer(r"(?<!\d)[.!?。](?=\s+\S)|(?<=\D)[.!?](?=\s+[A-Z])|\n", masked)]
    return last[ends[-1]:].strip() if ends else last


def asked_unit(problem: str | None, rules: Rules) -> str | None:
    """The unit a question asks for: "How many hours ...", "... in minutes?"."""
    m = re.search(r"\bhow\s+many\s+([a-z]+(?:\s+[a-z]+)?)|\b(?:in|in\s+terms\s+of)\s+([a-z]+)\s*[?.]", problem or "", re.I)
    if not m:
        return None
    words = (m.group(1) or m.group(2)).lower().split()
    units = [rules.units[w] for w in (" ".join(words), words[0]) if w in rules.units]
    return next((u for u in units if u in rules.scales), None)
