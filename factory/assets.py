"""Locate the user-editable asset folders (prompts/, verifiers/, jobs/ ...).

In a source checkout they sit beside the package; in an installed wheel
they are force-included under `factory/_assets/`.
"""

from __future__ import annotations

import os
from pathlib import Path

_PKG = Path(__file__).resolve().parent


def root() -> Path:
    """Folder that holds prompts/, verifiers/, jobs/, dashboards/."""
    checkout = _PKG.parent
    if (checkout / "prompts").is_dir() and (checkout / "pyproject.toml").is_file():
        return checkout
    return _PKG / "_assets"


def find(kind: str, name: str) -> Path | None:
    path = root() / kind / name
    return path if path.exists() else None


def template_path(template: str, kind: str = "prompts", base: Path | None = None) -> Path | None:
    """A template given as a path (relative to `base` or cwd) or a name in `kind`/."""
    candidates = []
    p = Path(template)
    if base is not None and not p.is_absolute():
        candidates.append(base / p)
    candidates.append(p)
    candidates += [root() / kind / template, root() / kind / f"{template}.jinja"]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    return None


def prompt_path(template: str, base: Path | None = None) -> Path | None:
    return template_path(template, "prompts", base)


def cache_dir() -> Path:
    """Project-local cache in a checkout, the user cache otherwise."""
    env = os.environ.get("FACTORY_CACHE")
    if env:
        return Path(env)
    if root() == _PKG.parent:
        return _PKG.parent / ".cache"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "reasoning-factory"
