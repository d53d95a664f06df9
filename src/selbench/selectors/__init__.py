"""Selectors: each file registers its classes in SELECTORS on import."""
from ..plugins import load_entry_points as _load_entry_points
from . import (grads as _grads, gsnr as _gsnr, ifd as _ifd,  # noqa: F401  (registers); noqa: F401
               published as _published, random as _random, spice as _spice,
               spice_logdet as _spice_logdet)
from . import oracle as _oracle  # noqa: F401  (registers the corruption controls)
from . import (alpagasus as _alpagasus, dsir as _dsir, embed_target as _embed_target,  # noqa: F401
               kcenter as _kcenter, knn_density as _knn_density, length as _length,
               longest as _longest, perplexity as _perplexity)  # the cheap baselines (#19)
from .base import SELECTORS, Selection, SelectionContext, Selector, SelectorConfig, build_selector

_load_entry_points()  # selectors from other distributions (entry-point group selbench.selectors)

__all__ = ["SELECTORS", "Selection", "SelectionContext", "Selector", "SelectorConfig",
           "build_selector"]
