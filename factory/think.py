"""R1-style reasoning markup, defined once: the thinking sits between these
tags and the answer follows the closing one."""

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def with_thinking(reasoning: str | None, content: str) -> str:
    """The trace as R1 writes it, from a reasoning parser's two fields."""
    return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{content}" if reasoning else content
