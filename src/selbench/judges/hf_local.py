"""Local transformers chat model as judge (GPU, or CPU for small models).

The judge prompt goes through the model's chat template; decoding is greedy by default.
Raw completions are cached and parsed like any other judge's."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..hardware import pick_device
from ..models import load_model, load_tokenizer, model_problem
from .base import JUDGE_TYPES, Completion, Judge, JudgeItem, StopRequests


@dataclass
class HFJudgeConfig:
    model: str = "smollm2-135m-instruct"  # embedded name, hub id or local folder
    max_new_tokens: int = 256
    temperature: float = 0.0
    batch_size: int = 4
    device: str = "auto"
    concurrency: int = 1  # unused (kept for a uniform YAML surface)
    prompt_file: str | None = None  # own judge prompt (YAML: template, system, version)


@JUDGE_TYPES.register("hf")
class HFJudge(Judge):
    config_cls = HFJudgeConfig

    def needs(self) -> list[tuple[str, str]]:
        p = model_problem(self.config.model)
        if p is None or p[0] == "note":
            return []
        return [(p[0], f"judge '{self.name}' model {p[1]}")]

    def complete_many(self, items: list[JudgeItem],
                      on_done: Callable[[int, Completion], None]) -> None:
        import torch  # lazy: heavy

        c = self.config
        dev = pick_device(c.device)
        tok = load_tokenizer(c.model, padding_side="left")
        model = load_model(c.model, dev).eval()
        texts = [tok.apply_chat_template(self.messages(it), add_generation_prompt=True,
                                         tokenize=False)
                 for it in items]
        kw = dict(max_new_tokens=c.max_new_tokens, pad_token_id=tok.pad_token_id)
        kw.update(dict(do_sample=True, temperature=c.temperature) if c.temperature > 0
                  else dict(do_sample=False, temperature=None, top_p=None, top_k=None))
        stopped = None  # on_done said stop: finish handing over this batch, start no other
        for s in range(0, len(texts), c.batch_size):
            if stopped is not None:
                break
            enc = tok(texts[s:s + c.batch_size], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(dev)
            with torch.no_grad():
                out = model.generate(**enc, **kw)
            for j in range(out.shape[0]):
                new = out[j, enc["input_ids"].shape[1]:]
                self.stats["calls"] += 1
                usage = {"prompt_tokens": int(enc["attention_mask"][j].sum()),
                         "completion_tokens": int((new != tok.pad_token_id).sum())}
                try:
                    on_done(s + j, Completion(tok.decode(new, skip_special_tokens=True), usage))
                except StopRequests as e:
                    stopped = stopped or e
        if stopped is not None:
            raise stopped
