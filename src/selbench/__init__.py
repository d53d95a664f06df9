"""selbench: benchmark data selectors for LLM instruction tuning."""
__version__ = "0.1.0"
