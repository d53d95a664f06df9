"""Study figures, each a PNG plus the CSV behind it, written to a ``figures/`` folder
(never into the stage cache). They read only the study CSV (``study.collect_study``) and
finished stage files (``loss.csv``, ``subset.json``, ``scores.npy``); nothing is re-run.
The pool rows (for lengths and published subsets) are read from the data, located by the
run's manifest and checked against the pool fingerprint of the results.

- ``fig3_loss_<regime>``: training loss vs step of each selector at one ratio and of the
  full-data model (the paper's Figure 3), one panel per seed-0 model.
- ``pws_vs_ratio``: PWS vs ratio per selector with 95% CI bars, the 100% point = 1.
- ``cost_vs_pws``: selection wall time vs PWS (the cost/quality frontier).
- ``overlap_jaccard``: Jaccard overlap of the selected subsets of every selector and seed
  at one ratio, plus published Alpaca subsets intersected with the pool.
- ``score_dist``: each selector's score distribution over the pool;
  ``selected_lengths``: response length of the selected examples vs the pool.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import load_pool, resolve_data_dir
from ..selectors.published import ALPACA_FILE, ENTRIES, INDEX_FILE, published_ids
from .render import judge_groups
from .stats import seed_summary, words
from .study import train_key_of

DEFAULT_PUBLISHED = ["cherry-ifd-5pct", "alpagasus-claude-t45", "long-is-more-1k-longest",
                     "dq-k5-5k", "superfiltering-fork-10pct"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "font.size": 9, "axes.titlesize": 10,
                         "axes.grid": True, "grid.alpha": 0.3})
    return plt


def _save(fig, out: Path, name: str, data: pd.DataFrame) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    data.to_csv(out / f"{name}.csv", index=False)
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out / f"{name}.png"


def _label(sel: str, seed=None) -> str:
    return sel if seed is None else f"{sel} (seed {seed})"


def _pick_ratio(p: pd.DataFrame, ratio: float | None) -> float:
    if ratio is not None:
        return ratio
    counts = p.groupby("ratio").selector.nunique()
    return float(counts.idxmax())


# --------------------------------------------------------------------------- Figure 3
def fig_loss(df: pd.DataFrame, runs_dir: Path, out: Path, ratio: float | None = None) -> list[Path]:
    p = df[df.eval_set == "pooled"].drop_duplicates(subset=["experiment", "model_a"])
    if p.empty:
        return []
    ratio = _pick_ratio(p, ratio)
    paths = []
    for regime, g in p.groupby("regime"):
        rows = []
        g = g[g.ratio == ratio]
        models = [(_label(r.selector, r.seed), r.experiment, train_key_of(r.model_a)) for r in g.itertuples()]
        if len(g):
            r0 = g.iloc[0]
            models.append(("full data (100%)", r0.experiment, train_key_of(r0.model_b)))
        for label, exp, tkey in models:
            f = runs_dir / exp / "train" / tkey / "loss.csv"
            if not f.exists():
                continue
            d = pd.read_csv(f)
            for s, l in zip(d["step"], d["loss"]):
                rows.append({"model": label, "regime": regime, "ratio": ratio, "step": s, "loss": l})
        data = pd.DataFrame(rows)
        if data.empty:
            continue
        plt = _plt()
        fig, ax = plt.subplots(figsize=(8.4, 4.0))
        for label, d in data.groupby("model", sort=False):
            style = dict(color="black", lw=2) if label.startswith("full") else dict(marker="o", ms=3)
            ax.plot(d.step, d.loss, label=label, **style)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss (mean token cross-entropy)")
        ax.set_title(f"Training loss, {regime}, subsets at {ratio:.0%} vs full data")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # off the curves
        paths.append(_save(fig, out, f"fig3_loss_{regime}", data))
    return paths


# --------------------------------------------------------------------------- PWS vs ratio
def _cell_points(g: pd.DataFrame) -> pd.DataFrame:
    per_seed = g.groupby(["selector", "regime", "ratio", "setting_fp", "seed"], dropna=False).agg(
        pws=("pws", "mean"), lo=("ci95_lo", "mean"), hi=("ci95_hi", "mean"),
        sel_s=("selection_seconds", "mean"), proxy_flops=("proxy_flops", "first")).reset_index()
    rows = []
    for k, c in per_seed.groupby(["selector", "regime", "ratio", "setting_fp"], dropna=False):
        ss = seed_summary(list(c.pws), (c.lo.iloc[0], c.hi.iloc[0]))
        rows.append({"selector": k[0], "regime": k[1], "ratio": k[2], "setting": str(k[3])[:6],
                     "pws": ss["mean"], "ci_lo": ss["ci95"][0], "ci_hi": ss["ci95"][1],
                     "n_seeds": ss["n"], "selection_seconds": float(c.sel_s.mean()),
                     "proxy_flops": c.proxy_flops.iloc[0]})
    return pd.DataFrame(rows)


def _yerr(d: pd.DataFrame) -> list:
    """Asymmetric error bars from the CI (a percentile CI need not contain the mean)."""
    return [(d.pws - d.ci_lo).clip(lower=0).fillna(0), (d.ci_hi - d.pws).clip(lower=0).fillna(0)]


def _judge_panels(df: pd.DataFrame):
    """One figure per judge group of the pooled rows: (file suffix, title, cell points, fig, ax)."""
    p = df[df.eval_set == "pooled"]
    for i, (title, g) in enumerate(judge_groups(p)):
        data = _cell_points(g)
        if data.empty:
            continue
        data["judges"] = title
        fig, ax = _plt().subplots(figsize=(6.4, 4.0))
        yield (f"_{i}" if i else ""), title, data, fig, ax


def fig_pws_vs_ratio(df: pd.DataFrame, out: Path) -> list[Path]:
    paths = []
    for suffix, title, data, fig, ax in _judge_panels(df):
        sels = sorted(set(data.selector))
        width = 0.004
        for j, (sel, d) in enumerate(data.groupby("selector")):
            d = d.sort_values("ratio")
            x = d.ratio + (j - (len(sels) - 1) / 2) * width
            ax.errorbar(x * 100, d.pws, yerr=_yerr(d), marker="o",
                        capsize=3, label=f"{sel} (n seeds: {'/'.join(str(n) for n in d.n_seeds)})")
        ax.axhline(1.0, color="grey", ls="--", lw=1, label="full data (100%) = 1")
        ticks = sorted(set(data.ratio))
        ax.set_xticks([t * 100 for t in ticks], [f"{t:.0%}" for t in ticks])
        ax.set_xlabel("selected share of the pool")
        ax.set_ylabel("PWS vs full-data model (95% CI)")
        ax.set_title(f"PWS vs ratio ({title})", fontsize=9)
        ax.legend(fontsize=7, loc="best")
        paths.append(_save(fig, out, "pws_vs_ratio" + suffix, data))
    return paths


def fig_cost_vs_pws(df: pd.DataFrame, out: Path) -> list[Path]:
    paths = []
    for suffix, title, data, fig, ax in _judge_panels(df):
        markers = "osD^v<>pXh*"
        for j, (sel, d) in enumerate(data.groupby("selector")):
            ax.errorbar(d.selection_seconds.clip(lower=0.01), d.pws,
                        yerr=_yerr(d), fmt=markers[j % len(markers)],
                        capsize=2, label=sel, alpha=0.85)
            for r in d.itertuples():
                ax.annotate(f"{r.ratio:.0%}", (max(r.selection_seconds, 0.01), r.pws), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.axhline(1.0, color="grey", ls="--", lw=1)
        ax.set_xlabel("selection wall time (s, log scale; includes proxy training)")
        ax.set_ylabel("PWS vs full-data model (95% CI)")
        ax.set_title(f"Selection cost vs quality ({title}); labels = ratio", fontsize=9)
        ax.legend(fontsize=7, loc="best")
        paths.append(_save(fig, out, "cost_vs_pws" + suffix, data))
    return paths


# --------------------------------------------------------------------------- subsets
def load_pool_of(runs_dir: Path, experiment: str, fingerprint: str | None = None):
    """The pool of an experiment's runs, from its manifest config (None if not loadable)."""
    m = runs_dir / experiment / "manifest.json"
    try:
        inv = json.loads(m.read_text())["invocations"]
    except (OSError, json.JSONDecodeError, KeyError):
        return None
    for e in reversed(inv):
        d = e.get("config", {}).get("data", {})
        try:
            pool = load_pool(d["pool"], d.get("data_dir"), d.get("pool_size"), d.get("sample_seed", 0))
        except Exception:  # noqa: BLE001 - data not here: figures that need rows are skipped
            continue
        if fingerprint is None or pool.fingerprint() == fingerprint:
            return pool
    return None


def _subsets(p: pd.DataFrame, runs_dir: Path, ratio: float) -> dict[str, set]:
    out = {}
    for r in p[p.ratio == ratio].drop_duplicates(subset=["experiment", "model_a"]).itertuples():
        res = json.loads((runs_dir / r.result_dir / "result.json").read_text())
        f = runs_dir / r.experiment / "select" / res.get("select_key", "") / "subset.json"
        if f.exists():
            out[_label(r.selector, r.seed)] = set(json.loads(f.read_text())["ids"])
    return out


def fig_overlap(df: pd.DataFrame, runs_dir: Path, out: Path, ratio: float | None = None,
                published: list[str] | None = None, data_dir: str | None = None) -> list[Path]:
    p = df[(df.eval_set == "pooled") & df.result_dir.notna()]
    if p.empty:
        return []
    ratio = _pick_ratio(p, ratio)
    subsets = _subsets(p, runs_dir, ratio)
    r0 = p.iloc[0]
    fp = json.loads((runs_dir / r0.result_dir / "result.json").read_text()).get("setting", {}).get("pool", {}).get("fingerprint")
    pool = load_pool_of(runs_dir, r0.experiment, fp)
    notes = []
    if pool is not None and pool.name == "alpaca":
        dd = resolve_data_dir(data_dir)
        ids = set(pool.ids)
        for short in published if published is not None else DEFAULT_PUBLISHED:
            if dd is None or not (dd / INDEX_FILE).exists():
                break
            label = f"published:{short}"
            if any(k.startswith(label) for k in subsets):
                continue
            pid, _ = published_ids(ENTRIES[short], dd / INDEX_FILE, dd / ALPACA_FILE)
            inter = ids & set(pid)
            subsets[f"{label} (∩ pool)"] = inter
            notes.append(f"{label}: {len(inter)} of {len(pid)} in the pool of {len(pool)}")
    names = list(subsets)
    if len(names) < 2:
        return []
    m = np.zeros((len(names), len(names)))
    rows = []
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            u = subsets[a] | subsets[b]
            m[i, j] = len(subsets[a] & subsets[b]) / len(u) if u else np.nan
            rows.append({"a": a, "b": b, "size_a": len(subsets[a]), "size_b": len(subsets[b]),
                         "intersection": len(subsets[a] & subsets[b]), "jaccard": m[i, j],
                         "ratio": ratio})
    plt = _plt()
    n = len(names)
    fig, ax = plt.subplots(figsize=(max(5.5, 0.55 * n + 3.5), max(4.5, 0.5 * n + 2.5)))
    im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
    labels = [f"{k} [{len(subsets[k])}]" for k in names]
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.grid(False)
    for i in range(n):
        for j in range(n):
            if np.isfinite(m[i, j]):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if m[i, j] < 0.6 else "black")
    fig.colorbar(im, ax=ax, label="Jaccard |A∩B| / |A∪B|")
    ax.set_title(f"Overlap of selected subsets at {ratio:.0%} ([size])")
    data = pd.DataFrame(rows)
    data.attrs["notes"] = notes
    return [_save(fig, out, "overlap_jaccard", data)]


def fig_scores_and_lengths(df: pd.DataFrame, runs_dir: Path, out: Path,
                           ratio: float | None = None) -> list[Path]:
    p = df[(df.eval_set == "pooled") & df.result_dir.notna()]
    if p.empty:
        return []
    ratio = _pick_ratio(p, ratio)
    paths = []
    # scores: one per selector (seed 0 or the first seed) at the chosen ratio, over the pool,
    # with the selected examples highlighted
    score_rows = []
    seen = set()
    at = p[p.ratio == ratio].drop_duplicates(subset=["experiment", "model_a"]).sort_values("seed")
    for r in at.itertuples():
        if r.selector in seen or r.selector == "random" or r.selector.startswith("published:"):
            continue
        res = json.loads((runs_dir / r.result_dir / "result.json").read_text())
        folder = runs_dir / r.experiment / "select" / res.get("select_key", "")
        if not (folder / "scores.npy").exists():
            continue
        seen.add(r.selector)
        chosen = set(json.loads((folder / "subset.json").read_text())["indices"]) \
            if (folder / "subset.json").exists() else set()
        for i, v in enumerate(np.load(folder / "scores.npy")):
            score_rows.append({"selector": r.selector, "index": i, "score": float(v),
                               "selected": i in chosen, "ratio": ratio})
    sd = pd.DataFrame(score_rows)
    if not sd.empty:
        plt = _plt()
        sels = sorted(set(sd.selector))
        ncol = min(3, len(sels))
        nrow = -(-len(sels) // ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol + 0.5, 2.9 * nrow + 0.6), squeeze=False)
        for ax in axes.flat[len(sels):]:
            ax.axis("off")
        for ax, sel in zip(axes.flat, sels):
            d = sd[(sd.selector == sel) & np.isfinite(sd.score)]
            v = d.score.to_numpy()
            med = np.median(np.abs(v)) if len(v) else 0
            wide = len(v) and med > 0 and np.abs(v).max() / med > 1e3
            x = np.sign(v) * np.log10(1 + np.abs(v)) if wide else v
            bins = np.histogram_bin_edges(x, bins=30) if len(x) else 10
            ax.hist(x, bins=bins, color="C0", alpha=0.6, label="pool")
            ax.hist(x[d.selected.to_numpy()], bins=bins, color="C3", label=f"selected ({ratio:.0%})")
            ax.set_title(sel)
            ax.set_xlabel("sign(s) log10(1+|s|)" if wide else "score s")
            ax.set_ylabel("examples")
            ax.legend(fontsize=6)
        fig.suptitle("Selector scores over the pool, each in its own units "
                     "(red: the selected examples)", fontsize=9)
        paths.append(_save(fig, out, "score_dist", sd))
    # lengths: selected examples vs the pool
    r0 = p.iloc[0]
    fp = json.loads((runs_dir / r0.result_dir / "result.json").read_text()).get("setting", {}).get("pool", {}).get("fingerprint")
    pool = load_pool_of(runs_dir, r0.experiment, fp)
    if pool is not None:
        lens = {r["id"]: words(r["output"]) for r in pool.rows}
        rows = [{"group": "pool", "words": v} for v in lens.values()]
        for label, ids in _subsets(p, runs_dir, ratio).items():
            rows += [{"group": label, "words": lens[i]} for i in ids if i in lens]
        ld = pd.DataFrame(rows)
        plt = _plt()
        groups = list(dict.fromkeys(ld.group))
        fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(groups) + 2), 4.0))
        ax.boxplot([ld[ld.group == g].words for g in groups], showfliers=False)
        ax.set_xticks(range(1, len(groups) + 1),
                      [f"{g}\n(n={int((ld.group == g).sum())})" for g in groups],
                      rotation=30, ha="right", fontsize=7)
        means = [ld[ld.group == g].words.mean() for g in groups]
        ax.plot(range(1, len(groups) + 1), means, "D", color="C3", label="mean")
        ax.set_ylabel("response length (words)")
        ax.set_title(f"Response length of the selected examples at {ratio:.0%} vs the pool")
        ax.legend(fontsize=7)
        paths.append(_save(fig, out, "selected_lengths", ld))
    return paths


def make_figures(df: pd.DataFrame, runs_dir: Path, out: Path, ratio: float | None = None,
                 data_dir: str | None = None) -> dict[str, list[Path]]:
    """Every figure; a figure whose inputs are missing is skipped (its key maps to [])."""
    runs_dir, out = Path(runs_dir), Path(out)
    return {"loss": fig_loss(df, runs_dir, out, ratio),
            "pws_vs_ratio": fig_pws_vs_ratio(df, out),
            "cost_vs_pws": fig_cost_vs_pws(df, out),
            "overlap": fig_overlap(df, runs_dir, out, ratio, data_dir=data_dir),
            "scores_lengths": fig_scores_and_lengths(df, runs_dir, out, ratio)}
