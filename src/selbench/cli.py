"""The `bench` command line: ls | run | plan | grid | leaderboard | judge | export | perf | plot
| corrupt | track.

A face only: each command parses its arguments, calls one function below and formats its
errors. The flags of `bench run` / `bench plan` are config keys; their help is the config
field's own documentation (``bench run --list-keys`` prints every key)."""
from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import yaml

from . import perf
from .benchmark.grid import (dump_cells, load_grid, plan_grid, render_grid_plan, render_summary,
                             reversed_order, run_grid)
from .benchmark.pipeline import Pipeline
from .benchmark.plan import PlanError, make_plan, render_plan
from .config import (ConfigError, all_keys, build_config, configs_root, key_doc, load_yaml_text,
                     read_yaml, to_dict)
from .corrupt import KIND_NAMES, make_corrupted_file, parse_kinds, record_path_for
from .data import EVAL_SETS, DataNotFound, PoolError, eval_set_name, load_eval_set, load_pool
from .export import export_answers, export_subset
from .judges import JUDGE_TYPES, judge_paths
from .judges.evaluate import evaluate as evaluate_judges, leaderboard_rows, render_leaderboard
from .judges.external import judge_files, render_result
from .judges.reparse import reparse_all
from .judges.stage import scrub_secrets
from .launch import Terminated
from .leaderboard import collect, render, write_leaderboard
from .leaderboard.plots import plot_trajectories
from .leaderboard.publish import publish, rerender
from .models import EMBEDDED_MODELS
from .perf import selftest
from .perf.common import BENCHMARKS
from .plugins import load_plugin
from .registry import RegistryError
from .runs import DamagedStage, DiskFull
from .selectors import SELECTORS, build_selector
from .track import (default_out_dir, prepare_pool, render_markdown, run_corruption_track,
                    selector_list, write_outputs)

# `bench run` / `bench plan` flags: (flag, config key, argparse type); help = the key's doc
RUN_FLAGS = [("--selector", "selector", str), ("--ratio", "ratios", str), ("--seed", "seed", int),
             ("--judge", "judges", str), ("--data-dir", "data.data_dir", str),
             ("--runs-dir", "runs_dir", str), ("--experiment", "experiment", str),
             ("--model", "model", str), ("--pool", "data.pool", str),
             ("--pool-size", "data.pool_size", int), ("--eval-limit", "data.eval_limit", int),
             ("--backend", "generate.backend", str), ("--device", "device", str),
             ("--threads", "threads", int)]


def _default_config_files(args) -> list[str]:
    if args.config:
        return args.config
    default = configs_root() / "default.yaml"
    return [str(default)] if default.exists() else []


def _existing_runs_dir(path: str, what: str) -> Path:
    """A runs folder that must already exist (reading commands never create one)."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ConfigError(f"{what}: runs folder {p} does not exist (give the --runs-dir that "
                          f"`bench run` / `bench grid` wrote to)")
    return p


def cmd_ls(args) -> int:
    print("selectors (needs: what it uses besides the pool):")
    for n in SELECTORS.names():
        cls = SELECTORS.get(n)
        al = SELECTORS.aliases_of(n)
        needs = ", ".join(cls.needs) if cls.needs else "-"
        print(f"  {n:<28} [{needs}] {cls.description}" + (f"  (aliases: {', '.join(al)})" if al else ""))
    print("judges (configs/judges/*.yaml):")
    for n, p in judge_paths().items():
        try:
            t = (read_yaml(p, "judge") or {}).get("type", "?")
        except ConfigError as e:
            t = f"? ({e})"
        print(f"  {n:<24} type={t}")
    print("judge types: " + ", ".join(JUDGE_TYPES.names()))
    print("eval sets:")
    for n in EVAL_SETS.names():
        es = EVAL_SETS.get(n)
        print(f"  {n:<12} {es.file}" + ("  [default]" if es.default else ""))
    print("embedded models (any hub id or local folder also works):")
    for n in EMBEDDED_MODELS.names():
        print(f"  {n:<24} {EMBEDDED_MODELS.get(n).description}")
    return 0


def _run_overrides(args) -> dict:
    o = {}
    for flag, key, _ in RUN_FLAGS:
        v = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if v is None:
            continue
        if key == "ratios":
            try:
                v = [float(x) for x in v.split(",")]
            except ValueError:
                raise ConfigError(f"--ratio {v!r}: expected a number in (0, 1] or a comma "
                                  f"list, e.g. --ratio 0.05,0.10") from None
        elif key == "judges":
            v = v.split(",")
        o[key] = v
    return o


def _print_config(cfg) -> int:
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
    return 0


def _list_keys() -> int:
    for key, tp, default, doc in all_keys():
        print(f"{key} ({tp}, default {default!r}): {doc}")
    return 0


def _silence_libraries() -> None:
    """--quiet: our stage lines only (no library warnings, dataset bars or step dicts)."""
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ["TQDM_DISABLE"] = "1"
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as tlog  # lazy: heavy; only with --quiet

    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    import datasets  # lazy: heavy; only with --quiet

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


def cmd_plan(args) -> int:
    if args.list_keys:
        return _list_keys()
    cfg = build_config(_default_config_files(args), _run_overrides(args), args.set)
    if args.print_config:
        return _print_config(cfg)
    plan = make_plan(cfg)
    print(render_plan(plan, cfg))
    return 2 if plan.problems else 0


def cmd_run(args) -> int:
    if args.dry_run or args.print_config or args.list_keys:
        return cmd_plan(args)
    if args.quiet:
        _silence_libraries()
    SELECTORS.canonical(args.selector) if args.selector else None  # did-you-mean early
    cfg = build_config(_default_config_files(args), _run_overrides(args), args.set)
    results = Pipeline(cfg, progress=not args.quiet).run([Path(sys.argv[0]).name, *sys.argv[1:]])
    df = collect(Path(cfg.runs_dir).expanduser().resolve())
    keys = {r["model_a"] for r in results}
    print(render(df[df.model_a.isin(keys)]))
    print(f"leaderboard: {Path(cfg.runs_dir).resolve() / 'leaderboard.md'}")
    return 0


def cmd_leaderboard(args) -> int:
    if args.render:
        readme = rerender(Path(args.render), title=args.title, note=args.note)
        print(f"re-rendered {readme.parent} from its data/ (nothing read from a runs folder)")
        return 0
    runs = _existing_runs_dir(args.runs_dir, "bench leaderboard")
    csv, md = write_leaderboard(runs)
    if args.publish:
        readme = publish(runs, Path(args.publish), title=args.title, data_dir=args.data_dir,
                         example_note=args.note)
        print(f"published {readme.parent}: README.md, leaderboard.csv, figures/")
        return 0
    print(md.read_text())
    print(f"wrote {csv} and {md}")
    return 0


def cmd_judge(args) -> int:
    if args.evaluate:
        if not args.reference:
            print("error: bench judge --evaluate needs --reference (a verdict file or folder)",
                  file=sys.stderr)
            return 2
        names = [n.strip() for n in (args.judge or "").split(",") if n.strip()]
        res = evaluate_judges(args.reference, names, args.runs_dir, args.out, args.data_dir,
                              args.answers, args.limit, args.seed, args.noise,
                              args.noise_temperature or None)
        print(render_leaderboard(leaderboard_rows(Path(res["out"]))))
        print(f"results: {res['out']} (leaderboard.md, leaderboard.csv, <judge>/evaluation.json)")
        return 0
    if args.answers_a or args.answers_b:
        if not (args.answers_a and args.answers_b and args.judge):
            print("error: bench judge needs --answers-a, --answers-b and --judge together",
                  file=sys.stderr)
            return 2
        res = judge_files(args.answers_a, args.answers_b, args.judge, args.runs_dir,
                          args.data_dir, args.eval_set)
        print(render_result(res))
        print(f"result: {res['folder']}")
        return 0
    if not args.reparse:
        print("error: bench judge needs --reparse, or --answers-a A --answers-b B --judge J",
              file=sys.stderr)
        return 2
    runs = _existing_runs_dir(args.runs_dir, "bench judge --reparse")
    n = reparse_all(runs)
    print(f"re-parsed {n} judge results from cached completions (no API calls)")
    write_leaderboard(runs)
    return 0


def cmd_grid(args) -> int:
    sets = list(args.set) + ([f"runs_dir={args.runs_dir}"] if args.runs_dir else [])
    grid = load_grid(args.grid, sets)
    if args.reverse:
        grid = reversed_order(grid)
    if args.list:
        print(dump_cells(grid))
        return 0
    planned = plan_grid(grid)
    print(render_grid_plan(grid, planned, verbose=args.verbose), flush=True)
    if args.dry_run:
        return 2 if planned["problems"] else 0
    status = run_grid(grid, progress=not args.quiet,
                      command=[Path(sys.argv[0]).name, *sys.argv[1:]])
    print(render_summary(status))
    print(f"grid status: {grid.status_path}")
    csv, md = write_leaderboard(grid.runs_root.parent)
    print(f"leaderboard: {md}")
    return 0 if all(v["state"] == "ok" for v in status["cells"].values()) else 1


def cmd_perf(args) -> int:
    return perf.main(args.what, args.rest)


def cmd_selftest(args) -> int:
    selftest.run(args)
    return 0


def cmd_export(args) -> int:
    if args.what == "subset":
        out = export_subset(args.folder, args.out, args.format)
    else:
        out = export_answers(args.folder, args.out, args.generator)
    print(f"wrote {out}")
    return 0


def cmd_plot(args) -> int:
    path = plot_trajectories(Path(args.run))
    print(f"wrote {path}")
    return 0


def _ratio_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--ratio {text!r}: expected a number in (0, 1] or a comma list, "
                          f"e.g. --ratio 0.05,0.10") from None


def _selector_params(items: list[str]) -> dict[str, dict]:
    """``--param SELECTOR.KEY=VALUE`` (repeatable; nested keys with dots; YAML values)."""
    out: dict[str, dict] = {}
    for item in items:
        key, eq, value = item.partition("=")
        name, dot, path = key.partition(".")
        if not eq or not dot or not path:
            raise ConfigError(f"--param {item!r}: expected SELECTOR.KEY=VALUE, e.g. "
                              f"--param ifd.batch_size=8")
        node = out.setdefault(SELECTORS.canonical(name.strip()), {})
        parts = path.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        try:
            node[parts[-1]] = load_yaml_text(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"--param {item!r}: the value is not valid YAML ({e})") from None
    return out


def cmd_corrupt(args) -> int:
    kinds = parse_kinds(args.kinds)  # an unknown kind fails before the pool is read
    out = Path(args.out).expanduser()
    for p in (out, record_path_for(out)):
        if p.exists():
            raise ConfigError(f"{p} exists; a corrupted pool is never overwritten (give "
                              f"another --out, or remove it)")
    pool = load_pool(args.pool, args.data_dir, args.pool_size, args.sample_seed)
    path, side, rec = make_corrupted_file(pool, out, args.fraction, kinds, args.seed)
    counts = ", ".join(f"{k} {v}" for k, v in rec["counts"].items())
    print(f"corrupted {rec['n_corrupted']} of {rec['n_rows']} rows ({counts}) of "
          f"{pool.describe()}")
    dropped = {k: v for k, v in rec["dropped"].items() if v}
    if dropped:
        print(f"not corrupted after all (left clean, counted in the record): {dropped}")
    print(f"wrote {path}\nwrote {side} (the record: which rows changed and how)")
    return 0


def cmd_track(args) -> int:
    selectors = selector_list(args.selectors, controls=not args.no_controls)
    params = _selector_params(args.param)
    for name in params:
        if name not in selectors:
            raise ConfigError(f"--param {name}.*: {name} is not among the track's selectors "
                              f"({', '.join(selectors)})")
    for name in selectors:  # a bad selector param fails before any work
        build_selector(name, params.get(name))
    ratios = _ratio_list(args.ratio)
    kinds = parse_kinds(args.kinds) if args.kinds else None
    out = Path(args.out).expanduser() if args.out else default_out_dir(
        args.runs_dir, args.pool, args.pool_size, args.sample_seed, args.fraction, kinds, args.seed)
    pool, record = prepare_pool(args.pool, out, args.data_dir, args.pool_size, args.sample_seed,
                                args.fraction, kinds, args.seed)
    defaults = build_config([str(configs_root() / "default.yaml")], {})
    target_model = args.model or defaults.model
    eval_items = {}
    if any("target" in SELECTORS.get(n).needs for n in selectors):  # dsir, embed-target
        sets = args.eval_sets.split(",") if args.eval_sets else defaults.data.eval_sets
        eval_items = {eval_set_name(es): load_eval_set(es, args.data_dir) for es in sets}
    res = run_corruption_track(pool, record, selectors, ratios, out, seed=args.seed,
                               n_boot=args.boot, params=params, raw_scores=args.raw_scores,
                               device=args.device, data_dir=args.data_dir,
                               progress=args.progress, target_model=target_model,
                               eval_items=eval_items)
    paths = write_outputs(res, out)
    print(render_markdown(res))
    print(f"wrote {paths['md']}, {paths['csv'].name}, {paths['json'].name}")
    return 1 if any("error" in s for s in res["selectors"]) else 0


def _corruption_args(sub) -> None:
    c = sub.add_parser("corrupt", help="a corrupted copy of a pool (planted corruption, "
                       "deterministic from a seed) with a record of every changed row")
    c.add_argument("pool", help="the clean pool: a known name (alpaca), a .json/.jsonl file "
                   "or a hub id")
    c.add_argument("--out", required=True, metavar="FILE", help="the corrupted pool (.json or "
                   ".jsonl); its record <stem>.corruption.json goes next to it; never "
                   "overwritten")
    c.add_argument("--fraction", type=float, default=0.3, help="share of rows to corrupt "
                   "(default 0.3), split evenly over the kinds")
    c.add_argument("--kinds", help=f"comma list of {', '.join(KIND_NAMES)} (default: all)")
    c.add_argument("--seed", type=int, default=0, help="corruption seed (default 0)")
    c.add_argument("--pool-size", type=int, help="corrupt a seeded sample of N rows")
    c.add_argument("--sample-seed", type=int, default=0, help="seed of that sample (default 0)")
    c.add_argument("--data-dir", help="data folder (else $SELBENCH_DATA_DIR)")
    c.set_defaults(fn=cmd_corrupt)
    _common(c)

    t = sub.add_parser("track", help="ground-truth tracks without training: `track corruption` "
                       "= AUROC and clean share of selectors on a pool with planted corruption")
    t.add_argument("what", choices=["corruption"], help="the track")
    t.add_argument("--pool", required=True, help="a corrupted pool file made by `bench corrupt` "
                   "(its record next to it), or a clean pool (known name, file, hub id) that "
                   "the track corrupts itself (--fraction, --kinds, --seed)")
    t.add_argument("--selectors", default="", help="comma list of registered selectors; "
                   "random, oracle-clean and oracle-corrupt are always added (--no-controls)")
    t.add_argument("--no-controls", action="store_true", help="do not add the three controls")
    t.add_argument("--ratio", default="0.05,0.1", help="selection ratios (default 0.05,0.1)")
    t.add_argument("--fraction", type=float, help="clean pool: share to corrupt (default 0.3)")
    t.add_argument("--kinds", help=f"clean pool: comma list of {', '.join(KIND_NAMES)} "
                   f"(default: all)")
    t.add_argument("--seed", type=int, default=0, help="corruption and selection seed (default 0)")
    t.add_argument("--pool-size", type=int, help="a seeded sample of N rows of the pool")
    t.add_argument("--sample-seed", type=int, default=0, help="seed of that sample (default 0)")
    t.add_argument("--boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    t.add_argument("--raw-scores", action="store_true", help="AUROC on the scores as returned "
                   "(no ratio-1 run to find rows a filter never takes)")
    t.add_argument("--param", action="append", default=[], metavar="SELECTOR.KEY=VALUE",
                   help="a selector param, e.g. --param ifd.batch_size=8 (repeatable)")
    t.add_argument("--out", metavar="DIR", help="output folder (default: <runs-dir>/track/"
                   "corruption-<pool>-<h8>): track.md/.csv/.json and the selection cache")
    t.add_argument("--runs-dir", default="runs", help="runs folder for the default --out")
    t.add_argument("--data-dir", help="data folder (else $SELBENCH_DATA_DIR)")
    t.add_argument("--device", default="auto", help="device for selectors that use a model")
    t.add_argument("--model", help="target model whose tokenizer token-counting selectors use "
                   "(default: configs/default.yaml's model)")
    t.add_argument("--eval-sets", help="target prompts of selectors that need them (dsir, "
                   "embed-target): comma list (default: configs/default.yaml's eval sets, all "
                   "prompts)")
    t.add_argument("--progress", action="store_true", help="selector progress output")
    t.set_defaults(fn=cmd_track)
    _common(t)


def _common(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """Options every command takes, before or after the command name."""
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                        dest="plugin" if top else "plugin_after",
                        help="import a selector plugin file (registers its selectors); repeatable")


def build_parser() -> argparse.ArgumentParser:
    try:
        ver = version("selbench")
    except PackageNotFoundError:
        ver = "unknown"
    p = argparse.ArgumentParser(
        prog="bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  bench run --selector gsnr --ratio 0.05\n  bench plan --config "
               "configs/paper/alpaca-llama2-7b-lora.yaml --selector ifd\n  bench leaderboard")
    p.add_argument("--version", action="version", version=f"selbench {ver}")
    _common(p, top=True)
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    ls = sub.add_parser("ls", help="list selectors (and what each needs), judges, eval sets, models")
    ls.set_defaults(fn=cmd_ls)
    _common(ls)

    r = sub.add_parser("run", help="select -> train -> generate -> judge -> leaderboard")
    pl_ = sub.add_parser("plan", help="resolve a run without computing: stages done/to run, "
                         "needs, memory per device, steps, FLOPs, hours, judge calls and cost")
    for parser in (r, pl_):
        _run_args(parser)
    r.add_argument("--dry-run", action="store_true", help="print the plan (= bench plan) and stop")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(fn=cmd_run)
    pl_.set_defaults(fn=cmd_plan)

    lb = sub.add_parser("leaderboard", help="CSV + markdown from every finished run")
    lb.add_argument("--runs-dir", default="runs", help="the runs folder to read (must exist)")
    lb.add_argument("--publish", metavar="DIR", help="write a self-contained study folder: "
                    "README.md (tables, statistics, figures, method notes), the CSV, figures/")
    lb.add_argument("--render", metavar="DIR", help="re-render a published study folder from its "
                    "own data/ (no runs folder needed)")
    lb.add_argument("--title", help="title of the published README")
    lb.add_argument("--note", help="a paragraph placed under the title of the published README "
                                   "(e.g. what scale the study is and how to read it)")
    lb.add_argument("--data-dir", help="data folder (pool rows and published subsets for the "
                    "figures; else $SELBENCH_DATA_DIR)")
    lb.set_defaults(fn=cmd_leaderboard)
    _common(lb)
    _rest(sub)
    _corruption_args(sub)
    g = sub.add_parser("grid", help="selectors x ratios x pools x models x regimes x seeds in "
                       "one command, on the shared stage cache (prints the plan first)")
    g.add_argument("grid", help="grid YAML (e.g. configs/grid-smoke.yaml)")
    g.add_argument("--dry-run", action="store_true", help="print the plan (stages, hours, cost, "
                   "MDE, problems) and stop; exit 2 on problems")
    g.add_argument("--list", action="store_true", help="list the expanded cells and stop")
    g.add_argument("--verbose", action="store_true", help="the plan lists every cell")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.add_argument("--reverse", action="store_true",
                   help="run the cells last to first (status in <grid>-reverse.json): start it "
                        "as a second process next to the forward one to use two cores/GPUs")
    g.add_argument("--runs-dir", help=key_doc("runs_dir") + " (every cell)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key in every cell")
    g.set_defaults(fn=cmd_grid)
    _common(g)
    return p


def _run_args(r) -> None:
    r.add_argument("--config", action="append", help="YAML config (repeatable, later wins); "
                   "default: configs/default.yaml (CPU smoke scale)")
    for flag, key, tp in RUN_FLAGS:
        doc = key_doc(key)
        if key == "ratios":
            doc += " One ratio or a comma list."
        elif key == "judges":
            doc += " Comma separated."
        r.add_argument(flag, type=tp, help=f"{doc} (config key {key})")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set train.learning_rate=1e-4 "
                        "(--list-keys lists them)")
    r.add_argument("--print-config", action="store_true",
                   help="print the resolved config (all layers applied) as YAML and stop")
    r.add_argument("--list-keys", action="store_true",
                   help="list every config key with its type, default and documentation")
    _common(r)


def _rest(sub) -> None:
    j = sub.add_parser("judge", help="re-parse cached judgments, or judge two answer files")
    j.add_argument("--reparse", action="store_true",
                   help="re-apply the parser to cached raw completions (no API calls)")
    j.add_argument("--answers-a", metavar="A", help="answers of the model under test (selbench, "
                   "FastChat or alpaca_eval format; a file or a folder)")
    j.add_argument("--answers-b", metavar="B", help="answers of the baseline it is compared with")
    j.add_argument("--judge", help="judge name from configs/judges (or a YAML path)")
    j.add_argument("--eval-set", help="eval set of answer files without prompts (FastChat)")
    j.add_argument("--data-dir", help="data folder with eval_prompts/ (else $SELBENCH_DATA_DIR)")
    j.add_argument("--runs-dir", default="runs", help="runs folder (results of --answers-a/-b go "
                   "to <runs>/external/judge/<judge>/, where the leaderboard reads them)")
    j.add_argument("--evaluate", action="store_true",
                   help="score judges against reference verdicts on the same pairs (agreement, "
                        "kappa, position consistency, P(longer), P(first), unparsed, cost, "
                        "time): --judge J1,J2,... --reference FILE_OR_FOLDER")
    j.add_argument("--reference", metavar="PATH", help="reference verdicts for --evaluate: a "
                   "selbench judge folder, Cherry/Superfiltering review JSON (file or folder), "
                   "FastChat review JSONL or llm_judge *_pair.jsonl, alpaca_eval annotations")
    j.add_argument("--answers", metavar="DIR", help="answer files of a FastChat reference "
                   "(answer_*.jsonl or model_answer/), when not next to it")
    j.add_argument("--limit", type=int, help="--evaluate on a seeded sample of N pairs")
    j.add_argument("--seed", type=int, default=0, help="seed of the --limit / --noise samples")
    j.add_argument("--noise", type=int, default=0, metavar="N", help="judge noise: judge N "
                   "sampled pairs again (same settings; and twice with sampling)")
    j.add_argument("--noise-temperature", type=float, default=0.7, help="sampling temperature "
                   "of the --noise repeats (0: same settings only)")
    j.add_argument("--out", help="--evaluate results folder (default <runs>/judge-eval/<reference>)")
    j.set_defaults(fn=cmd_judge)
    _common(j)

    pf = sub.add_parser("perf", help="benchmarks; results written to a JSON + markdown file")
    pf.add_argument("what", choices=BENCHMARKS.names(),
                    help="; ".join(f"{n}: {BENCHMARKS.get(n).help}" for n in BENCHMARKS.names()))
    pf.add_argument("rest", nargs=argparse.REMAINDER)
    pf.set_defaults(fn=cmd_perf)

    st = sub.add_parser("selftest", help="prove the CUDA path in minutes on the embedded models "
                        "(bf16 LoRA/full training, 2-rank launch, norms vs CPU, IFD, vLLM + LoRA); "
                        "timings to perf/selftest-cuda.json; without CUDA it says so and exits 0")
    selftest.add_args(st)
    st.add_argument("--out", default="perf", help="folder for selftest-<device>.json and .md")
    st.add_argument("--data-dir", default=None, help="data folder (Alpaca rows; else synthetic rows)")
    st.set_defaults(fn=cmd_selftest)

    ex = sub.add_parser("export", help="a selected subset (JSONL / HF dataset, with source "
                        "positions) or a model's answers (alpaca_eval format)")
    ex.add_argument("what", choices=["subset", "answers"])
    ex.add_argument("folder", help="runs/<exp>/select/<key> (subset) or runs/<exp>/generate/<key> (answers)")
    ex.add_argument("--out", required=True, help="output file (jsonl / json) or folder (--format hf)")
    ex.add_argument("--format", default="jsonl", choices=["jsonl", "hf"], help="subset format")
    ex.add_argument("--generator", help="answers: the generator name (default: the folder name)")
    ex.set_defaults(fn=cmd_export)
    _common(ex)

    pl = sub.add_parser("plot", help="figures")
    pl.add_argument("kind", choices=["trajectories"])
    pl.add_argument("run", help="a profiles/<proxy>-<h8> folder, or a runs/<experiment> folder")
    pl.set_defaults(fn=cmd_plot)
    _common(pl)


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every expected failure (bad input, the project's errors, OS errors
    such as a full disk or a permission problem) prints one line ``error: ...`` (secrets
    scrubbed) and returns 2; ``--debug`` (anywhere on the line) shows the traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("SELBENCH_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (also SELBENCH_DEBUG=1)")
    args = parser.parse_args(argv)
    if getattr(args, "fn", None) is None:  # `bench` alone
        parser.print_help()
        return 0
    try:
        for path in [*args.plugin, *getattr(args, "plugin_after", [])]:
            load_plugin(path)
        return args.fn(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted: finished stages and judge calls are kept; rerun the same "
              "command to resume", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated (SIGTERM): launched workers were stopped; finished stages and judge "
              "calls are kept; rerun the same command to resume", file=sys.stderr)
        return 143
    except (ConfigError, RegistryError, PoolError, DataNotFound, PlanError, DamagedStage,
            ValueError, OSError, RecursionError, RuntimeError) as e:
        if debug:
            print(scrub_secrets("".join(traceback.format_exc())), file=sys.stderr, end="")
        print(f"error: {scrub_secrets(_one_line(e))}", file=sys.stderr)
        return 2


def _one_line(e: BaseException) -> str:
    if isinstance(e, PlanError):  # one line per problem
        return "\n".join(" ".join(line.split()) if i == 0 else "  " + " ".join(line.split())
                         for i, line in enumerate(str(e).splitlines()))
    if isinstance(e, RecursionError):
        text = "input nested too deeply (RecursionError); run with --debug for the traceback"
    elif isinstance(e, DiskFull):
        text = e.strerror or str(e)
    elif isinstance(e, OSError) and e.strerror:
        where = " ".join(str(f) for f in (e.filename, e.filename2) if f)
        text = f"{e.strerror}" + (f": {where}" if where else "")
        if e.errno == 28:
            text = f"no space left on device{': ' + where if where else ''}; free space and " \
                   f"rerun the same command (finished stages and judge calls are kept)"
    else:
        text = str(e) or type(e).__name__
        if isinstance(e, (RuntimeError, OSError)) and type(e).__name__ not in text:
            text = f"{type(e).__name__}: {text}"
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
