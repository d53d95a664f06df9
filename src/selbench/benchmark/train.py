"""One fine-tuning harness for every selector: TRL SFTTrainer, LoRA (PEFT) or full.

Rows are tokenized by selbench (:func:`selbench.templates.tokenize_example`, the same
function the proxy uses) and handed to TRL as ``input_ids``/``labels`` (-100 on the prompt),
so the loss is on response tokens only, the prompt token ids are exactly those generation
uses (:func:`selbench.templates.encode_prompt`: BOS once for Llama-style tokenizers, none for
GPT-2-style ones), and every selected row is trained on: a row longer than ``max_length`` is
truncated (counted in ``train.json``), never dropped. The chosen SFTConfig fields come from
:class:`selbench.config.TrainConfig`; ``train.extra`` passes any other SFTConfig field.
Outputs in the stage folder: ``model/`` (LoRA adapter or full weights + tokenizer),
``loss.csv`` (step, loss, learning rate) and ``train.json`` (counts and timing).
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path

from ..config import TrainConfig, grad_accum_for
from ..hardware import resolve_precision
from ..models import default_lora_targets, load_model, load_tokenizer
from ..templates import tokenize_example


def to_sft_rows(rows: list[dict], template: str, tokenizer, max_length: int) -> list[dict]:
    return [tokenize_example(tokenizer, r, template, max_length) for r in rows]


def fsdp_launched() -> bool:
    """This process is a rank of an accelerate FSDP launch (accelerate sets the variable)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true", "yes")


def load_for_training(model_name: str, device: str, precision: str):
    """The target model as training needs it: in the training dtype (``precision``, already
    resolved: no fp32 copy first), on this rank's device; under FSDP left on the CPU for
    accelerate to shard (with cpu-RAM-efficient loading only local rank 0 reads the weights:
    the process group must exist before this call, see :func:`train_model`)."""
    return load_model(model_name, device, precision, place=not fsdp_launched())


def train_model(model_name: str, rows: list[dict], cfg: TrainConfig, out: Path,
                device: str = "cpu", progress: bool = True, processes: int = 1,
                report_to: list[str] | None = None, precision: str | None = None) -> dict:
    """Fine-tune on exactly `rows`. Under a launcher (torchrun/accelerate, `processes` > 1)
    TRL/accelerate run data-parallel (DDP, or FSDP/DeepSpeed from the accelerate config);
    gradient accumulation is chosen so the effective batch stays ``train.effective_batch``;
    only the main process writes `out`. ``device`` is this process's own device
    (``cuda:<local rank>`` under a launcher: :func:`selbench.hardware.rank_device`);
    ``precision`` the resolved ``train.precision`` (fp32 | bf16)."""
    from datasets import Dataset  # lazy: heavy
    from peft import LoraConfig  # lazy: heavy
    from transformers import set_seed  # lazy: heavy
    from trl import SFTConfig, SFTTrainer  # lazy: heavy

    precision = precision or resolve_precision(cfg.precision, device)
    set_seed(cfg.seed)
    tok = load_tokenizer(model_name)
    tokenized = to_sft_rows(rows, cfg.template, tok, cfg.max_length)
    n_truncated = sum(t.pop("truncated") for t in tokenized)
    ds = Dataset.from_list(tokenized)
    accum = grad_accum_for(cfg, processes)
    per_epoch = math.ceil(len(rows) / (cfg.batch_size * processes * accum))
    max_steps = cfg.max_steps
    if max_steps <= 0 and cfg.min_steps and per_epoch * math.ceil(cfg.epochs) < cfg.min_steps:
        max_steps = cfg.min_steps  # loops over the subset for more epochs
    args = dict(
        output_dir=str(out / "trainer"), num_train_epochs=cfg.epochs, max_steps=max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=accum,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay, optim="adamw_torch",
        max_length=cfg.max_length, packing=False, completion_only_loss=True,
        logging_steps=1, save_strategy="no", report_to=list(report_to or []), seed=cfg.seed, data_seed=cfg.seed,
        bf16=precision == "bf16",
        use_cpu=device == "cpu", disable_tqdm=not progress, dataloader_num_workers=0,
    )
    args.update(cfg.extra)
    sft_args = SFTConfig(**args)
    if processes > 1:  # the process group before the weights: FSDP loads them on rank 0 only
        _ = sft_args.device
    model = load_for_training(model_name, device, precision)
    peft_config = None
    if cfg.method == "lora":
        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                 lora_dropout=cfg.lora_dropout,
                                 target_modules=cfg.target_modules or default_lora_targets(model),
                                 bias="none", task_type="CAUSAL_LM")
    t0 = time.perf_counter()
    trainer = SFTTrainer(model=model, args=sft_args, train_dataset=ds,
                         processing_class=tok, peft_config=peft_config)
    if not progress:  # --quiet: no per-step log dicts either
        from transformers.trainer_callback import PrinterCallback, ProgressCallback  # lazy: heavy

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
    trainer.train()
    seconds = time.perf_counter() - t0
    trainer.save_model(str(out / "model"))  # gathers FSDP/ZeRO-3 shards; main process writes
    if not trainer.is_world_process_zero():
        return {}
    tok.save_pretrained(out / "model")
    logs = [h for h in trainer.state.log_history if "loss" in h]
    with (out / "loss.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss", "learning_rate"])
        for h in logs:
            w.writerow([h.get("step"), h.get("loss"), h.get("learning_rate")])
    n_trained = len(trainer.train_dataset)
    if n_trained != len(rows):
        raise RuntimeError(f"TRL kept {n_trained} of the {len(rows)} selected rows: the subset "
                           f"would not be what was trained")
    info = {"examples": len(rows), "examples_trained": n_trained, "truncated": n_truncated,
            "max_length": cfg.max_length, "steps": trainer.state.global_step, "seconds": seconds,
            "processes": processes, "per_device_batch": cfg.batch_size,
            "grad_accum": grad_accum_for(cfg, processes),
            "effective_batch": cfg.batch_size * grad_accum_for(cfg, processes) * processes,
            "method": cfg.method, "base_model": model_name, "precision": precision,
            "device": device,
            "final_loss": logs[-1]["loss"] if logs else None,
            "effective_updates": sum(1 for h in logs if (h.get("learning_rate") or 0) > 0)}
    info["warnings"] = train_warnings(info, trainer.model)
    (out / "train.json").write_text(json.dumps(info, indent=2))
    return info


def train_warnings(info: dict, model) -> list[str]:
    """What makes a trained model useless for a comparison, said in train.json, the run
    output and the leaderboard: at most one update at a non-zero learning rate, or LoRA
    weights that never left their initialisation (B = 0)."""
    out = []
    if info["effective_updates"] <= 1:
        out.append(f"only {info['effective_updates']} optimizer step(s) at a non-zero learning "
                   f"rate: the model barely trained (raise epochs/min_steps, drop warmup)")
    b = [p for n, p in model.named_parameters() if "lora_B" in n]
    if b and all(float(p.detach().abs().max()) == 0.0 for p in b):
        out.append("the LoRA weights did not change (B is still zero): the answers are the base model's")
    return out


def load_trained(model_name: str, folder: Path, method: str, device: str = "cpu",
                 precision: str = "fp32"):
    """Model ready for generation (LoRA merged into the base for speed), in ``precision``."""
    if method == "lora":
        from peft import PeftModel  # lazy: heavy

        base = load_model(model_name, device, precision)
        model = PeftModel.from_pretrained(base, str(folder / "model")).merge_and_unload()
    else:
        model = load_model(str(folder / "model"), device, precision)
    return model.eval()
