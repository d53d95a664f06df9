"""Study figures, each a PNG plus the CSV of exactly what it draws, written to a
``figures/`` folder, all drawn from a :class:`~.data.StudyData` (never from a runs folder).
Every figure that shows results draws one setting per panel row (never two settings in one
colour) and says what its error bars are.

- ``fig3_loss_<regime>``: training loss vs step of each model at one ratio and of the
  full-data model (the paper's Figure 3); each model trains on its own data, which the
  legend gives (examples, steps).
- ``pws_vs_ratio``: PWS vs ratio per selector with 95% CIs of one kind (prompts resampled,
  outcomes averaged over seeds: inside [0, 2]); the 100% point = 1.
- ``cost_vs_pws``: standalone selection seconds vs PWS, a symlog time axis (0 s is drawn at
  0, not clamped), labels placed apart.
- ``overlap_jaccard``: Jaccard overlap of the selected subsets and of published Alpaca
  subsets intersected with the pool.
- ``score_dist``: each selector's score histogram (symlog when its scores span > 3 orders
  of magnitude, said on the axis); ``selected_lengths``: response lengths of the selected
  examples vs the pool (box = quartiles, whiskers p10-p90, diamond = mean).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .data import StudyData
from .render import _tag
from .report import prompt_values
from .stats import cell_bootstrap


def _plt():
    import matplotlib  # lazy: heavy

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: heavy

    plt.rcParams.update({"figure.dpi": 110, "font.size": 9, "axes.titlesize": 10,
                         "axes.grid": True, "grid.alpha": 0.3})
    return plt


def _save(fig, out: Path, name: str, data: pd.DataFrame) -> Path:
    plt = _plt()
    out.mkdir(parents=True, exist_ok=True)
    data.to_csv(out / f"{name}.csv", index=False)
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", bbox_inches="tight")
    plt.close(fig)
    return out / f"{name}.png"


def _pick_ratio(p: pd.DataFrame, ratio: float | None) -> float:
    if ratio is not None:
        return ratio
    counts = p.groupby("ratio").selector.nunique()
    return float(counts.idxmax())


def _settings(p: pd.DataFrame) -> list[str]:
    return sorted(set(p.setting_fp))


# --------------------------------------------------------------------------- Figure 3
def fig_loss(data: StudyData, out: Path, ratio: float | None = None) -> list[Path]:
    p = data.results[data.results.eval_set == "pooled"].drop_duplicates(subset=["experiment", "model_a"])
    L = data.losses
    if p.empty or L.empty:
        return []
    ratio = _pick_ratio(p, ratio)
    paths = []
    for (regime, setting), g in p[p.ratio == ratio].groupby(["regime", "setting_fp"]):
        rows = []
        models = [(f"{r.selector} (seed {r.seed})", r.experiment, str(r.model_a).rsplit("-", 1)[0])
                  for r in g.itertuples()]
        r0 = g.iloc[0]
        models.append(("full data (100%)", r0.experiment, str(r0.model_b).rsplit("-", 1)[0]))
        for label, exp, tkey in models:
            d = L[(L.experiment == exp) & (L.train_key == tkey)]
            if d.empty:
                continue
            n = d.examples.iloc[0]
            lab = f"{label}: {int(n) if pd.notna(n) else '?'} examples, {len(d)} steps"
            rows += [{"model": lab, "regime": regime, "ratio": ratio, "setting": _tag(str(setting)),
                      "step": s, "loss": v} for s, v in zip(d.step, d.loss)]
        frame = pd.DataFrame(rows)
        if frame.empty:
            continue
        plt = _plt()
        from matplotlib.ticker import MaxNLocator  # lazy: heavy

        fig, ax = plt.subplots(figsize=(8.4, 4.0))
        for label, d in frame.groupby("model", sort=False):
            style = dict(color="black", lw=2) if label.startswith("full") else dict(marker="o", ms=3)
            ax.plot(d.step, d.loss, label=label, **style)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss on its own training data")
        ax.set_title(f"Training loss, {regime}, subsets at {ratio:.0%} vs full data "
                     f"[setting {_tag(str(setting))}]\n(each curve is on a different training "
                     f"set: not comparable in level)", fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        suffix = "" if len(_settings(p)) == 1 else f"_{_tag(str(setting))}"
        paths.append(_save(fig, out, f"fig3_loss_{regime}{suffix}", frame))
    return paths


# --------------------------------------------------------------------------- PWS vs ratio
def cell_points(data: StudyData) -> pd.DataFrame:
    """One row per (judge group, cell): PWS and the one-kind 95% CI, seeds, standalone
    selection seconds."""
    res = data.results[data.results.eval_set == "pooled"]
    secs = res.groupby(["setting_fp", "regime", "ratio", "selector", "selector_fp"])["selection_seconds"].mean()
    rows = []
    for title, cells in prompt_values(data).items():
        for c, seeds in cells.items():
            m, lo, hi = cell_bootstrap(seeds)
            rows.append({"judges": title, "setting": _tag(str(c[0])), "setting_fp": c[0],
                         "regime": c[1], "ratio": c[2], "selector": c[3], "pws": m, "ci_lo": lo,
                         "ci_hi": hi, "n_seeds": len(seeds),
                         "selection_seconds": float(secs.get(c, np.nan))})
    return pd.DataFrame(rows)


def _yerr(d: pd.DataFrame) -> list:
    return [(d.pws - d.ci_lo).clip(lower=0).fillna(0), (d.ci_hi - d.pws).clip(lower=0).fillna(0)]


def _panels(points: pd.DataFrame):
    """(suffix, title, data, fig, axes per setting row) per judge group."""
    for i, (title, g) in enumerate(points.groupby("judges", sort=False)):
        keys = sorted(set(zip(g.setting, g.regime)))
        fig, axes = _plt().subplots(len(keys), 1, figsize=(6.6, 3.6 * len(keys)), squeeze=False)
        yield (f"_{i}" if i else ""), title, g, fig, dict(zip(keys, axes[:, 0]))


def fig_pws_vs_ratio(data: StudyData, out: Path) -> list[Path]:
    points = cell_points(data)
    paths = []
    if points.empty:
        return paths
    for suffix, title, g, fig, axes in _panels(points):
        for (setting, regime), ax in axes.items():
            d0 = g[(g.setting == setting) & (g.regime == regime)]
            sels = sorted(set(d0.selector))
            for j, (sel, d) in enumerate(d0.groupby("selector")):
                d = d.sort_values("ratio")
                x = d.ratio * 100 + (j - (len(sels) - 1) / 2) * 0.35
                ax.errorbar(x, d.pws, yerr=_yerr(d), marker="o", capsize=3,
                            label=f"{sel} (seeds: {'/'.join(str(n) for n in d.n_seeds)})")
            ax.axhline(1.0, color="grey", ls="--", lw=1, label="full data (100%) = 1")
            ticks = sorted(set(d0.ratio))
            ax.set_xticks([t * 100 for t in ticks], [f"{t:.0%}" for t in ticks])
            ax.set_ylim(0, 2)
            ax.set_xlabel("selected share of the pool")
            ax.set_ylabel("PWS vs full-data model")
            ax.set_title(f"{title} - {regime} [setting {setting}]", fontsize=9)
            ax.legend(fontsize=7, loc="best")
        fig.suptitle("PWS vs ratio; bars: 95% CI (prompts resampled, outcomes averaged over "
                     "seeds)", fontsize=8)
        paths.append(_save(fig, out, "pws_vs_ratio" + suffix, g))
    return paths


def _spread_labels(ax, xs, ys, texts) -> None:
    """Labels next to their points; a label whose point is near an earlier labelled point
    moves up one line per such neighbour, so that near points do not overlap."""
    placed: list[tuple[float, float]] = []
    lx = np.log10(np.asarray(xs, float) + 0.1)
    for i in np.lexsort((ys, lx)):
        near = sum(abs(ys[i] - py) < 0.06 and abs(lx[i] - px) < 0.3 for px, py in placed)
        ax.annotate(texts[i], (xs[i], ys[i]), fontsize=6, xytext=(4, 3 + 8 * near),
                    textcoords="offset points")
        placed.append((lx[i], ys[i]))


def fig_cost_vs_pws(data: StudyData, out: Path) -> list[Path]:
    points = cell_points(data)
    paths = []
    if points.empty:
        return paths
    markers = "osD^v<>pXh*"
    for suffix, title, g, fig, axes in _panels(points):
        for (setting, regime), ax in axes.items():
            d0 = g[(g.setting == setting) & (g.regime == regime)]
            for j, (sel, d) in enumerate(d0.groupby("selector")):
                ax.errorbar(d.selection_seconds, d.pws, yerr=_yerr(d), fmt=markers[j % len(markers)],
                            capsize=2, label=sel, alpha=0.85)
            _spread_labels(ax, d0.selection_seconds.to_numpy(), d0.pws.to_numpy(),
                           [f"{s} {r:.0%}" for s, r in zip(d0.selector, d0.ratio)])
            ax.set_xscale("symlog", linthresh=0.1)
            ax.set_xlim(left=0)
            ax.axhline(1.0, color="grey", ls="--", lw=1)
            ax.set_ylim(0, 2)
            ax.set_xlabel("standalone selection seconds (symlog: 0 s at 0; shared proxy work included)")
            ax.set_ylabel("PWS (95% CI)")
            ax.set_title(f"Selection cost vs quality, {title} - {regime} [setting {setting}]", fontsize=9)
            ax.legend(fontsize=7, loc="best")
        paths.append(_save(fig, out, "cost_vs_pws" + suffix, g))
    return paths


# --------------------------------------------------------------------------- subsets
def fig_overlap(data: StudyData, out: Path, ratio: float | None = None) -> list[Path]:
    S = data.subsets
    if S.empty:
        return []
    ratio = _pick_ratio(S, ratio)
    paths = []
    for setting, g in S[S.ratio == ratio].groupby("setting_fp"):
        subsets = {f"{r.selector} (seed {r.seed})": set(r.ids) for r in g.itertuples()}
        fps = {(r.pool or {}).get("fingerprint") for r in g.itertuples() if isinstance(r.pool, dict)}
        L = data.lengths
        if not L.empty and "ids" in L:
            for r in L[L.group.astype(str).str.startswith("published:") & L.pool_fp.isin(fps)].itertuples():
                subsets[f"{r.group} (∩ pool)"] = set(json.loads(r.ids))
        names = list(subsets)
        if len(names) < 2:
            continue
        m = np.zeros((len(names), len(names)))
        rows = []
        for i, a in enumerate(names):
            for j, b in enumerate(names):
                u = subsets[a] | subsets[b]
                m[i, j] = len(subsets[a] & subsets[b]) / len(u) if u else np.nan
                rows.append({"a": a, "b": b, "size_a": len(subsets[a]), "size_b": len(subsets[b]),
                             "intersection": len(subsets[a] & subsets[b]), "jaccard": m[i, j],
                             "ratio": ratio, "setting": _tag(str(setting))})
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
        ax.set_title(f"Overlap of selected subsets at {ratio:.0%} ([size]) [setting {_tag(str(setting))}]")
        suffix = "" if S.setting_fp.nunique() == 1 else f"_{_tag(str(setting))}"
        paths.append(_save(fig, out, "overlap_jaccard" + suffix, pd.DataFrame(rows)))
    return paths


def fig_scores(data: StudyData, out: Path) -> list[Path]:
    H = data.score_hist
    if H.empty:
        return []
    plt = _plt()
    sels = list(dict.fromkeys(H.selector))
    ncol = min(3, len(sels))
    nrow = -(-len(sels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol + 0.5, 2.9 * nrow + 0.6), squeeze=False)
    for ax in axes.flat[len(sels):]:
        ax.axis("off")
    for ax, sel in zip(axes.flat, sels):
        d = H[H.selector == sel]
        w = d.bin_hi - d.bin_lo
        ax.bar(d.bin_lo, d.pool, width=w, align="edge", color="C0", alpha=0.6, label="pool")
        ax.bar(d.bin_lo, d.selected, width=w, align="edge", color="C3",
               label=f"selected ({d.ratio.iloc[0]:.0%})")
        symlog = d.scale.iloc[0] == "symlog"
        ax.set_title(sel)
        ax.set_xlabel("sign(s) log10(1 + |s|)  (symlog)" if symlog else "score s")
        ax.set_ylabel("examples")
        nan = int(d.nan_scores.iloc[0])
        ax.legend(fontsize=6, title=f"{nan} NaN not drawn" if nan else None, title_fontsize=6)
    fig.suptitle("Selector scores over the pool, each in its own units (red: the selected "
                 "examples)", fontsize=9)
    return [_save(fig, out, "score_dist", H)]


def fig_lengths(data: StudyData, out: Path, ratio: float | None = None) -> list[Path]:
    L = data.lengths
    if L.empty or "selector" not in L:
        return []
    sel = L[L.selector.notna()]
    if sel.empty:
        return []
    ratio = _pick_ratio(sel, ratio)
    paths = []
    for fp, g in sel[sel.ratio == ratio].groupby("pool_fp"):
        rows = pd.concat([L[(L.group == "pool") & (L.pool_fp == fp)],
                          L[L.group.astype(str).str.startswith("published:") & (L.pool_fp == fp)],
                          g.sort_values(["selector", "seed"])])
        labels = [("pool" if r.group == "pool" else r.group if str(r.group).startswith("published:")
                   else f"{r.selector} (seed {int(r.seed)})") for r in rows.itertuples()]
        stats = [{"label": f"{lab}\n(n={int(r.n)})", "med": r.median, "q1": r.q1, "q3": r.q3,
                  "whislo": r.p10, "whishi": r.p90, "mean": r.mean} for lab, r in zip(labels, rows.itertuples())]
        plt = _plt()
        fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(stats) + 2), 4.2))
        ax.bxp(stats, showfliers=False, showmeans=True,
               meanprops=dict(marker="D", markerfacecolor="C3", markeredgecolor="C3"))
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.set_ylabel("response length (words)")
        ax.set_title(f"Response length of the selected examples at {ratio:.0%} vs the pool\n"
                     f"(box: quartiles, whiskers: p10-p90, diamond: mean)", fontsize=9)
        frame = rows.assign(label=labels).drop(columns=[c for c in ("ids",) if c in rows])
        suffix = "" if sel.pool_fp.nunique() == 1 else f"_{str(fp)[:6]}"
        paths.append(_save(fig, out, "selected_lengths" + suffix, frame))
    return paths


def make_figures(data: StudyData, out: Path, ratio: float | None = None) -> dict[str, list[Path]]:
    """Every figure; a figure whose inputs are missing is skipped (its key maps to [])."""
    out = Path(out)
    return {"loss": fig_loss(data, out, ratio), "pws_vs_ratio": fig_pws_vs_ratio(data, out),
            "cost_vs_pws": fig_cost_vs_pws(data, out), "overlap": fig_overlap(data, out, ratio),
            "scores": fig_scores(data, out), "lengths": fig_lengths(data, out, ratio)}
