"""Every hook has a documentation section and a docstring."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from eeghub.core import hookspecs

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def hook_functions() -> dict[str, object]:
    return {n: f for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("eeghub_")}


def test_every_hook_has_a_documentation_section() -> None:
    headings = set(re.findall(r"^### (\w+)\s*$", DOCS.read_text(), flags=re.MULTILINE))
    missing = sorted(set(hook_functions()) - headings)
    assert not missing, f"hooks without a '### <name>' section in docs/plugins.md: {missing}"


def test_every_documented_hook_exists() -> None:
    headings = set(re.findall(r"^### (eeghub_\w+)\s*$", DOCS.read_text(), flags=re.MULTILINE))
    assert headings <= set(hook_functions()), f"documented hooks that do not exist: {headings - set(hook_functions())}"


def test_every_hookspec_says_when_it_is_called_and_what_it_returns() -> None:
    for name, fn in hook_functions().items():
        doc = inspect.getdoc(fn) or ""
        assert "Called" in doc, f"{name}'s docstring does not say when it is called"
        assert "eturn" in doc, f"{name}'s docstring does not say what it returns"
