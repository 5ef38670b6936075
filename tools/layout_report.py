"""Count what issue #36 item 6 asks to be zero in ``src/facefuse``: modules over 500 lines,
functions over 80 lines, upward imports (a lower layer importing a higher one) and import
cycles between modules. Static: it parses the files, imports nothing.

Usage: python tools/layout_report.py [--src src/facefuse] [--list]
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
# a package's layer: a module may import its own layer and those below, never above
LAYERS = {
    "files": 0, "registry": 0, "tasks": 0, "config": 0, "devices": 0, "identity_format": 0,
    "extras": 0, "assets": 0, "weights": 0,
    "data": 1, "runtime": 1, "detection": 1,
    "models": 2,
    "inference": 3, "evaluation": 3,
    "gallery": 4, "batch": 4, "train": 4, "features": 4, "lifecycle": 5, "experiments": 5,
    "service": 6, "cli": 7,
}


def package_of(module: str) -> str:
    """``facefuse.data.cache`` -> ``data``; a top-level ``cli_*`` module -> ``cli``."""
    part = module.split(".")[1] if "." in module else ""
    return "cli" if part.startswith("cli") else part


def module_name(path: Path, src: Path) -> str:
    rel = path.relative_to(src.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every ``facefuse`` module ``tree`` imports, at any depth (lazy imports included)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("facefuse"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("facefuse"):
                out.add(target)
                out.update(f"{target}.{a.name}" for a in node.names)
    return out


def long_functions(tree: ast.AST) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                out.append((node.name, lines))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def report(src: Path) -> dict[str, list]:
    modules: dict[str, ast.AST] = {}
    lines: dict[str, int] = {}
    packages: set[str] = set()
    for path in sorted(src.rglob("*.py")):
        name = module_name(path, src)
        text = path.read_text()
        modules[name] = ast.parse(text, str(path))
        lines[name] = text.count("\n") + (not text.endswith("\n") and bool(text))
        if path.name == "__init__.py":
            packages.add(name)
    graph = {}
    for name, tree in modules.items():
        targets = imports_of(tree, name, name in packages)
        graph[name] = {t for t in targets if t in modules and t != name}
    upward = []
    for name, targets in graph.items():
        mine = LAYERS.get(package_of(name))
        for t in sorted(targets):
            theirs = LAYERS.get(package_of(t))
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{name} -> {t}")
    return {
        "modules over 500 lines": [f"{n} ({k})" for n, k in sorted(lines.items())
                                   if k > MAX_MODULE_LINES],
        "functions over 80 lines": [f"{n}.{f} ({k})" for n, tree in sorted(modules.items())
                                    for f, k in long_functions(tree)],
        "upward imports": upward,
        "import cycles": [" <-> ".join(c) for c in cycles(graph)],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", default="src/facefuse")
    p.add_argument("--list", action="store_true", help="name each finding")
    args = p.parse_args()
    found = report(Path(args.src))
    for what, items in found.items():
        print(f"{what}: {len(items)}")
        if args.list:
            for item in items:
                print(f"  {item}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
