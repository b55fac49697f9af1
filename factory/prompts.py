"""Prompt rendering: a jinja2 template from prompts/ fills the user turn.

The engine applies the model's own chat template to these messages (vLLM's
and SGLang's chat endpoints do), so the same job file fits any model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from factory import assets
from factory.config import PromptConfig


class PromptError(ValueError):
    pass


class PromptRenderer:
    def __init__(self, cfg: PromptConfig, base: Path | None = None):
        path = assets.prompt_path(cfg.template, base)
        if path is None:
            raise PromptError(f"prompt.template: template not found: {cfg.template}")
        self.path = path
        self.system = cfg.system
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)
        try:
            self.template = env.from_string(path.read_text(encoding="utf-8"))
        except jinja2.TemplateSyntaxError as exc:
            raise PromptError(f"{path}:{exc.lineno}: {exc.message}") from None

    def user_prompt(self, problem: dict[str, Any]) -> str:
        try:
            return self.template.render(**problem).strip()
        except jinja2.UndefinedError as exc:
            raise PromptError(f"{self.path}: {exc.message} (row uuid {problem.get('uuid')})") from None

    def messages(self, problem: dict[str, Any]) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        msgs.append({"role": "user", "content": self.user_prompt(problem)})
        return msgs
