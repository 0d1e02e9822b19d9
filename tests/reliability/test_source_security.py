"""No code execution on anything read: no pickle, no torch.load without weights_only=True, no eval/exec."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*ROOT.joinpath("sae_pipeline").rglob("*.py"), *ROOT.joinpath("flows").rglob("*.py")])
UNPICKLERS = {"pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve", "marshal"}


def _offences(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        where = f"{path}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where} imports {alias.name}" for alias in node.names if alias.name.split(".")[0] in UNPICKLERS]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in UNPICKLERS:
            found.append(f"{where} imports from {node.module}")
        elif isinstance(node, ast.Call):
            function = node.func
            name = (
                function.id
                if isinstance(function, ast.Name)
                else function.attr
                if isinstance(function, ast.Attribute)
                else ""
            )
            if name in {"eval", "exec"} and isinstance(function, ast.Name):
                found.append(f"{where} calls {name}")
            if name == "load" and isinstance(function, ast.Attribute) and ast.unparse(function.value) == "torch":
                safe = any(
                    k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                    for k in node.keywords
                )
                if not safe:
                    found.append(f"{where} calls torch.load without weights_only=True")
            if name in {"read_pickle", "loads"} and "pickle" in ast.unparse(function):
                found.append(f"{where} unpickles")
    return found


def test_sources_are_scanned():
    assert len(SOURCES) > 20 and any(path.name == "cli.py" for path in SOURCES)


def test_no_pickle_eval_exec_or_unsafe_torch_load():
    assert [offence for path in SOURCES for offence in _offences(path)] == []


def test_the_scan_catches_each_pattern(tmp_path):
    bad = tmp_path / "probe.py"
    bad.write_text(
        "import pickle\nimport torch\ntorch.load('m.pt')\neval('1')\nexec('x=1')\n"
        "torch.load('m.pt', weights_only=True)\n"
    )
    assert len(_offences(bad)) == 4
