"""The layering, pinned: libs is what services share and imports neither services nor tools; a service
never imports another service or the tools (services talk through protobuf contracts only)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVICES = sorted(p.name for p in (REPO / "services").iterdir() if (p / "__init__.py").exists())


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every module a file imports (lazy imports inside functions included), with its line."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def offences(folder: str, forbidden: callable) -> list[str]:  # type: ignore[valid-type]
    out = []
    for path in sorted((REPO / folder).rglob("*.py")):
        for line, module in imports(path):
            if forbidden(path, module):
                out.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    return out


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def test_libs_import_neither_services_nor_tools() -> None:
    assert offences("libs", lambda _p, m: _top(m) in ("services", "tools")) == []


def test_services_import_no_other_service_and_no_tools() -> None:
    def foreign(path: Path, module: str) -> bool:
        own = path.relative_to(REPO / "services").parts[0]
        parts = module.split(".")
        return parts[0] == "tools" or (parts[0] == "services" and len(parts) > 1 and parts[1] != own)

    assert SERVICES == ["compactor", "gateway", "ingest", "query"]
    assert offences("services", foreign) == []
