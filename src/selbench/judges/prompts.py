"""Judge prompts. PROMPT_VERSION is part of every judge-cache key."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError, read_yaml

PROMPT_VERSION = "vicuna-pairwise-v1"

# The Vicuna/FastChat pairwise reviewer prompt used in the GradFiltering appendix: the judge
# writes the two 1-10 scores on its first line, then its explanation.
SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."

TEMPLATE = (
    "[Question]\n{question}\n\n"
    "[The Start of Assistant 1's Answer]\n{answer_1}\n\n[The End of Assistant 1's Answer]\n\n"
    "[The Start of Assistant 2's Answer]\n{answer_2}\n\n[The End of Assistant 2's Answer]\n\n"
    "[System]\n"
    "We would like to request your feedback on the performance of two AI assistants in "
    "response to the user question displayed above.\n"
    "Please rate the helpfulness, relevance, accuracy, level of details of their responses. "
    "Each assistant receives an overall score on a scale of 1 to 10, where a higher score "
    "indicates better overall performance.\n"
    "Please first output a single line containing only two values indicating the scores for "
    "Assistant 1 and 2, respectively. The two scores are separated by a space. In the "
    "subsequent line, please provide a comprehensive explanation of your evaluation, avoiding "
    "any potential bias and ensuring that the order in which the responses were presented "
    "does not affect your judgment.\n\n"
)


@dataclass(frozen=True)
class JudgePrompt:
    system: str
    template: str
    version: str  # part of the judge cache key


DEFAULT = JudgePrompt(SYSTEM, TEMPLATE, PROMPT_VERSION)
FIELDS = ("{question}", "{answer_1}", "{answer_2}")


def load_prompt(path: str | None, relative_to: str | None = None) -> JudgePrompt:
    """The built-in Vicuna prompt (None), or a judge YAML's own ``prompt_file``: a YAML with
    ``template`` (containing {question}, {answer_1}, {answer_2}; it must still ask for the two
    scores on the first line, which is what the parser reads), optional ``system`` and
    ``version``. The version in the cache key is ``<version>-<sha256 of the content>``, so
    editing the file re-judges and nothing else does."""
    if not path:
        return DEFAULT

    p = Path(path).expanduser()
    if not p.is_absolute() and relative_to and not p.exists():
        p = Path(relative_to).parent / p
    if not p.is_file():
        raise ConfigError(f"prompt_file {path!r} not found (relative to {relative_to or 'the current folder'})")
    data = read_yaml(p, "judge prompt") or {}  # bounded: an alias bomb is refused
    if not isinstance(data, dict) or not isinstance(data.get("template"), str):
        raise ConfigError(f"{p}: expected a mapping with a 'template' string")
    missing = [f for f in FIELDS if f not in data["template"]]
    if missing:
        raise ConfigError(f"{p}: template lacks {', '.join(missing)}")
    system = data.get("system", SYSTEM)
    digest = hashlib.sha256(json.dumps([system, data["template"]]).encode()).hexdigest()[:8]
    return JudgePrompt(system, data["template"], f"{data.get('version', p.stem)}-{digest}")


def render(question: str, answer_1: str, answer_2: str, prompt: JudgePrompt = DEFAULT) -> list[dict]:
    user = (prompt.template.replace("{question}", question).replace("{answer_1}", answer_1)
            .replace("{answer_2}", answer_2))
    msgs = [{"role": "system", "content": prompt.system}] if prompt.system else []
    return msgs + [{"role": "user", "content": user}]
