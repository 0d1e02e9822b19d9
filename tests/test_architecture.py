"""Architecture rules that reviews would otherwise have to catch."""

from __future__ import annotations

import ast
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[1] / "sae_pipeline"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_library_never_imports_prefect():
    offenders = {
        str(path.relative_to(LIBRARY)): sorted(name for name in _imported_modules(path) if name.split(".")[0] == "prefect")
        for path in LIBRARY.rglob("*.py")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_library_never_unpickles():
    for path in LIBRARY.rglob("*.py"):
        imported = _imported_modules(path)
        assert not imported & {"pickle", "cloudpickle", "joblib", "dill"}, path.name
        assert "torch.load" not in path.read_text(), path.name
