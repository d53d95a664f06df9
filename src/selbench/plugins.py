"""Selectors from outside the package.

- Entry points: a distribution that declares, in its pyproject.toml,
  ``[project.entry-points."selbench.selectors"] mine = "my_pkg.my_selector"`` has that
  module imported when selbench's selectors load; the module registers its classes with
  ``@SELECTORS.register("mine")`` like a built-in selector.
- A file: ``bench --plugin path/to/my_selector.py run --selector mine`` (repeatable) or
  :func:`load_plugin` imports the file the same way.

The contract test (tests/test_selector_contract.py) runs over everything registered, so a
plugin is tested the moment it is loaded.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path

GROUP = "selbench.selectors"
_loaded: set[str] = set()


def load_entry_points() -> list[str]:
    """Import every module registered under the ``selbench.selectors`` entry-point group."""
    names = []
    for ep in entry_points(group=GROUP):
        if ep.value in _loaded:
            continue
        try:
            ep.load()
        except Exception as e:  # noqa: BLE001 - a broken plugin must not break selbench
            print(f"[plugin] could not load selector plugin '{ep.name}' ({ep.value}): "
                  f"{type(e).__name__}: {e}", file=sys.stderr)
            continue
        _loaded.add(ep.value)
        names.append(ep.name)
    return names


def load_plugin(path: str) -> str:
    """Import a selector plugin file (it registers its selectors on import)."""
    p = Path(path).expanduser().resolve()
    if not p.is_file() or p.suffix != ".py":
        raise FileNotFoundError(f"--plugin {path}: not a .py file")
    if str(p) in _loaded:
        return str(p)
    name = f"selbench_plugin_{p.stem}_{abs(hash(str(p))) % 10**8}"
    spec = importlib.util.spec_from_file_location(name, p)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    _loaded.add(str(p))
    return str(p)
