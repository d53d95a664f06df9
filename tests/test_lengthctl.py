"""Length- and style-controlled PWS (issue #20): a planted length (or style) preference is
removed, no preference leaves PWS unchanged, the fit is the same as alpaca_eval's own GLM
where both apply, and the Newton fit equals an independent scikit-learn fit."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from selbench.leaderboard.lengthctl import (answer_features, comparison_rows, controlled_pws,
                                            design, fit_glm)

NONE = {"header_a": 0, "header_b": 0, "list_a": 0, "list_b": 0, "bold_a": 0, "bold_b": 0}


def _simulate(truth: dict, shift: dict, beta: float, n_per_set=(400, 300), tie=0.2, seed=0,
              bold_beta: float = 0.0):
    """Rows of one judge: comparison c has true logit truth[c] (LC-PWS = 2 sigmoid), answer A
    is shift[c] words longer than B on average, the judge adds beta * tanh(D / sd(D)) (and
    bold_beta x the standardized bold-density difference) to the logit. Outcomes: tie with
    probability `tie`, else win/lose so that E[y] = sigmoid(logit)."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in truth:
        for s, n in zip(("s1", "s2"), n_per_set):
            for i in range(n):
                lb = int(rng.integers(20, 300))
                la = max(1, int(lb + shift[c] + rng.normal(0, 60)))
                ba, bb = int(rng.integers(0, 4)), int(rng.integers(0, 4))
                rows.append(dict(judge="j", comparison=c, eval_set=s, id=str(i), len_a=la, len_b=lb,
                                 **{**NONE, "bold_a": ba, "bold_b": bb}))
    df = pd.DataFrame(rows)
    d = (df.len_a - df.len_b).to_numpy(float)
    eta = df.comparison.map(truth).to_numpy(float) + beta * np.tanh(d / np.std(d, ddof=1))
    if bold_beta:
        da, db = df.bold_a / df.len_a, df.bold_b / df.len_b
        x = ((da - db) / (da + db + 1)).to_numpy(float)
        eta = eta + bold_beta * x / np.std(x, ddof=1)
    p = 1 / (1 + np.exp(-eta))
    u = rng.random(len(df))
    df["outcome"] = np.where(u < tie, "tie", np.where(u < tie + (p - tie / 2), "win", "lose"))
    return df


def _pooled(tab):
    return tab[tab.eval_set == "pooled"].set_index("comparison")


def test_answer_features_count_markdown_like_arena_hard_auto():
    text = ("# Title\n## Part\nSome **bold** and __also bold__ words.\n"
            "1. one\n2. two\n- dash\n  * nested star\n+ plus\n"
            "```\n# not a header\n- not a list item\n**not bold**\n```\n"
            "#nospace is no header\n")
    f = answer_features(text)
    assert f["header"] == 2  # '# Title', '## Part' (code block and '#nospace' excluded)
    assert f["list"] == 5  # 1. 2. - * +
    assert f["bold"] == 2
    assert f["len"] == len(text.split())
    assert answer_features(text, "chars")["len"] == len(text)
    assert answer_features(None) == {"len": 0, "header": 0, "list": 0, "bold": 0}


def test_planted_length_preference_is_removed():
    truth = {"long": 0.4, "short": -0.2, "even": 0.0}
    df = _simulate(truth, {"long": 80, "short": -60, "even": 0}, beta=1.2, seed=1)
    tab, judges = controlled_pws(df, models=("lc",), n_boot=200)
    pooled = _pooled(tab)
    for c, t in truth.items():
        true_pws = 2 / (1 + np.exp(-t))
        lc, lo, hi = pooled.loc[c, ["lc_pws", "lc_lo", "lc_hi"]]
        assert abs(lc - true_pws) < 0.06, (c, lc, true_pws)
        assert lo <= true_pws <= hi
    # the raw PWS carries the length gap; LC-PWS does not
    assert pooled.loc["long", "pws"] - 2 / (1 + np.exp(-0.4)) > 0.15
    assert 2 / (1 + np.exp(0.2)) - pooled.loc["short", "pws"] > 0.15
    j = judges.iloc[0]
    assert j.lc_length_lo <= 1.2 <= j.lc_length_hi and j.lc_length_coef > 0.8


def test_no_length_preference_leaves_pws_unchanged():
    """Tolerance: |LC-PWS - PWS| < 0.03 in every cell (a tenth of a 95% CI width here), and
    the fitted length slope's CI contains 0."""
    df = _simulate({"a": 0.3, "b": -0.1}, {"a": 60, "b": -40}, beta=0.0, seed=2)
    tab, judges = controlled_pws(df, models=("lc", "style"), n_boot=200)
    assert (tab.lc_pws - tab.pws).abs().max() < 0.03
    assert (tab.sc_pws - tab.pws).abs().max() < 0.03
    j = judges.iloc[0]
    assert j.lc_length_lo <= 0 <= j.lc_length_hi
    # equal lengths and styles: no covariate at all, and the controlled score is PWS itself
    same = df.assign(len_a=df.len_b, bold_a=df.bold_b)
    t2, j2 = controlled_pws(same, n_boot=0)
    assert np.allclose(t2.lc_pws, t2.pws, atol=2e-4) and np.allclose(t2.sc_pws, t2.pws, atol=2e-4)
    assert np.isnan(j2.iloc[0].lc_length_coef)


def test_style_control_removes_a_planted_bold_preference_that_length_control_keeps():
    df = _simulate({"a": 0.0}, {"a": 0}, beta=0.0, seed=3, bold_beta=0.0)
    df.loc[df.comparison == "a", "bold_a"] += 3  # model A bolds much more
    rng = np.random.default_rng(4)
    da, db = df.bold_a / df.len_a, df.bold_b / df.len_b
    x = ((da - db) / (da + db + 1)).to_numpy(float)
    p = 1 / (1 + np.exp(-2.0 * x / np.std(x, ddof=1)))  # true quality 0: PWS 1
    u = rng.random(len(df))
    df["outcome"] = np.where(u < 0.2, "tie", np.where(u < 0.2 + (p - 0.1), "win", "lose"))
    tab, judges = controlled_pws(df, n_boot=200)
    pooled = _pooled(tab).loc["a"]
    assert pooled.pws > 1.15  # the bold-loving judge inflates PWS
    assert abs(pooled.lc_pws - pooled.pws) < 0.05  # length is not what it likes
    assert abs(pooled.sc_pws - 1.0) < 0.1 and pooled.sc_lo <= 1.0 <= pooled.sc_hi
    assert judges.iloc[0].sc_bold_coef > 0.5


def test_pooled_is_the_prompt_weighted_mean_of_the_eval_sets():
    df = _simulate({"a": 0.5}, {"a": 50}, beta=0.8, seed=5, n_per_set=(300, 100))
    tab, _ = controlled_pws(df, models=("lc",), n_boot=0)
    sets = tab[tab.eval_set != "pooled"]
    pooled = tab[tab.eval_set == "pooled"].iloc[0]
    assert pooled.lc_pws == pytest.approx((sets.lc_pws * sets.n).sum() / sets.n.sum())
    assert pooled.pws == pytest.approx(1 + (pooled.win - pooled.lose) / pooled.n)


def test_newton_fit_equals_an_independent_sklearn_fit():
    """The same penalized soft-label likelihood fitted by scikit-learn: one-hot cells plus the
    covariate, each row twice (label 1 weighted y, label 0 weighted 1 - y), C = 1 / ridge."""
    from sklearn.linear_model import LogisticRegression

    df = _simulate({"a": 0.4, "b": -0.3}, {"a": 70, "b": -30}, beta=1.0, seed=6)
    cells, uniq = pd.factorize(df.comparison + "/" + df.eval_set)
    X, _, _ = design(df, "lc")
    y = df.outcome.map({"win": 1.0, "tie": 0.5, "lose": 0.0}).to_numpy()
    a, b = fit_glm(cells, X, y, len(uniq), ridge=0.01)
    Z = np.column_stack([np.eye(len(uniq))[cells], X])
    ZZ = np.vstack([Z, Z])
    lab = np.r_[np.ones(len(y)), np.zeros(len(y))]
    w = np.r_[y, 1 - y]
    keep = w > 0
    sk = LogisticRegression(C=100.0, fit_intercept=False, tol=1e-12, max_iter=10000)
    sk.fit(ZZ[keep], lab[keep], sample_weight=w[keep])
    assert np.allclose(np.r_[a, b], sk.coef_[0], atol=1e-4)


def test_comparison_rows_read_judgments_and_answers():
    judgments = [{"eval_set": "vicuna", "id": "1", "scores_ab": [8, 6], "scores_ba": [6, 8],
                  "outcome": "win"},
                 {"eval_set": "vicuna", "id": "2", "scores_ab": None, "scores_ba": [5, 5],
                  "outcome": "unparsed"}]
    a = {"vicuna": {"1": "## Head\n- one two three", "2": "x"}}
    b = {"vicuna": {"1": "short", "2": "y"}}
    rows = comparison_rows("j", "c", judgments, a, b)
    assert rows[0]["len_a"] == 6 and rows[0]["header_a"] == 1 and rows[0]["list_a"] == 1
    assert rows[0]["len_b"] == 1 and rows[1]["outcome"] == "unparsed"
    tab, _ = controlled_pws(rows, n_boot=0)
    assert tab.n.tolist() == [1, 1]  # the unparsed prompt is left out, as in PWS


# --------------------------------------------------------------------------- alpaca_eval
def _alpaca_eval_lc(ann: pd.DataFrame, tmp_path, n_splits: int | None = None) -> tuple[float, float]:
    """alpaca_eval's own length_controlled_minimal GLM on ``ann``: (LC win rate in [0, 1],
    its tanh(std_delta_len) coefficient). Its featurization downloads ``df_gamed.csv`` from
    the hub only for the instruction difficulty, which the minimal formula does not use:
    the download is replaced by a local file of zeros (a network stand-in, nothing else)."""
    glm = pytest.importorskip("alpaca_eval.metrics.glm_winrate")
    gamed = tmp_path / "df_gamed.csv"
    pd.DataFrame({"model": "x", "index": np.arange(len(ann)),
                  "instruction_difficulty": 0.0}).to_csv(gamed, index=False)
    info = dict(glm.GLM_INFO["length_controlled_minimal"])
    if n_splits is not None:
        info["kwargs"] = {"n_splits": n_splits}
    orig = glm.hf_hub_download
    glm.hf_hub_download = lambda **kw: str(gamed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = glm.get_length_controlled_winrate(ann.copy(), glm_name="length_controlled_minimal",
                                                  save_weights_dir=tmp_path / "w", glm_info=info,
                                                  is_warn_extreme_changes=False)
    finally:
        glm.hf_hub_download = orig
    w = pd.read_csv(tmp_path / "w" / "length_controlled_minimal" / "baseline_full.csv", index_col=0)
    return m["length_controlled_winrate"] / 100, float(w["np.tanh(std_delta_len)"].iloc[-1])


def _annotations(df: pd.DataFrame) -> pd.DataFrame:
    """selbench rows as alpaca_eval annotations: output_1 = baseline (B), output_2 = model (A);
    preference 2 = A preferred, 1 = B, 1.5 = draw."""
    return pd.DataFrame({"instruction": df.id, "output_1": df.answer_b, "output_2": df.answer_a,
                         "preference": df.outcome.map({"win": 2.0, "tie": 1.5, "lose": 1.0}).to_numpy(),
                         "index": np.arange(len(df)), "generator_1": "full",
                         "generator_2": "subset", "annotator": "judge"})


def _cherry_rows(data_dir) -> pd.DataFrame:
    from selbench.judges.pairwise import pairwise_outcome

    rows = []
    folder = data_dir / "judge_transcripts" / "cherry_alpaca5pct_vs_alpaca"
    for f in sorted(folder.glob("*_wrap_reviews_gpt4.json")):
        for i, r in enumerate(json.loads(f.read_text())["data"]):
            ab, ba = json.loads(r["scores"]), json.loads(r["scores_reverse"])
            rows.append({"judge": "gpt-4", "comparison": "cherry5%-vs-alpaca",
                         "eval_set": f.name.split("_")[0], "id": str(i),
                         "answer_a": r["Answer1"], "answer_b": r["Answer2"],
                         "outcome": pairwise_outcome(ab if min(ab) >= 0 else None,
                                                     ba if min(ba) >= 0 else None)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n_splits", [None, 0])
def test_agrees_with_alpaca_eval_on_the_cherry_gpt4_transcripts(data_dir, tmp_path, n_splits):
    """One judge, one comparison, one intercept, character lengths: selbench's LC model is
    then alpaca_eval's length_controlled_minimal GLM. Agreement within 0.002 PWS (0.1 win-rate
    points) and 0.01 in the slope (whose sign alpaca_eval flips: baseline - model)."""
    df = _cherry_rows(data_dir)
    assert len(df) == 1030
    tab, judges = controlled_pws(df, models=("lc",), by_eval_set=False, length_unit="chars", n_boot=0)
    lc_ae, coef_ae = _alpaca_eval_lc(_annotations(df), tmp_path, n_splits)
    row = tab.iloc[0]
    assert row.eval_set == "pooled" and row.n == 1030
    assert row.lc_pws == pytest.approx(2 * lc_ae, abs=0.002)
    assert judges.iloc[0].lc_length_coef == pytest.approx(-coef_ae, abs=0.01)
    assert abs(row.lc_pws - row.pws) > 0.02  # GPT-4's length taste moves this comparison


def test_agrees_with_alpaca_eval_on_a_planted_length_preference(tmp_path):
    rng = np.random.default_rng(7)
    n = 600
    lb = rng.integers(100, 1500, n)
    la = np.maximum(1, lb + 300 + rng.normal(0, 400, n)).astype(int)
    df = pd.DataFrame({"judge": "j", "comparison": "c", "eval_set": "s", "id": [str(i) for i in range(n)],
                       "answer_a": ["a" * k for k in la], "answer_b": ["b" * k for k in lb]})
    d = la - lb
    p = 1 / (1 + np.exp(-(0.2 + 1.5 * np.tanh(d / np.std(d, ddof=1)))))
    u = rng.random(n)
    df["outcome"] = np.where(u < 0.1, "tie", np.where(u < 0.1 + (p - 0.05), "win", "lose"))
    tab, judges = controlled_pws(df, models=("lc",), by_eval_set=False, length_unit="chars", n_boot=0)
    lc_ae, coef_ae = _alpaca_eval_lc(_annotations(df), tmp_path, 0)
    assert tab.iloc[0].lc_pws == pytest.approx(2 * lc_ae, abs=0.002)
    assert judges.iloc[0].lc_length_coef == pytest.approx(-coef_ae, abs=0.01)
