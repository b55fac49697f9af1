"""Final-answer extraction from a generation.

Pure string work (no sympy), so it runs in the driver on every row. An
unfinished generation yields no answer: a `\\boxed{}` found mid-thought is a
guess the model never committed to.
"""

from __future__ import annotations

import re

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
_BOX_CMDS = ("\\boxed", "\\fbox")
_FINAL_PHRASE = re.compile(
    r"final answer\s*(?:is|:)\s*[:\s]*\$?(?P<ans>[^\n$]+?)\$?\s*(?:\.|\n|$)", re.IGNORECASE
)


def is_reasoning_complete(text: str, finish_reason: str | None) -> bool:
    """The model stopped on its own and closed any thinking block it opened."""
    if finish_reason not in ("stop", "eos", None) and finish_reason != "stop_sequence":
        return False
    if THINK_OPEN in text and THINK_CLOSE not in text[text.rfind(THINK_OPEN):]:
        return False
    return True


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


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` with balanced braces."""
    best: tuple[int, str] | None = None
    for cmd in _BOX_CMDS:
        pos = text.rfind(cmd)
        while pos != -1:
            j = pos + len(cmd)
            while j < len(text) and text[j] == " ":
                j += 1
            if j < len(text) and text[j] == "{":
                got = _braced(text, j)
                if got is not None:
                    if best is None or pos > best[0]:
                        best = (pos, got[0].strip())
                    break
            pos = text.rfind(cmd, 0, pos)
    return best[1] if best else None


def extract_answer(text: str, finish_reason: str | None = "stop") -> str | None:
    """Last boxed answer, else a 'final answer is X' phrase; None if unfinished."""
    if not is_reasoning_complete(text, finish_reason):
        return None
    answer_part = text[text.rfind(THINK_CLOSE) + len(THINK_CLOSE):] if THINK_CLOSE in text else text
    boxed = last_boxed(answer_part)
    if boxed is not None:
        return boxed or None  # an empty box is a template echo, not an answer
    matches = list(_FINAL_PHRASE.finditer(answer_part))
    if matches:
        ans = matches[-1].group("ans").strip().rstrip(".")
        return ans or None
    return None
