"""The dependency rule of DESIGN.md, checked on the source:

plugins -> core (and config) only; adapters -> core (and config) only; core
and config never import adapters, plugins or the composition root.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_OF = {"core": "eeghub.core", "adapters": "eeghub.adapters", "plugins": "eeghub.plugins", "config": "eeghub.config"}
COMPOSITION_ROOT = ("eeghub.bootstrap", "eeghub.cli", "eeghub.server")


def imports_of(path: Path, package: str) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    module_parts = [package, *path.relative_to(ROOT).with_suffix("").parts[1:]]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module_parts[: len(module_parts) - node.level]
                if path.name == "__init__.py":
                    base = module_parts[: len(module_parts) - node.level + 1]
                found.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                found.add(node.module)
    return {name for name in found if name.startswith("eeghub")}


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _violations(folder: str, allowed: tuple[str, ...], own_subpackage: bool = False) -> list[str]:
    bad: list[str] = []
    for path in modules(folder):
        own = PACKAGE_OF[folder]
        if own_subpackage:
            parts = path.relative_to(ROOT / folder).parts
            own = f"{own}.{parts[0]}" if len(parts) > 1 else own
        for name in imports_of(path, PACKAGE_OF[folder]):
            if name == "eeghub" or name.startswith(own) or name.startswith(allowed):
                continue
            bad.append(f"{path.relative_to(ROOT)} imports {name}")
    return bad


@pytest.mark.parametrize(
    ("folder", "allowed", "own_subpackage"),
    [
        ("core", ("eeghub.config",), False),
        ("config", (), False),
        ("adapters", ("eeghub.core", "eeghub.config"), False),
        ("plugins", ("eeghub.core", "eeghub.config"), True),
    ],
)
def test_dependency_rule(folder: str, allowed: tuple[str, ...], own_subpackage: bool) -> None:
    assert _violations(folder, allowed, own_subpackage) == []


def test_only_the_composition_root_imports_adapters() -> None:
    users = [
        str(path.relative_to(ROOT))
        for folder in ("core", "config", "plugins")
        for path in modules(folder)
        if any(n.startswith("eeghub.adapters") for n in imports_of(path, PACKAGE_OF[folder]))
    ]
    assert users == []
