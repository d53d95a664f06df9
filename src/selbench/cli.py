"""The `bench` command line: ls | run | leaderboard | judge | perf | plot."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _default_config_files(args) -> list[str]:
    if args.config:
        return args.config
    default = REPO_CONFIGS / "default.yaml"
    return [str(default)] if default.exists() else []


def cmd_ls(args) -> int:
    from .data import EVAL_SETS
    from .judges import JUDGE_TYPES, judge_paths
    from .models import EMBEDDED_MODELS
    from .selectors import SELECTORS

    print("selectors:")
    for n in SELECTORS.names():
        cls = SELECTORS.get(n)
        al = SELECTORS.aliases_of(n)
        print(f"  {n:<16} {cls.description}" + (f"  (aliases: {', '.join(al)})" if al else ""))
    print("judges (configs/judges/*.yaml):")
    for n, p in judge_paths().items():
        import yaml

        t = (yaml.safe_load(p.read_text()) or {}).get("type", "?")
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
    if args.selector:
        o["selector"] = args.selector
    if args.ratio is not None:
        from .config import ConfigError

        try:
            o["ratios"] = [float(x) for x in args.ratio.split(",")]
        except ValueError:
            raise ConfigError(f"--ratio {args.ratio!r}: expected a number in (0, 1] or a comma "
                              f"list, e.g. --ratio 0.05,0.10") from None
    if args.seed is not None:
        o["seed"] = args.seed
    if args.judge:
        o["judges"] = args.judge.split(",")
    for flag, key in (("data_dir", "data.data_dir"), ("runs_dir", "runs_dir"),
                      ("experiment", "experiment"), ("model", "model"), ("pool", "data.pool"),
                      ("pool_size", "data.pool_size"), ("eval_limit", "data.eval_limit"),
                      ("backend", "generate.backend"), ("device", "device"),
                      ("threads", "threads")):
        v = getattr(args, flag, None)
        if v is not None:
            o[key] = v
    return o


def cmd_plan(args) -> int:
    from .config import build_config
    from .plan import make_plan, render_plan

    cfg = build_config(_default_config_files(args), _run_overrides(args), args.set)
    plan = make_plan(cfg)
    print(render_plan(plan, cfg))
    return 2 if plan.problems else 0


def cmd_run(args) -> int:
    from .benchmark.pipeline import Pipeline
    from .config import build_config
    from .selectors import SELECTORS

    if args.dry_run:
        return cmd_plan(args)
    SELECTORS.canonical(args.selector) if args.selector else None  # did-you-mean early
    cfg = build_config(_default_config_files(args), _run_overrides(args), args.set)
    results = Pipeline(cfg, progress=not args.quiet).run([Path(sys.argv[0]).name, *sys.argv[1:]])
    from .leaderboard import collect, render

    df = collect(Path(cfg.runs_dir).expanduser().resolve())
    keys = {r["model_a"] for r in results}
    print(render(df[df.model_a.isin(keys)]))
    print(f"leaderboard: {Path(cfg.runs_dir).resolve() / 'leaderboard.md'}")
    return 0


def cmd_leaderboard(args) -> int:
    from .leaderboard import write_leaderboard

    csv, md = write_leaderboard(Path(args.runs_dir))
    print(md.read_text())
    print(f"wrote {csv} and {md}")
    return 0


def cmd_judge(args) -> int:
    from .judges.reparse import reparse_all

    n = reparse_all(Path(args.runs_dir))
    print(f"re-parsed {n} judge results from cached completions (no API calls)")
    from .leaderboard import write_leaderboard

    write_leaderboard(Path(args.runs_dir))
    return 0


def cmd_perf(args) -> int:
    from . import perf

    return perf.main(args.what, args.rest)


def cmd_plot(args) -> int:
    from .leaderboard.plots import plot_trajectories

    path = plot_trajectories(Path(args.run))
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("ls", help="list selectors, judges, eval sets, models").set_defaults(fn=cmd_ls)

    r = sub.add_parser("run", help="select -> train -> generate -> judge -> leaderboard")
    pl_ = sub.add_parser("plan", help="resolve a run without computing: stages done/to run, "
                         "needs and whether they are reachable, steps, FLOPs, judge calls")
    for parser in (r, pl_):
        _run_args(parser)
    r.add_argument("--dry-run", action="store_true", help="print the plan (= bench plan) and stop")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(fn=cmd_run)
    pl_.set_defaults(fn=cmd_plan)

    lb = sub.add_parser("leaderboard", help="CSV + markdown from every finished run")
    lb.add_argument("--runs-dir", default="runs")
    lb.set_defaults(fn=cmd_leaderboard)
    _rest(sub)
    return p


def _run_args(r) -> None:
    r.add_argument("--config", action="append", help="YAML config (repeatable, later wins); "
                   "default: configs/default.yaml (CPU smoke scale)")
    r.add_argument("--selector")
    r.add_argument("--ratio", help="one ratio or a comma list, each in (0, 1]")
    r.add_argument("--seed", type=int)
    r.add_argument("--judge", help="judge name(s) from configs/judges, comma separated")
    r.add_argument("--data-dir", help="folder with train/ and eval_prompts/ "
                   "(else $SELBENCH_DATA_DIR)")
    r.add_argument("--runs-dir")
    r.add_argument("--experiment")
    r.add_argument("--model")
    r.add_argument("--pool")
    r.add_argument("--pool-size", type=int)
    r.add_argument("--eval-limit", type=int)
    r.add_argument("--backend", choices=["hf", "vllm"])
    r.add_argument("--device")
    r.add_argument("--threads", type=int)
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set train.learning_rate=1e-4")


def _rest(sub) -> None:
    j = sub.add_parser("judge", help="judge maintenance")
    j.add_argument("--reparse", action="store_true", required=True,
                   help="re-apply the parser to cached raw completions (no API calls)")
    j.add_argument("--runs-dir", default="runs")
    j.set_defaults(fn=cmd_judge)

    pf = sub.add_parser("perf", help="benchmarks; results written to a JSON + markdown file")
    pf.add_argument("what", choices=["gsnr", "ifd", "spice", "grads"])
    pf.add_argument("rest", nargs=argparse.REMAINDER)
    pf.set_defaults(fn=cmd_perf)

    pl = sub.add_parser("plot", help="figures")
    pl.add_argument("kind", choices=["trajectories"])
    pl.add_argument("run", help="a profiles/<proxy>-<h8> folder, or a runs/<experiment> folder")
    pl.set_defaults(fn=cmd_plot)


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError
    from .data import DataNotFound, PoolError
    from .plan import PlanError
    from .registry import RegistryError

    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ConfigError, RegistryError, PoolError, DataNotFound, PlanError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
