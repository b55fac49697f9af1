"""Text from outside (source rows, engine replies, files given to `factory
verify`) made safe to store. A lone surrogate (`\\ud800`, which a JSON escape
can carry) cannot be encoded as UTF-8 and would stop the Parquet or JSON
writer; a NUL byte breaks many readers. Both become U+FFFD, and the caller
counts or flags what was replaced, so one bad string never stops a run."""

from __future__ import annotations

import re
from typing import Any

_UNSAFE = re.compile(r"[\ud800-\udfff\x00]")
REPLACEMENT = "\ufffd"


def has_unsafe(s: str) -> bool:
    return _UNSAFE.search(s) is not None


def clean(s: str) -> tuple[str, int]:
    """`s` with unsafe characters replaced, and how many were."""
    return _UNSAFE.subn(REPLACEMENT, s)


def clean_value(value: Any) -> tuple[Any, int]:
    """Strings inside lists and dicts (keys too) cleaned; the total replaced."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, list):
        items = [clean_value(v) for v in value]
        return [v for v, _ in items], sum(n for _, n in items)
    if isinstance(value, dict):
        total, out = 0, {}
        for k, v in value.items():
            (k2, nk), (v2, nv) = clean_value(k), clean_value(v)
            out[k2] = v2
            total += nk + nv
        return out, total
    return value, 0
