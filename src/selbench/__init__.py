"""selbench: benchmark data selectors for LLM instruction tuning.

Python API: :func:`run`, :func:`select`, :func:`plan_text` (see :mod:`selbench.api`)."""
__version__ = "0.1.0"

from .api import plan_text, run, select  # noqa: E402  (not `plan`: that is the module)

__all__ = ["plan_text", "run", "select", "__version__"]
