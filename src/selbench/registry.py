"""One small typed registry, used for selectors, judges, eval sets and models.

    SELECTORS = Registry("selector")

    @SELECTORS.register("gsnr", "g-snr")
    class GSNR(Selector): ...

    SELECTORS.get("gsrn")  ->  KeyError: unknown selector 'gsrn'; did you mean 'gsnr'?
"""
from __future__ import annotations

import difflib
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


def suggest(name: str, known, n: int = 1, cutoff: float = 0.6) -> str:
    """The one "did you mean" of selbench: ``"; did you mean 'x'?"`` (or ``'x' or 'y'``)
    for the closest of ``known`` to ``name``, or "" when nothing is close."""
    close = difflib.get_close_matches(str(name), sorted(str(k) for k in known), n=n, cutoff=cutoff)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


class RegistryError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj, *aliases)
            return obj

        return deco

    def add(self, name: str, obj: T, *aliases: str) -> None:
        for key in (name, *aliases):
            if key in self._items or key in self._aliases:
                raise RegistryError(f"{self.kind} '{key}' is already registered")
        self._items[name] = obj
        for a in aliases:
            self._aliases[a] = name
        try:
            setattr(obj, "registry_name", name)
        except (AttributeError, TypeError):
            pass

    def canonical(self, name: str) -> str:
        if name in self._items:
            return name
        if name in self._aliases:
            return self._aliases[name]
        hint = suggest(name, [*self._items, *self._aliases], n=3, cutoff=0.5)
        raise RegistryError(
            f"unknown {self.kind} '{name}'{hint} (registered: {', '.join(sorted(self._items))})"
        )

    def get(self, name: str) -> T:
        return self._items[self.canonical(name)]

    def names(self) -> list[str]:
        return sorted(self._items)

    def aliases_of(self, name: str) -> list[str]:
        return sorted(a for a, n in self._aliases.items() if n == name)

    def __contains__(self, name: str) -> bool:
        return name in self._items or name in self._aliases

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
