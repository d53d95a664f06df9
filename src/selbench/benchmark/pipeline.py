"""`bench run`: data -> select -> train -> generate -> judge -> leaderboard, every stage cached.

Stage keys (folder names under runs/<experiment>/):
  select/<selector>-r<ratio>-s<seed>-<h8>       selector config, ratio, seed, pool key
  profiles/<proxy>-<h8>                         (inside selectors) proxy config, pool key
  train/full-<h8> | train/<select key>-<h8>     train config, model, exact subset ids
  generate/<train key>-<h8>                     generate config, eval sets, train key
  judge/<judge>/<A>__vs__<B>-<h8>               judge identity, both generate keys
The full-data model depends only on (pool, model, train config): it is trained once and
reused by every selector and ratio that compares against it.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from ..config import ConfigError, RunConfig, stable_hash, to_dict, train_identity
from ..launch import run_workers, uses_launcher
from ..data import eval_set_name, load_eval_set, load_pool
from ..runs import RunDir, StageKey, stage_key, utc_iso, write_manifest


def write_rows_file(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=True) + "\n")
    return path


def _subset_fingerprint(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


class Pipeline:
    def __init__(self, cfg: RunConfig, progress: bool = True, log=print):
        from ..models import pick_device

        self.cfg, self.progress, self.log = cfg, progress, log
        self.root = Path(cfg.runs_dir).expanduser().resolve() / cfg.experiment
        self.rd = RunDir(self.root)
        self.device = pick_device(cfg.device)
        self.stages: dict[str, str] = {}
        self.stage_times: list[dict] = []  # per stage: status, started_at (UTC), seconds
        self._began: dict[str, tuple[str, float]] = {}
        self.n_stages, self.stage_no = 0, 0
        if cfg.threads:
            import torch

            torch.set_num_threads(cfg.threads)

    # ------------------------------------------------------------------ data
    def load_data(self):
        d = self.cfg.data
        self.pool = load_pool(d.pool, d.data_dir, d.pool_size, d.sample_seed, d.columns)
        self.pool_key = {"pool": d.pool, "source": Path(self.pool.source).name,
                         "fingerprint": self.pool.fingerprint(), "n": len(self.pool)}
        self.log(f"[data]   pool '{d.pool}': {self.pool.describe()}")
        if self.pool.note:
            self.log(f"[data]   NOTE: {self.pool.note}")
        self.evals = {eval_set_name(es): load_eval_set(es, d.data_dir, d.eval_limit)
                      for es in d.eval_sets}
        if len(self.evals) != len(d.eval_sets):
            raise ConfigError(f"data.eval_sets {d.eval_sets}: two sets share a name")
        self.log("[data]   eval sets: " + ", ".join(f"{k} ({len(v)})" for k, v in self.evals.items()))

    # ------------------------------------------------------------------ select
    def select_key(self, selector, ratio: float) -> StageKey:
        return stage_key("select", f"{selector.name}-r{ratio:g}-s{self.cfg.seed}",
                         selector.cache_config(), ratio, self.cfg.seed, self.pool_key)

    def select(self, selector, ratio: float) -> tuple[StageKey, dict]:
        from ..selectors.base import SelectionContext

        cfg = self.cfg
        key = self.select_key(selector, ratio)

        def build(tmp: Path) -> None:
            ctx = SelectionContext(seed=cfg.seed, device=self.device, run_dir=self.rd,
                                   pool_key=stable_hash(self.pool_key, n=16),
                                   data_dir=cfg.data.data_dir, log=self.log,
                                   progress=self.progress, launch=cfg.launch,
                                   shard_root=self.root / "shards")
            sel = selector.run(self.pool, ratio, ctx)
            np.save(tmp / "scores.npy", sel.scores)
            info = {**sel.info, **ctx.notes,  # the run's own fields win over a selector's
                    "selector": selector.name, "description": selector.description,
                    "ratio": ratio, "seed": cfg.seed, "pool_size": len(self.pool)}
            (tmp / "subset.json").write_text(json.dumps(
                {"indices": sel.indices, "ids": [self.pool.rows[i]["id"] for i in sel.indices]}))
            (tmp / "info.json").write_text(json.dumps(info, indent=2, default=str))
            msg = f"[select] {selector.name} r={ratio:g}: {len(sel.indices)}/{len(self.pool)} examples"
            if "filter_report" in sel.info:
                msg += f"; {sel.info['filter_report']}"
            self.log(msg + f" ({info['selection_seconds']:.1f}s)")

        folder = self.rd.cached(key, build, selector.cache_config(), log=self.stage_log)
        self.record_stage(f"select/{key.key}", folder, key)
        subset = json.loads((folder / "subset.json").read_text())
        info = json.loads((folder / "info.json").read_text())
        return key, {**subset, "info": info}

    # ------------------------------------------------------------------ train
    def train_rows(self, indices: list[int] | None) -> list[dict]:
        return self.pool.rows if indices is None else [self.pool.rows[i] for i in sorted(indices)]

    def train_key(self, name: str, indices: list[int] | None) -> StageKey:
        rows = self.train_rows(indices)
        if indices is not None and len(rows) == len(self.pool):
            name = "full"  # the subset is the whole pool: reuse the full-data model
        return stage_key("train", name, train_identity(self.cfg.train), self.cfg.model,
                         _subset_fingerprint([r["id"] for r in rows]))

    def train(self, name: str, indices: list[int] | None) -> StageKey:
        from .train import train_model

        cfg = self.cfg
        rows = self.train_rows(indices)
        key = self.train_key(name, indices)
        name = key.name

        def build(tmp: Path) -> None:
            if uses_launcher(cfg.launch, "train"):
                job = tmp.parent / f".job-{key.key}"
                write_rows_file(job / "rows.jsonl", rows)
                run_workers("train", {"model": cfg.model, "rows_file": str(job / "rows.jsonl"),
                                      "train": to_dict(cfg.train), "out": str(tmp),
                                      "device": self.device,
                                      "processes": cfg.launch.num_processes,
                                      "report_to": cfg.report_to},
                            cfg.launch, job, self.log)
                shutil.rmtree(job, ignore_errors=True)
                info = json.loads((tmp / "train.json").read_text())
            else:
                info = train_model(cfg.model, rows, cfg.train, tmp, self.device, self.progress,
                                   report_to=cfg.report_to)
            self.log(f"[train]  {name}: {info['examples']} examples, {info['steps']} steps, "
                     f"{info['seconds']:.0f}s, final loss {info['final_loss']}")
            for w in info.get("warnings", []):
                self.log(f"[warn]   train {name}: {w}")

        folder = self.rd.cached(key, build, {"train": to_dict(cfg.train), "model": cfg.model,
                                             "n_examples": len(rows)}, log=self.stage_log)
        self.record_stage(f"train/{key.key}", folder, key)
        return key

    def train_warnings(self, key: StageKey) -> list[str]:
        info = json.loads((self.rd.path(key) / "train.json").read_text())
        return [f"subset model: {w}" for w in info.get("warnings", [])]

    # ------------------------------------------------------------------ generate
    def generate_key(self, train_key: StageKey) -> StageKey:
        gcfg = self.cfg.generate
        template = gcfg.template or self.cfg.train.template
        sets = {k: [it["id"] for it in v] for k, v in self.evals.items()}
        from .generate import generate_cache_config

        # what can change the answers (memory settings left out), resolved on this device
        return stage_key("generate", train_key.key, generate_cache_config(gcfg, self.device),
                         template, sets, train_key.digest)

    def generate(self, train_key: StageKey) -> StageKey:
        from .generate import (eval_prompts, generate_cache_config, generate_hf, generate_vllm,
                               require_vllm, write_answers)
        from .train import load_trained

        cfg = self.cfg
        gcfg = cfg.generate
        template = gcfg.template or cfg.train.template
        key = self.generate_key(train_key)
        if gcfg.backend == "vllm" and not self.rd.done(key):
            require_vllm()  # one-line error before any work; hf needs nothing extra

        def build(tmp: Path) -> None:
            from ..models import load_tokenizer, resolve_model

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
        self.record_stage(f"generate/{key.key}", folder, key)
        return key

    # ------------------------------------------------------------------ reference NLL
    def refnll(self, train_key: StageKey) -> dict:
        """Judge-free metric: mean token NLL of the model on reference answers (cached)."""
        from .refnll import refnll_stage

        return refnll_stage(self, train_key)

    # ------------------------------------------------------------------ judge
    @staticmethod
    def judge_key(judge, gen_a: StageKey, gen_b: StageKey) -> StageKey:
        return stage_key(f"judge/{judge.name}", f"{gen_a.name}__vs__{gen_b.name}",
                         judge.cache_identity(), gen_a.digest, gen_b.digest)

    def judge(self, judge_name: str, gen_a: StageKey, gen_b: StageKey, row_meta: dict) -> dict:
        from ..judges import load_judge
        from ..judges.base import CompletionCache
        from ..judges.stage import build_items, judge_items, reduce, usage_of, write_rows
        from .generate import read_answers

        judge = load_judge(judge_name)
        cache = CompletionCache(self.root / "judge" / judge.name / "cache.jsonl")
        key = self.judge_key(judge, gen_a, gen_b)

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
            cost = judge.cost(usage)
            result = {**row_meta, "judge": judge.name, "judge_kind": judge.kind,
                      "usage": usage, "cost_usd": cost,
                      "judge_model": getattr(judge.config, "model", judge.registry_name),
                      "calls": counts, "judge_stats": judge.stats, "summary": summary,
                      "model_a": gen_a.key, "model_b": gen_b.key}
            (tmp / "result.json").write_text(json.dumps(result, indent=2, default=str))
            p = summary["pooled"]
            self.log(f"[judge]  {judge.name}: W/T/L {p['win']}/{p['tie']}/{p['lose']} "
                     f"unparsed {p['unparsed']} PWS {p['pws']:.3f} "
                     f"({counts['new']} new calls, {counts['cached']} cached)")

        folder = self.rd.cached(key, build, judge.cache_identity(), log=self.stage_log)
        self.record_stage(f"judge/{key.key}", folder, key)
        return json.loads((folder / "result.json").read_text())

    # ------------------------------------------------------------------ all
    def stage_log(self, msg: str) -> None:
        """Stage lines with an overall counter ("[run]    stage 3/9 train/..."), counting the
        select/train/generate/judge stages the plan listed; notes when each stage began."""
        t = re.match(r"^\[(\w+)\]\s+(\w+/\S+)$", msg)
        if t and t.group(1) in ("run", "cached"):
            self._began[t.group(2)] = (t.group(1), time.time())
        m = re.match(r"^(\[\w+\]\s+)((?:select|train|generate|judge)/.*)$", msg)
        if m and self.n_stages:
            self.stage_no += 1
            msg = f"{m.group(1)}stage {self.stage_no}/{self.n_stages} {m.group(2)}"
        self.log(msg)

    def record_stage(self, name: str, folder: Path, key: StageKey) -> None:
        """The stage's folder, and (for the manifest) whether it ran or was cached, when it
        began (UTC) and how long it took."""
        self.stages[name] = str(folder)
        status, t0 = self._began.pop(f"{key.stage}/{key.key}", ("cached", time.time()))
        now = time.time()
        self.stage_times.append({"stage": name, "status": status, "started_at": utc_iso(t0),
                                 "seconds": round(now - t0, 3)})

    def build_selector(self):
        from ..selectors import build_selector

        return build_selector(self.cfg.selector, self.cfg.selector_params, self.cfg.proxy)

    def setting(self, full_gen: StageKey) -> dict:
        """What a Table 1 cell holds fixed besides selector and ratio: pool content, target
        model, train and generate config, eval prompts and the full-data baseline."""
        cfg = self.cfg
        return {"pool": self.pool_key, "model": cfg.model, "train": to_dict(cfg.train),
                "generate": to_dict(cfg.generate),
                "eval": {k: len(v) for k, v in self.evals.items()}, "baseline": full_gen.key}

    def setting_desc(self) -> str:
        cfg, t = self.cfg, self.cfg.train
        evals = ", ".join(f"{k} {len(v)}" for k, v in self.evals.items())
        return (f"experiment {cfg.experiment}; pool {cfg.data.pool} n={len(self.pool)}; "
                f"{cfg.model} {t.method} lr={t.learning_rate:g} epochs={t.epochs:g} "
                f"batch={t.batch_size}x{t.grad_accum} len={t.max_length}; "
                f"{cfg.generate.backend} {cfg.generate.max_new_tokens} new tokens; {evals}")

    def run(self, command: list[str] | None = None) -> list[dict]:
        from ..leaderboard import write_leaderboard
        from ..plan import PlanError, make_plan

        cfg = self.cfg
        selector = self.build_selector()
        plan = make_plan(cfg, pipeline=self)  # loads the data; fails before any compute
        if plan.problems:
            raise PlanError(plan.problems)
        self.n_stages, self.stage_no = len(plan.stages), 0
        seeds = {"seed": cfg.seed, "sample_seed": cfg.data.sample_seed,
                 "train_seed": cfg.train.seed, "generate_seed": cfg.generate.seed}
        write_manifest(self.root, command or sys.argv, cfg, seeds)
        results = []
        # selection first: a selector's error shows before hours of full-data training
        subsets = {ratio: self.select(selector, ratio) for ratio in cfg.ratios}
        full_train = self.train("full", None)
        full_gen = self.generate(full_train)
        self.refnll(full_train)
        setting = self.setting(full_gen)
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
                    "n_selected": len(subset["indices"]), "select_key": skey.key,
                    "selector_fp": stable_hash(selector.cache_config()),
                    "setting": setting, "setting_fp": stable_hash(setting),
                    "setting_desc": self.setting_desc(), "warnings": warnings}
            for jn in cfg.judges:
                results.append(self.judge(jn, gkey, full_gen, meta))
        write_manifest(self.root, command or sys.argv, cfg, seeds, self.stages, update_last=True,
                       stage_times=self.stage_times)
        write_leaderboard(Path(cfg.runs_dir).expanduser().resolve())
        return results
