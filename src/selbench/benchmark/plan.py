"""`bench plan` (= `bench run --dry-run`): resolve a run without computing anything.

For every stage it says whether its folder is already done or will run, what each stage
needs (data, target model, proxies, judges, GPU, vLLM, device memory) and whether that is
there, and estimates the work (:mod:`selbench.estimates`): optimizer steps (as the harness
takes them, ``min_steps`` included), FLOPs, peak memory per device against what the device
has, wall-clock time per stage for the device class, judge calls and their cost in dollars
where the judge YAML has prices. Every problem is one line of a known kind
(:data:`~.needs.KINDS`), so a user (and the test over every paper config) can tell "needs
the hub / a GPU / more memory / an API key / a server / vLLM" from a genuine error.
``bench run`` makes the same plan first and stops on any problem, before the full-data
model trains. Needs of stages that are already done are not problems.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import psutil

from ..config import ConfigError, RunConfig, stable_hash
from ..data import KNOWN_POOLS, DataNotFound, PoolError, expected_eval_size
from ..estimates import (DEVICE_CLASSES, GIB, device_class_for, fmt_bytes, fmt_flops, fmt_hours,
                         fmt_params, forward_flops, generate_seconds, inference_memory,
                         judge_tokens, lora_param_count, mean_tokens, model_shape, seconds_for,
                         train_flops, train_memory, train_steps, trained_examples)
from ..hardware import cuda_available, pick_device, resolve_precision
from ..judges import load_judge
from ..registry import RegistryError
from ..runs import RunDir, experiment_root
from ..selectors import build_selector
from ..selectors.base import budget, models_used
from .needs import (Problem, Problems, accelerate_config, check_device, check_launch, check_memory,
                    check_model, check_train_extra)
from .stages import RunData, Stages, load_run_data, train_processes

__all__ = ["Plan", "PlanError", "Problem", "StagePlan", "make_plan", "render_plan"]


class PlanError(Exception):
    """The plan found problems; str() is one line per problem."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("the run cannot start:\n" + "\n".join(f"  {p}" for p in problems))


@dataclass
class StagePlan:
    stage: str
    key: str
    status: str  # done | run
    detail: str = ""
    seconds: float | None = None  # estimated wall clock when it has to run


@dataclass
class Plan(Problems):
    stages: list[StagePlan] = field(default_factory=list)
    estimates: dict[str, Any] = field(default_factory=dict)

    @property
    def to_run(self) -> list[StagePlan]:
        return [s for s in self.stages if s.status != "done"]


# --------------------------------------------------------------------------- the machine
def device_memory_gb(cfg: RunConfig, device: str) -> tuple[float | None, str]:
    """(GiB of one device, where the figure comes from) for the memory checks."""
    if cfg.plan.device_memory_gb:
        return float(cfg.plan.device_memory_gb), "plan.device_memory_gb"
    if device.startswith("cuda"):
        if cuda_available():
            import torch  # lazy: heavy; only where a GPU is visible

            idx = int(device.split(":")[1]) if ":" in device else 0
            props = torch.cuda.get_device_properties(idx)
            return props.total_memory / GIB, props.name
        return None, "no GPU visible and plan.device_memory_gb unset"

    return psutil.virtual_memory().total / GIB, "this machine's RAM"


def device_class(cfg: RunConfig, device: str, mem_gb: float | None, mem_src: str):
    if cfg.plan.device_class:
        if cfg.plan.device_class not in DEVICE_CLASSES:
            raise ConfigError(f"plan.device_class {cfg.plan.device_class!r}: one of "
                              f"{', '.join(DEVICE_CLASSES)}")
        return DEVICE_CLASSES[cfg.plan.device_class]
    return device_class_for(device, mem_src, mem_gb)


def _fsdp(cfg: RunConfig) -> tuple[bool, bool]:
    """(FSDP full sharding, activation checkpointing) of the train stage's launch layer."""
    acc = accelerate_config(cfg) if "train" in cfg.launch.stages else {}
    fsdp = acc.get("distributed_type") == "FSDP"
    ckpt = bool((acc.get("fsdp_config") or {}).get("fsdp_activation_checkpointing"))
    ckpt = ckpt or bool(cfg.train.extra.get("gradient_checkpointing"))
    return fsdp, ckpt


# --------------------------------------------------------------------------- the plan
def make_plan(cfg: RunConfig, data: RunData | None = None, judges: dict | None = None,
              device: str | None = None, data_error: Exception | None = None) -> Plan:
    """Resolve every stage of `cfg` without computing; problems collected, never raised.
    ``data`` and ``judges`` (name -> Judge) are the run's own when a Pipeline plans itself;
    otherwise they are loaded here."""
    plan = Plan()
    device = device or pick_device(cfg.device)
    check_device(plan, cfg)
    check_launch(plan, cfg)
    check_train_extra(plan, cfg)
    selector = None
    try:  # built before data: a mistyped name or param is the cheapest error
        selector = build_selector(cfg.selector, cfg.selector_params, cfg.proxy)
    except (ConfigError, RegistryError, ValueError) as e:
        plan.add("error", f"selector: {e}")
    if data is None:
        try:
            if data_error is not None:  # the caller already tried (a grid loads once per setting)
                raise data_error
            data = load_run_data(cfg)
        except DataNotFound as e:
            kp = KNOWN_POOLS.get(cfg.data.pool)
            plan.add("needs-hub" if (kp and kp.hub_id) or "hub" in str(e) else "needs-data", str(e))
        except (PoolError, OSError, ValueError) as e:
            plan.add("error", str(e))
    check_model(plan, cfg.model, "target model")
    if selector is not None:
        for m in models_used(selector.config):
            check_model(plan, m, f"selector '{selector.name}' proxy")
    if judges is None:
        judges = {}
        for name in cfg.judges:
            try:
                judges[name] = load_judge(name)
            except (ConfigError, RegistryError, ValueError) as e:
                plan.add("error", str(e))
    judge_needs = [n for j in judges.values() for n in j.needs()]
    if selector is not None:  # what the selector itself needs (e.g. a judge that can rate rows)
        for kind, msg in selector.plan_problems(judges):
            plan.add(kind, msg)
    mem_gb, mem_src = device_memory_gb(cfg, device)
    dev_class = device_class(cfg, device, mem_gb, mem_src)
    plan.estimates = _estimates(cfg, data, selector, judges, device, mem_gb, mem_src, dev_class, plan)
    if data is not None:  # the pool's source and skip counts, the eval sets (render_plan)
        plan.estimates["data"] = data.describe()
    if data is not None and selector is not None:
        _stages(plan, cfg, data, device, selector, list(judges.values()))
    judging_to_do = any(s.stage.startswith("judge") and s.status != "done" for s in plan.stages) \
        or not plan.stages
    if judging_to_do:  # a finished judge stage does not need its key or server again
        for kind, msg in judge_needs:
            plan.add(kind, msg)
    plan.estimates["config_fp"] = stable_hash(cfg)
    return plan


def proxy_memory(selector, kind: str):
    """Peak memory of a selector's proxy work: LoRA training with per-example gradients
    (profile, SPICE: kind train / proxy) or forward scoring (IFD, perplexity: forward), in
    fp32 at the selector's own batch size and max length; None without a known proxy."""
    c = selector.config
    src = getattr(c, "profile", None) or c
    proxy = getattr(src, "proxy", None)
    shape = model_shape(proxy) if isinstance(proxy, str) else None
    if shape is None:
        return None
    bs = int(getattr(src, "batch_size", 0) or 8)
    ml = int(getattr(src, "max_length", 0) or 512)
    if kind == "forward":
        return inference_memory(shape, False, bs, ml)
    r = int(getattr(src, "lora_r", 8) or 8)
    return train_memory(shape, "lora", bs, ml, False, lora_params=lora_param_count(shape, r))


def _estimates(cfg, data, selector, judges, device, mem_gb, mem_src, dev, plan: Plan) -> dict:
    t = cfg.train
    procs = train_processes(cfg)
    if data is not None:
        n = len(data.pool)
        tokens = mean_tokens(data.pool.rows, t.max_length)
        n_prompts = sum(len(v) for v in data.evals.values())
        n_refs = sum(len(v) for v in data.references.values())
    else:
        kp = KNOWN_POOLS.get(cfg.data.pool)
        n = cfg.data.pool_size or (kp.expected_rows if kp else None)
        tokens = min(t.max_length, 180.0)
        n_refs = None
        # the shipped eval sets' sizes are known without their files
        sizes = [expected_eval_size(es, cfg.data.eval_limit) for es in cfg.data.eval_sets]
        n_prompts = sum(sizes) if sizes and None not in sizes else None
        if n is None:
            plan.add("note", "pool size unknown until it loads: estimates left out")
    shape = model_shape(cfg.model)
    P = shape.params if shape else None
    precision = resolve_precision(t.precision, device)
    fsdp, ckpt = _fsdp(cfg)
    est: dict[str, Any] = {"pool_examples": n, "mean_tokens_per_example": round(tokens, 1),
                           "target_params": P, "device": device, "precision": precision,
                           "device_memory_gb": mem_gb, "device_memory_source": mem_src,
                           "device_class": dev.name, "device_class_source": dev.source,
                           "train_processes": procs, "fsdp": fsdp}
    models = [("full", n)] + [(f"{cfg.selector} r={r:g}", budget(r, n)) for r in cfg.ratios] if n else []
    est["train"] = []
    for name, k in models:
        steps = train_steps(k, t, procs)
        seen = trained_examples(k, t, procs)
        flops = train_flops(P, seen, tokens, t.method) if P else None
        row = {"model": name, "examples": k, "steps": steps, "examples_seen": seen,
               "flops": flops, "seconds": seconds_for(flops, dev, "train", procs)}
        if shape:
            mem = train_memory(shape, t.method, t.batch_size, t.max_length, precision == "bf16",
                               procs, fsdp, lora_param_count(shape, t.lora_r), ckpt)
            row["memory"] = mem.total
            row["memory_detail"] = mem.describe()
        est["train"].append(row)
    if est["train"] and "memory" in est["train"][0]:
        layer = "FSDP (launch-8gpu-fsdp.yaml)" if not fsdp else "more GPUs or CPU offload"
        check_memory(plan, f"train ({t.method}, {cfg.model})", est["train"][0]["memory"], mem_gb,
                     est["train"][0]["memory_detail"],
                     f"shard it with {layer}, or lower train.batch_size / train.max_length "
                     f"or set train.extra.gradient_checkpointing: true")
    g = cfg.generate
    if n_prompts is not None and P:
        gen_s = generate_seconds(P, n_prompts, g.max_new_tokens, 60.0, dev, g.backend)
        gbf16 = g.dtype in ("bfloat16", "float16", "half") or (
            g.dtype == "auto" and resolve_precision("auto", device) == "bf16")
        gmem = inference_memory(shape, gbf16, g.batch_size if g.backend == "hf" else 1,
                                60 + g.max_new_tokens)
        est["generate"] = {"prompts_per_model": n_prompts, "models": len(models),
                           "flops": forward_flops(P, n_prompts, 60 + g.max_new_tokens) * len(models),
                           "seconds_per_model": gen_s, "memory": gmem.total}
        if g.backend == "vllm" and device.startswith("cuda") and mem_gb:
            need = gmem.weights / g.tensor_parallel_size
            if need > 0.9 * g.gpu_memory_utilization * mem_gb * GIB:
                plan.add("needs-memory", f"generate (vLLM): weights {fmt_bytes(need)} per GPU do "
                                         f"not fit {g.gpu_memory_utilization:g} x {mem_gb:g} GiB; "
                                         f"raise generate.tensor_parallel_size")
        else:
            check_memory(plan, "generate (hf)", gmem.total, mem_gb, gmem.describe(),
                         "lower generate.batch_size")
    if n_refs and P:
        est["refnll"] = {"prompts_per_model": n_refs, "seconds_per_model": seconds_for(
            forward_flops(P, n_refs, min(cfg.data.reference_max_length, 450)), dev, "forward")}
    if selector is not None and n:
        cost = selector.estimate(n, tokens, cfg.seed)
        if cost:
            cost = dict(cost)
            if cost.get("flops") is not None or "seconds" not in cost:  # judge calls: own seconds
                cost["seconds"] = seconds_for(cost.get("flops"), dev, cost.get("kind", "train"))
            pm = proxy_memory(selector, cost.get("kind", "train"))
            if pm is not None:
                cost["memory"], cost["memory_detail"] = pm.total, pm.describe()
                check_memory(plan, f"selection ({selector.name}, proxy)", pm.total, mem_gb,
                             pm.describe(), "lower the selector's batch_size / max_length")
            est["proxy"] = cost
    if n_prompts is not None:
        est["judges"] = []
        calls = 2 * n_prompts * len(cfg.ratios)
        for j in judges.values():
            row = {"judge": j.name, "calls": calls}
            pp = getattr(j.config, "price_per_mtok_prompt", None)
            pc = getattr(j.config, "price_per_mtok_completion", None)
            upper, expected, comp = judge_tokens(g.max_new_tokens, getattr(j.config, "max_tokens", None))
            if pp is not None or pc is not None:
                row["max_cost_usd_per_call"] = (upper * (pp or 0) + comp * (pc or 0)) / 1e6
                row["cost_usd_per_call"] = (expected * (pp or 0) + min(comp, 120) * (pc or 0)) / 1e6
                row["price_source"] = getattr(j.config, "price_source", None)
            conc = getattr(j.config, "concurrency", 1) or 1
            row["seconds_per_call"] = 0.05 if j.kind == "offline" else 3.0 / conc
            est["judges"].append(row)
    return est


def _stages(plan: Plan, cfg: RunConfig, data: RunData, device: str, selector, judges) -> None:
    rd = RunDir(experiment_root(cfg.runs_dir, cfg.experiment))
    st = Stages(cfg, data, device)
    e = plan.estimates
    train_s = {r["model"]: r.get("seconds") for r in e.get("train", [])}
    gen_s = (e.get("generate") or {}).get("seconds_per_model")
    ref_s = (e.get("refnll") or {}).get("seconds_per_model")
    judge_s = {j["judge"]: j.get("seconds_per_call", 0) * 2 * (e.get("generate") or {}).get(
        "prompts_per_model", 0) for j in e.get("judges", [])}

    def add(stage, key, done, detail="", seconds=None):
        plan.stages.append(StagePlan(stage, key, "done" if done else "run", detail,
                                     None if done else seconds))
        return done

    full_t = st.train_key("full", None)
    add("train", full_t.key, rd.done(full_t), f"full-data model, {len(data.pool)} examples",
        train_s.get("full"))
    full_g = st.generate_key(full_t)
    add("generate", full_g.key, rd.done(full_g), "", gen_s)
    full_r = st.refnll_key(full_t)
    if data.references:
        add("refnll", full_r.key, rd.done(full_r), "", ref_s)
    proxy = e.get("proxy") or {}
    skeys = [st.select_key(selector, r) for r in cfg.ratios]
    if proxy.get("shared"):  # work several selections reuse: one pseudo-stage, counted once
        add("shared", proxy["shared"], all(rd.done(k) for k in skeys), proxy.get("what", ""),
            proxy.get("seconds"))
    for r, skey in zip(cfg.ratios, skeys):
        label = f"{cfg.selector} r={r:g}"
        if add("select", skey.key, rd.done(skey), selector.description,
               None if proxy.get("shared") else proxy.get("seconds")):
            sub = json.loads((rd.path(skey) / "subset.json").read_text())
            tkey = st.train_key(skey.key, sub["indices"])
            add("train", tkey.key, rd.done(tkey), f"{len(sub['indices'])} examples", train_s.get(label))
            gkey = st.generate_key(tkey)
            add("generate", gkey.key, rd.done(gkey), "", gen_s)
            if data.references:
                rk = st.refnll_key(tkey)
                add("refnll", rk.key, rd.done(rk), "", ref_s)
            for j in judges:
                jk = st.judge_key(j, gkey, full_g)
                add(f"judge/{j.name}", jk.key, rd.done(jk), "", judge_s.get(j.name))
        else:
            add("train", f"{skey.key}-?", False, "after selection", train_s.get(label))
            add("generate", f"{skey.key}-?", False, "", gen_s)
            if data.references:
                add("refnll", f"{skey.key}-?", False, "", ref_s)
            for j in judges:
                add(f"judge/{j.name}", f"{skey.key}__vs__full", False, "", judge_s.get(j.name))


def total_seconds(plan: Plan) -> float | None:
    secs = [s.seconds for s in plan.to_run if s.seconds is not None]
    return sum(secs) if secs else None


def judge_cost(plan: Plan) -> tuple[float | None, float | None]:
    """(expected, at most) USD of the judge calls still to make."""
    e = plan.estimates
    runs = {s.stage: 0 for s in plan.stages}
    for s in plan.to_run:
        if s.stage.startswith("judge/"):
            runs[s.stage] = runs.get(s.stage, 0) + 1
    n_prompts = (e.get("generate") or {}).get("prompts_per_model") or 0
    exp = mx = None
    for j in e.get("judges", []):
        if "cost_usd_per_call" not in j:
            continue
        calls = 2 * n_prompts * runs.get(f"judge/{j['judge']}", 0)
        exp = (exp or 0.0) + calls * j["cost_usd_per_call"]
        mx = (mx or 0.0) + calls * j["max_cost_usd_per_call"]
    return exp, mx


def render_plan(plan: Plan, cfg: RunConfig) -> str:
    e = plan.estimates
    lines = [f"plan for experiment '{cfg.experiment}' (selector {cfg.selector}, ratios "
             f"{', '.join(f'{r:g}' for r in cfg.ratios)}, model {cfg.model}, pool {cfg.data.pool})"]
    if plan.stages:
        n_done = sum(s.status == "done" for s in plan.stages)
        lines.append(f"stages: {n_done} done, {len(plan.stages) - n_done} to run")
        for s in plan.stages:
            est = f" ~{fmt_hours(s.seconds)}" if s.seconds is not None else ""
            lines.append(f"  [{s.status:>4}] {s.stage}/{s.key}" + (f"  ({s.detail})" if s.detail else "")
                         + est)
    lines.append(f"pool: {e.get('pool_examples')} examples, ~{e.get('mean_tokens_per_example')} "
                 f"tokens each; target model: {fmt_params(e.get('target_params'))} parameters, "
                 f"trains in {e.get('precision')} on {e.get('device')}"
                 + (f" x{e['train_processes']} processes" + (" (FSDP)" if e.get("fsdp") else "")
                    if e.get("train_processes", 1) > 1 else ""))
    for line in e.get("data", []):  # e.g. "pool 'x': 14 examples from F (skipped {...})"
        lines.append(f"data: {line}")
    mem = e.get("device_memory_gb")
    lines.append(f"device: {mem:.0f} GiB per device ({e.get('device_memory_source')}); time "
                 f"estimates for {e.get('device_class')}" if mem else
                 f"device memory unknown ({e.get('device_memory_source')}); time estimates for "
                 f"{e.get('device_class')}")
    for t in e.get("train", []):
        m = f", ~{fmt_bytes(t['memory'])} per device" if t.get("memory") else ""
        lines.append(f"  train {t['model']}: {t['examples']} examples, {t['steps']} optimizer "
                     f"steps, ~{fmt_flops(t['flops'])}{m}, ~{fmt_hours(t.get('seconds'))}")
    if "proxy" in e:
        p = e["proxy"]
        shared = f" (shared: {p['shared']})" if p.get("shared") else ""
        pmem = f", ~{fmt_bytes(p['memory'])} per device" if p.get("memory") else ""
        lines.append(f"  select ({p.get('what', 'proxy')}): ~{fmt_flops(p.get('flops'))}{pmem}, "
                     f"~{fmt_hours(p.get('seconds'))}{shared}"
                     + (f", {p['judge_calls']} judge calls" if p.get("judge_calls") else "")
                     + (f" (~${p['cost_usd']:.2f}, {p.get('price_source') or 'judge YAML prices'})"
                        if p.get("cost_usd") is not None else ""))
    if "generate" in e:
        g = e["generate"]
        lines.append(f"  generate: {g['models']} models x {g['prompts_per_model']} prompts, "
                     f"~{fmt_flops(g['flops'])}, ~{fmt_hours(g['seconds_per_model'])} per model")
    if "refnll" in e:
        lines.append(f"  reference NLL: {e['refnll']['prompts_per_model']} prompts per model, "
                     f"~{fmt_hours(e['refnll']['seconds_per_model'])} per model")
    exp, mx = judge_cost(plan)
    for j in e.get("judges", []):
        cost = ""
        if "cost_usd_per_call" in j:
            cost = f"; ~${j['cost_usd_per_call'] * 1000:.2f} per 1,000 calls ({j.get('price_source') or 'judge YAML prices'})"
        lines.append(f"  judge {j['judge']}: {j['calls']} calls{cost}")
    tot = total_seconds(plan)
    if plan.stages:
        lines.append(f"to run: {len(plan.to_run)} stage(s), ~{fmt_hours(tot)} (estimate)"
                     + (f"; judge cost ~${exp:.2f} (at most ${mx:.2f})" if exp is not None else ""))
    for n in plan.notes:
        lines.append(f"note: {n}")
    if plan.problems:
        lines.append(f"{len(plan.problems)} problem(s):")
        lines += [f"  {p}" for p in plan.problems]
    else:
        lines.append("no problems: ready to run")
    return "\n".join(lines)
