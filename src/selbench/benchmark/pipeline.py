"""`bench run`: data -> select -> train -> generate -> refnll -> judge -> leaderboard, every
stage cached (keys and folders: :mod:`selbench.benchmark.stages`, :mod:`selbench.runs`).

The pipeline plans itself first (:func:`~.plan.make_plan` on its own data and judges) and
stops on any problem before computing anything; the judges are built once per run and
handed to the plan and to every judge stage."""
from __future__ import annotations

import json
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from ..config import ConfigError, RunConfig, stable_hash, to_dict
from ..hardware import describe as hardware_description, pick_device, resolve_precision
from ..judges import Judge, load_judge
from ..judges.base import CompletionCache
from ..judges.stage import build_items, judge_items, reduce, usage_of, write_rows
from ..launch import run_workers, uses_launcher, write_job_rows
from ..leaderboard import write_leaderboard
from ..models import load_tokenizer, resolve_model
from ..registry import RegistryError
from ..runs import RunDir, StageKey, experiment_root, utc_iso, write_manifest
from ..selectors import SelectionContext, build_selector
from .generate import (eval_prompts, generate_cache_config, generate_hf, generate_vllm,
                       read_answers, require_vllm, write_answers)
from .plan import PlanError, Problem, make_plan
from .refnll import score_references, summarize as summarize_nll
from .stages import RunData, Stages, load_run_data, train_processes
from .train import load_trained, train_model


class Pipeline:
    def __init__(self, cfg: RunConfig, progress: bool = True, log=print):
        self.cfg, self.progress, self.log = cfg, progress, log
        self.root = experiment_root(cfg.runs_dir, cfg.experiment)
        self.rd = RunDir(self.root)
        self.device = pick_device(cfg.device)
        self.data: RunData | None = None
        self.keys: Stages | None = None
        self.judges: dict[str, Judge] = {}
        self.stage_dirs: dict[str, str] = {}
        self.stage_times: list[dict] = []  # per stage: status, started_at (UTC), seconds
        self._began: dict[str, tuple[str, float]] = {}
        self.n_stages, self.stage_no = 0, 0
        if cfg.threads:
            import torch  # lazy: heavy; only when the thread count is set

            torch.set_num_threads(cfg.threads)

    # ------------------------------------------------------------------ data
    def load_data(self) -> RunData:
        self.use_data(load_run_data(self.cfg))
        for line in self.data.describe():
            self.log(f"[data]   {line}")
        return self.data

    def use_data(self, data: RunData) -> None:
        """Run on data loaded elsewhere (a grid's shared pool, a test's own prompts)."""
        self.data = data
        self.keys = Stages(self.cfg, data, self.device)

    @property
    def pool(self):
        return self.data.pool

    @property
    def evals(self) -> dict[str, list[dict]]:
        return self.data.evals

    # ------------------------------------------------------------------ select
    def select(self, selector, ratio: float) -> tuple[StageKey, dict]:
        cfg = self.cfg
        key = self.keys.select_key(selector, ratio)

        def build(tmp: Path) -> None:
            ctx = SelectionContext(seed=cfg.seed, device=self.device, run_dir=self.rd,
                                   pool_key=self.keys.pool_hash, data_dir=cfg.data.data_dir,
                                   log=self.log, progress=self.progress, launch=cfg.launch,
                                   shard_root=self.rd.shard_root, eval_items=self.data.evals,
                                   judges=self.judges, target_model=cfg.model)
            sel = selector.run(self.pool, ratio, ctx)
            np.save(tmp / "scores.npy", sel.scores)
            info = {**sel.info, **ctx.notes,  # the run's own fields win over a selector's
                    "selector": selector.name, "description": selector.description,
                    "selector_meta": selector.meta(), "ratio": ratio, "seed": cfg.seed,
                    "pool_size": len(self.pool), "pool": self.data.pool_record(cfg),
                    "device": self.device}
            (tmp / "subset.json").write_text(json.dumps(
                {"indices": sel.indices, "ids": [self.pool.rows[i]["id"] for i in sel.indices]}))
            (tmp / "info.json").write_text(json.dumps(info, indent=2, default=str))
            msg = f"[select] {selector.name} r={ratio:g}: {len(sel.indices)}/{len(self.pool)} examples"
            if "filter_report" in sel.info:
                msg += f"; {sel.info['filter_report']}"
            self.log(msg + f" ({info['selection_seconds']:.1f}s)")

        folder = self.rd.cached(key, build, selector.cache_config(), log=self.stage_log)
        self.record_stage(key, folder)
        subset = json.loads((folder / "subset.json").read_text())
        info = json.loads((folder / "info.json").read_text())
        return key, {**subset, "info": info}

    # ------------------------------------------------------------------ train
    def train(self, name: str, indices: list[int] | None) -> StageKey:
        cfg = self.cfg
        rows = self.keys.train_rows(indices)
        key = self.keys.train_key(name, indices)
        name = key.name
        ident = self.keys.train_identity()

        def build(tmp: Path) -> None:
            if uses_launcher(cfg.launch, "train"):
                job = self.rd.job_dir(key)
                write_job_rows(job / "rows.jsonl", rows)
                run_workers("train", {"model": cfg.model, "rows_file": str(job / "rows.jsonl"),
                                      "train": to_dict(cfg.train), "out": str(tmp),
                                      "device": self.device, "precision": ident["precision"],
                                      "processes": train_processes(cfg),
                                      "report_to": cfg.report_to},
                            cfg.launch, job, self.log)
                shutil.rmtree(job, ignore_errors=True)
                info = json.loads((tmp / "train.json").read_text())
            else:
                info = train_model(cfg.model, rows, cfg.train, tmp, self.device, self.progress,
                                   report_to=cfg.report_to, precision=ident["precision"])
            self.log(f"[train]  {name}: {info['examples']} examples, {info['steps']} steps, "
                     f"{info['seconds']:.0f}s, final loss {info['final_loss']}")
            for w in info.get("warnings", []):
                self.log(f"[warn]   train {name}: {w}")

        folder = self.rd.cached(key, build, {"train": to_dict(cfg.train), "resolved": ident,
                                             "model": cfg.model, "n_examples": len(rows)},
                                log=self.stage_log)
        self.record_stage(key, folder)
        return key

    def train_warnings(self, key: StageKey) -> list[str]:
        info = json.loads((self.rd.path(key) / "train.json").read_text())
        return [f"subset model: {w}" for w in info.get("warnings", [])]

    # ------------------------------------------------------------------ generate
    def generate(self, train_key: StageKey) -> StageKey:
        cfg = self.cfg
        gcfg = cfg.generate
        template = self.keys.template()
        key = self.keys.generate_key(train_key)
        if gcfg.backend == "vllm" and not self.rd.done(key):
            require_vllm()  # one-line error before any work; hf needs nothing extra

        def build(tmp: Path) -> None:
            tfolder = self.rd.path(train_key)
            tok = load_tokenizer(cfg.model, padding_side="left")
            if gcfg.backend == "vllm":
                # LoRA: one engine on the base model serves every adapter of the run (the
                # full-data and each subset model); full fine-tuning: one engine per model
                lora = cfg.train.method == "lora"
                adapter = tfolder / "model" if lora else None
                base = resolve_model(cfg.model) if lora else str(tfolder / "model")
                allp = [(es, eval_prompts(items, template, tok)) for es, items in self.evals.items()]
                flat = [p for _, ps in allp for p in ps]
                outs = generate_vllm(base, adapter, flat, gcfg,
                                     max(cfg.train.lora_r, 8) if lora else None, tokenizer=tok,
                                     tokenizer_path=resolve_model(cfg.model), device=self.device,
                                     progress=self.progress)
                pos = 0
                for es, ps in allp:
                    write_answers(tmp, es, self.evals[es], outs[pos:pos + len(ps)])
                    pos += len(ps)
                return
            model = load_trained(cfg.model, tfolder, cfg.train.method, self.device)
            for es, items in self.evals.items():
                answers = generate_hf(model, tok, eval_prompts(items, template, tok), gcfg,
                                      self.progress, desc=f"generate {es}")
                write_answers(tmp, es, items, answers)

        folder = self.rd.cached(key, build, {"generate": to_dict(gcfg), "template": template,
                                             "resolved": generate_cache_config(gcfg, self.device),
                                             "train": train_key.key}, log=self.stage_log)
        self.record_stage(key, folder)
        return key

    # ------------------------------------------------------------------ reference NLL
    def refnll(self, train_key: StageKey) -> dict:
        """Judge-free metric: mean token NLL of the model on reference answers (cached)."""
        cfg = self.cfg
        template = self.keys.template()
        key = self.keys.refnll_key(train_key)
        items = self.data.references
        max_len = cfg.data.reference_max_length

        def build(tmp: Path) -> None:
            tok = load_tokenizer(cfg.model, padding_side="right")
            model = load_trained(cfg.model, self.rd.path(train_key), cfg.train.method, self.device)
            rows = score_references(model, tok, items, template, max_len)
            with (tmp / "per_prompt.jsonl").open("w") as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
            res = {"train_key": train_key.key, "template": template,
                   "max_length": max_len, "summary": summarize_nll(rows)}
            (tmp / "result.json").write_text(json.dumps(res, indent=2))
            p = res["summary"].get("pooled", {})
            self.log(f"[refnll] {train_key.name}: reference NLL {p.get('nll', float('nan')):.4f} "
                     f"over {p.get('tokens', 0)} tokens")

        folder = self.rd.cached(key, build, {"template": template, "max_length": max_len,
                                             "train": train_key.key}, log=self.stage_log)
        self.record_stage(key, folder)
        return json.loads((folder / "result.json").read_text())

    # ------------------------------------------------------------------ judge
    def judge(self, judge: Judge | str, gen_a: StageKey, gen_b: StageKey, row_meta: dict) -> dict:
        if isinstance(judge, str):
            judge = self.judges.get(judge) or load_judge(judge)
        cache = CompletionCache(self.rd.judge_cache(judge.name))
        key = self.keys.judge_key(judge, gen_a, gen_b)

        def build(tmp: Path) -> None:
            fa, fb = self.rd.path(gen_a), self.rd.path(gen_b)
            answers_a = {es: read_answers(fa, es) for es in self.evals}
            answers_b = {es: read_answers(fb, es) for es in self.evals}
            recs = build_items(answers_a, answers_b,
                               expected={es: [it["id"] for it in v] for es, v in self.evals.items()},
                               sources=(str(fa), str(fb)))
            counts = judge_items(judge, recs, cache, self.progress)
            rows, summary = reduce(recs, cache, seed=self.cfg.seed)
            write_rows(tmp / "judgments.jsonl", rows)
            usage = usage_of(recs, cache)
            result = {**row_meta, "judge": judge.name, "judge_kind": judge.kind,
                      "usage": usage, "cost_usd": judge.cost(usage),
                      "judge_model": judge.judge_model, "calls": counts,
                      "judge_stats": judge.stats, "summary": summary,
                      "model_a": gen_a.key, "model_b": gen_b.key}
            (tmp / "result.json").write_text(json.dumps(result, indent=2, default=str))
            p = summary["pooled"]
            self.log(f"[judge]  {judge.name}: W/T/L {p['win']}/{p['tie']}/{p['lose']} "
                     f"unparsed {p['unparsed']} PWS {p['pws']:.3f} "
                     f"({counts['new']} new calls, {counts['cached']} cached)")

        folder = self.rd.cached(key, build, judge.cache_identity(), log=self.stage_log)
        self.record_stage(key, folder)
        return json.loads((folder / "result.json").read_text())

    # ------------------------------------------------------------------ all
    def stage_log(self, msg: str) -> None:
        """Stage lines with an overall counter ("[run]    stage 3/9 train/..."), counting the
        select/train/generate/refnll/judge stages the plan listed; notes when each began."""
        t = re.match(r"^\[(\w+)\]\s+(\w+/\S+)$", msg)
        if t and t.group(1) in ("run", "cached"):
            self._began[t.group(2)] = (t.group(1), time.time())
        m = re.match(r"^(\[\w+\]\s+)((?:select|train|generate|refnll|judge)/.*)$", msg)
        if m and self.n_stages:
            self.stage_no += 1
            msg = f"{m.group(1)}stage {self.stage_no}/{self.n_stages} {m.group(2)}"
        self.log(msg)

    def record_stage(self, key: StageKey, folder: Path) -> None:
        """The stage's folder, and (for the manifest) whether it ran or was cached, when it
        began (UTC) and how long it took."""
        name = f"{key.stage}/{key.key}"
        self.stage_dirs[name] = str(folder)
        status, t0 = self._began.pop(f"{key.stage}/{key.key}", ("cached", time.time()))
        now = time.time()
        self.stage_times.append({"stage": name, "status": status, "started_at": utc_iso(t0),
                                 "seconds": round(now - t0, 3)})

    def build_selector(self):
        return build_selector(self.cfg.selector, self.cfg.selector_params, self.cfg.proxy)

    def build_judges(self) -> list[Problem]:
        """Every judge of the run, built once (the plan and each judge stage use these)."""
        problems = []
        for name in self.cfg.judges:
            if name not in self.judges:
                try:
                    self.judges[name] = load_judge(name)
                except (ConfigError, RegistryError, ValueError) as e:
                    problems.append(Problem("error", str(e)))
        return problems

    def run(self, command: list[str] | None = None) -> list[dict]:
        cfg = self.cfg
        selector = self.build_selector()
        problems = self.build_judges()
        if self.data is None:
            self.load_data()  # a bad pool stops here with a one-line error naming the row
        plan = make_plan(cfg, data=self.data, judges=self.judges, device=self.device)
        problems += plan.problems
        if problems:
            raise PlanError(problems)
        self.n_stages, self.stage_no = len(plan.stages), 0
        seeds = {"seed": cfg.seed, "sample_seed": cfg.data.sample_seed,
                 "train_seed": cfg.train.seed, "generate_seed": cfg.generate.seed}
        resolved = {"device": self.device, "train": self.keys.train_identity(),
                    "generate": generate_cache_config(cfg.generate, self.device),
                    "proxy_precision": resolve_precision(cfg.proxy.precision or "fp32", self.device),
                    "hardware": hardware_description(),
                    "pool": self.data.pool_record(cfg)}
        write_manifest(self.root, command or sys.argv, cfg, seeds, resolved=resolved)
        results = []
        # selection first: a selector's error shows before hours of full-data training
        subsets = {ratio: self.select(selector, ratio) for ratio in cfg.ratios}
        full_train = self.train("full", None)
        full_gen = self.generate(full_train)
        self.refnll(full_train)
        setting = self.keys.setting(full_gen)
        for ratio in cfg.ratios:
            skey, subset = subsets[ratio]
            tkey = self.train(skey.key, subset["indices"])
            gkey = self.generate(tkey)
            self.refnll(tkey)
            warnings = []
            if len(subset["indices"]) >= len(self.pool):
                warnings.append(f"subset = whole pool ({len(subset['indices'])} of "
                                f"{len(self.pool)} rows at ratio {ratio:g}): the full-data model "
                                f"is judged against itself")
            warnings += self.train_warnings(tkey)
            for w in warnings:
                self.log(f"[warn]   {selector.name} r={ratio:g}: {w}")
            meta = {"experiment": cfg.experiment, "selector": selector.name, "ratio": ratio,
                    "seed": cfg.seed, "pool": cfg.data.pool, "pool_size": len(self.pool),
                    "pool_note": self.pool.note or None,
                    "model": cfg.model, "regime": cfg.train.method,
                    "selection_seconds": subset["info"].get("selection_seconds"),
                    "selection_cost": subset["info"].get("cost"),
                    "n_selected": len(subset["indices"]), "select_key": skey.key,
                    "selector_fp": stable_hash(selector.cache_config()),
                    "selector_meta": selector.meta(),
                    "setting": setting, "setting_fp": stable_hash(setting),
                    "setting_desc": self.keys.setting_desc(), "warnings": warnings}
            for jn in cfg.judges:
                results.append(self.judge(self.judges[jn], gkey, full_gen, meta))
        write_manifest(self.root, command or sys.argv, cfg, seeds, self.stage_dirs,
                       update_last=True, stage_times=self.stage_times, resolved=resolved)
        write_leaderboard(Path(cfg.runs_dir).expanduser().resolve())
        return results
