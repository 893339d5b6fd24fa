"""The package's import structure follows ARCHITECTURE.md: every module imports only modules of
its own unit or of a lower layer, and no group of modules imports itself round a circle.

Imports are read from the source (``ast``), function-level ones included: an import inside a
function is a dependency all the same, only deferred. Importing ``audiossl.a.b`` also runs
``audiossl/a/__init__.py``, so that counts as an edge too.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Mapping, Set

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "audiossl"

# Layer of each top-level unit of the package (a module or a subpackage), lowest first. A unit
# may import its own modules and units of strictly lower layers; units sharing a layer are
# siblings that do not know each other.
LAYERS: List[Set[str]] = [
    {"audiossl"},  # the package's __init__: __version__
    {"files"},
    {"checkpoint", "audio"},
    {"features", "tokenizers", "nn"},
    {"masking"},
    {"data", "viz"},
    {"models"},
    {"train", "convert"},
    {"embed"},
    {"hear", "evaluate"},
    {"commands"},
    {"cli"},
    {"__main__"},
]
RANK: Dict[str, int] = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def module_files(root: Path) -> Dict[str, Path]:
    """Dotted module name -> file, for every module of the package at ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _parents(name: str) -> List[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(root: Path) -> Dict[str, Set[str]]:
    """Module -> the package's modules it imports (anywhere in its body, or implicitly through
    their parent packages)."""
    modules = module_files(root)
    graph: Dict[str, Set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                found = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in found:
                if target in modules:
                    targets.add(target)
                    targets.update(p for p in _parents(target) if p in modules)
        targets -= {name, *_parents(name)}  # a module runs its own parents' __init__ anyway
        graph[name] = targets
    return graph


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def upward_imports(graph: Mapping[str, Set[str]], rank: Mapping[str, int]) -> List[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        unit = unit_of(module)
        for target in sorted(targets):
            other = unit_of(target)
            if other != unit and rank[other] >= rank[unit]:
                problems.append(f"{module} imports {target} ({other} is not below {unit})")
    return problems


def cycles(graph: Mapping[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


GRAPH = import_graph(PACKAGE)


def test_every_unit_has_a_layer() -> None:
    units = {unit_of(m) for m in GRAPH}
    assert units - set(RANK) == set(), "place new modules in LAYERS (and in ARCHITECTURE.md's map)"


def test_no_module_imports_a_higher_layer() -> None:
    assert upward_imports(GRAPH, RANK) == []


def test_no_import_circle() -> None:
    assert cycles(GRAPH) == []


# ------------------------------------------------------------------ the checks catch what they claim
def _package(tmp_path: Path, files: Mapping[str, str]) -> Path:
    root = tmp_path / "audiossl"
    for rel, text in {"__init__.py": "", **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_a_function_level_import_closes_a_circle(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "models/__init__.py": "",
        "models/a.py": "from audiossl.models import b\n",
        "models/b.py": "def f():\n    from audiossl.models.a import x\n",
        "models/c.py": "from . import a\n",
    })
    assert cycles(import_graph(root)) == [["audiossl.models.a", "audiossl.models.b"]]


def test_a_parent_package_init_closes_a_circle(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "train/__init__.py": "from audiossl.train.loop import run\n",
        "train/loop.py": "",
        "models.py": "from audiossl.train.loop import run\n",
    })
    graph = import_graph(root)
    assert "audiossl.train" in graph["audiossl.models"]
    assert upward_imports(graph, RANK) == ["audiossl.models imports audiossl.train (train is not below models)",
                                           "audiossl.models imports audiossl.train.loop (train is not below models)"]


@pytest.mark.parametrize("source", ["from audiossl.train import checkpoint\n", "import audiossl.embed\n",
                                    "from ..convert import x\n"])
def test_an_upward_or_sideways_import_is_named(tmp_path: Path, source: str) -> None:
    root = _package(tmp_path, {"models/__init__.py": "", "models/enc.py": source, "train/__init__.py": "",
                               "train/checkpoint.py": "", "embed.py": "", "convert/__init__.py": "x = 1\n"})
    problems = upward_imports(import_graph(root), {**RANK, "convert": RANK["models"]})
    assert problems and all(p.startswith("audiossl.models.enc imports") for p in problems)
