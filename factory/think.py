"""R1-style reasoning markup, defined once: the thinking sits between these
tags and the answer follows the closing one."""

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def with_thinking(reasoning: str | None, content: str, closed: bool = True) -> str:
    """The trace as R1 writes it, from a reasoning parser's two fields;
    `closed` False: the model was cut off inside its thinking (no answer,
    finish_reason length), so no `</think>` it never wrote is added."""
    if not reasoning:
        return content
    if not closed and not content:
        return f"{THINK_OPEN}\n{reasoning}"
    return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{content}"


def restore_think(text: str, prefilled: bool = False) -> str:
    """The whole `<think>...</think>` block, also when the chat template put
    `<think>` in the prompt (R1's newer templates do), so the model's output
    starts inside the thinking. Without the template's word, a `</think>`
    with no opening tag before it says the same."""
    if text.lstrip().startswith(THINK_OPEN):
        return text
    close = text.find(THINK_CLOSE)
    if prefilled or (close >= 0 and THINK_OPEN not in text[:close]):
        return f"{THINK_OPEN}\n{text}"
    return text
