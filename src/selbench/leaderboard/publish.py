"""`bench leaderboard --publish DIR`: a self-contained study folder that renders on GitHub.

    DIR/README.md          tables, statistics, embedded figures, method notes, fingerprints,
                           package versions, grid status (relative links only)
    DIR/leaderboard.csv    the study CSV: the source of truth every table and figure is read from
    DIR/figures/*.png      figures, each with the CSV behind it (figures/*.csv)

Nothing is recomputed: everything comes from finished stage folders under the runs folder.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from ..benchmark.grid import load_grid
from ..judges.prompts import PROMPT_VERSION
from ..runs import package_versions
from . import report
from .figures import make_figures
from .render import LEGEND, _tag, details, table1_paper, table2_paper, warnings_section
from .study import collect_study

FIG_TEXT = {
    "pws_vs_ratio": "PWS vs ratio per selector, 95% CI bars (over seeds when n > 1, else the bootstrap over prompts).",
    "cost_vs_pws": "Selection cost (wall seconds, log scale) vs PWS: the cost/quality frontier.",
    "fig3_loss": "Training loss vs step of each selector's model at one ratio and of the full-data model (paper Figure 3).",
    "overlap_jaccard": "Jaccard overlap of the selected subsets (selectors, seeds, published Alpaca subsets intersected with the pool).",
    "score_dist": "Distribution of each selector's scores over the pool.",
    "selected_lengths": "Response length (words) of the selected examples vs the whole pool.",
}


def _versions(runs_dir: Path, experiments: list[str]) -> dict:
    out = {}
    for exp in experiments:
        try:
            inv = json.loads((runs_dir / exp / "manifest.json").read_text())["invocations"]
            out.update(inv[-1].get("versions", {}))
        except (OSError, json.JSONDecodeError, KeyError, IndexError):
            pass
    return out or package_versions()


def _commands(runs_dir: Path, experiments: list[str]) -> list[str]:
    cmds = []
    for exp in experiments:
        try:
            inv = json.loads((runs_dir / exp / "manifest.json").read_text())["invocations"]
        except (OSError, json.JSONDecodeError, KeyError):
            continue
        for e in inv:
            c = " ".join(x for x in e.get("command", []) if not str(x).startswith("# cell"))
            if c and c not in cmds:
                cmds.append(c)
    return cmds


def _grid_status(runs_dir: Path, experiments: list[str]) -> str:
    lines = []
    for exp in experiments:
        for f in sorted((runs_dir / exp / "grid").glob("*.json")):
            st = json.loads(f.read_text())
            cells = dict(st.get("cells", {}))
            try:  # cells the grid has not reached yet (still running, or stopped)

                for c in load_grid(st["grid"]).cells:
                    cells.setdefault(c.name, {"state": "pending", "error": "not run yet"})
            except Exception:  # noqa: BLE001 - the grid file moved: list what was recorded
                pass
            bad = {k: v for k, v in cells.items() if v.get("state") != "ok"}
            state = "finished" if st.get("finished") else "not finished (running or stopped)"
            lines.append(f"- grid `{f.stem}` ({exp}, {state}): {len(cells) - len(bad)} of "
                         f"{len(cells)} cells ok" + ("" if bad else "; no failure"))
            for k, v in bad.items():
                lines.append(f"  - **{v['state']}** `{k}`: {v.get('error', '')[:300]}")
    return "\n".join(lines) + "\n" if lines else "_not run as a grid_\n"


def _fingerprints(df: pd.DataFrame) -> str:
    p = df[df.eval_set == "pooled"].drop_duplicates(subset=["experiment", "model_a", "judge"])
    rows = [[r.selector, f"{r.ratio:.0%}", r.seed, r.judge, f"`{r.setting_fp}`", f"`{r.selector_fp}`",
             f"`{r.model_a}`", f"`{r.model_b}`"] for r in p.itertuples()]
    descs = sorted(set(zip(p.setting_fp, p.setting_desc)))
    legend = "".join(f"- setting `{fp}`: {d}\n" for fp, d in descs)
    return legend + "\n" + report._md(rows, ["selector", "ratio", "seed", "judge", "setting_fp",
                                            "selector_fp", "model (generate key)",
                                            "full-data model (generate key)"])


METHOD = """\
- **Protocol.** For each eval prompt the judge sees (subset answer, full-data answer) and the
  reverse order, with the Vicuna pairwise prompt (`{prompt_version}`; two 1-10 scores on the
  first line). Per prompt: **win** if the subset model scores higher in both orders, or higher
  in one and equal in the other; **lose** symmetrically; **tie** otherwise; a completion that
  cannot be parsed makes the prompt **unparsed** (counted, left out).
- **PWS** = 1 + (W - L) / (W + T + L), pooled over the eval sets (2 = always wins, 1 = even
  with the full-data model, 0 = always loses). Variant shown in the tables: selbench's `pws`
  (unparsed prompts left out); the CSV also has `pws_compat` (Cherry/Superfiltering rule:
  an unparsed order counts as a tie). The 100% column is 1.00 by definition.
- **A cell** = one comparison: the same setting (`setting_fp`: pool content, target model,
  train and generate config, eval prompts, full-data baseline) and selector config
  (`selector_fp`). A cell's value per seed is the mean over its judges of one group (LLM
  judges together; each offline judge alone, never mixed into an LLM mean); several seeds:
  mean ± sample sd (n).
- **CIs.** One seed: percentile bootstrap over prompts (2,000 resamples). Several seeds:
  t interval over the seeds' PWS (seed variance). Paired comparisons: paired bootstrap
  over prompts (same resample for both selectors).
- **Reference NLL** (judge-free): mean token NLL of each model on the gpt-3.5-turbo
  reference answers (DiverseEvol) with the generation template; token-weighted; lower is better.
- **Answer length**: whitespace words of the generated answers.
- **Proxy FLOPs (est.)**: gradient profile `6 P N T x members x epochs` (x2 when the norms
  are recorded in a separate pass), forward-only proxies (IFD) `4 P N T`; P = proxy
  parameters, N = pool size, T = mean tokens per example (from the profile, else 180).
"""


def publish(runs_dir: Path, out: Path, title: str | None = None, data_dir: str | None = None,
            commands: list[str] | None = None, example_note: str | None = None) -> Path:
    runs_dir, out = Path(runs_dir).resolve(), Path(out)
    df = collect_study(runs_dir)
    # a local model folder is shown by its name (no machine paths in a published folder)
    df["model"] = [Path(m).name if isinstance(m, str) and m.startswith(("/", "~", "./")) else m
                   for m in df.model]
    if df.empty:
        raise ValueError(f"no finished judge results under {runs_dir}: nothing to publish")
    out.mkdir(parents=True, exist_ok=True)
    if (out / "figures").exists():
        shutil.rmtree(out / "figures")
    df.to_csv(out / "leaderboard.csv", index=False)
    figs = make_figures(df, runs_dir, out / "figures", data_dir=data_dir)
    exps = sorted(set(df.experiment.dropna()))
    sets = [s for s in df.eval_set.unique() if s != "pooled"]
    order = ["random", "ifd", "gsnr"]
    fig_md = []
    for paths in figs.values():
        for pth in paths:
            key = next((k for k in FIG_TEXT if pth.stem.startswith(k)), pth.stem)
            fig_md.append(f"### {pth.stem}\n\n{FIG_TEXT.get(key, '')}\n\n"
                          f"![{pth.stem}](figures/{pth.name})\n\n"
                          f"Data: [figures/{pth.stem}.csv](figures/{pth.stem}.csv)\n")
    cmds = commands or _commands(runs_dir, exps)
    vers = _versions(runs_dir, exps)
    parts = [
        f"# {title or 'selbench study'}\n",
        (example_note + "\n") if example_note else "",
        "Everything below is read from [leaderboard.csv](leaderboard.csv) (the source of truth) "
        "and the finished stage folders; nothing was recomputed to write it.\n",
        "## Commands\n\n```bash\n" + "\n".join(cmds) + "\n```\n",
        "## How sure are we? Minimum detectable difference\n\n" + report.mde_section(df),
        "## Table 1: PWS vs the full-data model (pooled over eval sets)\n\n"
        + table1_paper(df, "pooled", order),
        "## Table 2: G-SNR ablations (PWS delta vs `gsnr` in the same cell)\n\n" + table2_paper(df),
        *[f"## Table 1 on {es} only\n\n" + table1_paper(df, es, order) for es in sets],
        "## Seeds: mean, spread, n\n\n" + report.seeds_section(df),
        "## Paired comparisons (same cell, same full-data model)\n\n" + report.paired_section(df, runs_dir),
        "## Judges: agreement and position consistency\n\n" + report.agreement_section(df, runs_dir)
        + "\n" + report.consistency_section(df),
        "## Answer length and length bias\n\n" + report.length_section(df),
        "## Reference-answer NLL (judge-free, its own column)\n\n" + report.refnll_section(df),
        "## Cost next to quality\n\n" + report.cost_section(df),
        "## Figures\n\n" + ("\n".join(fig_md) if fig_md else "_no figure could be drawn_\n"),
        "## Grid status\n\n" + _grid_status(runs_dir, exps) + warnings_section(df),
        "## All results\n\n" + LEGEND + "\n" + details(df) + "\n",
        "## Method notes\n\n" + METHOD.format(prompt_version=PROMPT_VERSION),
        "## Config fingerprints of every cell\n\n" + _fingerprints(df),
        "## Package versions\n\n" + report._md(sorted(vers.items()), ["package", "version"]),
    ]
    (out / "README.md").write_text("\n".join(p for p in parts if p), encoding="utf-8")
    return out / "README.md"
