"""`bench leaderboard --publish DIR`: a self-contained study folder that renders on GitHub,
and `bench leaderboard --render DIR`: the same folder re-rendered from its own data.

    DIR/README.md          summary, controls, MDE, tables, statistics, figures, method notes
    DIR/leaderboard.csv    the study CSV (the same as data/results.csv)
    DIR/data/              the small result files everything is drawn from (StudyData)
    DIR/figures/*.png      figures, each with the CSV of what it draws (figures/*.csv)
    DIR/.selbench-study.json   the marker: which files the publisher wrote (and their sha256)

Nothing is recomputed: the data comes from finished stage folders (or, for ``--render``,
from ``DIR/data``). The publisher writes only into an empty or new folder, or into an
earlier publish output recognised by its marker; it builds the new output in a temporary
folder next to DIR and swaps it in, carrying over every file it did not write. A file it
wrote and the user has edited since is never overwritten (the publish stops and names it).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from ..runs import utc_iso
from . import report
from .data import StudyData
from .figures import make_figures
from .render import LEGEND, details, table1_paper, table2_paper, warnings_section

MARKER = ".selbench-study.json"
FIG_TEXT = {
    "pws_vs_ratio": "PWS vs ratio per selector, one panel per setting; 95% CIs of one kind "
                    "(prompts resampled, outcomes averaged over seeds).",
    "cost_vs_pws": "Standalone selection seconds (symlog axis, 0 s at 0) vs PWS: the cost/quality frontier.",
    "fig3_loss": "Training loss vs step of each selector's model at one ratio and of the full-data "
                 "model (paper Figure 3); each curve is on its own training set.",
    "overlap_jaccard": "Jaccard overlap of the selected subsets (selectors, seeds, published Alpaca subsets intersected with the pool).",
    "score_dist": "Each selector's score histogram over the pool (symlog when the scores span > 3 orders of magnitude).",
    "selected_lengths": "Response length (words) of the selected examples vs the whole pool.",
}


class PublishError(ValueError):
    pass


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _marker(out: Path) -> dict | None:
    try:
        m = json.loads((out / MARKER).read_text())
        return m if isinstance(m, dict) and isinstance(m.get("files"), dict) else None
    except (OSError, ValueError):
        return None


def _check_target(out: Path) -> dict:
    """The earlier output's marker ({} for a new or empty folder); a PublishError for a
    folder the publisher did not make, or one of its files the user has edited."""
    if not out.exists():
        return {}
    if not out.is_dir():
        raise PublishError(f"--publish {out}: a file, not a folder")
    entries = [p for p in out.iterdir()]
    if not entries:
        return {}
    m = _marker(out)
    if m is None:
        raise PublishError(f"--publish {out}: the folder is not empty and is not an earlier "
                           f"`bench leaderboard --publish` output (no {MARKER}); nothing was "
                           f"written: choose a new or empty folder")
    edited = [rel for rel, sha in m["files"].items()
              if (out / rel).is_file() and _sha(out / rel) != sha]
    if edited:
        raise PublishError(f"--publish {out}: {', '.join(sorted(edited)[:5])} changed since the "
                           f"last publish (edited by hand?); nothing was written: move them "
                           f"away or publish into another folder")
    return m


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _swap_in(tmp: Path, out: Path, old_marker: dict) -> None:
    """Move the built output ``tmp`` to ``out``, carrying over the user's own files."""
    new_files = set(_files(tmp))
    files = {rel: _sha(tmp / rel) for rel in sorted(new_files)}
    (tmp / MARKER).write_text(json.dumps({"tool": "selbench leaderboard --publish",
                                          "written_at": utc_iso(), "files": files}, indent=1))
    if not out.exists() or not any(out.iterdir()):
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
        return
    ours = set(old_marker.get("files", {})) | {MARKER}
    theirs = [rel for rel in _files(out) if rel not in ours]
    clash = [rel for rel in theirs if rel in new_files]
    if clash:
        raise PublishError(f"--publish {out}: your file(s) {', '.join(clash[:5])} have the name of a "
                           f"file the publisher writes; nothing was replaced: rename them")
    for rel in theirs:  # carried over (hard link, else copy): never moved out of `out`
        dst = tmp / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(out / rel, dst)
        except OSError:
            shutil.copy2(out / rel, dst)
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def publish(runs_dir: Path, out: Path, title: str | None = None, data_dir: str | None = None,
            example_note: str | None = None) -> Path:
    out = Path(out).expanduser().resolve()
    old = _check_target(out)  # before any work: a folder that is not ours stops here
    data = StudyData.from_runs(Path(runs_dir), data_dir)
    if data.results.empty:
        raise PublishError(f"no finished judge results under {runs_dir}: nothing to publish")
    data.meta.update({"title": title, "note": example_note})
    return _build(data, out, old)


def rerender(folder: Path, title: str | None = None, note: str | None = None) -> Path:
    """Re-render a published study from its own ``data/`` (no runs folder needed)."""
    folder = Path(folder).expanduser().resolve()
    old = _check_target(folder)
    data = StudyData.load(folder / "data")
    if title:
        data.meta["title"] = title
    if note:
        data.meta["note"] = note
    return _build(data, folder, old)


def _build(data: StudyData, out: Path, old: dict) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.publish-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        data.save(tmp / "data")
        data.results.to_csv(tmp / "leaderboard.csv", index=False)
        figs = make_figures(data, tmp / "figures")
        (tmp / "README.md").write_text(render_readme(data, figs), encoding="utf-8")
        _swap_in(tmp, out, old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / "README.md"


def _grid_status(data: StudyData) -> str:
    lines = []
    for g in data.meta.get("grids", []):
        cells = g["cells"]
        base = {k: v for k, v in cells.items() if k.endswith("| full-data baseline")}
        real = {k: v for k, v in cells.items() if k not in base}
        bad = {k: v for k, v in cells.items() if v.get("state") != "ok"}
        ok_real = sum(v.get("state") == "ok" for v in real.values())
        state = "finished" if g.get("finished") else "not finished (running or stopped)"
        lines.append(f"- grid `{g['grid']}` ({g['experiment']}, {state}): {ok_real} of {len(real)} "
                     f"cells ok, and {sum(v.get('state') == 'ok' for v in base.values())} of "
                     f"{len(base)} full-data baseline(s)" + ("" if bad else "; no failure"))
        for k, v in bad.items():
            lines.append(f"  - **{v['state']}** `{k}`: {str(v.get('error', ''))[:300]}")
    return "\n".join(lines) + "\n" if lines else "_not run as a grid_\n"


def _fingerprints(data: StudyData) -> str:
    df = data.results
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
- **PWS** = 1 + (W - L) / (W + T + L), pooled over the eval sets the tables show (2 = always
  wins, 1 = even with the full-data model, 0 = always loses). Shown: selbench's `pws`
  (unparsed prompts left out); the CSV also has `pws_compat` (Cherry/Superfiltering rule:
  an unparsed order counts as a tie). The 100% column is 1.00 by definition.
- **A cell** = one comparison: the same setting (`setting_fp`: pool content, target model,
  resolved training recipe, generate settings, eval prompts, full-data baseline) and selector
  config (`selector_fp`, which includes the selector's code). A cell's value per seed is the
  mean over the judges its table names; a seed without one of them is marked, never averaged.
- **CIs.** One kind everywhere: percentile bootstrap over prompts of the per-prompt outcome
  averaged over the cell's seeds (it includes the seed noise that re-draws per prompt, and
  stays inside [0, 2]). Paired comparisons: the same, on the difference of two selectors'
  per-prompt values (the same resample for both).
- **Controls.** Null: every pair of seeds of one selector (no real difference: about 5% of
  their 95% CIs should exclude 0). Positive: oracle-clean vs oracle-corrupt on a pool with
  planted corruption (they must separate; if not, the study has no power).
- **Reference NLL** (judge-free): mean token NLL of each model on the gpt-3.5-turbo
  reference answers (DiverseEvol) with the generation template; token-weighted; lower is
  better; paired comparisons use each prompt's mean token NLL.
- **Answer length**: whitespace words of the generated answers; selected-response length:
  words of the training responses.
- **Proxy FLOPs (est.)**: gradient profile `6 P N T x members x epochs` (x2 when the norms
  are recorded in a separate pass), forward-only proxies (IFD) `2 P N T x 2`; P = proxy
  parameters, N = pool size, T = mean tokens per example.
"""


def render_readme(data: StudyData, figs: dict) -> str:
    df = data.results
    meta = data.meta
    sets = [s for s in df.eval_set.unique() if s != "pooled"]
    fig_md = []
    for paths in figs.values():
        for pth in paths:
            key = next((k for k in FIG_TEXT if pth.stem.startswith(k)), pth.stem)
            fig_md.append(f"### {pth.stem}\n\n{FIG_TEXT.get(key, '')}\n\n"
                          f"![{pth.stem}](figures/{pth.name})\n\n"
                          f"Data: [figures/{pth.stem}.csv](figures/{pth.stem}.csv)\n")
    vers = meta.get("versions") or {}
    parts = [
        f"# {meta.get('title') or 'selbench study'}\n",
        (meta["note"] + "\n") if meta.get("note") else "",
        "## Summary\n\n" + report.summary(data),
        "Everything below is drawn from the files in [data/](data/) (the source of truth; "
        "[leaderboard.csv](leaderboard.csv) is its results table), which were read from "
        "finished stage folders: nothing was recomputed to write it. `bench leaderboard "
        "--render <this folder>` re-renders it from data/ alone.\n",
        "## Commands\n\n```bash\n" + "\n".join(meta.get("commands") or []) + "\n```\n",
        "## Controls: can this study see a difference?\n\n" + report.controls_section(data)
        + report.corruption_section(data),
        "## How sure are we? Minimum detectable difference\n\n" + report.mde_section(data),
        "## Table 1: PWS vs the full-data model (pooled over "
        + " + ".join(sets) + ")\n\n" + table1_paper(df, "pooled"),
        "## Table 2: ablations (PWS delta vs the selector they ablate, same cell)\n\n"
        + table2_paper(df),
        *[f"## Table 1 on {es} only\n\n" + table1_paper(df, es) for es in sets],
        "## Seeds: PWS, spread, n\n\n" + report.seeds_section(data),
        "## Paired comparisons (same setting and ratio, same full-data model)\n\n"
        + report.paired_section(data),
        "## Answer length, length bias and selected-response length\n\n" + report.length_section(data),
        "## Length- and style-controlled PWS\n\n" + report.controlled_section(data),
        "## Judges: agreement and position consistency\n\n" + report.agreement_section(data)
        + "\n" + report.consistency_section(data),
        "## Reference-answer NLL (judge-free, its own column)\n\n" + report.refnll_section(data),
        "## Cost next to quality\n\n" + report.cost_section(data),
        "## Figures\n\n" + ("\n".join(fig_md) if fig_md else "_no figure could be drawn_\n"),
        "## Grid status\n\n" + _grid_status(data) + warnings_section(df) + report.skipped_section(data),
        "## All results\n\n" + LEGEND + "\n" + details(df) + "\n",
        "## Method notes\n\n" + METHOD.format(prompt_version=meta.get("prompt_version", "?")),
        "## Config fingerprints of every cell\n\n" + _fingerprints(data),
        "## Package versions\n\n" + report._md(sorted(vers.items()), ["package", "version"]),
    ]
    return "\n".join(p for p in parts if p)
