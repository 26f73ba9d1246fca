"""Per-rule code fingerprints from the import graph of the pysedd sources a job runs.

Snakemake's code trigger sees a rule's shell template, not the Python it imports, so every rule passes
`code=<fingerprint>` as a param. The fingerprint is a sha256 over the AST dump (no comments, no docstrings, no line
numbers) of exactly the code the rule reaches from its entry points:

- a module imported whole (`import pysedd.x`, `from pysedd import x`) counts whole;
- a module bound to a name (`import pysedd.ops as ops`) counts as if imported by the attributes read off it;
- a module imported by names (`from pysedd.x import f`) counts with its top-level statements plus the functions and
  classes those names reach through module-level references, so the eval subcommands in one module stay apart;
- a package's `__init__` re-exports of its own submodules (`from .model import SEDD`) count only for the names a
  caller asks for (or private side-effect imports such as `_registrations`);
- `set_defaults(func=handler)` in a parser does not pull the handler in: each rule names its own handler;
- `pysedd._C` (the compiled kernels) counts as every file under csrc/ plus the built extension's bytes.

So a comment or docstring edit reruns nothing; an edit reruns exactly the rules whose code reaches it.
"""
from __future__ import annotations

import ast
import hashlib
from pathlib import Path

DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
EXTENSION = "pysedd._C"


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, *DEFS)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return tree


def _names_used(node: ast.AST) -> set[str]:
    """Names a statement references, except the `func=` handler of argparse's set_defaults."""
    skip = set()
    for call in ast.walk(node):
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "set_defaults":
            skip.update(id(kw.value) for kw in call.keywords if kw.arg == "func")
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and id(n) not in skip}


def _bound(stmt: ast.stmt) -> set[str]:
    return {(a.asname or a.name).split(".")[0] for a in getattr(stmt, "names", [])}


class CodeGraph:
    def __init__(self, repo: Path):
        self.repo = Path(repo)
        self._trees: dict[Path, ast.Module] = {}

    def path_of(self, module: str) -> Path | None:
        rel = Path(*module.split("."))
        for path in (self.repo / rel.with_suffix(".py"), self.repo / rel / "__init__.py"):
            if path.is_file():
                return path
        return None

    def is_module(self, module: str) -> bool:
        return module == EXTENSION or self.path_of(module) is not None

    def tree(self, path: Path) -> ast.Module:
        if path not in self._trees:
            self._trees[path] = _strip_docstrings(ast.parse(path.read_text(), str(path)))
        return self._trees[path]

    def _resolve(self, module: str, is_package: bool, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        parts = module.split(".") if is_package else module.split(".")[:-1]
        base = parts[: len(parts) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))

    @staticmethod
    def _attributes(tree: ast.Module, local: str) -> frozenset | None:
        """Attributes the module reads off a name bound to an imported module (`ops.reverse_step` -> reverse_step);
        None when the name is also used bare (passed around, so anything may be reached)."""
        attrs, parents = set(), {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[id(child)] = node
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Name) and node.id == local) or isinstance(node.ctx, ast.Store):
                continue
            parent = parents.get(id(node))
            if isinstance(parent, ast.Attribute):
                attrs.add(parent.attr)
            elif isinstance(parent, ast.Compare) and all(isinstance(op, (ast.Is, ast.IsNot)) for op in parent.ops):
                continue  # `ops is None`: an optional import
            elif (isinstance(parent, ast.Call) and isinstance(parent.func, ast.Name) and parent.func.id == "getattr"
                  and len(parent.args) > 1 and isinstance(parent.args[1], ast.Constant)):
                attrs.add(parent.args[1].value)
            else:
                return None
        return frozenset(attrs)

    def _imports(self, module: str, path: Path, stmts) -> list[tuple[str, frozenset | None]]:
        """(module, names or None for whole) of every pysedd import inside the statements, nested ones included."""
        found, tree, is_package = [], self.tree(path), path.name == "__init__.py"
        for stmt in stmts:
            for node in ast.walk(stmt):
                if isinstance(node, ast.Import):
                    for a in node.names:
                        if a.name.split(".")[0] == "pysedd":
                            found.append((a.name, self._attributes(tree, a.asname) if a.asname else None))
                elif isinstance(node, ast.ImportFrom):
                    target = self._resolve(module, is_package, node)
                    if target.split(".")[0] != "pysedd":
                        continue
                    names = set()
                    for alias in node.names:
                        if self.is_module(f"{target}.{alias.name}"):
                            found.append((f"{target}.{alias.name}",
                                          self._attributes(tree, alias.asname or alias.name)))
                        else:
                            names.add(alias.name)
                    found.append((target, frozenset(names)))
        return found

    def _select(self, module: str, path: Path, names: frozenset | None) -> set[int]:
        """Indices of the top-level statements a caller reaches when it asks the module for `names`."""
        body = self.tree(path).body
        if names is None:
            return set(range(len(body)))
        is_package = path.name == "__init__.py"
        defs = {stmt.name: i for i, stmt in enumerate(body) if isinstance(stmt, DEFS)}
        chosen = set()
        for i, stmt in enumerate(body):
            if isinstance(stmt, DEFS):
                continue
            if is_package and isinstance(stmt, ast.ImportFrom):
                own = self._resolve(module, True, stmt)
                wanted = _bound(stmt) & names or any(n.startswith("_") for n in _bound(stmt))
                if (own.startswith(module + ".") or (stmt.level == 1 and not stmt.module)) and not wanted:
                    continue  # a re-export nobody asked for
            chosen.add(i)
        todo = [n for n in names if n in defs] + [n for i in chosen for n in _names_used(body[i]) if n in defs]
        while todo:
            i = defs[todo.pop()]
            if i not in chosen:
                chosen.add(i)
                todo += [n for n in _names_used(body[i]) if n in defs]
        return chosen

    def reached(self, entries) -> dict[str, set[int] | None]:
        """{module: chosen statement indices} reached from entries [(module or script path, names or None)]."""
        chosen: dict[str, set[int]] = {}
        seen = set()
        queue = list(entries)
        while queue:
            module, names = queue.pop()
            if (module, names) in seen:
                continue
            seen.add((module, names))
            if module == EXTENSION:
                chosen.setdefault(module, set())
                continue
            path = self.repo / module if module.endswith(".py") else self.path_of(module)
            if path is None:
                continue
            parts = module.split(".")
            if not module.endswith(".py"):  # importing a.b.c runs the __init__ of a and a.b first
                queue += [(".".join(parts[:k]), frozenset()) for k in range(1, len(parts))]
            picked = self._select(module, path, names)
            chosen.setdefault(module, set()).update(picked)
            body = self.tree(path).body
            queue += self._imports(module, path, [body[i] for i in sorted(picked)])
        return chosen

    def fingerprint(self, entries) -> str:
        digest = hashlib.sha256()
        for module, picked in sorted(self.reached(entries).items()):
            digest.update(module.encode() + b"\0")
            if module == EXTENSION:
                files = sorted(p for p in (self.repo / "csrc").rglob("*") if p.is_file())
                files += sorted((self.repo / "pysedd").glob("_C*.so"))
                for f in files:
                    digest.update(str(f.relative_to(self.repo)).encode() + b"\0" + f.read_bytes() + b"\0")
                continue
            path = self.repo / module if module.endswith(".py") else self.path_of(module)
            body = self.tree(path).body
            for i in sorted(picked):
                digest.update(ast.dump(body[i]).encode() + b"\0")
        return digest.hexdigest()[:16]


def cli_entries(repo: Path, command: str, handler: str) -> list:
    """Entry points of `python -m pysedd <command> ...`: the CLI, every subcommand's parser, and the handler."""
    commands = sorted(p.stem for p in (Path(repo) / "pysedd" / "commands").glob("*.py") if p.stem != "__init__")
    return ([("pysedd.__main__", None)] + [(f"pysedd.commands.{c}", frozenset({"add_parser"})) for c in commands]
            + [(f"pysedd.commands.{command}", frozenset({handler}))])
