"""Architecture rules that reviews would otherwise have to catch."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "sae_pipeline"
#: What the library must never load: the orchestrator, and the flows that wire the library into it.
FORBIDDEN = ("prefect", "prefect_dask", "flows")

#: Imports every library module in a fresh interpreter and prints which forbidden modules ended up loaded, by
#: whatever means (import statements, importlib, __import__, a dependency that pulls them in).
_TRACE = """
import importlib, json, pkgutil, sys
forbidden = tuple(sys.argv[1:])
loaded_by = {}

def trace(module_name):
    before = set(sys.modules)
    module = importlib.import_module(module_name)
    for name in set(sys.modules) - before:
        if name.split(".")[0] in forbidden:
            loaded_by.setdefault(module_name, []).append(name)
    return module

package = trace("sae_pipeline")
for module in pkgutil.walk_packages(package.__path__, "sae_pipeline."):
    trace(module.name)
print(json.dumps({module: sorted(names) for module, names in loaded_by.items()}))
"""


def _imported_modules(path: Path) -> set[str]:
    """Modules a file names in import statements or in importlib.import_module / __import__ calls (anywhere)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    return names


def test_importing_the_library_loads_neither_prefect_nor_the_flows():
    traced = subprocess.run(
        [sys.executable, "-c", _TRACE, *FORBIDDEN], capture_output=True, text=True, cwd=ROOT, timeout=300, check=True
    )
    assert json.loads(traced.stdout) == {}


def test_library_never_names_prefect_or_the_flows():
    offenders = {
        str(path.relative_to(LIBRARY)): sorted(
            name for name in _imported_modules(path) if name.split(".")[0] in FORBIDDEN
        )
        for path in LIBRARY.rglob("*.py")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_library_never_unpickles():
    for path in LIBRARY.rglob("*.py"):
        imported = _imported_modules(path)
        assert not imported & {"pickle", "cloudpickle", "joblib", "dill"}, path.name
        assert "torch.load" not in path.read_text(), path.name
