"""Judges: pairwise LLM (and offline) judging with cached raw completions."""
from . import (hf_local as _hf_local,  # noqa: F401  (registers backends); noqa: F401
               offline as _offline, openai_api as _openai_api)
from .base import JUDGE_TYPES, Judge, JudgeItem, judge_paths, load_judge
from .pairwise import pairwise_outcome, pws, summarize
from .parse import parse_scores

__all__ = ["JUDGE_TYPES", "Judge", "JudgeItem", "load_judge", "judge_paths",
           "pairwise_outcome", "pws", "summarize", "parse_scores"]
