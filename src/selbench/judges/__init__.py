"""Judges: pairwise LLM (and offline) judging with cached raw completions."""
from .base import JUDGE_TYPES, Judge, JudgeItem, load_judge, judge_paths
from .pairwise import pairwise_outcome, pws, summarize
from .parse import parse_scores
from . import offline as _offline  # noqa: F401  (registers backends)
from . import openai_api as _openai_api  # noqa: F401
from . import hf_local as _hf_local  # noqa: F401

__all__ = ["JUDGE_TYPES", "Judge", "JudgeItem", "load_judge", "judge_paths",
           "pairwise_outcome", "pws", "summarize", "parse_scores"]
