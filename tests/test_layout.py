"""The package layout: a flat shipped layer, offline tooling in subpackages, imports that run one way."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from transformers.dynamic_module_utils import get_imports

from processing_unimp.export.hub import code_files

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("modeling_unimp", "processing_unimp")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every project module `path` imports (relative imports resolved, `TYPE_CHECKING` and lazy ones included)."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names = [f"{module}.{alias.name}" for alias in node.names] + [module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {name for name in names if name.split(".")[0] in PACKAGES}
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        # `from pkg import name` may name a module or an attribute: keep the module ones, else the package.
        graph[name] = {target if target in files else target.rsplit(".", 1)[0] for target in _imports(path)} - {name}
        graph[name] &= set(files)
    return graph


def test_import_graph_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail, node, target]))
            if target not in state:
                visit(target, [*trail, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_model_layer_imports_nothing_of_the_processing_layer():
    assert not any(target.startswith("processing_unimp") for name, targets in _graph().items()
                   if name.startswith("modeling_unimp") for target in targets)
    code = "import sys, modeling_unimp; print(sorted(m for m in sys.modules if m.startswith('processing_unimp')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_shipped_layer_is_flat_and_imports_only_flat_siblings():
    shipped = code_files()
    assert {p.parent.name for p in shipped} == set(PACKAGES)
    names = {p.stem for p in shipped}
    assert len(names) == len(shipped), "shipped file names must be unique across both packages (the Hub is flat)"
    for path in shipped:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1 and node.module in names, f"{path.name}: `from {'.' * node.level}{node.module}`"
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                assert not any(m.split(".")[0] in PACKAGES for m in modules), f"{path.name} imports {modules}"
        assert "diffusers" not in get_imports(path), f"{path.name}: a Hub load must not need diffusers"


def test_tooling_lives_in_subpackages_apart_from_the_shipped_layer():
    tooling = {p.parent.name for p in (ROOT / "processing_unimp").rglob("*.py") if p.parent.name != "processing_unimp"}
    assert tooling == {"data", "training", "evaluation", "baselines", "benchmark", "backbones", "export"}
    assert not [p for p in (ROOT / "modeling_unimp").iterdir() if p.is_dir() and p.name != "__pycache__"]


def test_tooling_imports_its_own_package_one_way():
    """Imports one way: tooling modules reach the rest of `processing_unimp` relatively, as the shipped layer does."""
    for path in (ROOT / "processing_unimp").glob("*/*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            absolute = [m for m in modules if m.split(".")[0] == "processing_unimp"]
            assert not absolute, f"{path.relative_to(ROOT)}:{node.lineno} imports {absolute} absolutely"


def _lines(paths) -> int:
    return sum(len(path.read_text().splitlines()) for path in paths)


def test_no_package_folder_holds_over_30_percent_of_the_lines():
    """Rooms by role: no folder of the two packages (each counted without its subfolders) grows into a catch-all."""
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    total = _lines(files)
    for folder in {p.parent for p in files}:
        share = _lines(p for p in files if p.parent == folder) / total
        assert share <= 0.30, f"{folder.relative_to(ROOT)} holds {share:.0%} of the packages' lines"


def test_no_function_in_the_packages_exceeds_80_lines():
    for path in (path for package in PACKAGES for path in (ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 80, f"{path.relative_to(ROOT)}: {node.name} has {length} lines"


def test_no_example_imports_another_example():
    examples = [p for p in (ROOT / "examples").rglob("*.py") if "checkpoints" not in p.parts]  # exports' code copies
    scripts = {p.stem for p in examples}
    for path in examples:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            assert not any(m.split(".")[0] in scripts for m in modules), f"{path.relative_to(ROOT)} imports {modules}"
