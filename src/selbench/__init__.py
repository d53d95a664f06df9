"""selbench: benchmark data selectors for LLM instruction tuning.

Python API: :func:`run`, :func:`select`, :func:`plan` (see :mod:`selbench.api`)."""
__version__ = "0.1.0"

from .api import plan, run, select  # noqa: E402

__all__ = ["plan", "run", "select", "__version__"]
