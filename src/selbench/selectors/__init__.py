"""Selectors: each file registers its classes in SELECTORS on import."""
from .base import SELECTORS, Selection, SelectionContext, Selector, SelectorConfig, build_selector
from . import random as _random  # noqa: F401  (registers)
from . import gsnr as _gsnr  # noqa: F401
from . import ifd as _ifd  # noqa: F401
from . import grads as _grads  # noqa: F401
from . import spice as _spice  # noqa: F401
from . import spice_logdet as _spice_logdet  # noqa: F401
from . import published as _published  # noqa: F401

from ..plugins import load_entry_points as _load_entry_points

_load_entry_points()  # selectors from other distributions (entry-point group selbench.selectors)

__all__ = ["SELECTORS", "Selection", "SelectionContext", "Selector", "SelectorConfig",
           "build_selector"]
