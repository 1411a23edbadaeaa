"""The folders of ``dicom_node`` name its processes and layers; imports point one way and never form a cycle.

Layers, lowest first: ``core`` (config, index, queue) and ``dicom`` (objects ⇄ arrays), ``intake`` (the SCP
process), ``work`` (what workers run), ``api``, ``process`` (assembling processes), ``demo`` and ``cli``.
A module imports only its own layer or lower ones. Imports under ``if TYPE_CHECKING:`` are annotations, not
dependencies, and are not counted; imports inside functions are.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "dicom_node"
LAYERS = {"core": 0, "dicom": 0, "intake": 1, "work": 2, "api": 3, "process": 4, "demo": 5, "cli": 6}
#: What the intake process must never load: the models pull TensorFlow in.
INTAKE_FORBIDDEN = ("models", "tensorflow", "federation", "dicom_node.work", "dicom_node.api")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every module (ours or not) that ``path`` imports outside ``TYPE_CHECKING`` blocks."""
    this = _module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def _graph() -> dict[str, set[str]]:
    paths = [p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts]
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, modules) for p in paths}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 and parts[0] == "dicom_node" else None


def test_every_module_sits_in_a_layer_folder() -> None:
    loose = [m for m in _graph() if m.count(".") == 1 and _layer(m) is None and m not in {"dicom_node.__main__"}]
    assert loose == [], f"modules outside the layer folders: {loose}"


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for module, imported in _graph().items():
        own = _layer(module)
        for target in imported:
            other = _layer(target)
            if own is not None and other is not None and other > own:
                wrong.append(f"{module} → {target}")
    assert wrong == [], "imports pointing up the layers:\n" + "\n".join(sorted(wrong))


def test_intake_never_imports_models_or_workers() -> None:
    wrong = [
        f"{module} → {target}"
        for module, imported in _graph().items()
        if module.startswith("dicom_node.intake")
        for target in imported
        if target.startswith(INTAKE_FORBIDDEN)
    ]
    assert wrong == [], "the intake process would load models or worker code:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles() -> None:
    full = _graph()
    ours = {m: {t for t in targets if t in full and t != m} for m, targets in full.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in ours[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(ours):
        if v not in index:
            strongconnect(v)
    assert cycles == [], f"import cycles: {cycles}"


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layer_folders_exist(layer: str) -> None:
    assert (PACKAGE / layer / "__init__.py").is_file()
