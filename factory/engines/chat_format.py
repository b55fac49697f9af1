"""The model's chat template applied on our side.

Budget forcing continues a partial assistant turn. Through the chat API the
server renders that turn with the model's template, and R1's template keeps
only what follows `</think>` in an assistant message: the thinking the
continuation should build on is dropped. Rendering the prompt here and
sending prompt + partial text to `/v1/completions` (or `LLM.generate`) keeps
every token. It also tells whether the template prefills `<think>`, so the
stored trace can carry the opening tag the model never wrote.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from factory.think import THINK_OPEN


class ChatFormat:
    def __init__(self, tokenizer, template: str | None = None):
        self.tok = tokenizer
        self.template = template  # None: the tokenizer's own
        ids = tokenizer("x").input_ids
        bos = tokenizer.bos_token
        # the server's tokenizer adds BOS itself: a rendered one would be doubled
        self._strip_bos = bos if bos and ids and ids[0] == tokenizer.bos_token_id else None

    @classmethod
    def load(cls, tokenizer_path: str, template_file: str | Path | None = None) -> "ChatFormat":
        from transformers import AutoTokenizer

        template = Path(template_file).read_text(encoding="utf-8") if template_file else None
        return cls(AutoTokenizer.from_pretrained(tokenizer_path), template)

    def prompt(self, messages: list[dict[str, str]]) -> str:
        """The text the model sees before its answer, generation prompt included."""
        text = self.tok.apply_chat_template(messages, chat_template=self.template, tokenize=False,
                                            add_generation_prompt=True)
        if self._strip_bos and text.startswith(self._strip_bos):
            text = text[len(self._strip_bos):]
        return text

    def continuation(self, messages: list[dict[str, str]], partial: str) -> str:
        """The raw text that continues an assistant turn starting with `partial`.
        A template that prefilled `<think>` has written the tag already: a
        partial that carries it too (as the stored trace does) must not repeat it."""
        prompt = self.prompt(messages)
        if self.prefills_think and partial.startswith(THINK_OPEN):
            partial = partial[len(THINK_OPEN):].lstrip("\n")
        return prompt + partial

    @cached_property
    def prefills_think(self) -> bool:
        return self.prompt([{"role": "user", "content": "1+1?"}]).rstrip().endswith(THINK_OPEN)


def gguf_metadata_value(stream, key: str):
    """One metadata value from the header of a GGUF file (read in order from
    a binary stream, so the first part of a split file or a zip member will
    do): how prompts/chat/deepseek-r1.jinja was taken from the R1 distill's
    GGUF (`tokenizer.chat_template`) and how a test checks it still matches."""
    import struct

    def read(fmt: str):
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, stream.read(size))[0]

    def string() -> str:
        return stream.read(read("<Q")).decode("utf-8")

    scalars = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}

    def value(kind: int):
        if kind == 8:
            return string()
        if kind == 9:
            item, count = read("<I"), read("<Q")
            return [value(item) for _ in range(count)]
        return read(scalars[kind])

    if stream.read(4) != b"GGUF":
        raise ValueError("not a GGUF file")
    read("<I")  # version
    read("<Q")  # tensor count
    for _ in range(read("<Q")):
        name, kind = string(), read("<I")
        found = value(kind)
        if name == key:
            return found
    raise KeyError(key)
