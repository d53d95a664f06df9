"""Judge prompts. PROMPT_VERSION is part of every judge-cache key."""
from __future__ import annotations

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


def render(question: str, answer_1: str, answer_2: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": TEMPLATE.format(question=question, answer_1=answer_1,
                                                        answer_2=answer_2)}]
