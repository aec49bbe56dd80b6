"""The package's layers hold: no import cycle, no upward import, no project import hidden in a function.

The layers, bottom to top, are stated in `generator/base/__init__.py`. Every `import` statement
of every module counts, `if TYPE_CHECKING:` blocks included: a type-only upward import still
couples a lower layer to a higher one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "generator"

HEAVY_LIBRARIES = frozenset({"torch", "transformers", "onnx", "onnxruntime", "sentence_transformers"})
"""Third-party libraries slow to import: a module importing one at its top may be imported
lazily (inside the function that needs it), so that the CLI does not pay for it."""

LAYERS: tuple[tuple[str, ...], ...] = (
    ("generator", "generator.errors", "generator.sources", "generator.base"),
    ("generator.kinds",),
    ("generator.environments",),
    ("generator.pipeline",),
    ("generator.serving", "generator.containers"),
    ("generator.cli", "generator.__main__"),
)
"""Module prefixes of each layer, bottom to top."""


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    """The index in LAYERS of the longest prefix matching `module`."""
    best, best_length = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    if best < 0:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS and generator/base/__init__.py")
    return best


def project_imports(path: Path, package: Path = PACKAGE) -> list[tuple[str, int, bool]]:
    """(imported project module, line, inside a function) of every import statement in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = module_name(path, package)
    is_package = path.name == "__init__.py"
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = own.split(".") if is_package else own.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    prefix = ".".join(base + ([child.module] if child.module else []))
                else:
                    prefix = child.module or ""
                names = [_module_or(f"{prefix}.{alias.name}", prefix, package) for alias in child.names]
            modules = {
                _existing_module(n, package) for n in names if n == package.name or n.startswith(package.name + ".")
            }
            found.extend((module, child.lineno, in_function) for module in sorted(modules))
            visit(child, inside)

    visit(tree, False)
    return found


def _module_or(name: str, fallback: str, package: Path) -> str:
    """`name` when it is a module (`from a import b`, b a module), else `fallback` (b is a name)."""
    candidate = package.parent.joinpath(*name.split("."))
    if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
        return name
    return fallback


def _existing_module(name: str, package: Path) -> str:
    """`name` cut back to a module or package that exists (`from a.b import c`: c may be a name)."""
    parts = name.split(".")
    while len(parts) > 1:
        candidate = package.parent.joinpath(*parts)
        if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
            break
        parts.pop()
    return ".".join(parts)


def imports_heavy_library(module: str, package: Path = PACKAGE) -> bool:
    """Whether `module` imports one of HEAVY_LIBRARIES at its top level."""
    path = package.parent.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] in HEAVY_LIBRARIES for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in HEAVY_LIBRARIES:
            return True
    return False


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        if "image_data" in path.parts:
            continue
        own = module_name(path, package)
        graph[own] = {module for module, _, _ in project_imports(path, package) if module != own}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` (a package's `__init__` counts as the package), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def layer_violations(package: Path = PACKAGE) -> list[str]:
    problems = []
    for path in sorted(package.rglob("*.py")):
        if "image_data" in path.parts:
            continue
        own = module_name(path, package)
        for module, line, in_function in project_imports(path, package):
            where = f"{path.relative_to(package.parent)}:{line}"
            if in_function and not imports_heavy_library(module, package):
                problems.append(f"{where}: {own} imports {module} inside a function")
            if module != package.name and layer_of(module) > layer_of(own):
                problems.append(f"{where}: {own} (layer {layer_of(own)}) imports {module} (layer {layer_of(module)})")
    return problems


def test_no_module_imports_a_layer_above_it_or_inside_a_function() -> None:
    problems = layer_violations()
    assert not problems, "\n".join(problems)


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A package with a cycle through a function-level import and an upward import."""
    package = tmp_path / "generator"
    for folder in ("base", "kinds", "pipeline"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "kinds" / "formats.py").write_text(
        "from generator.base import tensors\n\ndef f():\n    from generator.pipeline import plan\n"
    )
    (package / "base" / "tensors.py").write_text("")
    (package / "pipeline" / "plan.py").write_text("from generator.kinds.formats import f\n")
    return package


def test_the_checks_fail_on_a_planted_cycle_naming_both_modules(planted: Path) -> None:
    problems = layer_violations(planted)
    assert any("generator.kinds.formats imports generator.pipeline.plan inside a function" in p for p in problems)
    assert any("generator.kinds.formats (layer 1) imports generator.pipeline.plan (layer 3)" in p for p in problems)
    cycle = find_cycle(import_graph(planted))
    assert cycle is not None and {"generator.kinds.formats", "generator.pipeline.plan"} <= set(cycle)
