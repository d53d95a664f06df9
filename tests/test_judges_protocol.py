import ast
import json

import pytest

from selbench.judges import pairwise_outcome, parse_scores, pws, summarize
from selbench.judges.pairwise import bootstrap_pws, position_consistency


@pytest.mark.parametrize("text,expected", [
    ("8 7\nBecause...", (8.0, 7.0)),
    ("9 8.5", (9.0, 8.5)),
    ("8, 7", (8.0, 7.0)),
    ("8/10 7/10\nexplanation", (8.0, 7.0)),
    ("\n\n  10 1\n", (10.0, 1.0)),
    ("**8 7**\nexplanation", (8.0, 7.0)),
    ("## 6 9", (6.0, 9.0)),
    ("Assistant 1: 8\nAssistant 2: 7\nwhy", (8.0, 7.0)),
    ("Assistant 1: 8/10, Assistant 2: 6/10", (8.0, 6.0)),
    ("Scores: 7 7", (7.0, 7.0)),
])
def test_parse_variants(text, expected):
    assert parse_scores(text) == expected


@pytest.mark.parametrize("text", [
    None, "", "   \n", "Assistant 1 is better.", "8", "8 7 6", "I'd give 8 and 7", "11 3",
    "The first answer deserves 8, the second 7", "[[A]]",
])
def test_unparseable_is_none_never_a_guess(text):
    assert parse_scores(text) is None


@pytest.mark.parametrize("ab,ba,expected", [
    ((8, 7), (7, 8), "win"),   # A higher in both orders
    ((8, 7), (7, 7), "win"),   # higher in one, equal in the other
    ((7, 7), (6, 8), "win"),
    ((7, 8), (8, 7), "lose"),
    ((7, 7), (8, 7), "lose"),
    ((8, 7), (8, 7), "tie"),   # A wins when first, loses when second: position bias -> tie
    ((7, 7), (7, 7), "tie"),
    (None, (7, 8), "unparsed"),
    ((8, 7), None, "unparsed"),
])
def test_pairwise_outcome_hand_cases(ab, ba, expected):
    assert pairwise_outcome(ab, ba) == expected


def test_pws_and_summary_hand_computed():
    assert pws(3, 1, 1) == pytest.approx(1 + 2 / 5)
    assert pws(0, 0, 4) == 0.0 and pws(2, 0, 0) == 2.0
    s = summarize(["win", "win", "tie", "lose", "unparsed"])
    assert (s["win"], s["tie"], s["lose"], s["unparsed"], s["n"]) == (2, 1, 1, 1, 5)
    assert s["pws"] == pytest.approx(1.25)  # unparsed excluded from the denominator


def test_position_consistency_and_bootstrap():
    pairs = [((8, 7), (7, 8)), ((8, 7), (8, 7)), ((7, 7), (7, 7)), (None, (1, 2))]
    # agree: first (A, A), third (tie, tie); disagree: second -> 2/3
    assert position_consistency(pairs) == pytest.approx(2 / 3)
    lo, hi = bootstrap_pws(["win"] * 6 + ["lose"] * 4, seed=1)
    assert lo <= 1.2 <= hi and 0 <= lo and hi <= 2
    assert bootstrap_pws(["win"] * 5, seed=0) == (2.0, 2.0)


SETS = ["vicuna", "wizardlm", "koala", "lima", "sinstruct"]


def _transcripts(data_dir, name):
    p = data_dir / "judge_transcripts" / "cherry_alpaca5pct_vs_alpaca" / f"{name}_wrap_reviews_gpt4.json"
    return json.loads(p.read_text())["data"]


@pytest.mark.parametrize("name", SETS)
def test_real_gpt4_transcripts_reparse_to_stored_scores(data_dir, name):
    recs = _transcripts(data_dir, name)
    checked = 0
    for r in recs:
        for text_key, score_key in (("review", "scores"), ("review_reverse", "scores_reverse")):
            stored = ast.literal_eval(r[score_key])
            if len(stored) != 2 or -1 in stored:
                continue  # the stored value itself is invalid: nothing to match
            assert parse_scores(r[text_key]) == tuple(map(float, stored)), r[text_key][:80]
            checked += 1
    assert checked >= 2 * len(recs) - 2


def test_real_transcripts_wtl_from_raw_equals_wtl_from_stored(data_dir):
    """Answer1 = Cherry 5% model (A). 'review' shows A first; 'review_reverse' shows B first."""
    pooled_raw, pooled_stored = [], []
    for name in SETS:
        raw, stored = [], []
        for r in _transcripts(data_dir, name):
            raw.append(pairwise_outcome(parse_scores(r["review"]), parse_scores(r["review_reverse"])))
            stored.append(pairwise_outcome(tuple(ast.literal_eval(r["scores"])),
                                           tuple(ast.literal_eval(r["scores_reverse"]))))
        assert summarize(raw) == summarize(stored)
        assert summarize(raw)["unparsed"] == 0
        pooled_raw += raw
        pooled_stored += stored
    s = summarize(pooled_raw)
    assert s == summarize(pooled_stored) and s["n"] == 80 + 218 + 180 + 300 + 252


def test_compat_pws_counts_an_unparsed_order_as_a_tie():
    from selbench.judges.pairwise import pairwise_outcome_compat, summarize_rows

    assert pairwise_outcome_compat((8, 6), None) == "win"  # win + tie
    assert pairwise_outcome_compat(None, (8, 6)) == "lose"  # A second, B scored higher
    assert pairwise_outcome_compat(None, None) == "tie"
    assert pairwise_outcome_compat((8, 6), (8, 6)) == "tie"  # position bias
    rows = [{"eval_set": "v", "outcome": pairwise_outcome(ab, ba), "scores_ab": ab, "scores_ba": ba}
            for ab, ba in [((8, 6), (6, 8)), ((8, 6), None), ((5, 7), (7, 5)), (None, None)]]
    s = summarize_rows(rows)["pooled"]
    assert (s["win"], s["tie"], s["lose"], s["unparsed"]) == (1, 0, 1, 2)
    assert s["pws"] == pytest.approx(1.0)
    assert s["compat"] == {"win": 2, "tie": 1, "lose": 1, "pws": pytest.approx(1.25)}
    assert s["pws_compat"] == pytest.approx(1.25)
