"""The import graph of pysedd: no cycle, and imports only point down the layers (docs/architecture.md)."""
import ast
from pathlib import Path

import pysedd

ROOT = Path(pysedd.__file__).parent

# lowest first: a module may import modules of its own layer or of a lower one, never of a higher one
LAYERS = [
    {"errors", "config", "io", "signals", "checkpoint", "hub", "tokenizer", "defaults", "results", "paper"},
    {"ops"},
    {"graph", "noise", "model"},
    {"losses", "sampling", "likelihood", "data", "ar"},
    {"train", "eval", "report", "loader"},
    {"commands", "cli", "__main__"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """pysedd modules a file imports, at module level or inside functions (a lazy import is still a dependency).
    `from pkg import sub` depends on pkg.sub when that is a module, else on pkg."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("pysedd")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            elif node.module and node.module.startswith("pysedd"):
                target = node.module
            else:
                continue
            subs = {f"{target}.{a.name}" for a in node.names} & modules
            found |= subs if len(subs) == len(node.names) else subs | {target}
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    compiled = {f"pysedd.{p.name.split('.')[0]}" for p in ROOT.glob("*.so")}  # the kernels' extension, pysedd._C
    modules = set(files) | compiled
    return {name: {m for m in imports_of(path, modules) if m in files and m != name} for name, path in files.items()}


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_import_graph_has_no_cycle():
    deps = graph()
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(deps[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(deps):
        if node not in state:
            visit(node, [node])


def test_imports_point_down_the_layers():
    rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    deps = graph()  # (a module missing from LAYERS is only checked for cycles: give new modules their layer here)
    bad = [f"{a} -> {b}" for a, targets in deps.items() for b in targets
           if top(a) in rank and top(b) in rank and rank[top(b)] > rank[top(a)]]
    assert not bad, "imports pointing up the layers: " + ", ".join(sorted(bad))
