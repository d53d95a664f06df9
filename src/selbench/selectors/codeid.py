"""The code identity of a selector: a hash of the source of every module that defines it.

A selection depends on the selector's code as much as on its config, so the select stage
key includes this hash: editing a plugin file, or a built-in selector's module, or a module
of the proxy layer it imports, recomputes its selections instead of reusing a stale one.
The modules are the module of each class in the selector's MRO (a plugin's own file
included) and, transitively, every ``selbench.selectors`` module those import."""
from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import sys
from pathlib import Path

PACKAGE = "selbench.selectors"


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str | None:
    if node.level == 0:
        return node.module
    base = module.split(".")
    if not is_pkg:
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join(base + ([node.module] if node.module else []))


def _imported_selector_modules(name: str, path: Path) -> set[str]:
    """selbench.selectors modules that the module at ``path`` imports (by name)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return set()
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            tgt = _resolve(name, is_pkg, node)
            if not tgt or not tgt.startswith(PACKAGE):
                continue
            for a in node.names:
                sub = f"{tgt}.{a.name}"
                out.add(sub if sub in sys.modules else tgt)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith(PACKAGE))
    return out


def _source_file(module: str) -> Path | None:
    mod = sys.modules.get(module)
    f = getattr(mod, "__file__", None)
    return Path(f) if f else None


@functools.lru_cache(maxsize=None)
def _module_hashes(seeds: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    seen: dict[str, str] = {}
    todo = list(seeds)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        path = _source_file(m)
        if path is None or not path.is_file():
            seen[m] = "?"
            continue
        seen[m] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        todo.extend(_imported_selector_modules(m, path) - set(seen))
    return tuple(sorted(seen.items()))


def code_identity(cls: type) -> str:
    """16 hex characters over the sources of the modules that define ``cls``."""
    seeds = tuple(sorted({k.__module__ for k in inspect.getmro(cls)
                          if k.__module__ not in ("builtins", "abc")}))
    blob = repr(_module_hashes(seeds)).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def modules_identity(*modules: str) -> str:
    """The same hash over named modules (and what of selbench.selectors they import)."""
    return hashlib.sha256(repr(_module_hashes(tuple(sorted(modules)))).encode()).hexdigest()[:16]
