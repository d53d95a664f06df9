"""Selectors: each file registers its classes in SELECTORS on import."""
from .base import SELECTORS, Selection, SelectionContext, Selector, SelectorConfig, build_selector
from . import random as _random  # noqa: F401  (registers)
from . import gsnr as _gsnr  # noqa: F401
from . import ifd as _ifd  # noqa: F401
from . import grads as _grads  # noqa: F401
from . import spice as _spice  # noqa: F401

__all__ = ["SELECTORS", "Selection", "SelectionContext", "Selector", "SelectorConfig",
           "build_selector"]
