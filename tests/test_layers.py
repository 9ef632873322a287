"""The layers of the house, checked from the source: the sandbox never imports the tool (so
it can disagree with the client), and only the Graph boundary imports msgraph and MSAL."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "provisioner"


def imports(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            name = ".".join([*base, node.module] if node.module else base)
            found |= {name} | {f"{name}.{a.name}" for a in node.names}
    return found


@pytest.mark.parametrize("path", sorted((PACKAGE / "sandbox").glob("*.py")), ids=lambda p: p.name)
def test_the_sandbox_imports_nothing_of_the_tool(path: Path) -> None:
    tool = {m for m in imports(path)
            if m.startswith("provisioner.") and not m.startswith("provisioner.sandbox")}
    assert tool == set()


def test_only_the_graph_boundary_imports_msgraph_and_msal() -> None:
    boundary = ("msgraph", "msal", "msgraph_core", "kiota_http")
    outside = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
               if "graph" not in p.relative_to(PACKAGE).parts
               and any(m.split(".")[0] in boundary for m in imports(p))}
    assert outside == set()


def test_the_imports_are_read_right() -> None:
    """The check above would pass on a reader that finds nothing: it finds what is there."""
    assert "provisioner.steps.base.BaseStep" in imports(PACKAGE / "steps" / "account.py")
    assert "provisioner.errors.GraphError" in imports(PACKAGE / "graph" / "gateway.py")
